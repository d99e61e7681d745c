"""The resource tree in-process: binding, dispatch, methods, ABOUT, inputs, stored values."""

import pytest

import xio


@pytest.fixture
def app():
    app = xio.app("shop")

    @app.bind("www")
    def _(req):
        if req.GET:
            return "it is a GET request"
        elif req.POST:
            return "it is a POST request"

    @app.bind("www/items")
    def items(req):
        """List or add items.

        methods: GET, POST
        input name: str, pattern=^[a-z]+$
        input count: int
        """
        return {"method": req.method, "inputs": req.inputs}

    @app.bind("www/items/:id")
    def item(req):
        """One item."""
        return {"id": req.params["id"], "below": req.path}

    app.bind("www/items/special", lambda req: "special")
    app.bind(
        "www/echo", lambda req: {"data": req.data, "query": req.query}, methods=["POST", "GET"]
    )
    app.bind("www/custom", lambda req: {"mine": req.MYMETHOD, "get": req.GET}, methods=["MYMETHOD"])
    return app


def test_seed_examples_answer_get_and_post(app):
    assert app.get("www").content == "it is a GET request"
    assert app.post("www").content == "it is a POST request"
    assert app.get("www").content_type is None  # chosen from the str when encoded


def test_app_forms():
    assert xio.app("inventory").app_name == "inventory"
    assert xio.app().app_name == "app"
    assert isinstance(xio.resource(), xio.Resource)
    named_after_module = xio.app(__name__)
    assert named_after_module.app_name == "test_resource"


def test_path_parameter_and_static_segment_wins(app):
    assert app.get("www/items/42").content == {"id": "42", "below": ""}
    assert app.get("www/items/special").content == "special"


def test_handler_receives_the_path_below_it(app):
    assert app.get("www/items/42/photos/1").content == {"id": "42", "below": "photos/1"}


def test_unknown_path_without_a_handler_is_404():
    app = xio.app("bare")
    app.bind("www/a", lambda req: "a")
    response = app.get("www/b")
    assert response.status == 404
    assert response.content["title"] == "Not Found"


def test_declared_methods_are_exact_and_others_get_405_with_allow(app):
    response = app.delete("www/items")
    assert response.status == 405
    assert response.headers["Allow"] == "ABOUT, GET, HEAD, OPTIONS, POST"


def test_custom_method_in_process(app):
    assert app.request("MYMETHOD", "www/custom").content == {"mine": True, "get": False}
    assert app.get("www/custom").status == 405


def test_undeclared_custom_method_is_405_and_typo_attribute_fails(app):
    assert app.request("FROB", "www").status == 405
    seen = {}

    @app.bind("www/typo")
    def typo(req):
        seen["error"] = pytest.raises(AttributeError, lambda: req.GTE)
        return "ok"

    assert app.get("www/typo").status == 200


def test_about_describes_the_resource(app):
    about = app.about("www/items").content
    assert about["name"] == "items"
    assert about["methods"] == ["ABOUT", "GET", "HEAD", "OPTIONS", "POST"]
    assert about["doc"] == "List or add items."
    assert about["children"] == ["special", ":id"]
    assert about["inputs"]["count"] == {"type": "int", "required": False}
    assert about["inputs"]["name"]["pattern"] == "^[a-z]+$"


def test_inputs_are_coerced_and_validated(app):
    ok = app.get("www/items", query={"name": "abc", "count": "3"})
    assert ok.content["inputs"] == {"name": "abc", "count": 3}
    bad_type = app.get("www/items", query={"count": "three"})
    assert bad_type.status == 400
    assert "'count'" in bad_type.content["description"]
    bad_pattern = app.post("www/items", data={"name": "ABC"})
    assert bad_pattern.status == 400
    assert "'name'" in bad_pattern.content["description"]


def test_required_input_missing_is_400_naming_it():
    app = xio.app("x")
    app.bind("www/need", lambda req: req.inputs, inputs={"token": "str, required"})
    response = app.get("www/need")
    assert response.status == 400
    assert response.content["description"] == "missing required parameter 'token'"
    assert app.get("www/need", query={"token": "t"}).content == {"token": "t"}


def test_data_and_query_in_process(app):
    response = app.post("www/echo", data={"a": 1}, query={"q": "x"})
    assert response.content == {"data": {"a": 1}, "query": {"q": "x"}}


def test_put_stores_static_content_on_paths_without_handler(app):
    assert app.put("etc/config", {"debug": True}).status == 201
    assert app.get("etc/config").content == {"debug": True}
    assert app.put("etc/config", {"debug": False}).status == 200
    assert app.get("etc/config").content == {"debug": False}


def test_http_errors_and_crashes_become_json(app):
    def teapot(req):
        raise xio.HTTPError(418, "short and stout")

    def conflict(req):
        raise xio.Conflict("already there")

    def crash(req):
        return 1 / 0

    app.bind("www/teapot", teapot)
    app.bind("www/conflict", conflict)
    app.bind("www/crash", crash)
    assert app.get("www/teapot").status == 418
    assert app.get("www/teapot").content["description"] == "short and stout"
    assert app.get("www/conflict").content == {
        "status": 409,
        "title": "Conflict",
        "description": "already there",
    }
    crashed = app.get("www/crash")
    assert crashed.status == 500
    assert crashed.content["description"] == "ZeroDivisionError: division by zero"


def test_response_overrides(app):
    @app.bind("www/created")
    def created(req):
        req.response.status = 201
        req.response.headers["Location"] = "/items/7"
        req.response.content_type = "text/html"
        return "<b>made</b>"

    response = app.post("www/created")
    assert (response.status, response.content_type) == (201, "text/html")
    assert response.headers["location"] == "/items/7"


def test_options_lists_allowed_methods(app):
    response = app.options("www/custom")
    assert response.status == 204
    assert response.headers["Allow"] == "ABOUT, MYMETHOD, OPTIONS"


def test_bad_bindings_are_refused():
    app = xio.app("x")
    with pytest.raises(TypeError):
        app.bind("www", "not callable")
    with pytest.raises(ValueError):
        app.bind("www", lambda req: 1, methods=["bad name"])
    with pytest.raises(ValueError):
        app.bind("www/x", lambda req: 1, inputs={"n": "integer"})
    app.bind("www/:a", lambda req: 1)
    with pytest.raises(ValueError):
        app.bind("www/:b", lambda req: 1)
