"""The Python client's conformance runner: make each case's call, report what came back.

``run_plan(plan)`` follows the runner contract of tests/test_conformance.py: it never judges,
it reports (the checker, check.py, judges). The transport is the entries' scheme: http:// for
the HTTP client, ws:// for the WebSocket one; ``xio.client`` picks.
"""

from __future__ import annotations

import base64

import xio

__all__ = ["run_plan", "data_of", "observation"]

_ERRORS = (
    ("ConnectError", xio.ConnectError),
    ("Timeout", xio.Timeout),
    ("ResponseError", xio.ResponseError),
    ("TransportError", xio.TransportError),
)


def run_plan(plan: dict) -> dict:
    return {"results": [run_case(plan["entries"], case) for case in plan["cases"]]}


def run_case(entries: dict, case: dict) -> dict:
    entry = case.get("entry", "a")
    url = [entries[name] for name in entry] if isinstance(entry, list) else entries[entry]
    options = {"timeout": case["timeout"]} if "timeout" in case else {}
    client = xio.client(url, **options)
    path, query, headers = case.get("path", ""), case.get("query"), case.get("headers")
    data = data_of(case["data"]) if "data" in case else None
    call = case["call"]
    try:
        if call == "get":
            response = client.get(path, query=query, headers=headers)
        elif call == "about":
            response = client.about(path)
        elif call == "request":
            response = client.request(case["method"], path, data, query=query, headers=headers)
        else:  # post, put, patch, delete
            response = getattr(client, call)(path, data, query=query, headers=headers)
    except xio.TransportError as exc:
        name = next(label for label, kind in _ERRORS if isinstance(exc, kind))
        return {"id": case["id"], "error": name, "message": str(exc)}
    finally:
        client.close()
    return observation(case["id"], response)


def data_of(data):
    """Return the value a case's ``data`` stands for: bytes, a repeated text, or itself."""
    if isinstance(data, dict) and "$bytes" in data:
        return base64.b64decode(data["$bytes"])
    if isinstance(data, dict) and "$repeat" in data:
        return data["$repeat"] * data["count"]
    return data


def observation(case_id: str, response: xio.Response) -> dict:
    content = response.content
    if isinstance(content, (bytes, bytearray)):
        content = {"$bytes": base64.b64encode(content).decode()}
    return {
        "id": case_id,
        "status": response.status,
        "contentType": response.content_type,
        "headers": [[name.lower(), value] for name, value in response.headers.fields()],
        "content": content,
    }
