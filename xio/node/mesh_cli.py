"""``xio-node mesh``: the mesh authority's commands, run on the machine that holds its key.

xio-node mesh init --dir DIR        create DIR/mesh.key (0600, keep it offline) and DIR/mesh.pub
xio-node mesh admit --dir DIR --node ID[:KEY] [--name N] [--apps A,B|'*'] [--expires 365d]
                    --out FILE      sign a membership certificate
xio-node mesh revoke --dir DIR --node ID --out FILE
                                    sign a revocation of every certificate of ID issued so far
xio-node mesh show FILE [--mesh-pub FILE]
                                    print a certificate or revocation, and check its signature
xio-node mesh publish FILE --via http://HOST:PORT [--admin-token FILE]
                                    hand a revocation (or a node's renewed certificate) to a
                                    running node, which applies it and floods a revocation on

The formats are xio.peering.membership's (PROTOCOL.md section 8.6); this module is the files
and the clock around them. Every problem is one line ``xio-node mesh: ...`` and exit status 2;
``show --mesh-pub`` exits 1 when the file is well formed but its verdict is not valid;
``publish`` exits 0 when the node took the file and 1 otherwise (its answer is printed).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import re
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ..errors import ConfigError, LocalProtocolError, RemoteProtocolError
from ..peering import membership
from ..peering.identity import (
    PUBLIC_KEY_LENGTH,
    Identity,
    is_node_id,
    node_id_of,
    public_key_from_pem,
)
from ..statedir import write_atomic

__all__ = ["MESH_KEY", "MESH_PUB", "load_mesh_pub", "main", "parse_duration", "read_armor_file"]

MESH_KEY = "mesh.key"
MESH_PUB = "mesh.pub"
PROG = "xio-node mesh"
_DURATION = re.compile(r"([1-9][0-9]{0,9})([dhms])")
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_duration(text: str) -> int:
    """Return the milliseconds of ``30d``, ``12h``, ``90m`` or ``3600s``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"--expires {text!r} is not a duration like 365d, 12h, 90m or 3600s")
    return int(match[1]) * _UNIT_MS[match[2]]


def parse_node(text: str) -> tuple[str, bytes]:
    """Return ``(node id, key or b"")`` of ``ID`` or ``ID:BASE64KEY`` (the key must prove ID)."""
    node_id, _, key_text = text.strip().partition(":")
    if not is_node_id(node_id):
        raise ConfigError(f"--node {node_id!r:.60} is not a node id (xio-node id prints it)")
    if not key_text:
        return node_id, b""
    try:
        key = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"--node {node_id}: the key after ':' is not base64") from None
    if len(key) != PUBLIC_KEY_LENGTH or node_id_of(key) != node_id:
        raise ConfigError(f"--node {node_id}: the key given is not the key of that id")
    return node_id, key


def load_mesh_key(directory: Path) -> Identity:
    """Load ``DIR/mesh.key``, refusing one that group or others may read."""
    path = Path(directory) / MESH_KEY
    try:
        mode, data = path.stat().st_mode, path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read mesh key {path}: {exc.strerror} "
                          f"(create one with: xio-node mesh init --dir {directory})") from exc  # fmt: skip
    if mode & 0o077:
        raise ConfigError(f"mesh key {path} is readable by group or others "
                          f"(mode {mode & 0o777:o}); run: chmod 600 {path}")  # fmt: skip
    return Identity.from_key_bytes(data, where=f"mesh key {path}")


def load_mesh_pub(path: Path) -> bytes:
    """Return the raw 32-byte Ed25519 key of a ``mesh.pub`` (PEM SubjectPublicKeyInfo)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read mesh public key {path}: {exc.strerror}") from exc
    return public_key_from_pem(data, where=f"mesh public key {path}")


def _init(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    key_path, pub_path = directory / MESH_KEY, directory / MESH_PUB
    if key_path.exists():
        raise ConfigError(f"{key_path} exists already: a mesh has one authority key, "
                          "and this one is never overwritten")  # fmt: skip
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {directory}: {exc.strerror}") from exc
    identity = Identity.generate()
    write_atomic(key_path, identity.to_pem(), what="mesh key", mode=0o600)
    write_atomic(pub_path, identity.public_pem(), what="mesh public key", mode=0o644)
    print(f"mesh authority {identity.node_id}")
    print(f"  {key_path}: the private key (mode 0600); keep it offline")
    print(f"  {pub_path}: give it to every node of the mesh")
    return 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _admit(args: argparse.Namespace) -> int:
    node_id, key = parse_node(args.node)
    apps = [app.strip() for app in args.apps.split(",") if app.strip()]
    authority = load_mesh_key(Path(args.dir))
    now = _now_ms()
    try:
        signed = membership.issue_certificate(
            authority,
            node_id,
            public_key=key,
            name=args.name,
            apps=apps,
            issued_ms=now,
            expires_ms=now + parse_duration(args.expires),
            serial=secrets.randbits(63),
        )
    except LocalProtocolError as exc:
        raise ConfigError(str(exc)) from exc
    write_atomic(Path(args.out), membership.armor(signed).encode(), what="certificate", mode=0o644)
    print(f"{args.out}: certificate of {node_id}, {_apps(signed.certificate)}, "
          f"expires {_when(signed.certificate.expires_ms)}")  # fmt: skip
    return 0


def _revoke(args: argparse.Namespace) -> int:
    node_id, _ = parse_node(args.node)
    authority = load_mesh_key(Path(args.dir))
    signed = membership.issue_revocation(authority, node_id, issued_ms=_now_ms())
    write_atomic(Path(args.out), membership.armor(signed).encode(), what="revocation", mode=0o644)
    print(f"{args.out}: revocation of {node_id} (every certificate issued until now)")
    return 0


def _when(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms after the epoch"


def _apps(cert: membership.Certificate) -> str:
    if cert.apps == (membership.ANY_APP,):
        return "any app"
    return "apps " + ", ".join(cert.apps) if cert.apps else "no app (relay only)"


def read_armor_file(path: str | Path, where: str):
    """Return the certificate or revocation armored in file ``path``; ConfigError naming
    ``where`` (the file, or the flag that gave it) if it cannot be read or is neither."""
    try:
        text = Path(path).read_bytes().decode("ascii")
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not an armored certificate or revocation") from None
    try:
        return membership.read_armor(text)
    except RemoteProtocolError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _show(args: argparse.Namespace) -> int:
    path = Path(args.file)
    signed = read_armor_file(path, str(path))
    if isinstance(signed, membership.SignedCertificate):
        cert = signed.certificate
        lines = [
            "certificate",
            f"  node        {cert.node_id}" + (" (key included)" if cert.public_key else ""),
            f"  name        {cert.name!r}",
            f"  may host    {_apps(cert)}",
            f"  issued      {_when(cert.issued_ms)}",
            f"  expires     {_when(cert.expires_ms)}",
            f"  serial      {cert.serial}",
            f"  authority   {cert.authority}",
        ]
    else:
        revocation = signed.revocation
        lines = [
            "revocation",
            f"  node        {revocation.node_id}",
            f"  revokes     certificates issued until {_when(revocation.issued_ms)}",
            f"  authority   {revocation.authority}",
        ]
    print("\n".join(lines))
    if args.mesh_pub:
        return _check_signature(signed, load_mesh_pub(Path(args.mesh_pub)))
    return 0


def _check_signature(signed, authority_key: bytes) -> int:
    now = _now_ms()
    try:
        if isinstance(signed, membership.SignedCertificate):
            membership.judge_certificate(signed, authority_key, now)
        else:
            membership.judge_revocation(signed, authority_key, now)
    except RemoteProtocolError as exc:
        print(f"  verdict     {exc.reason} under {node_id_of(authority_key)}")
        return 1
    print(f"  verdict     valid under {node_id_of(authority_key)}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from ..client import client as http_client
    from ..errors import TransportError
    from .config import read_admin_token

    try:
        text = Path(args.file).read_bytes()
        headers = {"Content-Type": "text/plain"}
        if args.admin_token:
            headers["Authorization"] = f"Bearer {read_admin_token(args.admin_token)}"
    except OSError as exc:
        print(f"{PROG}: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    try:
        client = http_client(args.via.rstrip("/"), timeout=args.timeout)
        response = client.request("POST", "/_xio/mesh", text, headers=headers)
    except (ValueError, TransportError) as exc:
        print(f"{PROG}: cannot publish to {args.via}: {exc}", file=sys.stderr)
        return 1
    content = response.content
    if isinstance(content, dict):
        shown = ", ".join(f"{key}: {value}" for key, value in content.items())
    else:
        shown = response.text.strip()
    print(f"{response.status} {shown}")
    return 0 if 200 <= response.status < 300 else 1


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="The mesh authority: admit and revoke nodes.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    init = commands.add_parser("init", help="create DIR/mesh.key and DIR/mesh.pub")
    init.add_argument("--dir", required=True, help="where the authority key is kept")
    admit = commands.add_parser("admit", help="sign a membership certificate")
    admit.add_argument("--dir", required=True, help="the directory holding mesh.key")
    admit.add_argument("--node", required=True, metavar="NODE_ID[:KEY]",
                       help="the node's id (xio-node id), or ID:BASE64KEY "
                       "(xio-node id --public-key) to include its key")  # fmt: skip
    admit.add_argument("--name", default="", help="the node's name in the certificate")
    admit.add_argument("--apps", default=membership.ANY_APP, metavar="APP,APP|'*'",
                       help="apps the node may host (default '*': any)")  # fmt: skip
    admit.add_argument("--expires", default="365d", metavar="DURATION",
                       help="valid for this long: 30d, 12h, 90m, 3600s (default 365d)")  # fmt: skip
    admit.add_argument("--out", required=True, metavar="FILE", help="where to write it")
    revoke = commands.add_parser("revoke", help="sign a revocation of a node")
    revoke.add_argument("--dir", required=True, help="the directory holding mesh.key")
    revoke.add_argument("--node", required=True, metavar="NODE_ID", help="the node to revoke")
    revoke.add_argument("--out", required=True, metavar="FILE", help="where to write it")
    show = commands.add_parser("show", help="print a certificate or revocation")
    show.add_argument("file", metavar="FILE")
    show.add_argument("--mesh-pub", metavar="FILE", help="check it was signed by this authority")
    publish = commands.add_parser("publish", help="hand a revocation or certificate to a node")
    publish.add_argument("file", metavar="FILE")
    publish.add_argument("--via", required=True, metavar="http://HOST:PORT",
                         help="the node's HTTP address (its /_xio/mesh is admin-protected)")  # fmt: skip
    publish.add_argument("--admin-token", metavar="FILE",
                         help="file holding the node's --admin-token (mode 600)")  # fmt: skip
    publish.add_argument("--timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str]) -> int:
    """Run ``xio-node mesh``; return the exit status."""
    args = _parser().parse_args(argv)
    command = {"init": _init, "admit": _admit, "revoke": _revoke, "show": _show,
               "publish": _publish}[args.command]  # fmt: skip
    try:
        return command(args)
    except ConfigError as exc:  # StateError included: a file that cannot be written
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
