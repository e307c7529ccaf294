"""Residency per path, the same three values on every surface: pinned, cached, online-only.

A file is *pinned* when this device keeps its content whatever happens (the
cache never evicts its chunks), *cached* when it is unpinned but every chunk
is local right now, *online-only* otherwise. A folder reports its setting:
pinned, or for an unpinned folder cached only when everything below is.
Setting residency on a folder sets it on everything below, as new files
inherit their folder's setting.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from shoal.errors import UsageError
from shoal.model.ids import ChunkId
from shoal.reconcile.kinds import Kind
from shoal.state.cache import referenced_chunks
from shoal.state.index import IndexEntry, Residency
from shoal.store.cache import Priority
from shoal.vfs.fs import ArenaFS
from shoal.vfs.tree import Node

HYDRATE_PARALLEL = 4


def residency_of(fs: ArenaFS, ino: int) -> Residency:
    node = fs.tree.get(ino)
    if node.pinned:
        return Residency.PINNED
    files = [n for n in fs.tree.walk(node) if n.kind is Kind.FILE]
    if all(fs.is_hydrated(n) for n in files):
        return Residency.CACHED
    return Residency.ONLINE_ONLY


def parse_residency(text: str) -> Residency:
    try:
        return Residency(text.strip())
    except ValueError:
        raise UsageError(
            f"unknown residency {text.strip()!r}", hint="use pinned, cached or online-only"
        ) from None


async def set_residency(fs: ArenaFS, ino: int, value: Residency) -> None:
    """Pin (and hydrate), unpin keeping content (cached), or unpin and drop content (online-only)."""
    top = fs.tree.get(ino)
    nodes = list(fs.tree.walk(top))
    pinned = value is Residency.PINNED
    for node in nodes:
        node.pinned = pinned
    stored = await asyncio.to_thread(fs.index.get_many, [n.path for n in nodes if n.path])
    if stored:
        updated = [replace(e, residency=value) for e in stored.values()]
        await asyncio.to_thread(_put, fs, updated)
    files = [n for n in nodes if n.kind is Kind.FILE and n.manifest is not None]
    ids = [ref.id for n in files if n.manifest is not None for ref in n.manifest.chunks]
    cache = fs.chunks.cache
    if pinned:
        cache.set_priority(ids, Priority.PINNED)
        await _hydrate(fs, files)
        return
    # Unpinned: what no pinned file still holds becomes evictable.
    referenced = await asyncio.to_thread(referenced_chunks, fs.index.db)
    cache.set_priority(
        (cid for cid in ids if referenced.get(cid, Priority.UNREFERENCED) < Priority.PINNED),
        Priority.UNPINNED,
    )
    if value is Residency.ONLINE_ONLY:
        drop: list[ChunkId] = [cid for cid in ids if cache.priority_of(cid) is Priority.UNPINNED]
        for cid in drop:
            await asyncio.to_thread(cache.drop, cid)
        fs.chunks.forget_hot()


def _put(fs: ArenaFS, entries: list[IndexEntry]) -> None:
    with fs.index.batch() as b:
        b.put(entries)


async def _hydrate(fs: ArenaFS, files: list[Node]) -> None:
    gate = asyncio.Semaphore(HYDRATE_PARALLEL)

    async def one(cid: ChunkId) -> None:
        async with gate:
            await fs.chunks.get(cid, Priority.PINNED)

    wanted = {ref.id: None for n in files if n.manifest is not None for ref in n.manifest.chunks}
    await asyncio.gather(*(one(cid) for cid in wanted))
