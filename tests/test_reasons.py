"""One registry of counted reasons (xio/peering/reasons.py), checked against the code and docs.

An operator reads a node's counters under /_xio/node; each reason there must be explained in
docs/PROTOCOL.md section 12.1, in the table of the counter it is reported under, and nothing
may be counted under a name the registry does not list.
"""

from __future__ import annotations

import ast
import re

import pytest

from xio.peering import reasons

from .conftest import ROOT

PROTOCOL = (ROOT / "docs/PROTOCOL.md").read_text()
XIO = ROOT / "xio"
#: Counters whose keys are reasons: ``self.counts["deadline"] += 1`` and the like.
COUNTERS = {"counts", "rejected", "refused", "counters", "closed_links"}
#: Calls whose argument at that position is a reason that ends up counted.
REASON_ARGUMENT = {
    "count_rejection": 0, "_reject": 0, "_closed": 0, "close": 0, "_end": 0, "_Violation": 0,
    "RemoteProtocolError": 0, "Verdict": 1, "TrailProblem": 1, "_refuse": 2,
    "_refused": 0,
}  # fmt: skip
#: mDNS answers are ignored (logged at debug), never counted: its reasons are not counters.
NOT_COUNTED = {"xio/peering/mdns.py", "xio/peering/mdns_names.py"}


def documented() -> dict[str, list[str]]:
    """Return the reasons of each table of PROTOCOL.md section 12.1, by counter name."""
    section = PROTOCOL.split("### 12.1 Counters", 1)[1].split("\n## ", 1)[0]
    tables = {}
    for part in section.split("\n#### ")[1:]:
        key = re.match(r"12\.1\.\d+ `(\w+)`", part)[1]
        tables[key] = re.findall(r"^\| `([^`]+)` \|", part, re.M)
    return tables


def shown(node: ast.expr) -> str | None:
    """Return a str constant, or an f-string with ``<name>`` for each field; else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(value.value)
            else:
                inner = value.value
                parts.append(f"<{getattr(inner, 'attr', getattr(inner, 'id', 'value'))}>")
        return "".join(parts)
    return None


def counted_literals() -> dict[str, str]:
    """Return every reason written as a literal where xio counts it, with where it is."""
    found = {}
    for path in sorted(XIO.rglob("*.py")):
        where = str(path.relative_to(ROOT))
        if where in NOT_COUNTED:
            continue
        for node in ast.walk(ast.parse(path.read_text(), where)):
            reason = None
            if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Subscript):
                base = node.target.value
                if getattr(base, "attr", getattr(base, "id", None)) in COUNTERS:
                    reason = shown(node.target.slice)
            elif isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", None))
                index = REASON_ARGUMENT.get(name)
                if index is not None and len(node.args) > index:
                    reason = shown(node.args[index])
            if reason is not None:
                # "peer_bye: <reason>" is counted under closed_links as "peer_bye".
                found.setdefault(reason.split(":", 1)[0], f"{where}:{node.lineno}")
    return found


def test_every_counter_group_is_documented_exactly():
    tables = documented()
    assert list(tables) == list(reasons.GROUPS)
    for key, group in reasons.GROUPS.items():
        assert tables[key] == [reason.name for reason in group], f"PROTOCOL.md 12.1 `{key}`"


def test_every_reason_has_a_one_line_meaning_and_appears_once_per_group():
    for key, group in reasons.GROUPS.items():
        names = [reason.name for reason in group]
        assert len(names) == len(set(names)), key
        for reason in group:
            assert re.fullmatch(r"[a-z][a-z0-9_]*(<status>)?", reason.name), reason.name
            assert reason.meaning and "\n" not in reason.meaning, reason.name


def test_every_reason_counted_in_the_code_is_in_the_registry():
    counted = counted_literals()
    assert len(counted) > 40  # the scan sees the counters (it found 60-odd when written)
    unknown = {reason: where for reason, where in counted.items()
               if reason not in reasons.ALL_REASONS}  # fmt: skip
    assert unknown == {}, f"counted but not in xio/peering/reasons.py: {unknown}"


def test_every_reason_in_the_registry_is_counted_somewhere():
    strings = set(counted_literals())
    for path in XIO.rglob("*.py"):
        if path.name != "reasons.py":
            tree = ast.parse(path.read_text())
            strings |= {s for node in ast.walk(tree) if (s := shown(node)) is not None}
    assert sorted(reasons.ALL_REASONS - strings) == []


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        (reasons.RECORD_REJECTIONS, {"too_large", "malformed_record", "bad_signature"}),
        (reasons.RECORD_REFUSALS, {"origin_quota", "store_full"}),
        (reasons.RECORD_NORMAL, {"accepted", "duplicate", "stale", "own_record"}),
    ],
)
def test_record_verdicts_are_split_as_documented(group, expected):
    verdicts = {reason.name for reason in reasons.RECORD_VERDICTS}
    assert expected <= set(group) <= verdicts
    refused = {reason.name for reason in reasons.REFUSALS}
    assert set(reasons.RECORD_REFUSALS) <= refused
    assert not set(reasons.RECORD_NORMAL) & refused


def test_a_fatal_rejection_is_a_close_reason_and_a_kept_link_is_not():
    assert "keepalive_timeout" in reasons.CLOSE_REASONS
    assert "bad_signature" in reasons.CLOSE_REASONS
    assert "duplicate_request_id" not in reasons.CLOSE_REASONS
