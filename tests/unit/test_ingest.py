"""The ingest pipeline: manifests that restore the file, dedup, bounded memory, changing files."""

from __future__ import annotations

import asyncio
import io
import os
import random
import resource
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import pytest

from shoal.chunking.chunker import iter_chunks
from shoal.chunking.hashing import chunk_id
from shoal.crypto.arena_keys import ArenaKeys
from shoal.engine import ingest
from shoal.engine.ingest import InflightBudget, IngestResult, ingest_file
from shoal.errors import ChangedWhileReadingError, NotFoundError, UsageError
from shoal.model.ids import ChunkId
from shoal.settings import MIB, ChunkingSettings, PipelineSettings
from shoal.store.sealed import EncryptedSealer, PlainSealer, SealedChunkStore, Sealer
from shoal.testing.memory_store import MemoryBlobStore

CHUNKING = ChunkingSettings()
PIPELINE = PipelineSettings(workers=2, max_inflight_bytes=16 * MIB)


def _mixed(size: int, seed: int) -> bytes:
    """Half random, half compressible text, in 64 KiB runs."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(65536) if rng.random() < 0.5 else b"some text %d\n" % rng.randrange(99) * 5000
    return bytes(out[:size])


def _ingest(
    path: Path, store: SealedChunkStore, executor: ThreadPoolExecutor, pipeline: PipelineSettings = PIPELINE
) -> IngestResult:
    return asyncio.run(ingest_file(path, store, CHUNKING, pipeline, executor))


async def _restore(store: SealedChunkStore, result: IngestResult) -> bytes:
    parts = [await store.get(ref.id) for ref in result.manifest.chunks]
    return b"".join(parts)


def _sealers() -> list[Sealer]:
    return [PlainSealer(), EncryptedSealer(ArenaKeys.derive(b"\x42" * 32), b"arena-1")]


@pytest.mark.parametrize("sealer", _sealers(), ids=["plain", "encrypted"])
def test_manifest_restores_the_file(tmp_path: Path, executor: ThreadPoolExecutor, sealer: Sealer) -> None:
    data = _mixed(20 * MIB, seed=1)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    store = SealedChunkStore(MemoryBlobStore(), sealer)
    result = _ingest(path, store, executor)
    assert asyncio.run(_restore(store, result)) == data
    assert result.manifest.size == len(data) == result.bytes_read
    assert result.manifest.file_hash == chunk_id(data, sealer.id_key)
    assert result.chunks == len(result.manifest.chunks) == result.new_chunks
    assert 0 < result.bytes_stored < len(data)  # the text half compresses
    expected = [len(c) for c in iter_chunks(io.BytesIO(data), sealer.chunking(CHUNKING))]
    assert [ref.length for ref in result.manifest.chunks] == expected


def test_second_ingest_uploads_nothing(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    data = _mixed(12 * MIB, seed=2)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(data)
    blobs = MemoryBlobStore()
    store = SealedChunkStore(blobs, PlainSealer())
    first = _ingest(tmp_path / "a", store, executor)
    puts = blobs.put_count
    second = _ingest(tmp_path / "b", store, executor)
    assert second.manifest == first.manifest
    assert second.new_chunks == 0
    assert second.bytes_stored == 0
    assert blobs.put_count == puts


def test_repeated_content_is_stored_once(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    block = os.urandom(4 * MIB)  # random then zeros repeated: identical max-size chunks
    data = block + bytes(40 * MIB)
    path = tmp_path / "z"
    path.write_bytes(data)
    blobs = MemoryBlobStore()
    store = SealedChunkStore(blobs, PlainSealer())
    result = _ingest(path, store, executor, PipelineSettings(workers=2, max_inflight_bytes=8 * MIB))
    assert result.chunks > result.new_chunks == len(blobs) == blobs.put_count
    assert len({ref.id for ref in result.manifest.chunks}) == len(blobs)
    assert asyncio.run(_restore(store, result)) == data


def test_empty_and_tiny_files(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    store = SealedChunkStore(MemoryBlobStore(), PlainSealer())
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "tiny").write_bytes(b"hi")
    empty = _ingest(tmp_path / "empty", store, executor)
    assert empty.manifest.size == 0
    assert empty.manifest.chunks == ()
    assert empty.manifest.file_hash == chunk_id(b"")
    tiny = _ingest(tmp_path / "tiny", store, executor)
    assert [ref.length for ref in tiny.manifest.chunks] == [2]
    assert asyncio.run(_restore(store, tiny)) == b"hi"


def test_encrypted_cut_points_follow_the_arena_seed(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    data = os.urandom(16 * MIB)
    path = tmp_path / "f"
    path.write_bytes(data)
    plain = _ingest(path, SealedChunkStore(MemoryBlobStore(), PlainSealer()), executor)
    sealer = EncryptedSealer(ArenaKeys.derive(b"\x42" * 32), b"arena-1")
    encrypted = _ingest(path, SealedChunkStore(MemoryBlobStore(), sealer), executor)
    assert [r.length for r in plain.manifest.chunks] != [r.length for r in encrypted.manifest.chunks]


def test_missing_and_special_files(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    store = SealedChunkStore(MemoryBlobStore(), PlainSealer())
    with pytest.raises(NotFoundError, match="vanished"):
        _ingest(tmp_path / "absent", store, executor)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UsageError, match="not a regular file"):
        _ingest(tmp_path / "fifo", store, executor)


class _AppendOnFirstRead:
    """Wraps the opened file; the first read appends to the file on disk, like a concurrent writer."""

    def __init__(self, inner: BinaryIO, path: Path) -> None:
        self._inner, self._path, self._done = inner, path, False

    def readinto(self, buf: memoryview) -> int:
        if not self._done:
            self._done = True
            with open(self._path, "ab") as f:
                f.write(b"appended while reading")
        return self._inner.readinto(buf)  # type: ignore[attr-defined,no-any-return]

    def fileno(self) -> int:
        return self._inner.fileno()

    def close(self) -> None:
        self._inner.close()


@pytest.mark.parametrize("size", [10_000, 6 * MIB], ids=["one-chunk", "streamed"])
def test_file_changed_while_reading_is_detected(
    tmp_path: Path, executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    path = tmp_path / "growing.log"
    path.write_bytes(_mixed(size, seed=3))
    real_open = ingest._open_for_reading
    monkeypatch.setattr(ingest, "_open_for_reading", lambda p: _AppendOnFirstRead(real_open(p), p))
    store = SealedChunkStore(MemoryBlobStore(), PlainSealer())
    with pytest.raises(ChangedWhileReadingError, match=r"growing\.log"):
        _ingest(path, store, executor)


@pytest.mark.parametrize("repeat", [1000, 500_000], ids=["one-chunk", "streamed"])
def test_file_replaced_while_reading_is_detected(
    tmp_path: Path, executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch, repeat: int
) -> None:
    path = tmp_path / "doc.txt"
    path.write_bytes(b"old content " * repeat)
    real_open = ingest._open_for_reading

    def open_then_replace(p: Path) -> BinaryIO:
        opened = real_open(p)
        (tmp_path / "new").write_bytes(b"new content " * repeat)
        os.replace(tmp_path / "new", p)  # same size, new inode: an editor's atomic save
        return opened

    monkeypatch.setattr(ingest, "_open_for_reading", open_then_replace)
    with pytest.raises(ChangedWhileReadingError, match=r"doc\.txt"):
        _ingest(path, SealedChunkStore(MemoryBlobStore(), PlainSealer()), executor)


@pytest.mark.slow
def test_huge_sparse_file_in_bounded_memory(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    path = tmp_path / "sparse.img"
    subprocess.run(["truncate", "-s", "5G", str(path)], check=True)
    with open(path, "r+b") as f:  # a little real data so not every chunk is the same
        for offset in (0, 2 * 1024**3, 5 * 1024**3 - 4096):
            f.seek(offset)
            f.write(os.urandom(4096))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    blobs = MemoryBlobStore()
    result = _ingest(path, SealedChunkStore(blobs, PlainSealer()), executor)
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert result.manifest.size == 5 * 1024**3
    assert growth < 300 * MIB, f"max RSS grew by {growth / MIB:.0f} MiB"
    assert len(blobs) <= 10  # zero chunks dedup to one


class _GatedStore(MemoryBlobStore):
    """A store whose uploads wait until the test opens the gate, like a stalled network."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.on_first_put: asyncio.Future[None] | None = None

    async def put_many(self, blobs: Sequence[tuple[ChunkId, bytes]]) -> None:
        if self.on_first_put is not None and not self.on_first_put.done():
            self.on_first_put.set_result(None)
        await self.gate.wait()
        await super().put_many(blobs)


def test_reading_stops_while_uploads_stall(
    tmp_path: Path, executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big"
    path.write_bytes(os.urandom(64 * MIB))
    read_so_far = [0]
    real_open = ingest._open_for_reading

    class Counting:
        def __init__(self, inner: BinaryIO) -> None:
            self._inner = inner

        def readinto(self, buf: memoryview) -> int:
            n: int = self._inner.readinto(buf)  # type: ignore[attr-defined]
            read_so_far[0] += n
            return n

        def fileno(self) -> int:
            return self._inner.fileno()

        def close(self) -> None:
            self._inner.close()

    monkeypatch.setattr(ingest, "_open_for_reading", lambda p: Counting(real_open(p)))
    blobs = _GatedStore()
    store = SealedChunkStore(blobs, PlainSealer())
    pipeline = PipelineSettings(workers=2, max_inflight_bytes=8 * MIB)

    async def body() -> IngestResult:
        blobs.on_first_put = asyncio.get_running_loop().create_future()
        running = asyncio.create_task(ingest_file(path, store, CHUNKING, pipeline, executor))
        await blobs.on_first_put
        for _ in range(30):  # give the reader every chance to run ahead
            await asyncio.sleep(0.01)
        stalled_at = read_so_far[0]
        blobs.gate.set()
        result = await running
        assert stalled_at <= 8 * MIB + 3 * CHUNKING.max_size, f"read {stalled_at / MIB:.0f} MiB ahead"
        return result

    result = asyncio.run(body())
    assert read_so_far[0] == 64 * MIB == result.manifest.size
    assert asyncio.run(_restore(store, result)) == path.read_bytes()


def test_budget_serves_waiters_in_order_and_lets_an_oversized_request_run_alone() -> None:
    async def body() -> list[str]:
        budget = InflightBudget(10)
        order: list[str] = []
        await budget.acquire(8)

        async def want(name: str, amount: int) -> None:
            await budget.acquire(amount)
            order.append(name)
            await asyncio.sleep(0)
            budget.release(amount)

        big = asyncio.create_task(want("big", 50))
        small = asyncio.create_task(want("small", 1))
        await asyncio.sleep(0)
        assert order == []  # "small" would fit, but waits its turn behind "big"
        budget.release(8)
        await asyncio.wait_for(asyncio.gather(big, small), timeout=10)
        assert budget.used == 0
        return order

    assert asyncio.run(body()) == ["big", "small"]


def test_budget_cancelled_waiter_does_not_leak_or_block() -> None:
    async def body() -> int:
        budget = InflightBudget(10)
        await budget.acquire(10)
        stuck = asyncio.create_task(budget.acquire(5))
        behind = asyncio.create_task(budget.acquire(3))
        await asyncio.sleep(0)
        stuck.cancel()
        budget.release(10)
        await behind
        with pytest.raises(asyncio.CancelledError):
            await stuck
        return budget.used

    assert asyncio.run(body()) == 3


def test_concurrent_ingests_share_one_budget(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    files = []
    for i in range(4):
        path = tmp_path / f"f{i}"
        path.write_bytes(os.urandom(12 * MIB))
        files.append(path)
    blobs = _GatedStore()
    store = SealedChunkStore(blobs, PlainSealer())
    budget = InflightBudget(8 * MIB)

    async def body() -> list[IngestResult]:
        blobs.on_first_put = asyncio.get_running_loop().create_future()
        running = [
            asyncio.create_task(ingest_file(p, store, CHUNKING, PIPELINE, executor, budget)) for p in files
        ]
        await blobs.on_first_put
        for _ in range(30):
            await asyncio.sleep(0.01)
        assert budget.used <= 8 * MIB + CHUNKING.max_size
        blobs.gate.set()
        return await asyncio.gather(*running)

    results = asyncio.run(body())
    assert budget.used == 0
    for path, result in zip(files, results, strict=True):
        assert asyncio.run(_restore(store, result)) == path.read_bytes()


def test_cancelled_ingest_closes_the_file_and_returns_its_budget(
    tmp_path: Path, executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big"
    path.write_bytes(os.urandom(24 * MIB))
    opened: list[BinaryIO] = []
    real_open = ingest._open_for_reading

    def tracking_open(p: Path) -> BinaryIO:
        f = real_open(p)
        opened.append(f)
        return f

    monkeypatch.setattr(ingest, "_open_for_reading", tracking_open)
    blobs = _GatedStore()  # uploads never finish
    store = SealedChunkStore(blobs, PlainSealer())
    budget = InflightBudget(8 * MIB)

    async def body() -> None:
        blobs.on_first_put = asyncio.get_running_loop().create_future()
        running = asyncio.create_task(ingest_file(path, store, CHUNKING, PIPELINE, executor, budget))
        await blobs.on_first_put
        await asyncio.sleep(0.05)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(body())
    assert budget.used == 0
    assert len(opened) == 1
    assert opened[0].closed
    assert len(blobs) == 0


@pytest.mark.parametrize("size", [256 * 1024 - 1, 256 * 1024, 256 * 1024 + 1])
def test_files_around_the_one_chunk_limit(tmp_path: Path, executor: ThreadPoolExecutor, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    for sealer in _sealers():
        store = SealedChunkStore(MemoryBlobStore(), sealer)
        result = _ingest(path, store, executor)
        assert asyncio.run(_restore(store, result)) == data
        assert result.manifest.file_hash == chunk_id(data, sealer.id_key)
        expected = [len(c) for c in iter_chunks(io.BytesIO(data), sealer.chunking(CHUNKING))]
        assert [ref.length for ref in result.manifest.chunks] == expected


def test_many_small_files_dedup(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    blobs = MemoryBlobStore()
    store = SealedChunkStore(blobs, PlainSealer())
    for i in range(20):
        (tmp_path / f"f{i}").write_bytes(b"same small file" if i % 2 else b"other %d" % i)

    async def body() -> list[IngestResult]:
        budget = InflightBudget(PIPELINE.max_inflight_bytes)
        return await asyncio.gather(
            *(ingest_file(tmp_path / f"f{i}", store, CHUNKING, PIPELINE, executor, budget) for i in range(20))
        )

    results = asyncio.run(body())
    assert len(blobs) == 11
    assert sum(r.new_chunks for r in results) >= 11
    for i, result in enumerate(results):
        assert asyncio.run(_restore(store, result)) == (tmp_path / f"f{i}").read_bytes()


def test_calls_sharing_an_executor_share_a_budget_by_default(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    files = []
    for i in range(3):
        path = tmp_path / f"f{i}"
        path.write_bytes(os.urandom(12 * MIB))
        files.append(path)
    blobs = _GatedStore()
    store = SealedChunkStore(blobs, PlainSealer())
    pipeline = PipelineSettings(workers=2, max_inflight_bytes=8 * MIB)

    async def body() -> list[IngestResult]:
        blobs.on_first_put = asyncio.get_running_loop().create_future()
        running = [asyncio.create_task(ingest_file(p, store, CHUNKING, pipeline, executor)) for p in files]
        await blobs.on_first_put
        for _ in range(30):
            await asyncio.sleep(0.01)
        shared = ingest._shared_budgets[executor]
        assert 0 < shared.used <= 8 * MIB + CHUNKING.max_size
        blobs.gate.set()
        return await asyncio.gather(*running)

    results = asyncio.run(body())
    assert ingest._shared_budgets[executor].used == 0
    for path, result in zip(files, results, strict=True):
        assert asyncio.run(_restore(store, result)) == path.read_bytes()
