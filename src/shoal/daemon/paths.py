"""Where a device's daemon keeps its control socket, lock and log, and how to reach a Unix socket.

Unix socket addresses are limited to 107 bytes on Linux. A device home can
sit deeper than that (tests, long user names), so a long socket path is
reached through ``/proc/self/fd/N/NAME`` of an open directory descriptor,
which the kernel resolves like any path.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import NetworkError, StorageError

SOCKET_NAME = "daemon.sock"
LOCK_NAME = "daemon.lock"
LOG_NAME = "daemon.log"
SOCKET_MODE = 0o600
_SUN_PATH_MAX = 107


@dataclass(frozen=True, slots=True)
class DaemonPaths:
    home: Path

    @property
    def socket(self) -> Path:
        return self.home / SOCKET_NAME

    @property
    def lock(self) -> Path:
        return self.home / LOCK_NAME

    @property
    def log(self) -> Path:
        return self.home / LOG_NAME


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """A socket address for ``path`` that fits ``sun_path``, valid inside the block."""
    text = os.fspath(path)
    if len(os.fsencode(text)) <= _SUN_PATH_MAX:
        yield text
        return
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{dir_fd}/{path.name}"
    finally:
        os.close(dir_fd)


def bind_unix(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600 from its first moment (a stale one is replaced)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old_umask = os.umask(0o177)  # the socket file is created 0600, never briefly wider
        try:
            with _address(path) as address:
                sock.bind(address)
        finally:
            os.umask(old_umask)
        os.chmod(path, SOCKET_MODE)
        sock.listen(16)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise StorageError(f"cannot create the control socket {path}: {exc.strerror or exc}") from exc
    return sock


def connect_unix(path: Path, timeout: float) -> socket.socket:
    """A connected (blocking, with ``timeout``) client socket, or NetworkError if no daemon listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with _address(path) as address:
            sock.connect(address)
    except OSError as exc:
        sock.close()
        raise NetworkError(
            f"no daemon answers on {path} ({exc.strerror or exc})", hint="start it with `shoal daemon`"
        ) from exc
    return sock
