"""Links over ``wss://`` to nodes whose certificate a private CA signed (``--peer-ca``).

Real ``xio-node`` processes on loopback: node B serves HTTPS and WSS with a certificate of a
test CA, node A dials it trusting that CA, or not (issue 10, point 8).
"""

from __future__ import annotations

import os
import ssl
import subprocess

import pytest

import xio
from xio.errors import ConfigError
from xio.peering.dial import peer_tls_context

from .certs import private_ca
from .conftest import NODE, ROOT, wait_until
from .mesh import wait_for, ws_url

INVENTORY = str(ROOT / "tests/apps/inventory")


@pytest.fixture
def no_system_override(monkeypatch):
    """Start children with the system's trust as it is: no SSL_CERT_FILE that trusts our CA."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture
def node_b(start_node, tmp_path, no_system_override):
    """Node B, hosting inventory over HTTPS and WSS with a certificate the test CA signed."""
    files = private_ca(tmp_path / "pki")
    b = start_node("b", "--tls-cert", str(files.cert), "--tls-key", str(files.key),
                   "--app", INVENTORY)  # fmt: skip
    assert b.url.startswith("https://127.0.0.1:")
    return b, files


def wss(process) -> str:
    return process.url.replace("https://", "wss://")


def status(process) -> dict:
    return xio.client(process.url, timeout=2).get("/_xio/node").content


def peers(process) -> list[dict]:
    return xio.client(process.url, timeout=2).get("/_xio/peers").content


def test_a_node_trusting_the_private_ca_links_over_wss_and_forwards(node_b, start_node):
    b, files = node_b
    a = start_node("a", "--peers", wss(b), "--peer-ca", str(files.ca))
    wait_until(lambda: any(p["name"] == "b" and p["state"] == "established" for p in peers(a)),
               what="a's link to b over wss")  # fmt: skip
    (link,) = peers(a)
    assert link["url"] == f"{wss(b)}/_xio/ws" and link["direction"] == "out"
    wait_until(lambda: "inventory" in xio.client(a.url).get("/_xio/apps").content,
               what="a to learn of inventory on b")  # fmt: skip
    response = xio.client(a.url).get("/inventory/items/42")
    assert response.status == 200
    assert response.content["served_by"] == "b"


def test_without_the_ca_the_dial_fails_with_the_reason_and_is_retried(node_b, start_node):
    b, _ = node_b
    a = start_node("a", "--peers", wss(b))
    dialling = wait_until(lambda: [d for d in status(a)["dialling"] if d["failures"] >= 2],
                          what="two failed dials of b")  # fmt: skip
    (dialer,) = dialling
    assert dialer["last_error"] == (  # B's CA is in no store a trusts
        f"{wss(b)}/_xio/ws: certificate verify failed: unable to get local issuer certificate"
    )
    assert dialer["attempts"] == dialer["failures"]  # backing off and trying again, no link
    assert a.proc.poll() is None and peers(a) == []
    warned = f"WARNING xio.links link to {wss(b)}/_xio/ws down ({dialer['last_error']})"
    assert warned in a.output()  # the log says why too, above the info level


def test_the_certificate_must_name_the_host_dialled(in_process_mesh, tmp_path):
    files = private_ca(tmp_path / "pki", names=("localhost",))  # not 127.0.0.1
    b = in_process_mesh.start("b", tls_cert=str(files.cert), tls_key=str(files.key))
    a = in_process_mesh.start("a", peers=[ws_url(b)], peer_ca=str(files.ca))
    wait_for(lambda: a.dialers[0].failures >= 1, "a failed dial of b")
    assert "certificate verify failed: IP address mismatch" in a.dialers[0].last_error
    assert not a.links


def test_the_peer_context_trusts_the_ca_only_checks_names_and_wants_tls_1_2(tmp_path):
    files = private_ca(tmp_path)
    context = peer_tls_context(str(files.ca))
    assert [ca["subject"] for ca in context.get_ca_certs()] == [
        ((("commonName", "xio test mesh CA"),),)
    ]  # the system's authorities are not trusted as well
    assert context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    with pytest.raises(ConfigError, match="no PEM certificate"):
        peer_tls_context(str(files.key))  # xio.node(peer_ca=...) is refused at start as well


def run_node(*flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*NODE, "--no-mdns", "--host", "127.0.0.1", "--port", "0", *flags],
                          capture_output=True, text=True, env=env, timeout=30)  # fmt: skip


def test_a_ca_file_that_cannot_be_used_is_exit_status_2_naming_it(tmp_path):
    files = private_ca(tmp_path)
    missing, garbled = tmp_path / "missing.pem", tmp_path / "garbled.pem"
    garbled.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    expected = {
        files.key: f"xio-node: --peer-ca {files.key}: no PEM certificate in it\n",
        missing: f"xio-node: --peer-ca {missing}: No such file or directory\n",
        garbled: f"xio-node: --peer-ca {garbled}: not a usable CA certificate: ",
    }
    for path, says in expected.items():
        done = run_node("--peer-ca", str(path))
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(says), done.stderr
