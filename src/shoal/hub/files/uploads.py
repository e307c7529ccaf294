"""Resumable uploads of the file API: sessions, parts staged on disk, and ingest at commit.

An upload is a row in ``uploads`` plus a staging folder
``<data dir>/uploads/<id>/`` holding its parts as ``<n>.part`` files (written
to a temporary name, then renamed, so a part is whole or absent and may be
sent again). Nothing is visible in the arena before commit. At commit the hub
cuts the concatenated parts with the same FastCDC settings devices use,
stores each new chunk in the plain envelope, records it in the tenant's chunk
index, and only then commits the ``put``. Expired sessions are swept by the
periodic maintenance task.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.chunking.chunker import iter_chunks
from shoal.chunking.envelope import encode_plain
from shoal.chunking.hashing import FileHasher, chunk_id
from shoal.errors import NotFoundError, StorageError, UsageError
from shoal.hub.context import HubContext
from shoal.hub.db.ops_schema import uploads
from shoal.hub.quota.usage import store_new_chunks
from shoal.hub.sync.arenas import ArenaRow
from shoal.model.ids import ChunkId
from shoal.model.manifest import ChunkRef, Manifest
from shoal.settings import MIB, ChunkingSettings

MAX_PARTS = 10_000
UPLOAD_TTL = 24 * 3600.0
_STORE_BATCH = 32 * MIB
_ENCODE_WORKERS = 4


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


class _Concatenated(io.RawIOBase):
    """The parts read back to back as one stream, one file open at a time."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = iter(paths)
        self._current: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while True:
            if self._current is None:
                path = next(self._paths, None)
                if path is None:
                    return 0
                self._current = path.open("rb")
            n: int = self._current.readinto(buffer)
            if n:
                return n
            self._current.close()
            self._current = None

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
        super().close()


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


def _encode(piece: bytes) -> tuple[ChunkId, int, bytes]:
    return chunk_id(piece), len(piece), encode_plain(piece)


def _batches(
    paths: list[Path], hasher: FileHasher, pool: ThreadPoolExecutor
) -> Iterator[list[tuple[ChunkId, int, bytes]]]:
    """Cut, hash and encode the stream, yielding up to about 32 MiB of raw chunks at a time."""
    stream = io.BufferedReader(_Concatenated(paths), buffer_size=4 * MIB)
    try:
        pending: list[bytes] = []
        size = 0
        for piece in iter_chunks(stream, ChunkingSettings()):
            hasher.update(piece)
            pending.append(piece)
            size += len(piece)
            if size >= _STORE_BATCH:
                yield list(pool.map(_encode, pending))
                pending, size = [], 0
        if pending:
            yield list(pool.map(_encode, pending))
    finally:
        stream.close()


async def ingest(ctx: HubContext, upload: UploadRow, now: float) -> Manifest:
    """Chunk the upload's parts into the tenant's store and index; return the file's manifest."""
    paths = ordered_parts(ctx, upload.id)
    hasher = FileHasher()
    refs: list[ChunkRef] = []
    pool = ThreadPoolExecutor(_ENCODE_WORKERS, thread_name_prefix="shoal-ingest")
    try:
        batches = _batches(paths, hasher, pool)
        while True:
            batch = await asyncio.to_thread(next, batches, None)
            if batch is None:
                break
            refs.extend(ChunkRef(cid, length) for cid, length, _ in batch)
            await store_new_chunks(ctx, upload.tenant_id, [(cid, blob) for cid, _, blob in batch], now)
    except OSError as exc:
        raise StorageError(f"could not read the parts of upload {upload.id}: {exc}") from exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return Manifest(size=sum(r.length for r in refs), chunks=tuple(refs), file_hash=hasher.digest())


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
