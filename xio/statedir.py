"""The state directory: its lock, and the files in it written so that a crash leaves no half.

Theory of operation
-------------------
A node's state directory (``--state-dir``) holds its key (``node.key``) and the last seq it
used (``seq``). Two processes on one directory would be one identity twice: each dials the
other's address as a stranger and is refused (``self_link``), their records fight over the same
seq, and apps vanish from the mesh. So a node holds an exclusive ``flock`` on ``<dir>/lock``
for as long as it lives and writes its pid into that file; a second process fails at once with
``StateError`` naming that pid. The kernel drops the lock when the holder's descriptor is
closed, whatever kills the process, so a stale lock file is never a problem (the file itself
is left in place: removing it would let two processes lock two different files).

Every file in the directory is written by ``write_atomic``: a temporary file beside the target
(``O_EXCL``, mode 0600), fsync, ``rename`` over the target, fsync of the directory, so after a
crash the target holds the old content or the new, never a part. Failures raise
``StateError`` naming the file and what went wrong.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .errors import StateError

__all__ = ["LOCK_FILE", "StateLock", "read_text", "write_atomic"]

LOCK_FILE = "lock"


class StateLock:
    """An exclusive lock on a state directory, held until ``release`` or the process ends."""

    def __init__(self, state_dir: Path, handle) -> None:
        self.state_dir = state_dir
        self._handle = handle

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Create ``state_dir`` (0700) if missing and lock it, or raise ``StateError``."""
        state_dir = Path(state_dir)
        path = state_dir / LOCK_FILE
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")
        except OSError as exc:
            raise StateError(f"cannot open lock file {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            holder = handle.read(32).decode("ascii", "replace").strip()
            handle.close()
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StateError(f"cannot lock {path}: {exc.strerror}") from exc
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise StateError(
                f"state directory {state_dir} is in use by {who} (it holds {path}); "
                "stop that node or give this one its own --state-dir"
            ) from exc
        try:
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n".encode())
            handle.flush()
        except OSError as exc:
            handle.close()
            raise StateError(f"cannot write lock file {path}: {exc.strerror}") from exc
        return cls(state_dir, handle)

    def release(self) -> None:
        """Unlock (closing the file drops the flock)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_text(path: Path, *, what: str) -> str | None:
    """Return the text of ``path``, ``None`` if it does not exist; ``StateError`` otherwise."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {what} {path}: {exc.strerror}") from exc


def write_atomic(path: Path, data: bytes, *, what: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably, or raise ``StateError``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise StateError(f"cannot write {what} {path}: {exc.strerror}") from exc


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk too.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
