"""The layers of xio, read from the source with ``ast`` and enforced.

What this guards, and why:

* The pure core (wire codec, node identity, records, routing, the handshake, the link session and
  WebSocket framing) is bytes in, values out. It imports no gevent, socket, ssl, ws4py, zeroconf,
  no file IO and no clock, directly or through another xio module, so it can be tested without
  a network and reused under another I/O library.
* ``xio/node`` (the daemon) never imports ``xio/app`` (the framework users write apps with):
  the CLI is handed the demo app, so there is no import circle between the two.
* ``__version__`` is defined in a leaf module that imports nothing of xio, and every module
  reads it from there rather than from the package ``__init__`` (which imports everything).
* ``error_response`` lives in a module below both ``xio/server.py`` and ``xio/resource.py``.
* Modules import each other without a circle at import time.

Each failure names the file, the line and the import that breaks the rule.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "xio"

PURE_CORE = (
    "xio.peering.codec",
    "xio.peering.identity",
    "xio.peering.records",
    "xio.peering.routing",
    "xio.peering.handshake",
    "xio.peering.session",
    "xio.peering.websocket",
    "xio.peering.frames",
    "xio.peering.names",
    "xio.peering.reasons",
    "xio.peering.link_events",
    "xio.node.reload",
    "xio.peering.mdns_names",
    "xio.peering.trace",
    "xio.peering.cipher",
    "xio.peering.e2e",
    "xio.peering.integrity",
    "xio.node.access",
    "xio.node.metrics",
    "xio.node.health",
    "xio.node.drain",
    "xio.peering.membership",
    "xio.peering.admission",
    "xio.peering.store",
    "xio.node.meshmap",
    "xio.channel",
)

# Top-level modules the pure core may not reach: I/O libraries, file IO and clocks.
IMPURE = {
    "gevent": "an I/O loop",
    "socket": "sockets",
    "ssl": "sockets",
    "select": "sockets",
    "selectors": "sockets",
    "ws4py": "a WebSocket library",
    "zeroconf": "mDNS",
    "ifaddr": "the host's interfaces",
    "os": "file IO",
    "io": "file IO",
    "pathlib": "file IO",
    "shutil": "file IO",
    "tempfile": "file IO",
    "fcntl": "file IO",
    "time": "a clock",
    "datetime": "a clock",
    "threading": "threads",
    "asyncio": "an I/O loop",
    "subprocess": "processes",
    "signal": "processes",
}
IMPURE_CALLS = {"open": "file IO"}


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement: who imports what, where."""

    module: str  # the importing module, dotted
    line: int
    target: str  # the imported module, dotted and absolute
    toplevel: bool  # executed at import time (not inside a function)

    def where(self) -> str:
        return f"{path_of(self.module)}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def path_of(module: str) -> str:
    base = PACKAGE.parent / Path(*module.split("."))
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    return str(path.relative_to(PACKAGE.parent))


@cache
def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    is_package = path_of(module).endswith("__init__.py")
    base = package if is_package else package[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _function_lines(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    """Every import in ``module``; ``from pkg import sub`` counts as importing ``pkg.sub``."""
    tree = modules()[module]
    inside = _function_lines(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules()]
            targets = submodules if len(submodules) == len(node.names) else [base, *submodules]
        else:
            continue
        for target in targets:
            found.append(Import(module, node.lineno, target, node.lineno not in inside))
    return tuple(found)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def runtime_imports(module: str) -> list[Import]:
    """Imports that run: those under ``if TYPE_CHECKING:`` are for the type checker only."""
    skip = _type_checking_lines(modules()[module])
    return [i for i in imports_of(module) if i.line not in skip]


def reach(start: str) -> dict[str, list[Import]]:
    """Every xio module ``start`` loads, each with the chain of imports that leads to it."""
    chains: dict[str, list[Import]] = {start: []}
    todo = deque([start])  # breadth first: each chain is a shortest one
    while todo:
        here = todo.popleft()
        for imp in runtime_imports(here):
            if imp.target in modules() and imp.target not in chains:
                chains[imp.target] = [*chains[here], imp]
                todo.append(imp.target)
    return chains


def explain(chain: list[Import], last: Import | None = None) -> str:
    steps = [*chain, last] if last else chain
    return " -> ".join(step.where() for step in steps)


def offending(starts: list[str], is_bad) -> list[str]:
    """Each import that ``is_bad`` reached from ``starts``, once, with its shortest chain."""
    found: dict[Import, list[Import]] = {}
    for start in starts:
        for loaded, chain in reach(start).items():
            for imp in runtime_imports(loaded):
                if is_bad(imp) and len(chain) < len(found.get(imp, [None] * 99)):
                    found[imp] = chain
    return sorted(explain(chain, imp) for imp, chain in found.items())


def test_the_pure_core_imports_no_io_library_file_io_or_clock():
    missing = [f"{path_of(core)} is missing" for core in PURE_CORE if core not in modules()]
    present = [core for core in PURE_CORE if core in modules()]
    offences = offending(present, lambda imp: imp.target.split(".")[0] in IMPURE)
    for module in {loaded for core in present for loaded in reach(core)}:
        for call in ast.walk(modules()[module]):
            name = getattr(getattr(call, "func", None), "id", None)
            if isinstance(call, ast.Call) and name in IMPURE_CALLS:
                offences.append(f"{path_of(module)}:{call.lineno} calls {name}()")
    problems = missing + offences
    assert not problems, "the pure core must not reach I/O or clocks:\n" + "\n".join(problems)


def test_the_node_never_imports_the_app_framework():
    framework = {"xio", "xio.app", "xio.appmain"}  # the package __init__ imports xio.app
    daemon = [m for m in modules() if m == "xio.node" or m.startswith("xio.node.")]
    offences = offending(daemon, lambda imp: imp.target in framework)
    assert not offences, "xio/node must be handed the app, not import it:\n" + "\n".join(offences)


def test_the_version_comes_from_a_leaf_module():
    leaf = "xio.version"
    assert leaf in modules(), "xio/version.py defines __version__"
    assert not [i for i in imports_of(leaf) if i.target.startswith("xio")], (
        "xio/version.py imports nothing of xio"
    )
    offences = []
    for module, tree in modules().items():
        if module in (leaf, "xio"):
            continue
        uses = "__version__" in ast.unparse(tree)
        from_leaf = any(i.target == leaf for i in imports_of(module)) or any(
            isinstance(n, ast.ImportFrom) and _absolute(module, n) == leaf for n in ast.walk(tree)
        )
        if uses and not from_leaf:
            offences.append(f"{path_of(module)} reads __version__ without importing it from {leaf}")
    assert not offences, "\n".join(offences)


def test_error_response_lives_below_server_and_resource():
    homes = [
        module
        for module, tree in modules().items()
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == "error_response"
    ]
    assert len(homes) == 1, f"error_response is defined once, not in {homes}"
    (home,) = homes
    for above in ("xio.server", "xio.resource"):
        assert home != above, f"error_response is defined in {path_of(above)}, not below it"
        chain = reach(home).get(above)
        assert chain is None, f"{path_of(home)} reaches {path_of(above)}: {explain(chain)}"


def test_no_import_circle_at_import_time():
    graph = {
        module: {i.target for i in runtime_imports(module) if i.toplevel and i.target in modules()}
        for module in modules()
    }
    # The package __init__ re-exports everything by design; circles through it are how Python
    # loads a package, not a layering problem.
    graph = {m: {t for t in ts if t != "xio"} for m, ts in graph.items() if m != "xio"}
    circles = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)
