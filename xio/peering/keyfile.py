"""The node key on disk: ``<state_dir>/node.key``, read and written with care.

Theory of operation
-------------------
``xio.peering.identity`` turns key bytes into an identity and back; this module is the file
around them. The key is written by ``xio.statedir.write_atomic`` (temporary file, fsync,
rename, fsync of the directory) with mode 0600, so a crash never leaves a half-written key. A
key file readable by group or others is refused, as ssh does, because a copied key is a stolen
identity. Every problem is a ``ConfigError`` naming the file (``StateError`` when the key
cannot be written).
"""

from __future__ import annotations

from pathlib import Path

from xio.errors import ConfigError
from xio.peering.identity import Identity
from xio.statedir import write_atomic

__all__ = ["KEY_FILE", "load", "load_or_create"]

KEY_FILE = "node.key"


def load(path: Path) -> Identity:
    """Load the key in ``path`` (PKCS#8 PEM, or a raw 32-byte seed)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read node key {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(
            f"node key {path} is readable by group or others "
            f"(mode {mode & 0o777:o}); run: chmod 600 {path}"
        )
    return Identity.from_key_bytes(data, where=f"node key {path}")


def load_or_create(state_dir: Path) -> Identity:
    """Load ``state_dir/node.key``, creating the directory and a new key if missing."""
    state_dir = Path(state_dir)
    path = state_dir / KEY_FILE
    if path.exists():
        return load(path)
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create state directory {state_dir}: {exc}") from exc
    identity = Identity.generate()
    write_atomic(path, identity.to_pem(), what="node key", mode=0o600)
    return identity
