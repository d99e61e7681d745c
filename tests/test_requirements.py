"""setup.cfg names every third-party package xio imports, each with bounds."""

from __future__ import annotations

import ast
import configparser
import re
import sys

from .conftest import ROOT


def install_requires() -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in config["options"]["install_requires"].splitlines()]
    found = {}
    for line in lines:
        if line and not line.startswith("#"):
            name = re.match(r"[A-Za-z0-9_.-]+", line)[0].lower()
            found[name] = line
    return found


def imported_top_level_modules() -> dict[str, str]:
    modules = {}
    for path in sorted((ROOT / "xio").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                modules.setdefault(name.partition(".")[0], str(path.relative_to(ROOT)))
    return modules


def test_every_third_party_module_xio_imports_is_an_install_requirement():
    required = install_requires()
    missing = {
        module: where
        for module, where in imported_top_level_modules().items()
        if module != "xio"
        and module not in sys.stdlib_module_names
        and module.lower() not in required  # each import name is its distribution's here
    }
    assert missing == {}, f"imported but not in setup.cfg install_requires: {missing}"


def test_every_requirement_has_bounds():
    for name, line in install_requires().items():
        assert ">=" in line and "<" in line.replace("<=", ""), f"{name}: {line!r} needs bounds"
