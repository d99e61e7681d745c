"""Judge one client's observation of a case against what cases.json expects (pure).

An expectation lists only what it checks:

    status          the status, exactly
    contentType     the media type (before any ';'), case-insensitive
    content         the decoded content, exactly ({"$bytes": base64} for binary)
    contentIncludes every key given, with its value, recursively for objects
    contentHas      for each key, a list that holds at least the items given
    headers         for each name, every value the answer carried for it, in order
    headerHas       for each name, a token that its comma-joined values contain
    headersAbsent   names the answer must not carry
    error           the client raised this error (ConnectError, Timeout, ResponseError)

``problems(case, observation, browser)`` returns what differs, in words; empty means it
passed. In a browser a case's ``browser`` expectation replaces ``expect`` (what the Fetch
standard lets a page see differs: Set-Cookie is never shown to scripts).
"""

from __future__ import annotations

__all__ = ["problems"]


def problems(case: dict, seen: dict, browser: bool = False) -> list[str]:
    expect = case.get("browser", case["expect"]) if browser else case["expect"]
    if "error" in expect:
        if seen.get("error") != expect["error"]:
            return [f"expected {expect['error']}, got {_summary(seen)}"]
        return []
    if "error" in seen:
        return [f"the client raised {seen['error']}: {seen.get('message', '')}"]
    found = []
    if "status" in expect and seen.get("status") != expect["status"]:
        found.append(f"status {seen.get('status')}, expected {expect['status']}")
    if "contentType" in expect:
        got = _media(seen.get("contentType"))
        if got != expect["contentType"].lower():
            found.append(f"content type {seen.get('contentType')!r}, expected "
                         f"{expect['contentType']!r}")  # fmt: skip
    content = seen.get("content")
    if "content" in expect and content != expect["content"]:
        found.append(f"content {_short(content)}, expected {_short(expect['content'])}")
    if "contentIncludes" in expect:
        found += [f"content{where}" for where in _missing(expect["contentIncludes"], content)]
    for key, items in expect.get("contentHas", {}).items():
        have = content.get(key) if isinstance(content, dict) else None
        if not isinstance(have, list) or any(item not in have for item in items):
            found.append(f"content[{key!r}] = {_short(have)} lacks some of {items}")
    headers = _headers(seen.get("headers", []))
    for name, values in expect.get("headers", {}).items():
        if headers.get(name.lower(), []) != values:
            found.append(f"header {name}: {headers.get(name.lower())}, expected {values}")
    for name, token in expect.get("headerHas", {}).items():
        joined = ", ".join(headers.get(name.lower(), []))
        if token not in [part.strip() for part in joined.split(",")]:
            found.append(f"header {name}: {joined!r} lacks {token!r}")
    for name in expect.get("headersAbsent", []):
        if name.lower() in headers:
            found.append(f"header {name} is present: {headers[name.lower()]}")
    return found


def _media(content_type) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


def _headers(pairs) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in pairs:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def _missing(expected, got, where: str = "") -> list[str]:
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return [f"{where} = {_short(got)}, expected an object with {_short(expected)}"]
        out = []
        for key, value in expected.items():
            if key not in got:
                out.append(f"{where}[{key!r}] is missing")
            else:
                out += _missing(value, got[key], f"{where}[{key!r}]")
        return out
    return [] if got == expected else [f"{where} = {_short(got)}, expected {_short(expected)}"]


def _summary(seen: dict) -> str:
    if "error" in seen:
        return f"{seen['error']} ({seen.get('message', '')})"
    return f"status {seen.get('status')}"


def _short(value, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
