"""Resumable uploads of the file API: sessions and their parts staged on disk.

An upload is a row in ``uploads`` plus a staging folder
``<data dir>/uploads/<id>/`` holding its parts as ``<n>.part`` files (written
to a temporary name, synced, then renamed, so a part is whole or absent, even
after a crash, and may be sent again). Nothing is visible in the arena before
commit. ``hub.files.ingest`` cuts the parts into chunks, as they arrive or at
commit. Expired sessions are swept by the periodic maintenance task.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import NotFoundError, StorageError, UsageError
from shoal.hub.context import HubContext
from shoal.hub.db.ops_schema import uploads
from shoal.hub.errors import PayloadTooLargeError
from shoal.hub.sync.arenas import ArenaRow
from shoal.settings import MIB

_T = TypeVar("_T")

MAX_PARTS = 10_000
UPLOAD_TTL = 24 * 3600.0
_WRITE_BATCH = 4 * MIB  # a part is written to disk in pieces this big, one in flight
_IOV_MAX = 1024
# Threads of their own: in the default executor, a part's writes would queue behind blob fsyncs.
_STAGING_THREADS = ThreadPoolExecutor(4, thread_name_prefix="shoal-staging")


@dataclass(frozen=True, slots=True)
class UploadRow:
    id: str
    tenant_id: int
    arena_id: int
    path: str
    mode: int
    mtime_ns: int
    base_seq: int
    created_at: float
    expires_at: float


def staging_root(ctx: HubContext) -> Path:
    return ctx.settings.data_dir / "uploads"


def staging_dir(ctx: HubContext, upload_id: str) -> Path:
    return staging_root(ctx) / upload_id


async def create_upload(
    conn: AsyncConnection, arena: ArenaRow, path: str, *, mode: int, mtime_ns: int, base_seq: int, now: float
) -> UploadRow:
    row = UploadRow(
        id="u" + secrets.token_hex(12),
        tenant_id=arena.tenant_id,
        arena_id=arena.id,
        path=path,
        mode=mode & 0o7777,
        mtime_ns=mtime_ns,
        base_seq=base_seq,
        created_at=now,
        expires_at=now + UPLOAD_TTL,
    )
    await conn.execute(uploads.insert().values(**{f: getattr(row, f) for f in row.__slots__}))
    return row


async def get_upload(conn: AsyncConnection, tenant_id: int, upload_id: str, now: float) -> UploadRow:
    """The tenant's live upload; another tenant's, an expired or a finished one is the same 404."""
    query = sa.select(uploads).where(uploads.c.id == upload_id, uploads.c.tenant_id == tenant_id)
    row = (await conn.execute(query)).first()
    if row is None or row._mapping["expires_at"] < now:
        raise NotFoundError(
            f"upload {upload_id!r} does not exist, has expired or was already committed",
            hint="start a new upload",
        )
    m = row._mapping
    return UploadRow(**{f: m[f] for f in UploadRow.__slots__})


async def drop_upload(ctx: HubContext, conn: AsyncConnection, upload_id: str) -> None:
    await conn.execute(uploads.delete().where(uploads.c.id == upload_id))
    await asyncio.to_thread(shutil.rmtree, staging_dir(ctx, upload_id), True)


def part_path(ctx: HubContext, upload_id: str, number: int) -> Path:
    if not 1 <= number <= MAX_PARTS:
        raise UsageError(f"part numbers run from 1 to {MAX_PARTS}, not {number}")
    return staging_dir(ctx, upload_id) / f"{number:05d}.part"


def parts_of(ctx: HubContext, upload_id: str) -> dict[int, int]:
    """Part number -> size of every part received so far."""
    folder = staging_dir(ctx, upload_id)
    if not folder.is_dir():
        return {}
    out: dict[int, int] = {}
    for item in folder.iterdir():
        if item.suffix == ".part" and item.stem.isdigit():
            out[int(item.stem)] = item.stat().st_size
    return dict(sorted(out.items()))


def ordered_parts(ctx: HubContext, upload_id: str) -> list[Path]:
    """The parts 1..N, refusing gaps (a part that never arrived)."""
    have = parts_of(ctx, upload_id)
    expected = list(range(1, len(have) + 1))
    if list(have) != expected:
        missing = sorted(set(range(1, max(have, default=0) + 1)) - set(have))
        raise UsageError(
            f"upload {upload_id} lacks part(s) {', '.join(map(str, missing[:10]))}",
            hint="send every part from 1 to the last before committing",
        )
    return [part_path(ctx, upload_id, n) for n in expected]


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parent, each surviving a crash once this returns."""
    if folder.is_dir():
        return
    _make_dirs(folder.parent)
    folder.mkdir(exist_ok=True)
    _sync_dir(folder.parent)


def _open_part(tmp: Path) -> int:
    _make_dirs(tmp.parent)
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


def _write_all(fd: int, pieces: list[bytes]) -> None:
    """Write ``pieces`` in order with as few system calls as the kernel allows, no joining copy."""
    views = [memoryview(p) for p in pieces if p]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while written:
            if written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][written:]
                written = 0


def _seal_part(fd: int, pieces: list[bytes], tmp: Path, final: Path) -> None:
    """Write the rest, make the part durable, then put it in place: whole or absent after a crash."""
    try:
        _write_all(fd, pieces)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    _sync_dir(final.parent)


def _staging(fn: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
    return asyncio.get_running_loop().run_in_executor(_STAGING_THREADS, fn, *args)


async def receive_part(
    ctx: HubContext, upload_id: str, number: int, body: AsyncIterator[bytes], limit: int
) -> int:
    """Stage one part from the request stream (whole or not at all, durable once this returns).

    The body is written in batches of a few MiB by a worker thread while the next batch
    arrives, so a part never sits whole in memory and the event loop never waits on the disk.
    """
    final = part_path(ctx, upload_id, number)
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")
    total = 0
    pending: list[bytes] = []
    pending_bytes = 0
    writing: asyncio.Future[None] | None = None
    fd: int | None = None
    try:
        fd = await _staging(_open_part, tmp)
        async for piece in body:
            total += len(piece)
            if total > limit:
                raise PayloadTooLargeError(
                    f"a part is at most {limit} bytes", hint="split the file into more parts"
                )
            pending.append(piece)
            pending_bytes += len(piece)
            if pending_bytes >= _WRITE_BATCH:
                if writing is not None:
                    await writing
                writing = _staging(_write_all, fd, pending)
                pending, pending_bytes = [], 0
        if writing is not None:
            await writing
            writing = None
        sealing, fd = fd, None
        await _staging(_seal_part, sealing, pending, tmp, final)
    except OSError as exc:
        raise StorageError(f"could not stage part {number} of upload {upload_id}: {exc}") from exc
    finally:
        if fd is not None:
            if writing is not None and not writing.done():
                writing.add_done_callback(functools.partial(_close_after, fd))
            else:
                os.close(fd)
        tmp.unlink(missing_ok=True)
    return total


def _close_after(fd: int, _written: asyncio.Future[None]) -> None:
    """Close a part's file once the write still running on it (the request is gone) ends."""
    os.close(fd)
    if not _written.cancelled():
        _written.exception()  # the part is dropped anyway: a failed write is no news


async def sweep_expired(ctx: HubContext, now: float) -> int:
    """Forget uploads past their expiry and their staged parts; returns how many."""
    async with ctx.db.write() as conn:
        rows = (await conn.execute(sa.select(uploads.c.id).where(uploads.c.expires_at < now))).all()
        ids = [str(r[0]) for r in rows]
        if ids:
            await conn.execute(uploads.delete().where(uploads.c.id.in_(ids)))
    for upload_id in ids:
        await asyncio.to_thread(shutil.rmtree, staging_dir(ctx, upload_id), True)
    return len(ids)
