"""Ingest many files for one push: small files in batches (one dedup query and one upload per
batch, not per file), large ones through ``ingest_file`` a few at a time under one byte budget."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass

from shoal.chunking.hashing import FileHasher
from shoal.engine.context import ArenaContext, SyncReport
from shoal.engine.ingest import InflightBudget, ingest_file
from shoal.errors import ShoalError
from shoal.model.ids import ChunkId
from shoal.model.manifest import ChunkRef, Manifest
from shoal.worktree.entries import ScanEntry
from shoal.worktree.paths import ArenaRoot

Progress = Callable[[int], None]
_GROUP_BYTES = 16 * 1024 * 1024
_GROUP_FILES = 2000
_LARGE_AT_ONCE = 2


@dataclass(frozen=True, slots=True)
class _Loaded:
    path: str
    cid: ChunkId | None
    data: bytes
    manifest: bytes


def _read_small(
    root: ArenaRoot, entry: ScanEntry, id_key: bytes | None, chunk_id: Callable[[bytes], ChunkId]
) -> _Loaded | str:
    """Read one small file whole; a reason string when it changed since the scan or cannot be read."""
    try:
        with root.open_parent(entry.path) as (dir_fd, name):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            with os.fdopen(fd, "rb", buffering=0) as f:
                before = os.fstat(fd)
                data = f.read(entry.size + 1)
                after = os.fstat(fd)
    except (OSError, ShoalError) as exc:
        return f"{entry.path}: cannot read it ({exc}); tried again next round"
    stamp = (before.st_ino, before.st_size, before.st_mtime_ns)
    if (
        stamp != (entry.inode, entry.size, entry.mtime_ns)
        or stamp != (after.st_ino, after.st_size, after.st_mtime_ns)
        or len(data) != entry.size
    ):
        return f"{entry.path}: changed while it was read; tried again next round"
    hasher = FileHasher(id_key)
    hasher.update(data)
    cid = chunk_id(data) if data else None
    refs = (ChunkRef(cid, len(data)),) if cid is not None else ()
    manifest = Manifest(size=len(data), chunks=refs, file_hash=hasher.digest())
    return _Loaded(entry.path, cid, data, manifest.encode())


async def ingest_many(
    ctx: ArenaContext, files: list[ScanEntry], report: SyncReport, progress: Progress | None = None
) -> dict[str, bytes]:
    """Upload the content of ``files``; return path → encoded manifest for those that stayed still."""
    min_size = ctx.store.sealer.chunking(ctx.options.chunking).min_size
    small = [f for f in files if f.size < min_size]
    large = [f for f in files if f.size >= min_size]
    manifests: dict[str, bytes] = {}
    group: list[ScanEntry] = []
    size = 0
    for entry in small:
        group.append(entry)
        size += entry.size
        if size >= _GROUP_BYTES or len(group) >= _GROUP_FILES:
            await _small_group(ctx, group, manifests, report, progress)
            group, size = [], 0
    if group:
        await _small_group(ctx, group, manifests, report, progress)
    if large:
        await _large_files(ctx, large, manifests, report, progress)
    return manifests


async def _small_group(
    ctx: ArenaContext,
    group: list[ScanEntry],
    manifests: dict[str, bytes],
    report: SyncReport,
    progress: Progress | None,
) -> None:
    loop = asyncio.get_running_loop()
    key = ctx.store.sealer.id_key
    loaded = await asyncio.gather(
        *(
            loop.run_in_executor(ctx.executor, _read_small, ctx.root, e, key, ctx.store.chunk_id)
            for e in group
        )
    )
    fresh: dict[ChunkId, bytes] = {}
    for item in loaded:
        if isinstance(item, str):
            report.skipped.append(item)
        elif item.cid is not None:
            fresh.setdefault(item.cid, item.data)
    present = await ctx.store.has_many(fresh) if fresh else set()
    todo = [(cid, data) for cid, data in fresh.items() if cid not in present]
    sealed = await asyncio.gather(
        *(loop.run_in_executor(ctx.executor, ctx.store.seal, cid, d) for cid, d in todo)
    )
    blobs = list(zip((cid for cid, _ in todo), sealed, strict=True))
    if blobs:
        await ctx.store.put_sealed_many(blobs)
        report.uploaded_bytes += sum(len(b) for _, b in blobs)
    for item in loaded:
        if not isinstance(item, str):
            manifests[item.path] = item.manifest
    if progress is not None:
        progress(sum(e.size for e in group))


async def _large_files(
    ctx: ArenaContext,
    files: list[ScanEntry],
    manifests: dict[str, bytes],
    report: SyncReport,
    progress: Progress | None,
) -> None:
    budget = InflightBudget(ctx.options.pipeline.max_inflight_bytes)
    gate = asyncio.Semaphore(_LARGE_AT_ONCE)

    async def one(entry: ScanEntry) -> None:
        async with gate:
            try:
                result = await ingest_file(
                    ctx.root.disk_path(entry.path),
                    ctx.store,
                    ctx.options.chunking,
                    ctx.options.pipeline,
                    ctx.executor,
                    budget,
                )
            except ShoalError as exc:
                report.skipped.append(f"{entry.path}: {exc.message}; tried again next round")
                return
            got = result.stat
            if (got.st_ino, got.st_size, got.st_mtime_ns) != (entry.inode, entry.size, entry.mtime_ns):
                report.skipped.append(f"{entry.path}: changed since the scan; tried again next round")
                return
            manifests[entry.path] = result.manifest.encode()
            report.uploaded_bytes += result.bytes_stored
            if progress is not None:
                progress(entry.size)

    await asyncio.gather(*(one(e) for e in files))
