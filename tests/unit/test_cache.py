"""The chunk cache: limits, eviction order, pinned content kept, single-flight fetches, damage caught."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from shoal.errors import ChunkMissingError
from shoal.model.ids import ChunkId
from shoal.state.cache import CacheIndex, referenced_chunks
from shoal.state.db import DeviceDB
from shoal.store.base import blob_key
from shoal.store.cache import CachedChunks, ChunkCache, Priority
from shoal.testing.vfs import TestArena

KIB = 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        self.now += 1
        return self.now


def _cid(n: int) -> ChunkId:
    return ChunkId(n.to_bytes(32, "big"))


@pytest.fixture
def db(tmp_path: Path) -> DeviceDB:
    return DeviceDB.open(tmp_path / "state.db")


def _cache(tmp_path: Path, db: DeviceDB, limit: int, reserved: int = 0) -> ChunkCache:
    return ChunkCache.open(
        tmp_path / "cache", CacheIndex(db), limit, reserved=lambda: reserved, clock=Clock()
    )


def test_eviction_takes_unreferenced_then_least_recently_used_and_never_pinned(
    tmp_path: Path, db: DeviceDB
) -> None:
    cache = _cache(tmp_path, db, limit=100 * KIB)
    assert cache.store(_cid(1), b"p" * 30 * KIB, Priority.PINNED)
    assert cache.store(_cid(2), b"u" * 30 * KIB, Priority.UNPINNED)
    assert cache.store(_cid(3), b"x" * 30 * KIB, Priority.UNREFERENCED)
    assert cache.read(_cid(2)) is not None  # 2 is now the most recently used
    assert cache.store(_cid(4), b"n" * 30 * KIB, Priority.UNPINNED)
    assert not cache.contains(_cid(3))  # unreferenced goes first, even though 2 is older
    assert cache.contains(_cid(1))
    assert cache.contains(_cid(2))
    assert cache.used <= cache.limit
    assert cache.store(_cid(5), b"m" * 30 * KIB, Priority.UNPINNED)
    assert cache.contains(_cid(1))  # pinned stays
    assert cache.used <= cache.limit


def test_the_limit_counts_pinned_files_outside_the_cache(tmp_path: Path, db: DeviceDB) -> None:
    cache = _cache(tmp_path, db, limit=100 * KIB, reserved=80 * KIB)
    assert cache.store(_cid(1), b"a" * 15 * KIB, Priority.UNPINNED)
    assert not cache.store(_cid(2), b"b" * 30 * KIB, Priority.UNPINNED)  # does not fit next to pinned files
    assert cache.status().used + cache.status().reserved <= 100 * KIB


def test_a_cache_full_of_pinned_chunks_stores_no_unpinned_one(tmp_path: Path, db: DeviceDB) -> None:
    cache = _cache(tmp_path, db, limit=50 * KIB)
    assert cache.store(_cid(1), b"p" * 40 * KIB, Priority.PINNED)
    assert not cache.store(_cid(2), b"u" * 20 * KIB, Priority.UNPINNED)
    assert cache.store(_cid(3), b"q" * 20 * KIB, Priority.PINNED)  # pinned content is kept regardless
    assert cache.status().over_limit
    assert cache.clear() == 0
    assert cache.contains(_cid(1))
    assert cache.contains(_cid(3))


def test_metadata_survives_reopen_and_orphan_files_are_adopted(tmp_path: Path, db: DeviceDB) -> None:
    cache = _cache(tmp_path, db, limit=1 << 20)
    cache.store(_cid(1), b"one", Priority.PINNED)
    cache.flush()
    orphan = tmp_path / "cache" / blob_key(_cid(2))  # written, then killed before its row
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"two")
    (tmp_path / "cache" / blob_key(_cid(1))).parent.joinpath(".tmp-dead").write_bytes(b"torn")
    again = _cache(tmp_path, db, limit=1 << 20)
    assert again.priority_of(_cid(1)) is Priority.PINNED
    assert again.priority_of(_cid(2)) is Priority.UNREFERENCED
    assert again.used == 6
    assert not list((tmp_path / "cache").glob("*/.tmp-*"))


def test_shrink_and_clear(tmp_path: Path, db: DeviceDB) -> None:
    cache = _cache(tmp_path, db, limit=1 << 20)
    for n in range(10):
        cache.store(_cid(n), bytes([n]) * 10 * KIB, Priority.PINNED if n == 0 else Priority.UNPINNED)
    assert cache.shrink(50 * KIB) >= 50 * KIB
    assert cache.used <= 50 * KIB
    assert cache.contains(_cid(0))
    cache.clear()
    assert cache.used == 10 * KIB
    assert cache.contains(_cid(0))
    assert [p.name for p in (tmp_path / "cache").glob("*/*")] == [_cid(0).hex()]


def test_referenced_chunks_and_reclassify_follow_the_index(tmp_path: Path) -> None:
    arena = TestArena.create(
        tmp_path / "a", {"pinned.bin": b"P" * 5000, "loose.bin": b"L" * 5000}, pinned=["pinned.bin"]
    )
    refs = referenced_chunks(arena.db)
    by_priority = sorted(refs.values())
    assert by_priority == [Priority.UNPINNED, Priority.PINNED]
    cache = arena.cache()
    stray = _cid(7)
    cache.store(stray, b"gone", Priority.UNPINNED)
    for cid in refs:
        cache.store(cid, b"x", Priority.UNREFERENCED)
    cache.reclassify(refs)
    assert cache.priority_of(stray) is Priority.UNREFERENCED
    assert sorted(p for cid in refs if (p := cache.priority_of(cid)) is not None) == by_priority
    arena.close()


async def _concurrent(chunks: CachedChunks, cid: ChunkId, n: int) -> list[bytes]:
    return await asyncio.gather(*(chunks.get(cid) for _ in range(n)))


def test_concurrent_readers_of_one_chunk_fetch_it_once(tmp_path: Path) -> None:
    data = os.urandom(300 * KIB)
    arena = TestArena.create(tmp_path / "a", {"f": data})
    cid = arena.sealed.chunk_id(data)
    chunks = CachedChunks(arena.sealed, arena.cache())
    got = asyncio.run(_concurrent(chunks, cid, 20))
    assert got == [data] * 20
    assert arena.source.gets == 1
    assert chunks.fetches == 1
    fresh = CachedChunks(arena.sealed, arena.cache())  # a new process: the disk cache answers
    assert asyncio.run(fresh.get(cid)) == data
    assert arena.source.gets == 1
    arena.close()


def test_a_damaged_cache_file_is_fetched_again_never_served(tmp_path: Path) -> None:
    data = os.urandom(100 * KIB)
    arena = TestArena.create(tmp_path / "a", {"f": data})
    cid = arena.sealed.chunk_id(data)
    asyncio.run(CachedChunks(arena.sealed, arena.cache()).get(cid))
    path = tmp_path / "a" / "cache" / blob_key(cid)
    path.write_bytes(b"\0" * len(data))  # bit rot, or a torn write after a crash
    assert asyncio.run(CachedChunks(arena.sealed, arena.cache()).get(cid)) == data
    assert arena.source.gets == 2
    assert path.read_bytes() == data
    arena.close()


def test_a_missing_chunk_is_an_error_for_every_waiting_reader(tmp_path: Path) -> None:
    arena = TestArena.create(tmp_path / "a", {})
    chunks = CachedChunks(arena.sealed, arena.cache())

    async def main() -> list[object]:
        return await asyncio.gather(*(chunks.get(_cid(9)) for _ in range(3)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, ChunkMissingError) for r in results)
    assert not chunks.cache.contains(_cid(9))
    arena.close()


def test_concurrent_stores_stay_within_the_limit(tmp_path: Path, db: DeviceDB) -> None:
    from concurrent.futures import ThreadPoolExecutor

    cache = _cache(tmp_path, db, limit=256 * KIB)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda n: cache.store(_cid(n), bytes([n % 256]) * 32 * KIB, Priority.UNPINNED), range(64)
            )
        )
    on_disk = sum(p.stat().st_size for p in (tmp_path / "cache").glob("*/*"))
    assert cache.used == on_disk
    assert on_disk <= 256 * KIB
