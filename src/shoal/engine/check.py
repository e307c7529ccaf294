"""Verify every chunk of a store, and that images find all the chunks they name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shoal.chunking.envelope import is_encrypted, parse_header
from shoal.errors import ChunkMissingError, CorruptChunkError, FormatError, StorageError
from shoal.model.ids import ChunkId, chunk_id_hex
from shoal.store.base import BlobStore
from shoal.store.sealed import Sealer

CHECKS_IN_FLIGHT = 16


@dataclass
class CheckReport:
    chunks: int = 0
    verified: int = 0
    unverifiable: int = 0  # encrypted chunks checked only for structure (no key given)
    damaged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


async def check_store(
    blobs: BlobStore,
    plain: Sealer,
    encrypted: Sealer | None,
    *,
    referenced: Iterable[tuple[str, ChunkId]] = (),
    progress: Callable[[int], None] = lambda _n: None,
) -> CheckReport:
    """Open every stored chunk with the matching sealer; report damaged ones by id.

    ``referenced`` pairs (where, chunk id) — e.g. ("photos.flist: a/b.jpg", id) —
    are checked for presence, so a missing chunk is reported with the file that needs it.
    """
    report = CheckReport()
    gate = asyncio.Semaphore(CHECKS_IN_FLIGHT)
    loop = asyncio.get_running_loop()

    def verify(cid: ChunkId, blob: bytes) -> None:
        if is_encrypted(blob):
            if encrypted is None:
                parse_header(blob, cid)
                report.unverifiable += 1
                return
            encrypted.open(cid, blob)
        else:
            plain.open(cid, blob)
        report.verified += 1

    async def check_one(cid: ChunkId) -> None:
        async with gate:
            try:
                blob = await blobs.get(cid)
                await loop.run_in_executor(None, verify, cid, blob)
            except (CorruptChunkError, FormatError) as exc:
                report.damaged.append(f"{chunk_id_hex(cid)}: {exc.message}")
            except ChunkMissingError:
                return  # deleted while we looked: not damage
            progress(1)

    tasks: set[asyncio.Task[None]] = set()
    async for cid in blobs.iterate():
        report.chunks += 1
        task = asyncio.create_task(check_one(cid))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if len(tasks) >= 4 * CHECKS_IN_FLIGHT:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    if tasks:
        await asyncio.gather(*tasks)

    wanted: dict[ChunkId, list[str]] = {}
    for where, cid in referenced:
        wanted.setdefault(cid, []).append(where)
    if wanted:
        try:
            present = await blobs.has_many(wanted)
        except StorageError:
            raise
        for cid, places in wanted.items():
            if cid not in present:
                report.missing.append(f"{chunk_id_hex(cid)} (needed by {', '.join(places[:3])})")
    return report
