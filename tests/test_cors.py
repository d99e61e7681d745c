"""Browser pages and the node: ``--cors ORIGIN`` (xio.node.cors) and ``/_xio/client.js``.

The policy and the ETag rule are pure and tested so; the rest is asked of real ``xio-node``
processes over HTTP, as a browser would ask (an ``Origin`` header, a preflight ``OPTIONS``),
and judged by the headers a browser reads to decide whether the page sees the answer. What a
real browser does with them is tests/test_browser.py's part.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

import xio
from xio.errors import ConfigError
from xio.node.clientjs import etag_matches
from xio.node.cors import CorsPolicy, parse_origin, same_origin

from .conftest import NODE, ROOT

APP = str(ROOT / "tests" / "conformance" / "app.py")
PAGE = "http://page.example:8000"
ALLOWED = "Access-Control-Allow-Origin"


# -- the policy, pure -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "origin"),
    [("https://App.Example", "https://app.example"), ("https://app.example:443", "https://app.example"),
     ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"), ("http://[::1]:81", "http://[::1]:81"),
     (" * ", "*")],
)  # fmt: skip
def test_an_origin_is_kept_as_a_browser_writes_it(text, origin):
    assert parse_origin(text) == origin


@pytest.mark.parametrize(
    "text",
    ["app.example", "ftp://app.example", "https://app.example/page", "https://app.example?x=1",
     "https://user@app.example", "https://app.example:99999", "https://", "null", ""],
)  # fmt: skip
def test_what_is_not_an_origin_is_refused(text):
    with pytest.raises(ConfigError, match="--cors"):
        parse_origin(text)


def test_the_policy_allows_the_origins_listed_and_no_other():
    policy = CorsPolicy.of([PAGE, "https://other.example"])
    assert policy.allows(PAGE) and policy.allows("https://other.example")
    assert not policy.allows("http://page.example:8001")  # another port is another origin
    assert not policy.allows("https://page.example:8000")  # and another scheme
    assert not policy.allows("null") and not policy.allows(None) and not policy.allows("")
    assert not CorsPolicy.of([]).allows(PAGE)
    anyone = CorsPolicy.of(["*"])
    assert anyone.allows(PAGE) and anyone.allows("null")


def test_a_preflight_grants_what_it_asked_for_when_each_is_a_token():
    headers = dict(
        CorsPolicy.of([PAGE]).preflight(PAGE, "PUT", "content-type, x-conf-a, bad value")
    )
    assert headers[ALLOWED] == PAGE
    assert headers["Access-Control-Allow-Methods"] == "PUT"
    assert headers["Access-Control-Allow-Headers"] == "content-type, x-conf-a"
    assert headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in headers
    odd = dict(CorsPolicy.of([PAGE]).preflight(PAGE, "GET\r\nX: y", None))
    assert "Access-Control-Allow-Methods" not in odd and "Access-Control-Allow-Headers" not in odd


def test_the_nodes_own_origin_is_the_one_of_its_host_header():
    assert same_origin("http://127.0.0.1:7700", "127.0.0.1:7700", tls=False)
    assert same_origin("https://node.example", "node.example:443", tls=True)
    assert not same_origin("http://127.0.0.1:7700", "127.0.0.1:7700", tls=True)
    assert not same_origin("http://evil.example", "127.0.0.1:7700", tls=False)
    assert not same_origin("null", "127.0.0.1:7700", tls=False)
    assert not same_origin("http://127.0.0.1:7700", None, tls=False)


@pytest.mark.parametrize(
    ("header", "matches"),
    [('"abc"', True), ('W/"abc"', True), ('"x", "abc"', True), ("*", True), ('"abd"', False),
     ("", False), (None, False), ("abc", False)],
)  # fmt: skip
def test_if_none_match_names_the_etag_or_not(header, matches):
    assert etag_matches(header, '"abc"') is matches


# -- the option -------------------------------------------------------------------------------


def check_config(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("XIO_")}
    return subprocess.run([*NODE, "check-config", "--json", "--no-mdns", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**clean, "XIO_CONFIG": "", **(env or {})})  # fmt: skip


def test_cors_comes_from_flags_the_config_file_or_the_environment(tmp_path):
    done = check_config("--cors", "https://A.example", "--cors", "*")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["settings"]["cors"]["value"] == ["https://a.example", "*"]
    path = tmp_path / "node.toml"
    path.write_text('cors = ["https://app.example:8443"]\n')
    done = check_config("--config", str(path))
    assert json.loads(done.stdout)["settings"]["cors"]["value"] == ["https://app.example:8443"]
    done = check_config(env={"XIO_CORS": "https://one.example https://two.example"})
    assert json.loads(done.stdout)["settings"]["cors"]["value"] == [
        "https://one.example", "https://two.example"]  # fmt: skip


def test_a_bad_origin_is_a_usage_error_naming_it(tmp_path):
    done = subprocess.run([*NODE, "--no-mdns", "--port", "0", "--cors", "https://app.example/x"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "--cors" in done.stderr and "no path" in done.stderr


# -- a real node ------------------------------------------------------------------------------


@pytest.fixture
def node(start_node):
    """A node hosting the conformance app that lets pages of PAGE read its answers."""
    return start_node("cors", "--app", APP, "--cors", PAGE, "--max-body", "1024")


def ask(url: str, method: str, path: str, origin: str | None = None, **options):
    headers = dict(options.pop("headers", {}))
    if origin is not None:
        headers["Origin"] = origin
    with xio.client(url, timeout=10) as client:
        return client.request(method, path, headers=headers, **options)


def test_an_allowed_origin_may_read_the_answer_and_every_header(node):
    answer = ask(node.url, "GET", "/conf/cookies", PAGE)
    assert answer.status == 200
    assert answer.headers.get_all(ALLOWED) == [PAGE]  # once: a browser refuses two
    assert answer.headers["Access-Control-Expose-Headers"] == "*"
    assert "Origin" in [token.strip() for token in answer.headers["Vary"].split(",")]
    assert "Access-Control-Allow-Credentials" not in answer.headers


def test_another_origin_and_no_origin_get_no_cors_header(node):
    for origin in ("http://evil.example", "http://page.example:8001", None):
        answer = ask(node.url, "GET", "/conf/json", origin)
        assert answer.status == 200
        assert ALLOWED not in answer.headers, origin
        assert "Origin" in answer.headers["Vary"]  # a cache keeps the origins' answers apart


def test_a_preflight_is_answered_by_the_node_and_an_outsiders_reaches_the_app(node):
    asked = {"Access-Control-Request-Method": "PUT",
             "Access-Control-Request-Headers": "content-type,x-conf-a"}  # fmt: skip
    answer = ask(node.url, "OPTIONS", "/conf/echo/x", PAGE, headers=asked)
    assert answer.status == 204
    assert answer.headers[ALLOWED] == PAGE
    assert answer.headers["Access-Control-Allow-Methods"] == "PUT"
    assert answer.headers["Access-Control-Allow-Headers"] == "content-type, x-conf-a"
    assert answer.headers["Access-Control-Max-Age"] == "600"
    outsider = ask(node.url, "OPTIONS", "/conf/echo/x", "http://evil.example", headers=asked)
    assert "Allow" in outsider.headers  # the app's own answer to OPTIONS: what it takes
    assert (
        ALLOWED not in outsider.headers and "Access-Control-Allow-Methods" not in outsider.headers
    )


def test_the_nodes_own_refusals_are_readable_by_an_allowed_page(node):
    answer = ask(node.url, "POST", "/conf/echo", PAGE, data=b"x" * 2048)  # over --max-body
    assert answer.status == 413
    assert answer.headers[ALLOWED] == PAGE
    missing = ask(node.url, "GET", "/nowhere/x", PAGE)
    assert missing.status == 404 and missing.headers[ALLOWED] == PAGE


def test_no_page_may_read_the_admin_pages_even_from_a_browser_on_the_nodes_host(node):
    # The test runs on the node's host: loopback, as a browser there would be.
    admin = ask(node.url, "GET", "/_xio/node", PAGE)
    assert admin.status == 200  # the client is loopback: an admin...
    assert ALLOWED not in admin.headers  # ...but a page of PAGE is not shown the answer
    asked = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-a"}
    preflight = ask(node.url, "OPTIONS", "//_xio/map", PAGE, headers=asked)
    assert not [name for name in preflight.headers if name.lower().startswith("access-control-")]
    public = ask(node.url, "GET", "/_xio/health/live", PAGE)
    assert public.status == 200 and public.headers[ALLOWED] == PAGE


def test_without_cors_a_node_writes_no_cors_header_and_answers_no_preflight(start_node):
    plain = start_node("plain", "--app", APP)
    answer = ask(plain.url, "GET", "/conf/json", PAGE)
    assert answer.status == 200
    assert not [name for name in answer.headers if name.lower().startswith("access-control-")]
    assert "Origin" not in answer.headers.get("Vary", "")
    asked = {"Access-Control-Request-Method": "PUT"}
    preflight = ask(plain.url, "OPTIONS", "/conf/echo/x", PAGE, headers=asked)
    assert "Allow" in preflight.headers  # the app's own answer
    assert not [name for name in preflight.headers if name.lower().startswith("access-control-")]


def test_any_origin_with_a_star(start_node):
    anyone = start_node("anyone", "--app", APP, "--cors", "*")
    answer = ask(anyone.url, "GET", "/conf/json", "https://wherever.example")
    assert answer.headers[ALLOWED] == "https://wherever.example"  # echoed: Vary keeps it apart


# -- /_xio/client.js --------------------------------------------------------------------------


def test_every_node_serves_the_javascript_client_to_anyone_with_its_cache_rules(start_node):
    plain = start_node("plain")
    served = ask(plain.url, "GET", "/_xio/client.js")
    assert served.status == 200
    assert served.content_type == "text/javascript; charset=utf-8"
    assert served.content == (ROOT / "clients/js/xio.js").read_text(encoding="utf-8")
    assert served.headers["Cache-Control"] == "public, max-age=300"
    assert served.headers[ALLOWED] == "*"  # a page of any origin imports it as a module
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    etag = served.headers["ETag"]
    again = ask(plain.url, "GET", "/_xio/client.js", headers={"If-None-Match": etag})
    assert again.status == 304 and again.content is None
    assert again.headers["ETag"] == etag
    stale = ask(plain.url, "GET", "/_xio/client.js", headers={"If-None-Match": '"old"'})
    assert stale.status == 200 and stale.content == served.content
    assert served.headers["X-TypeScript-Types"] == "/_xio/client.d.ts"
    types = ask(plain.url, "GET", "/_xio/client.d.ts")
    assert types.status == 200 and types.headers[ALLOWED] == "*"
    assert types.content_type == "application/typescript; charset=utf-8"
    assert types.content == (ROOT / "clients/js/xio.d.ts").read_bytes()
    head = ask(plain.url, "HEAD", "/_xio/client.js")
    assert (head.status, head.content, head.headers["ETag"]) == (200, None, etag)
    assert ask(plain.url, "GET", "/_xio/client.jsx").status in (403, 404)  # not public


def test_the_javascript_client_is_public_when_the_admin_pages_are_not(start_node, tmp_path):
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    token.chmod(0o600)
    guarded = start_node("guarded", "--admin-token", str(token))
    assert ask(guarded.url, "GET", "/_xio/node").status == 401
    assert ask(guarded.url, "GET", "/_xio/client.js").status == 200
