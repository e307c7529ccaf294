"""Read-ahead in batches: a sequential reader gets the bytes with chunks fetched together, each once;
a damaged or missing chunk in a batch fails its own read only, and nothing damaged is cached."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from shoal.errors import ChunkMissingError, CorruptChunkError, ShoalError
from shoal.model.ids import ChunkId
from shoal.model.manifest import Manifest
from shoal.store.base import blob_key
from shoal.store.cache import CachedChunks, StreamingChunkSource
from shoal.store.sealed import SealedChunkStore
from shoal.testing.vfs import TestArena
from shoal.vfs.fs import ArenaFS
from shoal.vfs.tree import ROOT_INODE

KIB = 1024
CHUNK = 64 * KIB
READ = 16 * KIB  # the kernel reads a chunk in several pieces


class Batches:
    """A streaming source over the test arena's real sealed store; remembers each batch asked."""

    def __init__(self, sealed: SealedChunkStore) -> None:
        self.sealed = sealed
        self.batches: list[list[ChunkId]] = []

    def chunk_id(self, data: bytes | memoryview) -> ChunkId:
        return self.sealed.chunk_id(data)

    async def get(self, cid: ChunkId) -> bytes:
        return await self.sealed.get(cid)

    async def stream(self, ids: Sequence[ChunkId]) -> AsyncIterator[tuple[ChunkId, bytes | ShoalError]]:
        self.batches.append(list(ids))
        for cid in ids:
            try:
                yield cid, await self.sealed.get(cid)
            except ChunkMissingError:
                continue  # like the hub: absent ids are left out of the answer
            except ShoalError as exc:
                yield cid, exc


def _filesystem(arena: TestArena, source: Batches) -> ArenaFS:
    fs = ArenaFS(arena.index, CachedChunks(source, arena.cache()), arena.base / "overlay", arena.recorder)
    fs.start()
    return fs


async def _read_all(fs: ArenaFS, name: str, size: int) -> bytes:
    fh = await fs.open(fs.lookup(ROOT_INODE, name).ino)
    try:
        return b"".join([await fs.read(fh, offset, READ) for offset in range(0, size, READ)])
    finally:
        await fs.release(fh)


def _chunk_ids(arena: TestArena, path: str) -> list[ChunkId]:
    entry = arena.index.get(path)
    assert entry is not None
    assert entry.manifest is not None
    return [ref.id for ref in Manifest.decode(entry.manifest).chunks]


def test_a_sequential_reader_gets_the_bytes_from_batches_each_chunk_fetched_once(tmp_path: Path) -> None:
    data = os.urandom(24 * CHUNK + 5)
    arena = TestArena.create(tmp_path / "a", {"big.bin": data}, chunk_size=CHUNK)
    source = Batches(arena.sealed)
    assert isinstance(source, StreamingChunkSource)
    fs = _filesystem(arena, source)

    async def main() -> bytes:
        try:
            return await _read_all(fs, "big.bin", len(data))
        finally:
            await fs.chunks.aclose()

    assert asyncio.run(main()) == data
    assert arena.source.gets == 25  # every chunk fetched once, by a batch or the first read
    assert max(len(batch) for batch in source.batches) >= 4
    assert len(source.batches) < 12
    fetched = [cid for batch in source.batches for cid in batch]
    assert len(fetched) == len(set(fetched))
    arena.close()


def test_a_damaged_or_missing_chunk_in_a_batch_fails_only_its_own_reads(tmp_path: Path) -> None:
    data = os.urandom(12 * CHUNK)
    arena = TestArena.create(tmp_path / "a", {"big.bin": data}, chunk_size=CHUNK)
    ids = _chunk_ids(arena, "big.bin")
    blobs = tmp_path / "a" / "blobs"
    damaged = blobs / blob_key(ids[4])
    blob = damaged.read_bytes()
    damaged.write_bytes(
        blob[:-1] + bytes([blob[-1] ^ 1])
    )  # always a different byte (random data may end in 0)
    (blobs / blob_key(ids[8])).unlink()
    source = Batches(arena.sealed)
    fs = _filesystem(arena, source)

    async def read(fh: int, index: int) -> bytes:
        return b"".join([await fs.read(fh, index * CHUNK + o, READ) for o in range(0, CHUNK, READ)])

    async def main() -> None:
        fh = await fs.open(fs.lookup(ROOT_INODE, "big.bin").ino)
        try:
            for index in range(12):
                if index == 4:
                    with pytest.raises(CorruptChunkError):
                        await read(fh, index)
                elif index == 8:
                    with pytest.raises(ChunkMissingError):
                        await read(fh, index)
                else:
                    assert await read(fh, index) == data[index * CHUNK : (index + 1) * CHUNK]
        finally:
            await fs.release(fh)
            await fs.chunks.aclose()

    asyncio.run(main())
    assert any(ids[4] in batch for batch in source.batches)  # the damage was met in a batch
    cache = arena.cache()
    assert not cache.contains(ids[4])
    assert not cache.contains(ids[8])
    assert cache.contains(ids[5])
    arena.close()
