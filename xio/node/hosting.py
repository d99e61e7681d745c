"""Load the apps a node hosts from ``--app`` specs.

A spec is a path to a Python file (``./inventory/app.py``), a folder holding an
``app.py`` (``./inventory``), or ``module:attribute`` (``shop.api:app``). A file is
run as a module named after it (after its folder, for ``app.py``), with its folder
on ``sys.path`` so it can import its neighbours, as ``python app.py`` would allow.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from ..errors import ConfigError
from ..peering.names import APP_NAME_RULE, is_app_name
from ..resource import Resource

_PACKAGE = "__xio_apps__"


def check_app_name(name: str) -> str:
    """Return ``name`` if it can be an app's name (one path segment), else raise."""
    if not is_app_name(name):
        raise ConfigError(f"app name {name!r} is not usable: {APP_NAME_RULE}")
    return name


def app_name_of(resource: Resource, default: str) -> str:
    """Return the name an app is hosted under."""
    return getattr(resource, "app_name", None) or default


def load_app(spec: str) -> tuple[str, Resource]:
    """Load the app named by ``spec`` and return ``(name, app)``."""
    path = Path(spec)
    if path.is_dir():
        path = path / "app.py"
        if not path.is_file():
            raise ConfigError(f"--app {spec}: the folder holds no app.py")
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise ConfigError(f"--app {spec}: no such file")
        return _load_file(path.resolve(), spec)
    if ":" in spec:
        return _load_attribute(spec)
    raise ConfigError(f"--app {spec}: not a file, a folder or module:attribute")


def _load_file(path: Path, spec: str) -> tuple[str, Resource]:
    stem = path.parent.name if path.stem in ("app", "main", "__init__") else path.stem
    module_name = f"{_PACKAGE}.{stem}"
    if module_name in sys.modules:
        raise ConfigError(f"--app {spec}: an app named {stem!r} is loaded already")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"--app {spec}: cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ConfigError(f"--app {spec}: {type(exc).__name__}: {exc}") from exc
    app = _find_app(module, spec)
    return check_app_name(app_name_of(app, stem)), app


def _load_attribute(spec: str) -> tuple[str, Resource]:
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"--app {spec}: {type(exc).__name__}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, Resource):
        raise ConfigError(f"--app {spec}: {attribute!r} is not an xio app")
    return check_app_name(app_name_of(app, attribute)), app


def _find_app(module, spec: str) -> Resource:
    candidate = getattr(module, "app", None)
    if isinstance(candidate, Resource):
        return candidate
    found = [value for value in vars(module).values() if isinstance(value, Resource)]
    if len(found) != 1:
        raise ConfigError(
            f"--app {spec}: expected one xio app in the module (an 'app' variable), "
            f"found {len(found)}"
        )
    return found[0]
