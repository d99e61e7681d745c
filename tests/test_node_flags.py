"""The command line as a new user meets it: every mistake is one line at start, exit status 2.

Each test runs a real ``xio-node`` (or ``python app.py``) process to its end (issue 8, 13).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

import xio

from .certs import self_signed
from .conftest import NODE, ROOT, wait_until

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
HELLO = str(ROOT / "examples/hello/app.py")


def run(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=timeout)


def test_version_is_printed():
    for command in (NODE, [sys.executable, HELLO]):
        done = run([*command, "--version"])
        assert (done.returncode, done.stdout) == (0, f"xio {xio.__version__}\n")


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--port", "70000"], "argument --port: '70000' is not a port (0 to 65535)"),
        (["--port", "-1"], "argument --port: '-1' is not a port (0 to 65535)"),
        (["--log-level", "verbose"], "argument --log-level: invalid choice: 'verbose'"),
        (["--link-timeout", "0"], "argument --link-timeout: invalid seconds value: '0'"),
        (["--request-timeout", "-5"], "argument --request-timeout: invalid seconds value: '-5'"),
        (["--max-body", "-1"], "argument --max-body: invalid size value: '-1'"),
        (["--write-timeout", "-1"], "argument --write-timeout: invalid seconds value: '-1'"),
        (["--max-in-flight", "0"], "argument --max-in-flight: invalid count value: '0'"),
        (["--peers", "127.0.0.1:notaport"], "'notaport' is not a port (1 to 65535)"),
    ],
)
def test_bad_values_are_one_line_at_start(flags, says):
    # Before: a traceback (--port 70000, --link-timeout 0), a node that logged at "verbose" as
    # info, or one that dialled h:notaport forever (this run then times out).
    done = run([*NODE, "--no-mdns", "--host", "127.0.0.1", "--port", "0", *flags])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr  # not the 20 lines of usage
    assert done.stderr.startswith("xio-node: error: ")
    assert says in done.stderr


def test_a_busy_port_is_the_same_one_line_for_xio_node_and_app_py():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        node = run([*NODE, "--no-mdns", "--host", "127.0.0.1", "--port", port])
        app = run([sys.executable, HELLO, "--host", "127.0.0.1", "--port", port])
    reason = f"cannot serve on 127.0.0.1:{port}: Address already in use\n"
    assert (node.returncode, node.stderr) == (1, f"xio-node: {reason}")
    assert (app.returncode, app.stderr) == (1, f"hello: {reason}")  # was a traceback, status 0


def test_tls_file_errors_name_the_option_and_the_file(tmp_path):
    cert, key = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other_cert, _ = self_signed(tmp_path / "other")
    missing = tmp_path / "missing.pem"

    def start(cert_file, key_file):
        done = run([*NODE, "--no-mdns", "--host", "127.0.0.1", "--port", "0",
                    "--tls-cert", str(cert_file), "--tls-key", str(key_file)])  # fmt: skip
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        return done.stderr

    assert start(missing, key) == f"xio-node: --tls-cert {missing}: No such file or directory\n"
    assert start(cert, missing) == f"xio-node: --tls-key {missing}: No such file or directory\n"
    assert start(key, key) == f"xio-node: --tls-cert {key}: no PEM certificate in it\n"
    assert start(cert, cert) == f"xio-node: --tls-key {cert}: no PEM private key in it\n"
    assert start(other_cert, key).startswith(
        f"xio-node: --tls-key {key} does not go with --tls-cert {other_cert}: "
    )
    app = run([sys.executable, HELLO, "--port", "0", "--tls-cert", str(missing),
               "--tls-key", str(key)])  # fmt: skip
    assert app.returncode == 2
    assert app.stderr.endswith(
        f"--tls-cert {missing}: No such file or directory (see hello --help)\n"
    )


def test_the_start_line_is_printed_once(start_node):
    node = start_node("once")
    assert node.output().count("listening on") == 1


def test_an_open_mesh_says_at_start_that_anyone_can_join(start_node):
    # Open mode is the zero-configuration default: the operator must hear what it means.
    output = start_node("open").output()
    assert "WARNING: open mesh" in output and "claim any app" in output


def test_the_start_line_says_what_a_wildcard_address_is_bound_to():
    from xio.node.cli import listening

    server = SimpleNamespace(address=("0.0.0.0", 7700))
    node = SimpleNamespace(name="n", id="i", url="http://127.0.0.1:7700", server=server)
    assert listening(node) == (
        "node n (i) listening on http://127.0.0.1:7700 "
        "(bound to 0.0.0.0:7700: every address of this machine)"
    )
    node.server = SimpleNamespace(address=("127.0.0.1", 7700))
    assert listening(node) == "node n (i) listening on http://127.0.0.1:7700"


def test_a_node_given_its_own_address_dials_it_once(spawn):
    with socket.socket() as probe:  # a free port, so that --peers can name it before start
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = spawn([*NODE, "--no-mdns", "--host", "127.0.0.1", "--port", str(port),
                  "--peers", f"127.0.0.1:{port}"], "self")  # fmt: skip
    client = xio.client(node.url)

    def dialling():
        return client.get("/_xio/node").content["dialling"][0]

    wait_until(lambda: dialling()["last_error"] == "self_link", what="the self_link refusal")
    time.sleep(2.0)  # the retries came after 0.1-0.3 s, 0.25-0.75 s, 0.5-1.5 s
    assert dialling()["attempts"] == 1
    assert "it is this node itself" in node.output()


def test_the_client_takes_host_port_like_peers(start_node):
    node = start_node("c")
    host_port = node.url.removeprefix("http://")
    assert xio.client(host_port).get("/_xio/node").content["name"] == "c"


def test_help_lists_the_subcommands_and_the_mdns_default():
    done = run([*NODE, "--help"])
    assert done.returncode == 0
    assert "xio-node id [--name N | --state-dir DIR] [--create]" in done.stdout
    assert "xio-node doctor" in done.stdout
    words = " ".join(done.stdout.split())  # as wrapped to the terminal's width
    assert "links to the nodes it finds on the LAN (mDNS) unless given --no-mdns" in words
    app = run([sys.executable, HELLO, "--help"])
    assert "announce and discover nodes on the LAN (off by default)" in " ".join(app.stdout.split())
