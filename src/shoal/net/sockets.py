"""Is a connection's socket readable right now? The local half of "did the peer close it?".

An idle connection in a pool should have nothing to read: data or an EOF
waiting means the peer sent something unasked (most often its goodbye before
closing), so the connection is not safe to reuse. A zero-timeout ``poll`` asks
without a round trip to the peer.
"""

from __future__ import annotations

import select
import socket
import sys


def fd_readable(fd: int | None) -> bool:
    """True when a read on ``fd`` would not block (data or EOF waiting), or there is no descriptor."""
    if fd is None or fd < 0:
        return True
    if sys.platform == "win32" or getattr(select, "poll", None) is None:  # pragma: no cover
        ready, _, _ = select.select([fd], [], [], 0)
        return bool(ready)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def socket_readable(sock: socket.socket | None) -> bool:
    """``fd_readable`` for a socket object (None, or a closed one, counts as readable)."""
    return fd_readable(None if sock is None else sock.fileno())
