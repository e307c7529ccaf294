"""An arena's sync lock: an ``flock`` on ``arena-<id>.lock`` beside the device database.

Sync rounds, residency commands and leaving an arena take it, so only one of them works on an
arena at a time across processes (the daemon and the CLI). The descriptor is closed, and so the
lock released, when the block ends, also in a killed process.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from shoal.errors import ConflictError, StorageError
from shoal.state.db import DeviceDB

LOCK_WAIT = 120.0  # seconds a caller waits for another process's round on the same arena
SLOW_LOCK = 1.0  # seconds before ``on_wait`` is called, to tell a person what they wait for
_POLL = 0.05


def sync_lock_path(db: DeviceDB, arena_id: str) -> Path:
    return db.path.parent / f"arena-{arena_id}.lock"


@asynccontextmanager
async def arena_lock(
    db: DeviceDB,
    arena_id: str,
    name: str,
    *,
    wait: float = LOCK_WAIT,
    on_wait: Callable[[], None] | None = None,
) -> AsyncIterator[None]:
    """Hold the arena's sync lock for the block, waiting up to ``wait`` seconds for it."""
    path = sync_lock_path(db, arena_id)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot open the lock file {path}: {exc.strerror}") from exc
    try:
        start = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= wait:
                    raise ConflictError(
                        f"another shoal process is syncing arena {name!r}",
                        hint="try again once it is done (see `shoal status`)",
                    ) from None
                if waited > SLOW_LOCK and not told and on_wait is not None:
                    on_wait()
                    told = True
                await asyncio.sleep(_POLL)
        yield
    finally:
        os.close(fd)
