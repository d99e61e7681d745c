"""Two rough edges of the resource tree: ABOUT between handlers, and reading an empty body."""

from __future__ import annotations

import xio
from xio.testing import TestClient


def shop() -> xio.App:
    app = xio.app("shop")
    app.bind("www", lambda req: "home")
    app.bind("www/items/:id", lambda req: {"id": req.params["id"]})
    app.bind("www/items/:id/price", lambda req: 3)
    app.bind("www/admin/users/list", lambda req: [])
    return app


def test_about_on_a_path_with_no_handler_lists_its_children():
    client = TestClient(shop())
    items = client.request("ABOUT", "/items")  # between the www handler and :id
    assert items.status == 200
    assert items.content["path"] == "www/items"
    assert items.content["children"] == [":id"]
    assert items.content["methods"] == ["ABOUT"]
    admin = client.request("ABOUT", "/admin/users")  # below no handler at all (was 404)
    assert (admin.status, admin.content["children"]) == (200, ["list"])
    assert client.get("/items").content == "home"  # other methods still reach www's handler


def test_about_on_a_path_with_a_handler_describes_that_handler():
    about = TestClient(shop()).request("ABOUT", "/items/7").content
    assert (about["path"], about["children"]) == ("www/items/:id", ["price"])
    assert "GET" in about["methods"]


def test_reading_data_of_an_empty_body_leaves_the_body_and_headers_alone():
    app = xio.app("echo")

    @app.bind("www")
    def echo(req):
        data = req.data
        return {"data": data, "body": req.body.decode(), "type": req.headers.get("Content-Type")}

    assert TestClient(app).get("/").content == {"data": {}, "body": "", "type": None}
    assert app.request("GET", "www").content == {"data": {}, "body": "", "type": None}
    posted = app.request("POST", "www", {"n": 1}).content  # in-process data: encoded on demand
    assert posted == {"data": {"n": 1}, "body": '{"n":1}', "type": "application/json"}
