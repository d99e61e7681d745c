"""``xio-node mesh init/admit/revoke/show``, run as an operator runs them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from xio.node.mesh_cli import load_mesh_pub
from xio.peering import membership
from xio.peering.identity import Identity

from .conftest import ROOT

NODE = Identity.from_seed(bytes(range(32)))


def mesh(*args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "xio.nodemain", *args], capture_output=True,
                          text=True, env=env, timeout=60)  # fmt: skip
    if check is not None:
        assert done.returncode == check, done.stderr
    return done


@pytest.fixture
def authority(tmp_path):
    mesh("mesh", "init", "--dir", str(tmp_path / "auth"))
    return tmp_path / "auth"


def test_init_makes_a_private_key_and_a_public_one_and_never_overwrites(authority):
    key, pub = authority / "mesh.key", authority / "mesh.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    before = key.read_bytes()
    again = mesh("mesh", "init", "--dir", str(authority), check=2)
    assert again.stderr.startswith("xio-node mesh: ") and "exists already" in again.stderr
    assert key.read_bytes() == before
    assert Identity.from_key_bytes(before).public_key == load_mesh_pub(pub)


def test_an_admitted_node_has_a_certificate_that_verifies_under_mesh_pub(authority, tmp_path):
    out = tmp_path / "alpha.cert"
    node = mesh("id", "--state-dir", str(tmp_path / "node"), "--create", "--public-key")
    node_id = node.stdout.strip().split(":")[0]
    mesh("mesh", "admit", "--dir", str(authority), "--node", node.stdout.strip(), "--name",
         "alpha", "--apps", "shop,inventory", "--expires", "30d", "--out", str(out))  # fmt: skip
    signed = membership.read_armor(out.read_text())
    cert = membership.judge_certificate(
        signed, load_mesh_pub(authority / "mesh.pub"), signed.certificate.issued_ms,
        node_id=node_id,
    )  # fmt: skip
    assert (cert.name, cert.apps) == ("alpha", ("inventory", "shop"))
    assert cert.expires_ms - cert.issued_ms == 30 * 86_400_000
    assert len(cert.public_key) == 32
    shown = mesh("mesh", "show", str(out), "--mesh-pub", str(authority / "mesh.pub"))
    assert node_id in shown.stdout and "inventory, shop" in shown.stdout
    assert "valid under" in shown.stdout


def test_defaults_are_any_app_for_a_year_and_the_id_alone(authority, tmp_path):
    out = tmp_path / "node.cert"
    mesh("mesh", "admit", "--dir", str(authority), "--node", NODE.node_id, "--out", str(out))
    cert = membership.read_armor(out.read_text()).certificate
    assert cert.apps == ("*",) and cert.public_key == b""
    assert cert.expires_ms - cert.issued_ms == 365 * 86_400_000


def test_a_revocation_verifies_and_show_tells_another_authority(authority, tmp_path):
    out = tmp_path / "node.rev"
    mesh("mesh", "revoke", "--dir", str(authority), "--node", NODE.node_id, "--out", str(out))
    signed = membership.read_armor(out.read_text())
    key = load_mesh_pub(authority / "mesh.pub")
    assert membership.judge_revocation(signed, key, signed.revocation.issued_ms).node_id == (
        NODE.node_id
    )
    mesh("mesh", "init", "--dir", str(tmp_path / "other"))
    other = mesh("mesh", "show", str(out), "--mesh-pub", str(tmp_path / "other/mesh.pub"), check=1)
    assert "wrong_authority" in other.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--node", "not-an-id"],
        ["--node", NODE.node_id + ":" + "A" * 44],  # a key that is not this id's
        ["--node", NODE.node_id, "--expires", "1y"],
        ["--node", NODE.node_id, "--apps", "_xio"],
    ],
)
def test_bad_admissions_are_one_line_and_exit_2(authority, tmp_path, args):
    out = tmp_path / "x.cert"
    done = mesh("mesh", "admit", "--dir", str(authority), *args, "--out", str(out), check=2)
    assert done.stderr.startswith("xio-node mesh: ") and done.stderr.count("\n") == 1
    assert not out.exists()


def test_a_missing_or_readable_key_is_refused(authority, tmp_path):
    out = str(tmp_path / "x.rev")
    missing = mesh("mesh", "revoke", "--dir", str(tmp_path / "none"), "--node", NODE.node_id,
                   "--out", out, check=2)  # fmt: skip
    assert "mesh init" in missing.stderr
    (authority / "mesh.key").chmod(0o644)
    loose = mesh("mesh", "revoke", "--dir", str(authority), "--node", NODE.node_id, "--out", out,
                 check=2)  # fmt: skip
    assert "chmod 600" in loose.stderr


def test_show_refuses_a_file_that_is_not_armor(tmp_path):
    junk = tmp_path / "junk"
    junk.write_text("hello\n")
    done = mesh("mesh", "show", str(junk), check=2)
    assert done.stderr.startswith("xio-node mesh: ") and "bad_certificate" in done.stderr


def test_publish_says_why_it_could_not_and_exits_1(authority, tmp_path):
    from .mesh import unused_port

    out = tmp_path / "node.rev"
    mesh("mesh", "revoke", "--dir", str(authority), "--node", NODE.node_id, "--out", str(out))
    nobody = mesh("mesh", "publish", str(out), "--via", f"http://127.0.0.1:{unused_port()}",
                  check=1)  # fmt: skip
    assert nobody.stderr.startswith("xio-node mesh: cannot publish to http://127.0.0.1:")
    missing = mesh("mesh", "publish", str(tmp_path / "none"), "--via", "http://127.0.0.1:1",
                   check=1)  # fmt: skip
    assert "cannot read" in missing.stderr
