"""The config file and XIO_* variables of xio-node, and ``xio-node check-config``."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from xio.errors import ConfigError
from xio.node import cli, settings

from .conftest import NODE, ROOT

ENV = {key: value for key, value in os.environ.items() if not key.startswith("XIO_")}
ENV["PYTHONPATH"] = str(ROOT)


def node_parser(*extra: str) -> argparse.ArgumentParser:
    """The options of xio-node that matter here, plus ``extra`` seconds-valued flags."""
    parser = cli.ArgumentParser(prog="xio-node")
    cli.node_arguments(parser)
    parser.add_argument("--app", action="append", default=[], metavar="SPEC")
    parser.add_argument("--threads", action="append", default=[], type=cli._threads_option)
    parser.add_argument("--demo", action="store_true")
    for flag in extra:  # as another part of xio would add one
        parser.add_argument(flag, type=cli._seconds, default=1.0)
    settings.add_arguments(parser)
    return parser


def resolve(tmp_path: Path, text: str, argv=(), environ=None, *extra: str):
    path = tmp_path / "node.toml"
    path.write_text(text)
    return settings.resolve(node_parser(*extra), ["--config", str(path), *argv], environ or {})


def test_defaults_then_file_then_environment_then_flags(tmp_path):
    args, resolved = resolve(
        tmp_path,
        'max_body = "2MiB"\nrequest_timeout = 5\npeers = ["ws://a:1"]\nmdns = true\n',
        ["--peers", "ws://d:4"],
        {"XIO_REQUEST_TIMEOUT": "7.5", "XIO_PEERS": "ws://b:2, ws://c:3", "XIO_MDNS": "off"},
    )
    assert args.max_body == 2 * 2**20
    assert resolved.sources["max_body"] == f"file {tmp_path / 'node.toml'}:1"
    assert (
        args.request_timeout == 7.5
        and resolved.sources["request_timeout"] == "env XIO_REQUEST_TIMEOUT"
    )
    assert args.mdns is False and resolved.sources["mdns"] == "env XIO_MDNS"
    assert args.peers == ["ws://d:4"] and resolved.sources["peers"] == "flag"  # replaced, not added
    assert args.port == cli.DEFAULTS.port and resolved.sources["port"] == "default"


def test_environment_lists_split_on_spaces_and_commas(tmp_path):
    node_a, node_b = "a" * 32, "b" * 32
    args, _ = resolve(
        tmp_path,
        "",
        (),
        {
            "XIO_PEERS": "ws://b:2,ws://c:3  h:4",
            "XIO_PIN_APP": f"shop={node_a},{node_b} other={node_a}",
        },
    )
    assert args.peers == ["ws://b:2", "ws://c:3", "h:4"]
    assert cli._pins(args.pin_app) == {"shop": frozenset({node_a, node_b}),
                                       "other": frozenset({node_a})}  # fmt: skip


def test_every_option_has_a_key_even_one_added_elsewhere(tmp_path):
    keys = set(settings.settings_of(node_parser("--future-timeout")))
    assert {attribute for _, attribute, _, _ in cli.LIMITS} <= keys
    assert {"max_body", "request_timeout", "peers", "app", "mesh_pub", "mdns", "log_level",
            "drain_timeout", "log_format", "access_log", "future_timeout"} <= keys  # fmt: skip
    args, resolved = resolve(tmp_path, "future_timeout = 9\n", (), {}, "--future-timeout")
    assert args.future_timeout == 9.0 and resolved.sources["future_timeout"].endswith(":1")


BAD = [
    ("max_bodyy = 10\n", "max_bodyy", "unknown key (did you mean 'max_body'?)"),
    ('max_body = "12x"\n', "max_body", "invalid size value: '12x'"),
    ("max_body = true\n", "max_body", "expected a string or a number, not a boolean"),
    ("port = 70000\n", "port", "is not a port"),
    ("port = [1, 2]\n", "port", "expected one value"),
    ('peers = ["ftp://x"]\n', "peers", "expected ws://host:port"),
    ("request_timeout = -1\n", "request_timeout", "invalid seconds value"),
    ('log_level = "loud"\n', "log_level", "is not one of debug, info, warning, error"),
    ('mdns = "yes"\n', "mdns", "expected true or false"),
    ('pin_app = ["shop"]\n', "pin_app", "expected APP=NODE_ID"),
]


@pytest.mark.parametrize(("line", "key", "message"), BAD)
def test_a_bad_key_or_value_names_the_file_the_line_and_the_key(tmp_path, line, key, message):
    text = '# a comment\n\nhost = "127.0.0.1"\n' + line
    with pytest.raises(ConfigError) as caught:
        resolve(tmp_path, text)
    assert str(caught.value).startswith(f"{tmp_path / 'node.toml'}:4: {key}: ")
    assert message in str(caught.value)


def test_toml_syntax_errors_say_the_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match=r"node.toml: not valid TOML: .*line 2"):
        resolve(tmp_path, 'host = "x"\nport = \n')


def test_a_bad_variable_is_an_error_an_unknown_one_a_warning(tmp_path):
    with pytest.raises(ConfigError, match="environment XIO_MAX_BODY: invalid size value"):
        resolve(tmp_path, "", (), {"XIO_MAX_BODY": "lots"})
    _, resolved = resolve(tmp_path, "", (), {"XIO_MAX_BODDY": "1", "XIO_TEST_NODE": "n"})
    assert resolved.warnings == ["environment XIO_MAX_BODDY: not a setting of xio-node, "
                                 "ignored (did you mean XIO_MAX_BODY?)"]  # fmt: skip


def test_relative_paths_in_the_file_are_relative_to_its_folder(tmp_path):
    args, _ = resolve(tmp_path, 'state_dir = "state"\ntls_cert = "tls/c.pem"\n'
                      'app = ["apps/shop", "/srv/x.py", "pkg.mod:app"]\n')  # fmt: skip
    assert args.state_dir == tmp_path / "state"
    assert args.tls_cert == str(tmp_path / "tls/c.pem")
    assert args.app == [str(tmp_path / "apps/shop"), "/srv/x.py", "pkg.mod:app"]


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match=f"--config {missing}: No such file"):
        settings.resolve(node_parser(), ["--config", str(missing)], {})


def test_which_file_is_read():
    assert settings.config_file("none", {}) is None
    assert settings.config_file(None, {"XIO_CONFIG": ""}) is None
    assert settings.config_file(None, {"XIO_CONFIG": "/x.toml"}) == Path("/x.toml")
    assert settings.config_file("/y.toml", {"XIO_CONFIG": "/x.toml"}) == Path("/y.toml")


def check_config(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*NODE, "check-config", *args], capture_output=True, text=True,
                          env={**ENV, "XIO_CONFIG": "", **(env or {})}, timeout=60)  # fmt: skip


def test_check_config_prints_every_value_and_where_it_came_from(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('# node\nmax_body = "1MiB"\nport = 7801\n')
    done = check_config("--config", str(path), "--port", "7802", "--no-mdns",
                        env={"XIO_REQUEST_TIMEOUT": "4"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if "=" in line}
    assert re.search(r"max_body += 1048576 +# file .*node.toml:2$", lines["max_body"])
    assert lines["port"].endswith("# flag") and " 7802 " in lines["port"]
    assert lines["request_timeout"].endswith("# env XIO_REQUEST_TIMEOUT")
    assert lines["link_timeout"].endswith("# default")
    as_json = json.loads(check_config("--config", str(path), "--json").stdout)
    assert as_json["settings"]["port"] == {"value": 7801, "source": f"file {path}:3"}


def test_check_config_refuses_an_invalid_file_with_status_2(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('port = 7801\nmax_body = "big"\n')
    done = check_config("--config", str(path))
    assert done.returncode == 2 and done.stdout == ""
    assert f"{path}:2: max_body: invalid size value: 'big'" in done.stderr
    path.write_text('tls_cert = "c.pem"\n')  # each value parses, but not with the others
    done = check_config("--config", str(path))
    assert done.returncode == 2 and "--tls-cert and --tls-key go together" in done.stderr


def test_a_node_starts_with_its_config_file(tmp_path, start_node):
    import xio

    path = tmp_path / "node.toml"
    path.write_text('max_body = "1KiB"\nrequest_timeout = 3\n')
    node = start_node("c", "--config", str(path))
    assert xio.client(node.url).post("/_xio/node", b"x" * 2048).status == 413


DEPLOY = ROOT / "deploy/node.toml"


def test_the_example_file_has_every_key_and_is_valid():
    text = DEPLOY.read_text()
    keys = settings.settings_of(_real_parser())
    missing = [key for key in keys if not re.search(rf"^#? ?{key} = ", text, re.MULTILINE)]
    assert missing == [], f"keys missing from deploy/node.toml (check-config --example): {missing}"
    done = check_config("--config", str(DEPLOY), "--no-mdns")
    assert done.returncode == 0, done.stderr
    uncommented = re.sub(r"^# ([a-z_]+ = )", r"\1", text, flags=re.MULTILINE)
    parsed = settings.parse_config_text(uncommented, DEPLOY, settings.settings_of(node_parser()))
    assert set(parsed) == set(keys)  # and every example in it is a valid value


def _real_parser() -> argparse.ArgumentParser:
    """The parser xio-node builds: read from the --example it prints."""
    example = subprocess.run([*NODE, "check-config", "--example"], capture_output=True,
                             text=True, env=ENV, timeout=60, check=True).stdout  # fmt: skip
    parser = argparse.ArgumentParser()
    for key in re.findall(r"^# ([a-z_]+) = ", example, re.MULTILINE):
        parser.add_argument(f"--{key}", dest=key)
    return parser
