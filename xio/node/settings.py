"""The settings of ``xio-node`` in four layers: defaults < config file < ``XIO_*`` < flags.

Theory of operation. Every setting is an option of the command line, and nothing else: the
keys of the config file and the environment variables are derived from the parser's actions
(``settings_of``), so an option added to the parser has its key at once, with no code here.

* The key of an option is its ``dest``: ``--max-body`` is ``max_body`` in the file and
  ``XIO_MAX_BODY`` in the environment. An option with no argument (``--demo``, the
  ``--mdns``/``--no-mdns`` pair) takes a boolean; a repeatable or many-valued one
  (``--peers``, ``--app``) an array; any other one value.
* A value from the file or the environment is turned into text and handed to the very
  function that parses the option (``cli._size``, ``_seconds``, ``_peer``...), and checked
  against its choices: the file can hold nothing the command line would refuse.
* Relative paths in the file (options whose metavar is FILE or DIR, or whose type is
  ``Path``, and ``--app`` files) are relative to the file's folder, as nginx and consul do;
  in the environment and on the command line, to the working directory.
* The file is TOML: ``--config FILE``, else ``$XIO_CONFIG``, else ``/etc/xio/node.toml``
  when it exists. ``--config none`` or an empty ``XIO_CONFIG=`` reads none.
* A flag given on the command line wins over everything (a list given as a flag replaces
  the file's list: it does not add to it); which flags were given is found by parsing the
  command line a second time with every default suppressed.
* ``resolve`` returns the argparse namespace, filled in as if every value had been a flag,
  and where each value came from (``default``, ``file PATH:LINE``, ``env XIO_X``,
  ``flag``), which ``xio-node check-config`` prints.

An unknown key or a bad value in the file is a ``ConfigError`` naming the file, the line
and the key; tomllib gives no line numbers, so ``line_of`` finds the key's line in the text
(good for the flat keys this file has). An unknown ``XIO_*`` variable is only a warning: the
environment is shared with other programs.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "Resolved",
    "Setting",
    "add_arguments",
    "check_report",
    "example_file",
    "read_config_file",
    "read_environment",
    "resolve",
    "settings_of",
]

DEFAULT_CONFIG_FILE = Path("/etc/xio/node.toml")
CONFIG_VARIABLE = "XIO_CONFIG"
ENV_PREFIX = "XIO_"
#: Options that are not settings: they act on the command itself.
NOT_SETTINGS = frozenset({"help", "version", "config", "json", "example"})
#: ``XIO_*`` variables used by other parts of xio and its tests: not a typo of a setting.
OTHER_VARIABLES = frozenset({CONFIG_VARIABLE, "XIO_TEST_NODE", "XIO_ATTACK_TODAY",
                             "XIO_FUZZ_EXAMPLES"})  # fmt: skip
_PATH_METAVARS = frozenset({"FILE", "DIR", "PATH", "FOLDER"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class Setting:
    """One option of the command line, as a key of the file and a variable."""

    key: str  # the option's dest
    flag: str  # its first long option string, for messages
    kind: str  # "bool", "list" or "value"
    parse: Callable[[str], object] | None  # the option's type; None: the text itself
    choices: tuple | None
    is_path: bool
    help: str

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.key.upper()


@dataclass
class Resolved:
    """Where every setting's value came from, and which file was read."""

    sources: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    warnings: list[str] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser, *, check: bool = False) -> None:
    """Add ``--config`` (and, for ``check-config``, ``--json`` and ``--example``)."""
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings, one key per "
                        f"option (default {DEFAULT_CONFIG_FILE} if it exists, or "
                        f"${CONFIG_VARIABLE}; 'none': no file)")  # fmt: skip
    if check:
        parser.add_argument("--json", action="store_true", help="print the settings as JSON")
        parser.add_argument("--example", action="store_true",
                            help="print a config file with every key, commented out")  # fmt: skip


def settings_of(parser: argparse.ArgumentParser) -> dict[str, Setting]:
    """Return the settings of ``parser``, by key, in the order of its options."""
    found: dict[str, Setting] = {}
    for action in parser._actions:
        key = action.dest
        if not action.option_strings or key in NOT_SETTINGS or key in found:
            continue  # positionals, --help, the second of --mdns/--no-mdns
        if action.nargs == 0:
            kind = "bool"
        elif isinstance(action, argparse._AppendAction | argparse._ExtendAction) or (
            action.nargs in ("+", "*") or isinstance(action.nargs, int)
        ):
            kind = "list"
        else:
            kind = "value"
        longs = [option for option in action.option_strings if option.startswith("--")]
        is_path = action.type is Path or action.metavar in _PATH_METAVARS or key == "app"
        found[key] = Setting(
            key, (longs or action.option_strings)[0], kind, action.type,
            tuple(action.choices) if action.choices else None, is_path,
            " ".join((action.help or "").split()),
        )  # fmt: skip
    return found


# -- the file ------------------------------------------------------------------------------


def config_file(given: str | None, environ: Mapping[str, str]) -> Path | None:
    """Return the config file to read: ``--config``, ``$XIO_CONFIG``, or the default."""
    if given is not None:
        return None if given.lower() == "none" or not given else Path(given)
    if CONFIG_VARIABLE in environ:
        value = environ[CONFIG_VARIABLE]
        return None if value.lower() in ("", "none") else Path(value)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def read_config_file(path: Path, settings: Mapping[str, Setting]) -> dict[str, tuple[object, int]]:
    """Return ``{key: (value, line)}`` from the TOML file ``path``, every value checked."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"--config {path}: {reason}") from exc
    return parse_config_text(text, path, settings)


def parse_config_text(
    text: str, path: Path, settings: Mapping[str, Setting]
) -> dict[str, tuple[object, int]]:
    """Return ``{key: (value, line)}`` from TOML ``text`` read from ``path``."""
    tomllib = _tomllib()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message says the line and column
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    values: dict[str, tuple[object, int]] = {}
    for key, raw in data.items():
        line = line_of(text, key)
        where = f"{path}:{line}: {key}"
        setting = settings.get(key)
        if setting is None:
            close = difflib.get_close_matches(key.replace("-", "_"), list(settings), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key{hint}; the keys are the options' names "
                              "with _ for - (xio-node check-config --example lists them)")  # fmt: skip
        try:
            values[key] = (_from_toml(setting, raw, path.parent), line)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return values


def line_of(text: str, key: str) -> int:
    """Return the line (from 1) where ``key`` is set in TOML ``text``; 0 if not found."""
    quoted = re.escape(key)
    pattern = re.compile(rf"""^\s*(?:{quoted}|"{quoted}"|'{quoted}')\s*[=.]""", re.MULTILINE)
    match = pattern.search(text)
    if match is None:
        match = re.compile(rf"^\s*\[\s*{quoted}\s*\]", re.MULTILINE).search(text)  # a table
    return text.count("\n", 0, match.start()) + 1 if match else 0


def _from_toml(setting: Setting, raw: object, folder: Path) -> object:
    if setting.kind == "bool":
        if not isinstance(raw, bool):
            raise ValueError(f"expected true or false, not {_toml_repr(raw)}")
        return raw
    if setting.kind == "list":
        items = raw if isinstance(raw, list) else [raw]
        return [_parse(setting, _toml_text(item), folder) for item in items]
    if isinstance(raw, list):
        raise ValueError(f"expected one value, not an array ({setting.flag} is given once)")
    return _parse(setting, _toml_text(raw), folder)


def _toml_text(raw: object) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError(f"expected a string or a number, not {_toml_repr(raw)}")
    return raw if isinstance(raw, str) else repr(raw)


def _toml_repr(raw: object) -> str:
    kinds = {bool: "a boolean", list: "an array", dict: "a table"}
    return kinds.get(type(raw), f"{type(raw).__name__} {raw!r}")


# -- the environment -----------------------------------------------------------------------


def read_environment(
    environ: Mapping[str, str], settings: Mapping[str, Setting]
) -> tuple[dict[str, object], list[str]]:
    """Return ``({key: value}, warnings)`` from the ``XIO_*`` variables of ``environ``.

    An empty variable counts as unset. A list is split on whitespace and commas; a comma
    piece without ``=`` after one with it continues it (``XIO_PIN_APP="shop=ID1,ID2"``).
    """
    by_variable = {setting.variable: setting for setting in settings.values()}
    values: dict[str, object] = {}
    warnings: list[str] = []
    for variable, text in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX) or variable in OTHER_VARIABLES:
            continue
        setting = by_variable.get(variable)
        if setting is None:
            close = difflib.get_close_matches(variable, list(by_variable), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"environment {variable}: not a setting of xio-node, ignored{hint}")
            continue
        if not text.strip():
            continue
        try:
            values[setting.key] = _from_environment(setting, text)
        except ValueError as exc:
            raise ConfigError(f"environment {variable}: {exc}") from exc
    return values, warnings


def _from_environment(setting: Setting, text: str) -> object:
    if setting.kind == "bool":
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValueError(f"expected true or false, not {text!r}")
        return word in _TRUE
    if setting.kind == "list":
        return [_parse(setting, item, None) for item in split_list(text)]
    return _parse(setting, text, None)


def split_list(text: str) -> list[str]:
    """Split a list variable on whitespace and commas (``APP=A,B`` stays one item)."""
    items: list[str] = []
    for word in text.split():
        pieces = [piece for piece in word.split(",") if piece]
        for piece in pieces:
            if items and "=" not in piece and "=" in pieces[0] and piece is not pieces[0]:
                items[-1] += "," + piece
            else:
                items.append(piece)
    return items


# -- one value, as the option's own parser takes it ------------------------------------------


def _parse(setting: Setting, text: str, folder: Path | None) -> object:
    if folder is not None and setting.is_path:
        text = _relative_to(text, folder, setting.key == "app")
    parse = setting.parse or str
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"{text!r}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        name = getattr(parse, "__name__", "")
        raise ValueError(f"invalid {name} value: {text!r}" if name else str(exc)) from exc
    if setting.choices is not None and value not in setting.choices:
        choices = ", ".join(map(str, setting.choices))
        raise ValueError(f"{text!r} is not one of {choices}")
    return value


def _relative_to(text: str, folder: Path, app_spec: bool) -> str:
    path = Path(text).expanduser()
    if path.is_absolute():
        return str(path)
    # An app spec may be module:attribute, which is no path: taken as given unless a file.
    if app_spec and ":" in text and not (folder / path).exists():
        return text
    return str(folder / path)


# -- the four layers -----------------------------------------------------------------------


def given_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Return the dests of the options given in ``argv`` (parsed again, defaults suppressed)."""
    saved = [(action, action.default) for action in parser._actions]
    saved_defaults = dict(parser._defaults)
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        parser._defaults.clear()
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default
        parser._defaults.update(saved_defaults)


def resolve(
    parser: argparse.ArgumentParser, argv: list[str], environ: Mapping[str, str]
) -> tuple[argparse.Namespace, Resolved]:
    """Parse ``argv`` and fill in what it does not say from the environment and the file.

    Returns the namespace ``parser.parse_args`` would, and where each value came from.
    A bad command line exits 2 (argparse); a bad file or variable raises ``ConfigError``.
    """
    args = parser.parse_args(argv)
    settings = settings_of(parser)
    given = given_flags(parser, argv)
    path = config_file(getattr(args, "config", None), environ)
    in_file = read_config_file(path, settings) if path is not None else {}
    in_env, warnings = read_environment(environ, settings)
    resolved = Resolved(file=path, warnings=warnings)
    for key in settings:
        if key in given:
            resolved.sources[key] = "flag"
        elif key in in_env:
            setattr(args, key, in_env[key])
            resolved.sources[key] = f"env {settings[key].variable}"
        elif key in in_file:
            value, line = in_file[key]
            setattr(args, key, value)
            resolved.sources[key] = f"file {path}:{line}"
        else:
            resolved.sources[key] = "default"
    return args, resolved


# -- check-config --------------------------------------------------------------------------


def check_report(args: argparse.Namespace, resolved: Resolved, *, as_json: bool = False) -> str:
    """Return what ``xio-node check-config`` prints: every key, its value, its source."""
    if as_json:
        body = {key: {"value": _plain(getattr(args, key, None)), "source": source}
                for key, source in resolved.sources.items()}  # fmt: skip
        return json.dumps({"file": str(resolved.file) if resolved.file else None,
                           "settings": body}, indent=2)  # fmt: skip
    lines = [f"# config file: {resolved.file or 'none'}"]
    width = max(map(len, resolved.sources), default=0)
    for key, source in resolved.sources.items():
        shown = f"{key:<{width}} = {json.dumps(_plain(getattr(args, key, None)))}"
        lines.append(f"{shown:<60} # {source}")
    return "\n".join(lines)


def _plain(value: object) -> object:
    """Return ``value`` as JSON can show it (paths as text, pins as APP=ID,ID)."""
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and (isinstance(value[1], frozenset | int | float) and not isinstance(value[1], bool))
    ):
        second = value[1]
        return f"{value[0]}={','.join(sorted(second)) if isinstance(second, frozenset) else second}"
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def example_file(parser: argparse.ArgumentParser) -> str:
    """Return a config file setting every key to its default, commented out."""
    out = []
    for setting in settings_of(parser).values():
        default = parser.get_default(setting.key)
        out.extend(textwrap.wrap(f"{setting.flag}: {setting.help}", 96,
                                 initial_indent="# ", subsequent_indent="#   "))  # fmt: skip
        shown = _plain(default)
        if setting.kind == "bool":
            shown = bool(default)
        elif shown is None or shown == []:
            shown = [] if setting.kind == "list" else ""
        out.append(f"# {setting.key} = {json.dumps(shown)}\n")
    return "\n".join(out)


def _tomllib():
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser, as a package
        try:
            import tomli as tomllib
        except ImportError as exc:
            raise ConfigError("a config file needs Python 3.11, or the tomli package") from exc
    return tomllib
