"""The app over WSGI, through the in-process test client: what an HTTP caller sees."""

import io

import msgpack
import pytest

import xio
from xio.testing import TestClient


@pytest.fixture
def app(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "style.css").write_text("body{}")
    (tmp_path / "www" / "docs").mkdir()
    (tmp_path / "www" / "docs" / "index.html").write_text("<h1>docs</h1>")
    (tmp_path / "secret.txt").write_text("do not serve")
    app = xio.App("web", tmp_path)

    @app.bind("www")
    def root(req):
        return {"path": req.path, "query": req.query}

    app.bind("www/text", lambda req: "plain")
    app.bind("www/bytes", lambda req: b"\x00\x01")
    app.bind("www/number", lambda req: 42)
    app.bind("www/none", lambda req: None)
    app.bind("www/stream", lambda req: (f"{i}," for i in range(3)))
    app.bind("www/file", lambda req: io.BytesIO(b"file body"))
    app.bind("www/echo", lambda req: {"data": req.data, "body": len(req.body)})
    app.bind(
        "www/headers", lambda req: {"agent": req.headers["user-agent"], "profile": req.profile}
    )
    app.bind("www/custom", lambda req: "custom answered", methods=["MYMETHOD"])
    app.put("etc/secret", "in-process only")
    return app


@pytest.fixture
def client(app):
    return TestClient(app)


@pytest.mark.parametrize(
    "path, content_type, content",
    [
        ("/text", "text/plain; charset=utf-8", "plain"),
        ("/bytes", "application/octet-stream", b"\x00\x01"),
        ("/number", "application/json", 42),
        ("/none", "application/json", None),
        ("/stream", "application/octet-stream", b"0,1,2,"),
        ("/file", "application/octet-stream", b"file body"),
    ],
)
def test_return_value_picks_the_content_type(client, path, content_type, content):
    response = client.get(path)
    assert response.status == 200
    assert response.content_type == content_type
    assert response.content == content


def test_www_is_served_at_root_with_path_and_query(client):
    response = client.get("/some/where", query={"a": "1", "b": "2"})
    assert response.content == {"path": "some/where", "query": {"a": "1", "b": "2"}}


def call_wsgi(app, environ: dict) -> tuple[str, list, bytes]:
    """Call ``app`` as a WSGI server would; return the raw status, headers and body bytes."""
    started = {}
    chunks = app(
        environ, lambda status, headers, exc_info=None: started.update(s=status, h=headers)
    )
    return started["s"], started["h"], b"".join(chunks)


def test_msgpack_when_accepted(app):
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "QUERY_STRING": "x=1",
        "HTTP_ACCEPT": "application/msgpack",
        "wsgi.input": io.BytesIO(b""),
    }
    status, headers, body = call_wsgi(app, environ)
    assert status.startswith("200 ")
    assert [value for name, value in headers if name.lower() == "content-type"] == [
        "application/msgpack"
    ]
    assert msgpack.unpackb(body) == {"path": "", "query": {"x": "1"}}


def test_json_and_form_bodies_become_data(client):
    assert client.post("/echo", {"a": [1, 2]}).content == {"data": {"a": [1, 2]}, "body": 11}
    form = client.post(
        "/echo", body=b"a=1&b=two", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.content["data"] == {"a": "1", "b": "two"}
    raw = client.post("/echo", body=b"\x01\x02", headers={"Content-Type": "image/png"})
    assert raw.content["body"] == 2


def test_malformed_json_is_400_saying_what_is_wrong(client):
    response = client.post("/echo", body=b'{"a": ', headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert response.content["description"].startswith("malformed JSON body: Expecting value")


def test_body_over_the_limit_is_413(app):
    app.max_body = 10
    response = TestClient(app).post("/echo", body=b"x" * 11)
    assert response.status == 413
    assert response.headers["Connection"] == "close"


def test_max_body_changed_after_the_first_request_applies(app):
    client = TestClient(app)
    assert client.post("/echo", body=b"x" * 11).status == 200
    app.max_body = 10
    assert client.post("/echo", body=b"x" * 11).status == 413
    app.max_body = 20
    assert client.post("/echo", body=b"x" * 11).status == 200


def test_headers_are_case_insensitive_and_profile_is_read(client):
    response = client.get(
        "/headers", headers={"User-Agent": "tester", "X-Xio-Profile": '{"user": "ann"}'}
    )
    assert response.content == {"agent": "tester", "profile": {"user": "ann"}}
    bad = client.get("/headers", headers={"User-Agent": "t", "X-Xio-Profile": "[1]"})
    assert bad.status == 400


def test_custom_method_and_about_over_http(client):
    assert client.request("MYMETHOD", "/custom").content == "custom answered"
    wrong = client.get("/custom")
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "ABOUT, MYMETHOD, OPTIONS"
    assert client.about("/custom").content["methods"] == ["ABOUT", "MYMETHOD", "OPTIONS"]


def test_only_www_is_public(app, client):
    assert app.get("etc/secret").content == "in-process only"
    # Over HTTP, /etc/secret is www/etc/secret: here the catch-all www handler answers.
    assert client.get("/etc/secret").content["path"] == "etc/secret"
    bare = xio.app("bare")
    bare.put("etc/secret", "hidden")
    assert TestClient(bare).get("/etc/secret").status == 404


def test_static_files_with_types_and_index(client):
    css = client.get("/style.css")
    assert (css.status, css.content_type, css.content) == (200, "text/css; charset=utf-8", "body{}")
    assert client.get("/docs/").content == "<h1>docs</h1>"
    assert client.get("/docs").content_type == "text/html; charset=utf-8"


@pytest.mark.parametrize("path", ["/../secret.txt", "/docs/../../secret.txt", "/%2e%2e/secret.txt"])
def test_no_path_traversal(client, path):
    response = client.get(path)
    assert b"do not serve" not in (
        response.content if isinstance(response.content, bytes) else str(response.content).encode()
    )


def test_head_has_headers_but_no_body(client):
    response = client.head("/text")
    assert response.status == 200
    assert response.headers["Content-Length"] == "5"
    assert response.content is None


def test_unknown_path_is_404_json():
    response = TestClient(xio.app("empty")).get("/nothing/here")
    assert response.status == 404
    assert response.content_type == "application/json"
    assert response.content["title"] == "Not Found"


def test_unencodable_return_value_is_500(app, client):
    app.bind("www/object", lambda req: {"x": object()})
    response = client.get("/object")
    assert response.status == 500
    assert "not JSON serializable" in response.content["description"]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=300),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/msgpack",
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/octet-stream",
            "application/problem+json",
        ]
    ),
    profile=st.one_of(st.none(), st.text(max_size=30)),
    query=st.text(max_size=40),
)
def test_a_clients_garbage_is_never_a_500(body, content_type, profile, query):
    app = xio.app("fuzzed")
    app.bind("www", lambda req: {"data": repr(req.data)[:50], "profile": req.profile})
    headers = {"Content-Type": content_type}
    if profile is not None:
        headers["X-Xio-Profile"] = profile
    response = TestClient(app).request("POST", "/?" + query, body=body, headers=headers)
    assert response.status in (200, 400)
