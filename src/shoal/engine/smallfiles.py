"""Ingest many files for one push: small files in batches (one dedup query and one upload per
batch, not per file), large ones through ``ingest_file`` a few at a time under one byte budget.

A push of many small files reads and seals them in worker processes (``engine.sealpool``): on
threads, each file's few system calls hand the GIL around and two threads are no faster than one.
A push of a few files (a daemon's usual round) stays on threads and starts no process."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from shoal.engine.context import ArenaContext, SyncReport
from shoal.engine.ingest import InflightBudget, ingest_file
from shoal.engine.sealpool import POOL_AFTER_FILES, SealingPool
from shoal.engine.smallread import read_and_seal_slice, read_small
from shoal.errors import ShoalError
from shoal.model.ids import ChunkId
from shoal.worktree.entries import ScanEntry

Progress = Callable[[int], None]
Ready = Callable[[dict[str, bytes]], Awaitable[None]]
_GROUP_BYTES = 16 * 1024 * 1024
_GROUP_FILES = 2000
_LARGE_AT_ONCE = 2
_SLICE = 64
_COMMITS_BEHIND = 2  # groups uploaded and waiting for their commit, at most
_T = TypeVar("_T")
_R = TypeVar("_R")


async def ingest_many(
    ctx: ArenaContext,
    files: list[ScanEntry],
    report: SyncReport,
    progress: Progress | None = None,
    on_ready: Ready | None = None,
) -> dict[str, bytes]:
    """Upload the content of ``files``; return path → encoded manifest for those that stayed still.
    ``on_ready`` is given each group's manifests once all its chunks are on the hub (the push
    commits them then, while the next group is read)."""
    min_size = ctx.store.sealer.chunking(ctx.options.chunking).min_size
    small = [f for f in files if f.size < min_size]
    large = [f for f in files if f.size >= min_size]
    manifests: dict[str, bytes] = {}
    # One group is read, hashed and sealed while the one before it uploads and the one before that
    # is committed: each step waits only for its own kind of work on the group before.
    upload: asyncio.Task[None] | None = None
    commits: deque[asyncio.Task[None]] = deque()
    pool = (
        SealingPool(ctx.store.sealer, ctx.options.pipeline.workers) if len(small) > POOL_AFTER_FILES else None
    )
    try:
        for group in _groups(small):
            blobs, ready = await _prepare_group(ctx, group, report, pool)
            manifests.update(ready)
            if upload is not None:
                await upload
            while len(commits) > _COMMITS_BEHIND:
                await commits.popleft()
            upload = asyncio.create_task(_upload_group(ctx, blobs, group, report, progress))
            if on_ready is not None and ready:
                previous = commits[-1] if commits else None
                commits.append(asyncio.create_task(_commit_after(upload, previous, on_ready, ready)))
        if upload is not None:
            await upload
        while commits:
            await commits.popleft()
    finally:
        pending = [t for t in (upload, *commits) if t is not None and not t.done()]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, ShoalError):
                await task
        if pool is not None:
            pool.close()  # at once, even when cancelled: no worker process outlives the push
    if large:
        done: dict[str, bytes] = {}
        await _large_files(ctx, large, done, report, progress)
        manifests.update(done)
        if on_ready is not None and done:
            await on_ready(done)
    return manifests


def _groups(small: list[ScanEntry]) -> list[list[ScanEntry]]:
    """Consecutive groups of at most ``_GROUP_FILES`` files and about ``_GROUP_BYTES``."""
    groups: list[list[ScanEntry]] = []
    size = 0
    for entry in small:
        if not groups or size >= _GROUP_BYTES or len(groups[-1]) >= _GROUP_FILES:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += entry.size
    return groups


async def _in_slices(ctx: ArenaContext, work: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``work`` over ``items`` on the worker threads, a slice per call: a thread hop per small file
    cost more than reading it."""
    loop = asyncio.get_running_loop()

    def run(part: Sequence[_T]) -> list[_R]:
        return [work(item) for item in part]

    parts = await asyncio.gather(
        *(
            loop.run_in_executor(ctx.executor, run, items[start : start + _SLICE])
            for start in range(0, len(items), _SLICE)
        )
    )
    return [out for part in parts for out in part]


async def _prepare_group(
    ctx: ArenaContext, group: list[ScanEntry], report: SyncReport, pool: SealingPool | None
) -> tuple[list[tuple[ChunkId, bytes]], dict[str, bytes]]:
    """Read, hash and seal one group: the sealed chunks the hub lacks, and path → manifest."""
    if pool is not None:
        return await _prepare_in_pool(ctx, group, report, pool)
    key = ctx.store.sealer.id_key
    loaded = await _in_slices(ctx, lambda e: read_small(ctx.root, e, key, ctx.store.chunk_id), group)
    fresh: dict[ChunkId, bytes] = {}
    for item in loaded:
        if isinstance(item, str):
            report.skipped.append(item)
        elif item.cid is not None:
            fresh.setdefault(item.cid, item.data)
    present = await ctx.store.has_many(fresh) if fresh else set()
    todo = [(cid, data) for cid, data in fresh.items() if cid not in present]
    sealed = await _in_slices(ctx, lambda item: ctx.store.seal(*item), todo)
    manifests = {item.path: item.manifest for item in loaded if not isinstance(item, str)}
    return list(zip((cid for cid, _ in todo), sealed, strict=True)), manifests


async def _prepare_in_pool(
    ctx: ArenaContext, group: list[ScanEntry], report: SyncReport, pool: SealingPool
) -> tuple[list[tuple[ChunkId, bytes]], dict[str, bytes]]:
    """As the thread path, but every file is read and sealed in a worker process; sealing a chunk
    the hub turns out to hold costs less than a second trip to the workers."""
    parts = await asyncio.gather(
        *(
            pool.run(read_and_seal_slice, (ctx.root, group[start : start + _SLICE]))
            for start in range(0, len(group), _SLICE)
        )
    )
    fresh: dict[ChunkId, bytes] = {}
    manifests: dict[str, bytes] = {}
    for item in (item for part in parts for item in part):
        if isinstance(item, str):
            report.skipped.append(item)
            continue
        path, cid, sealed, manifest = item
        manifests[path] = manifest
        if cid is not None:
            fresh.setdefault(cid, sealed)
    present = await ctx.store.has_many(fresh) if fresh else set()
    return [(cid, sealed) for cid, sealed in fresh.items() if cid not in present], manifests


async def _upload_group(
    ctx: ArenaContext,
    blobs: list[tuple[ChunkId, bytes]],
    group: list[ScanEntry],
    report: SyncReport,
    progress: Progress | None,
) -> None:
    if blobs:
        await ctx.store.put_sealed_many(blobs)
        report.uploaded_bytes += sum(len(b) for _, b in blobs)
    if progress is not None:
        progress(sum(e.size for e in group))


async def _commit_after(
    upload: asyncio.Task[None], previous: asyncio.Task[None] | None, on_ready: Ready, ready: dict[str, bytes]
) -> None:
    """``on_ready`` for a group once its chunks are on the hub and the group before it is committed."""
    await asyncio.shield(upload)  # the loop awaits it too; a failure surfaces there first
    if previous is not None:
        await asyncio.shield(previous)
    await on_ready(ready)


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
