"""Ingest of file API uploads: parts are cut into chunks as they arrive in order, the rest at commit.

Each live upload may have an in-memory cursor: a ``Cutter`` that has been fed
parts 1..k, in order, from their staged files. When part k+1 is staged, a
background task feeds it (and any later parts already staged), storing the
chunks it completes through ``store_new_chunks``, the same quota check and
tenant chunk index as any other upload. The last, unfinished chunk is
carried over, so the cut points are those of the whole file. The cursor
lives in memory only: after a restart, the next part staged starts a new
one, which catches up from the staged files.

At commit the hub checks that every part the cursor fed is still the staged
file it read (same inode, size and mtime: a part sent again is a new file),
feeds the parts it has not, and cuts the carried tail as the end of the
file. Anything else (no cursor, a part replaced after it was fed, a failed
background step) falls back to ingesting every part at commit, so the
manifest is always the one of cutting the whole file.

Memory stays bounded: two parts at most are cut at a time, and two stored,
across all uploads (a cursor cuts its next part while the chunks of the one
before are written), and at most 32 uploads keep a cursor (each carries at most one
chunk); further uploads are cut at commit.

Chunks stored before commit are referenced by nothing until the commit: an
upload that is aborted or expires leaves only unreferenced chunks, which the
garbage collector removes after its grace period, like the chunks a device
uploaded but never committed. They count toward the tenant's quota from the
moment they are stored. If the collector took some of them before the
commit (an upload slower than the grace period), the commit finds them
missing, cuts every part again, and so stores them again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from shoal.errors import StorageError
from shoal.hub.context import HubContext
from shoal.hub.files.cutter import Cutter, Encoded
from shoal.hub.files.uploads import MAX_PARTS, UploadRow, ordered_parts, part_path
from shoal.hub.quota.usage import store_new_chunks
from shoal.model.manifest import Manifest

log = logging.getLogger(__name__)

_ENCODE_WORKERS = 4
_FEEDS_AT_ONCE = 2  # parts being cut, and parts being stored, at a time across all uploads: bounds memory
_MAX_CURSORS = 32  # each keeps up to one chunk (4 MiB) in memory; more uploads are cut at commit
_EXTRAS_KEY = "upload_ingest"

PartId = tuple[int, int, int]  # inode, size, mtime_ns of the staged file that was fed


@dataclass
class _Cursor:
    expires_at: float
    cutter: Cutter = field(default_factory=Cutter)
    fed: list[PartId] = field(default_factory=list)  # parts 1..len(fed)
    broken: bool = False
    more: bool = False
    task: asyncio.Task[None] | None = None
    storing: asyncio.Future[None] | None = None  # the chunks of the last part fed


class _Ingests:
    """The cursors of one hub process, its encoding threads and the limit on concurrent feeds."""

    def __init__(self) -> None:
        self.cursors: dict[str, _Cursor] = {}
        self.pool = ThreadPoolExecutor(_ENCODE_WORKERS, thread_name_prefix="shoal-ingest")
        self.slots = asyncio.Semaphore(_FEEDS_AT_ONCE)
        self.store_slots = asyncio.Semaphore(_FEEDS_AT_ONCE)

    def prune(self, now: float) -> None:
        for upload_id in [u for u, c in self.cursors.items() if c.expires_at < now]:
            self.forget(upload_id)

    def forget(self, upload_id: str) -> _Cursor | None:
        cursor = self.cursors.pop(upload_id, None)
        if cursor is not None and cursor.task is not None:
            cursor.task.cancel()
        return cursor


def _ingests(ctx: HubContext) -> _Ingests:
    found = ctx.extras.get(_EXTRAS_KEY)
    if not isinstance(found, _Ingests):
        found = _Ingests()
        ctx.extras[_EXTRAS_KEY] = found
    return found


def _read_part(cutter: Cutter, path: Path) -> tuple[PartId, bytearray]:
    with path.open("rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        buf, room = cutter.buffer(st.st_size)
        got = 0
        while got < st.st_size:
            n = f.readinto(room[got:])
            if not n:
                raise StorageError(f"part {path.name} ended after {got} of {st.st_size} bytes")
            got += n
    return (st.st_ino, st.st_size, st.st_mtime_ns), buf


def _cut_part(cutter: Cutter, path: Path, pool: ThreadPoolExecutor) -> tuple[PartId, list[Encoded]]:
    part_id, buf = _read_part(cutter, path)
    return part_id, cutter.feed(buf, pool)


def _part_id(path: Path) -> PartId | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


async def _store(ctx: HubContext, upload: UploadRow, done: list[Encoded], now: float) -> None:
    if done:
        await store_new_chunks(ctx, upload.tenant_id, [(cid, blob) for cid, _, blob in done], now)


def _release(slots: asyncio.Semaphore) -> Callable[[asyncio.Future[None]], None]:
    def done(stored: asyncio.Future[None]) -> None:
        slots.release()
        if not stored.cancelled():
            stored.exception()  # retrieved here; whoever awaits it raises it again

    return done


async def _feed(ctx: HubContext, upload: UploadRow, cursor: _Cursor, path: Path, now: float) -> None:
    """Cut one more part (the next in order); its chunks are stored while the next part is cut."""
    ingests = _ingests(ctx)
    async with ingests.slots:
        part_id, done = await asyncio.to_thread(_cut_part, cursor.cutter, path, ingests.pool)
        await _drain(cursor)
        await ingests.store_slots.acquire()
    cursor.storing = asyncio.ensure_future(_store(ctx, upload, done, now))
    cursor.storing.add_done_callback(_release(ingests.store_slots))
    cursor.fed.append(part_id)


async def _drain(cursor: _Cursor) -> None:
    """Wait until the chunks of every part fed so far are stored; raise what storing them raised."""
    storing, cursor.storing = cursor.storing, None
    if storing is not None:
        await storing


async def _advance(ctx: HubContext, upload: UploadRow, cursor: _Cursor, now: float) -> None:
    """Feed every part staged next in order; stop at the first one missing."""
    try:
        while True:
            cursor.more = False
            while not cursor.broken:
                path = part_path(ctx, upload.id, len(cursor.fed) + 1)
                if len(cursor.fed) >= MAX_PARTS or await asyncio.to_thread(_part_id, path) is None:
                    break
                await _feed(ctx, upload, cursor, path, now)
            await _drain(cursor)
            if not cursor.more:
                return
    except asyncio.CancelledError:
        cursor.broken = True
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here is retried, and reported, by the commit
        log.info("ingesting upload %s early stopped: %s", upload.id, exc)
        cursor.broken = True


def part_staged(ctx: HubContext, upload: UploadRow, number: int, now: float) -> None:
    """Part ``number`` was staged: feed it now if every part before it has been."""
    ingests = _ingests(ctx)
    ingests.prune(now)
    cursor = ingests.cursors.get(upload.id)
    if cursor is None:
        if len(ingests.cursors) >= _MAX_CURSORS:
            return
        cursor = ingests.cursors[upload.id] = _Cursor(upload.expires_at)
    if cursor.broken:
        return
    if number <= len(cursor.fed):
        # A part sent again after it was fed: the commit would find it changed and start over.
        cursor.broken = True
        cursor.cutter = Cutter()
        return
    if cursor.task is not None and not cursor.task.done():
        cursor.more = True
    else:  # it feeds whatever is staged next, catching up from disk after a restart
        cursor.task = asyncio.create_task(_advance(ctx, upload, cursor, now))


def forget(ctx: HubContext, upload_id: str) -> None:
    """Drop the upload's cursor (committed, aborted or expired)."""
    _ingests(ctx).forget(upload_id)


async def _settled(ctx: HubContext, upload_id: str) -> _Cursor | None:
    """The upload's cursor once its background work is done, taken out of the registry."""
    cursor = _ingests(ctx).cursors.pop(upload_id, None)
    if cursor is not None and cursor.task is not None:
        await asyncio.wait([cursor.task])
    return cursor


def _usable(cursor: _Cursor | None, parts: list[Path]) -> bool:
    if cursor is None or cursor.broken or len(cursor.fed) > len(parts):
        return False
    return all(_part_id(path) == fed for path, fed in zip(parts, cursor.fed, strict=False))


async def ingest(ctx: HubContext, upload: UploadRow, now: float, *, again: bool = False) -> Manifest:
    """Cut whatever was not cut yet and store it; return the file's manifest (as if cut whole).

    ``again``: ignore what was cut before and cut every part.
    """
    parts = ordered_parts(ctx, upload.id)
    cursor = await _settled(ctx, upload.id)
    if again or cursor is None or not await asyncio.to_thread(_usable, cursor, parts):
        cursor = _Cursor(upload.expires_at)
    log.debug("upload %s: %d of %d parts were cut before commit", upload.id, len(cursor.fed), len(parts))
    ingests = _ingests(ctx)
    try:
        for path in parts[len(cursor.fed) :]:
            await _feed(ctx, upload, cursor, path, now)
        await _drain(cursor)
        async with ingests.slots:
            done, manifest = await asyncio.to_thread(cursor.cutter.finish, ingests.pool)
            await _store(ctx, upload, done, now)
    except OSError as exc:
        raise StorageError(f"could not read the parts of upload {upload.id}: {exc}") from exc
    return manifest
