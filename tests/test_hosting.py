"""--app specs: a file, a folder holding app.py, module:attribute, and the mistakes."""

from __future__ import annotations

import sys
import textwrap

import pytest

import xio
from xio.errors import ConfigError
from xio.node.hosting import load_app

APP = textwrap.dedent(
    """
    import xio
    from helper import WORD  # a neighbour module: the app's folder is on sys.path

    app = xio.app(__name__)
    app.bind('www', lambda req: WORD)
    """
)


@pytest.fixture
def folder(tmp_path):
    app_dir = tmp_path / "catalog"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(APP)
    (app_dir / "helper.py").write_text("WORD = 'from the catalog'\n")
    yield app_dir
    sys.modules.pop("__xio_apps__.catalog", None)
    sys.modules.pop("helper", None)


def test_a_folder_is_named_after_itself_and_can_import_neighbours(folder):
    name, app = load_app(str(folder))
    assert name == "catalog"
    assert app.get("www").content == "from the catalog"


def test_a_file_path_works_too(folder):
    name, app = load_app(str(folder / "app.py"))
    assert name == "catalog"


def test_module_attribute(monkeypatch, tmp_path):
    (tmp_path / "shopmod.py").write_text("import xio\nstore = xio.app('store')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    name, app = load_app("shopmod:store")
    assert name == "store" and isinstance(app, xio.App)


@pytest.mark.parametrize(
    "content, message",
    [
        ("raise RuntimeError('boom')", "RuntimeError: boom"),
        ("x = 1", "expected one xio app"),
    ],
)
def test_broken_apps_are_config_errors(tmp_path, content, message):
    path = tmp_path / "broken.py"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_app(str(path))


def test_missing_things_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_app(str(tmp_path / "absent.py"))
    with pytest.raises(ConfigError, match="holds no app.py"):
        load_app(str(tmp_path))
    with pytest.raises(ConfigError, match="not an xio app"):
        load_app("os:path")
