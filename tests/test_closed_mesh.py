"""Closed mode (issue 10): real xio-node processes admitted by a mesh authority.

Every node here is started as an operator starts it: ``xio-node mesh init`` makes the
authority, ``xio-node id --public-key`` and ``xio-node mesh admit`` its certificates, and the
node runs with ``--mesh-pub`` and ``--cert``. What is checked is what an operator or a user
notices: links that come up or are refused (``/_xio/peers``, the ``membership`` counters of
``/_xio/node``), the apps the mesh offers (``/_xio/apps``) and requests answered 200. Where a
peer must misbehave it is the scripted one of tests/hostile.py, given a certificate of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from xio.node.mesh_cli import load_mesh_key
from xio.peering import membership

from .conftest import NODE, ROOT, wait_until
from .hostile import OPENED, Closed, HostilePeer, Key, encode, pack, record_frame
from .test_attacks import HonestTraffic, get, hosts_of, link_to, node_id, node_info, port_of, ws

INVENTORY = str(ROOT / "tests/apps/inventory")
SLOW = str(ROOT / "tests/apps/slow")
WHOAMI = str(ROOT / "tests/apps/whoami")
#: Long enough that nothing here can be the work of a record refresh (every 200 s).
LIFETIME = ("--record-lifetime", "600")


def run(*args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    """Run ``xio-node ARGS`` (a subcommand, or a node that must not start) to its end."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([*NODE, *args], capture_output=True, text=True, env=env, timeout=60)
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


class Authority:
    """A mesh authority made by ``xio-node mesh init`` in a folder of the test."""

    def __init__(self, folder) -> None:
        self.dir = folder
        run("mesh", "init", "--dir", str(folder))
        self.pub = folder / "mesh.pub"
        self.identity = load_mesh_key(folder)  # for what the commands do not make (expired)

    def admit(self, state_dir, out, *, name: str, apps: str = "*") -> str:
        """Admit the node of ``state_dir`` (made if need be); return its id."""
        node = run("id", "--state-dir", str(state_dir), "--create", "--public-key")
        run("mesh", "admit", "--dir", str(self.dir), "--node", node.stdout.strip(), "--name",
            name, "--apps", apps, "--expires", "30d", "--out", str(out))  # fmt: skip
        return node.stdout.split(":")[0]

    def revoke(self, node: str, out) -> None:
        run("mesh", "revoke", "--dir", str(self.dir), "--node", node, "--out", str(out))

    def packed_cert(self, node: str, *, apps=("*",), issued_ms=None, lifetime_ms=86_400_000):
        """Return a packed certificate of ``node`` (for the scripted peer's hello)."""
        issued = int(time.time() * 1000) if issued_ms is None else issued_ms
        signed = membership.issue_certificate(
            self.identity, node, name="scripted", apps=apps, issued_ms=issued,
            expires_ms=issued + lifetime_ms, serial=1,
        )  # fmt: skip
        return membership.pack(signed)


@pytest.fixture
def authority(tmp_path):
    return Authority(tmp_path / "authority")


@pytest.fixture
def member(start_node, authority, tmp_path):
    """Start an admitted node: ``member(name, *args, apps="*")``."""

    def start(name: str, *args: str, apps: str = "*", mesh=None):
        mesh = mesh or authority
        cert = tmp_path / f"{name}.cert"
        mesh.admit(tmp_path / "state" / name, cert, name=name, apps=apps)
        return start_node(name, "--mesh-pub", str(mesh.pub), "--cert", str(cert), *LIFETIME,
                          *args)  # fmt: skip

    return start


def membership_of(process) -> dict:
    return node_info(process)["membership"]


def established(process) -> list[str]:
    """Return the ids of the peers ``process`` has an established link to."""
    return [link["id"] for link in get(process, "/_xio/peers") if link["state"] == "established"]


def scripted(process, key: Key, cert: bytes | None) -> HostilePeer:
    """Return a scripted peer of ``process`` that presents ``cert`` in its hello."""
    peer = HostilePeer(port_of(process), key=key)
    OPENED.append(peer)
    peer.handshake(caps=["summary"], extra={"cert": cert} if cert is not None else None)
    return peer.start_reader()


# -- a closed mesh at work ---------------------------------------------------------------------


def test_three_admitted_nodes_form_a_mesh_and_route_requests(member, authority):
    c = member("c", "--app", INVENTORY, apps="inventory")
    b = member("b", "--app", SLOW, "--peers", ws(c), apps="inventory")  # slow: not allowed
    a = member("a", "--peers", ws(b))
    c_id = node_id(c)
    wait_until(lambda: c_id in hosts_of(a, "inventory"), what="a to learn of c's inventory")
    answer = get(a, "/inventory/items/1")
    assert answer["served_by"] == "c"
    info = node_info(a)
    assert info["mesh"]["authority"] == load_mesh_key(authority.dir).node_id
    assert info["membership"] == {}  # nothing refused in an honest closed mesh
    # b hosts slow, but its certificate lists only inventory: it keeps it out of its record.
    assert "slow" not in get(a, "/_xio/apps")
    assert "our certificate does not allow it" in b.output()
    assert "closed mesh of authority" in a.output() and "WARNING: open mesh" not in a.output()


def test_nodes_without_a_valid_certificate_are_refused_links(
    member, start_node, authority, tmp_path
):
    a = member("a", "--app", INVENTORY)
    a_id = node_id(a)
    stranger = start_node("open", "--peers", ws(a))  # open mode: no certificate
    other = Authority(tmp_path / "other")
    cert = tmp_path / "foreign.cert"
    other.admit(tmp_path / "state" / "foreign", cert, name="foreign")
    foreign = start_node("foreign", "--mesh-pub", str(other.pub), "--cert", str(cert),
                         "--peers", ws(a))  # fmt: skip
    wait_until(lambda: {"no_certificate", "wrong_authority"} <= membership_of(a).keys(),
               what="a to refuse the stranger and the foreign member")  # fmt: skip
    assert established(a) == []
    assert link_to(stranger, a_id) is None and link_to(foreign, a_id) is None
    assert hosts_of(stranger, "inventory") == set()  # it never heard of a's app
    # A certificate that expired: the node would not start with it; a scripted peer presents it.
    key = Key()
    old = int(time.time() * 1000) - 7_200_000
    expired = authority.packed_cert(key.node_id, issued_ms=old, lifetime_ms=3_600_000)
    with pytest.raises(Closed):
        scripted(a, key, expired)
    assert membership_of(a)["expired"] == 1
    assert established(a) == []


@pytest.mark.parametrize("problem", ["wrong_node", "wrong_authority", "expired", "no_cert"])
def test_a_node_will_not_start_with_a_certificate_that_does_not_admit_it(
    authority, tmp_path, problem
):
    state = tmp_path / "state" / "x"
    cert = tmp_path / "x.cert"
    if problem == "wrong_node":
        authority.admit(tmp_path / "state" / "someone", cert, name="someone")
        run("id", "--state-dir", str(state), "--create")
    elif problem == "wrong_authority":
        Authority(tmp_path / "other").admit(state, cert, name="x")
    else:
        node = authority.admit(state, cert, name="x")
        old = int(time.time() * 1000) - 7_200_000
        signed = membership.issue_certificate(authority.identity, node, issued_ms=old,
                                              expires_ms=old + 3_600_000, serial=2)  # fmt: skip
        cert.write_text(membership.armor(signed))
    args = ["--mesh-pub", str(authority.pub)]
    if problem != "no_cert":
        args += ["--cert", str(cert)]
    done = run("--name", "x", "--state-dir", str(state), "--host", "127.0.0.1", "--port", "0",
               "--no-mdns", *args, check=2)  # fmt: skip
    expected = {"no_cert": "--mesh-pub and --cert go together"}.get(problem, problem)
    assert expected in done.stderr and "listening" not in done.stderr


def test_a_members_relay_of_records_it_may_not_carry_is_refused(member, authority, tmp_path):
    c = member("c", "--app", INVENTORY, apps="inventory")
    a = member("a", "--peers", ws(c))
    a_id, c_id = node_id(a), node_id(c)
    wait_until(lambda: c_id in hosts_of(a, "inventory"), what="a to learn of c")
    key, outsider = Key(), Key()
    cert = authority.packed_cert(key.node_id, apps=("shop",))
    peer = scripted(a, key, cert)
    with HonestTraffic([(a, "/inventory/items/1")]) as traffic:
        own = {"links": [a_id], "ext": {"cert": cert}}
        peer.send_message(record_frame(key, 1, apps=["shop"], **own))
        wait_until(lambda: key.node_id in hosts_of(a, "shop"), what="a to take the member's app")
        peer.send_message(record_frame(outsider, 1, apps=["inventory"], links=[key.node_id]))
        peer.send_message(record_frame(outsider, 2, apps=["inventory"], links=[key.node_id],
                                       ext={"cert": cert}))  # a member's cert, another node  # fmt: skip
        peer.send_message(record_frame(key, 2, apps=["inventory", "shop"], **own))
        wait_until(lambda: {"no_certificate", "wrong_node", "app_not_allowed"}
                   <= membership_of(a).keys(), what="a to refuse the three")  # fmt: skip
        for _ in range(5):
            assert get(a, "/inventory/items/1")["served_by"] == "c"
    traffic.check("while a member relayed what it may not")
    assert hosts_of(a, "inventory") == {c_id}  # the claim on inventory went nowhere
    assert outsider.node_id not in {route["destination"] for route in get(a, "/_xio/routes")}
    assert link_to(a, key.node_id) is not None  # refused records do not cost the link


def test_publishing_a_revocation_cuts_the_node_off_mesh_wide(member, authority, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o600)
    c = member("c", "--app", INVENTORY, apps="inventory")
    b = member("b", "--app", SLOW, "--peers", ws(c))
    a = member("a", "--peers", ws(b), "--admin-token", str(token))
    c_id = node_id(c)
    wait_until(lambda: c_id in hosts_of(b, "inventory"), what="b to learn of c")
    a_client_token = {"Authorization": "Bearer s3cret-token"}
    a_apps = lambda: get_with(a, "/_xio/apps", a_client_token)  # noqa: E731
    wait_until(lambda: "inventory" in a_apps(), what="a, two hops from c, to learn of it")
    assert get_with(a, "/inventory/items/1", {})["served_by"] == "c"
    revocation = tmp_path / "c.rev"
    authority.revoke(c_id, revocation)
    with HonestTraffic([(a, "/slow/"), (b, "/slow/")]) as traffic:
        refused = run("mesh", "publish", str(revocation), "--via", a.url, check=1)
        assert refused.stdout.startswith("401 ")  # a's /_xio/ takes its token
        done = run("mesh", "publish", str(revocation), "--via", a.url, "--admin-token",
                   str(token))  # fmt: skip
        assert done.stdout.startswith("200 ") and "news: True" in done.stdout
        wait_until(lambda: "inventory" not in a_apps(), timeout=20,
                   what="a to stop routing c's app")  # fmt: skip
        wait_until(lambda: c_id not in established(b), timeout=20, what="b to close c's link")
        wait_until(lambda: established(c) == [], timeout=20, what="c to be alone")
        # c dials b again and again: b refuses it, counted.
        wait_until(lambda: membership_of(b).get("revoked", 0) >= 1, timeout=20,
                   what="b to refuse c's new link")  # fmt: skip
        assert node_info(b)["mesh"]["revocations"] == 1
        assert "inventory" not in get(b, "/_xio/apps")
    traffic.check("while c was revoked")
    again = run("mesh", "publish", str(revocation), "--via", a.url, "--admin-token", str(token))
    assert "news: False" in again.stdout


def get_with(process, path: str, headers: dict):
    import xio

    return xio.client(process.url, timeout=10).get(path, headers=headers).content


def test_forged_revocations_are_refused_and_counted(member, authority, tmp_path):
    b = member("b", "--app", INVENTORY)
    a = member("a", "--peers", ws(b))
    b_id = node_id(b)
    wait_until(lambda: b_id in hosts_of(a, "inventory"), what="a to learn of b")
    other = Authority(tmp_path / "other")
    foreign = tmp_path / "foreign.rev"
    other.revoke(b_id, foreign)
    with HonestTraffic([(a, "/inventory/items/1")]) as traffic:
        done = run("mesh", "publish", str(foreign), "--via", a.url, check=1)
        assert done.stdout.startswith("422 ") and "wrong_authority" in done.stdout
        # Our authority's id, another key's signature, from a member over its link.
        now = int(time.time() * 1000)
        real = membership.issue_revocation(authority.identity, b_id, issued_ms=now)
        forged = pack([real.body, other.identity.sign(membership.REVOKE_DOMAIN + real.body)])
        key = Key()
        peer = scripted(a, key, authority.packed_cert(key.node_id))
        peer.send_message(encode("revoke", r=forged))
        wait_until(lambda: membership_of(a).get("bad_revocation") == 1,
                   what="a to refuse the forged revocation")  # fmt: skip
        assert peer.wait_closed(10), "a kept the link of a member that forged a revocation"
        assert peer.bye_reason == "bad_revocation"
        garbage = tmp_path / "garbage"
        garbage.write_text("not a certificate\n")
        assert run("mesh", "publish", str(garbage), "--via", a.url, check=1).stdout.startswith(
            "400 "
        )
    traffic.check("while revocations were forged")
    assert membership_of(a)["wrong_authority"] == 1
    assert b_id in established(a) and b_id in hosts_of(a, "inventory")


def test_a_renewed_certificate_replaces_the_nodes_own(member, authority, tmp_path):
    a = member("a", apps="inventory")
    serial = node_info(a)["mesh"]["serial"]
    renewed = tmp_path / "renewed.cert"
    authority.admit(tmp_path / "state" / "a", renewed, name="a", apps="inventory,shop")
    done = run("mesh", "publish", str(renewed), "--via", a.url)
    assert done.stdout.startswith("200 ") and "certificate" in done.stdout
    mesh = node_info(a)["mesh"]
    assert mesh["serial"] != serial and mesh["apps"] == ["inventory", "shop"]
    someone = tmp_path / "someone.cert"
    authority.admit(tmp_path / "state" / "someone", someone, name="someone")
    wrong = run("mesh", "publish", str(someone), "--via", a.url, check=1)
    assert wrong.stdout.startswith("422 ") and "wrong_node" in wrong.stdout


def test_an_admitted_peer_that_tampers_or_replays_is_cut_off(member, authority):
    # A certificate makes a peer a member, not a trusted one: its link is still held to the
    # encryption and the handshake's freshness, like any other.
    b = member("b", "--app", INVENTORY)
    a = member("a", "--peers", ws(b))
    b_id = node_id(b)
    wait_until(lambda: b_id in hosts_of(a, "inventory"), what="a to learn of b")
    key = Key()
    cert = authority.packed_cert(key.node_id)
    with HonestTraffic([(a, "/inventory/items/1")]) as traffic:
        tamperer = scripted(a, key, cert)
        stolen = list(tamperer.handshake_messages)  # its hello (with the cert) and auth
        tamperer.send_tampered("ping", n=1, flip_bit=40)
        assert tamperer.wait_closed(10), "a kept a link whose frame failed its tag"
        wait_until(lambda: node_info(a)["rejected"].get("bad_frame_mac") == 1,
                   what="a to count the tampered frame")  # fmt: skip
        replayer = HostilePeer(port_of(a), key=key)
        OPENED.append(replayer)
        replayer.start_reader()
        for message in stolen:  # a valid certificate, a signature of an earlier link
            replayer.send_message(message, raw=True)
        assert replayer.wait_closed(10), "a took a replayed handshake"
        wait_until(lambda: node_info(a)["rejected"].get("bad_signature") == 1,
                   what="a to count the replayed handshake")  # fmt: skip
        honest = scripted(a, key, cert)  # the same member, linking honestly, is let in
        wait_until(lambda: key.node_id in established(a), what="the member's honest link")
        honest.close()
    traffic.check("while a member tampered and replayed")
    assert b_id in established(a) and b_id in hosts_of(a, "inventory")
    assert membership_of(a) == {}  # its certificate was good: link faults, not membership


def test_while_the_authority_key_is_rotated_nodes_trust_both(member, authority, tmp_path):
    # The rotation of docs/SECURITY.md: every node restarted trusting the old and the new key,
    # then re-admitted by the new one, node by node, with no moment where the mesh is split.
    new = Authority(tmp_path / "new")
    third = Authority(tmp_path / "third")
    b = member("b", "--app", INVENTORY, "--mesh-pub", str(new.pub))  # on its old certificate
    a = member("a", "--peers", ws(b), "--mesh-pub", str(authority.pub), mesh=new)  # re-admitted
    wait_until(lambda: node_id(b) in hosts_of(a, "inventory"), what="a to route to old b")
    assert get(a, "/inventory/items/1")["served_by"] == "b"
    assert node_info(a)["mesh"]["authorities"] == [
        load_mesh_key(new.dir).node_id, load_mesh_key(authority.dir).node_id,
    ]  # fmt: skip
    # Only the new key: the old certificate is another authority's now.
    c = member("c", "--peers", ws(b), mesh=new)
    wait_until(lambda: membership_of(c).get("wrong_authority", 0) >= 1,
               what="c, trusting only the new key, to refuse b's old certificate")  # fmt: skip
    # A revocation of either trusted authority applies; one of a third is refused.
    stranger = tmp_path / "stranger.rev"
    third.revoke(node_id(c), stranger)
    assert run("mesh", "publish", str(stranger), "--via", a.url, check=1).stdout.startswith("422")
    revocation = tmp_path / "c.rev"
    authority.revoke(node_id(c), revocation)  # the old authority revokes a node it never admitted
    assert "news: True" in run("mesh", "publish", str(revocation), "--via", a.url).stdout


def test_an_app_in_a_closed_mesh_knows_its_caller_is_a_member(member, authority):
    b = member("b", "--app", WHOAMI)
    a = member("a", "--peers", ws(b))
    wait_until(lambda: node_id(b) in hosts_of(a, "whoami"), what="a to learn of b's whoami")
    caller = get(a, "/whoami/")
    assert caller == {"node_id": node_id(a), "name": "a", "member": True, "via_mesh": True}
    direct = get(b, "/whoami/")  # over HTTP, at b itself: a TCP client, no node
    assert direct["member"] is False and direct["node_id"] is None and not direct["via_mesh"]


def test_a_members_relay_of_an_outsiders_request_is_not_served(member, authority, tmp_path):
    from .sealing import public_key_of, seal_request

    b = member("b", "--app", WHOAMI)
    b_id = node_id(b)
    key, outsider = Key(), Key()
    cert = authority.packed_cert(key.node_id)
    peer = scripted(b, key, cert)
    peer.send_message(record_frame(key, 1, links=[b_id], ext={"cert": cert}))
    wait_until(lambda: key.node_id in established(b), what="the member's link")

    def ask(request_id: int, sender: Key) -> dict:
        fields = seal_request(sender, public_key_of(b), b_id, "whoami")
        peer.send("req", id=request_id, dst=b_id, app="whoami", method="GET", path="",
                  headers=[], hops=8, ttl=8000, **fields)  # fmt: skip
        wait_until(lambda: request_id in peer.responses, timeout=12, what=f"answer {request_id}")
        return peer.responses[request_id]

    # The member's own request is served, and the app sees a member; the outsider's, sealed
    # with its own key and handed on by the member, is not: b holds no certificate of it.
    served = ask(1, key)
    assert served["status"] == 200
    assert json.loads(served["body"]) == {"node_id": key.node_id, "name": "scripted",
                                          "member": True, "via_mesh": True}  # fmt: skip
    refused = ask(2, outsider)
    assert refused["status"] == 502
    assert node_info(b)["forwarding"].get("e2e_unknown_node", 0) >= 1
