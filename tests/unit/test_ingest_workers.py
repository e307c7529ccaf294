"""Large files ingested in worker processes: the same manifest and chunks as on threads, errors by name."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shoal.engine import pack as pack_module
from shoal.engine.ingest import IngestResult, ingest_file
from shoal.engine.pack import pack_tree
from shoal.engine.sealpool import POOL_AFTER_BYTES, SealingPool
from shoal.errors import NotFoundError, StorageError, UsageError
from shoal.model.ids import ChunkId
from shoal.settings import KIB, MIB, ChunkingSettings, PipelineSettings
from shoal.state.flist import FlistReader, FlistWriter
from shoal.store.file import FileBlobStore
from shoal.store.sealed import PlainSealer, SealedChunkStore, Sealer

# Small chunks, so a few megabytes make many chunks and several batches.
CHUNKING = ChunkingSettings(min_size=16 * KIB, avg_size=64 * KIB, max_size=256 * KIB)
PIPELINE = PipelineSettings(workers=2, max_inflight_bytes=2 * MIB)


def _content(size: int, seed: int) -> bytes:
    """Random and repeated text in turns, so some chunks compress and some repeat."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(40_000) if rng.random() < 0.5 else b"a line that repeats\n" * 3000
    return bytes(out[:size])


def _store(root: Path, sealer: Sealer) -> SealedChunkStore:
    return SealedChunkStore(FileBlobStore(root), sealer)


async def _restore(store: SealedChunkStore, result: IngestResult) -> bytes:
    return b"".join([await store.get(ref.id) for ref in result.manifest.chunks])


async def _stored_ids(store: SealedChunkStore, ids: list[ChunkId]) -> set[ChunkId]:
    try:
        return await store.has_many(ids)
    finally:
        await store.close()


def test_a_worker_ingests_what_threads_ingest(
    tmp_path: Path, executor: ThreadPoolExecutor, sealer: Sealer
) -> None:
    path = tmp_path / "big.bin"
    content = _content(6 * MIB, seed=1)
    path.write_bytes(content)
    by_threads = _store(tmp_path / "threads", sealer)

    threads = asyncio.run(ingest_file(path, by_threads, CHUNKING, PIPELINE, executor))
    with SealingPool(sealer, 2, store_url=f"file://{tmp_path / 'workers'}", leave_a_core=False) as pool:
        first = asyncio.run(pool.ingest_file(path, CHUNKING, PIPELINE))
        again = asyncio.run(pool.ingest_file(path, CHUNKING, PIPELINE))

    assert first.manifest == threads.manifest
    assert len(first.manifest.chunks) > 20
    assert first.bytes_read == len(content)
    assert first.new_chunks == threads.new_chunks > 0
    assert again.new_chunks == 0  # the worker's store handle sees what it stored before
    by_workers = _store(tmp_path / "workers", sealer)  # opened here: the chunks are on disk
    assert asyncio.run(_restore(by_workers, first)) == content
    asyncio.run(by_workers.close())
    asyncio.run(by_threads.close())


def test_worker_errors_reach_the_caller_by_name(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with SealingPool(PlainSealer(), 1, store_url=f"file://{tmp_path / 's'}") as pool:
        with pytest.raises(NotFoundError, match=r"gone\.bin"):
            asyncio.run(pool.ingest_file(tmp_path / "gone.bin", CHUNKING, PIPELINE))
        with pytest.raises(UsageError, match="pipe"):
            asyncio.run(pool.ingest_file(fifo, CHUNKING, PIPELINE))
        # The worker survives its errors and goes on with the next file.
        (tmp_path / "fine.bin").write_bytes(_content(MIB, seed=2))
        result = asyncio.run(pool.ingest_file(tmp_path / "fine.bin", CHUNKING, PIPELINE))
    assert result.bytes_read == MIB


def test_a_pool_without_a_store_refuses_files(tmp_path: Path) -> None:
    with SealingPool(PlainSealer(), 1) as pool, pytest.raises(ValueError, match="store_url"):
        asyncio.run(pool.ingest_file(tmp_path / "x", CHUNKING, PIPELINE))


class _DyingSealer(PlainSealer):
    """Ends its worker process at the first seal, as the kernel's OOM killer would."""

    def seal(self, cid: ChunkId, plaintext: bytes | memoryview) -> bytes:
        os._exit(9)


def test_a_worker_dying_mid_file_fails_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(_content(2 * MIB, seed=3))
    with (
        SealingPool(_DyingSealer(), 1, store_url=f"file://{tmp_path / 's'}") as pool,
        pytest.raises(StorageError, match="worker process") as caught,
    ):
        asyncio.run(pool.ingest_file(path, CHUNKING, PIPELINE))
    assert caught.value.hint is not None


class _SlowSealer(PlainSealer):
    """A tenth of a second per chunk: a file of many chunks is still being stored when stopped."""

    def seal(self, cid: ChunkId, plaintext: bytes | memoryview) -> bytes:
        time.sleep(0.1)
        return super().seal(cid, plaintext)


def test_a_stopped_pool_gives_up_the_file_it_is_storing(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(_content(8 * MIB, seed=4))  # ~100 chunks of CHUNKING's sizes: 10 s at least
    told: list[int] = []

    async def stop_after_the_first_batch(pool: SealingPool) -> BaseException | IngestResult:
        job = asyncio.ensure_future(pool.ingest_file(path, CHUNKING, PIPELINE))
        while not told:
            await asyncio.sleep(0.01)
        pool.stop()
        try:
            return await job
        except StorageError as exc:
            return exc

    with SealingPool(_SlowSealer(), 1, store_url=f"file://{tmp_path / 's'}", progress=told.append) as pool:
        answer = asyncio.run(stop_after_the_first_batch(pool))
    assert isinstance(answer, StorageError)
    assert "stopped" in answer.message
    assert sum(told) < 8 * MIB


def test_pack_hands_large_files_to_the_workers_past_the_threshold(
    tmp_path: Path, executor: ThreadPoolExecutor, sealer: Sealer
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    # More large bytes than the threshold, in several files, plus small ones and a duplicate.
    contents = {f"large{i}.bin": _content(POOL_AFTER_BYTES // 3 + i * 100_000, seed=10 + i) for i in range(4)}
    contents["copy.bin"] = contents["large1.bin"]
    contents.update({f"small{i}.txt": b"small %d\n" % i * 50 for i in range(20)})
    for name, content in contents.items():
        (src / name).write_bytes(content)
    store_root = tmp_path / "store"
    store = _store(store_root, sealer)

    async def pack() -> None:
        with FlistWriter(tmp_path / "img.flist") as image:
            report = await pack_tree(src, image, store, CHUNKING, PIPELINE, executor, file_pool=pool)
        assert report.skipped == []
        assert report.files == len(contents)

    with SealingPool(sealer, 2, store_url=f"file://{store_root}", leave_a_core=False) as pool:
        asyncio.run(pack())
        assert pool.running  # fewer than POOL_AFTER_FILES small files: only the large ones started it

    with FlistReader(tmp_path / "img.flist") as image:
        manifests = {entry.path: entry.manifest for entry in image.entries() if entry.manifest is not None}

    async def restore(name: str) -> bytes:
        return b"".join([await store.get(ref.id) for ref in manifests[name].chunks])

    for name, content in contents.items():
        assert asyncio.run(restore(name)) == content, name
    asyncio.run(store.close())


def test_a_large_file_that_vanishes_before_it_is_read_is_left_out(
    tmp_path: Path, executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "kept.bin").write_bytes(_content(MIB, seed=4))
    (src / "vanishing.bin").write_bytes(_content(MIB, seed=5))
    real_ingest = pack_module.ingest_file

    async def vanish_first(path: Path, *args: object, **kwargs: object) -> IngestResult:
        if path.name == "vanishing.bin":
            path.unlink()  # between the walk and the read
        return await real_ingest(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pack_module, "ingest_file", vanish_first)
    store = _store(tmp_path / "store", PlainSealer())

    async def pack() -> list[str]:
        with FlistWriter(tmp_path / "img.flist") as image:
            report = await pack_tree(src, image, store, CHUNKING, PIPELINE, executor)
        await store.close()
        return report.skipped

    skipped = asyncio.run(pack())

    assert len(skipped) == 1
    assert "vanishing.bin" in skipped[0]
    assert "vanished" in skipped[0]
    with FlistReader(tmp_path / "img.flist") as image:
        assert [entry.path for entry in image.entries()] == ["kept.bin"]


class _Tally:
    """A progress callback that keeps what it was told (called from the loop or a pool's thread)."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self._lock:
            self.calls.append(n)


def test_progress_is_told_batch_by_batch_on_threads_and_in_workers(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(_content(6 * MIB, seed=6))  # about 12 batches of the 2 MiB budget's quarter
    on_threads, in_workers = _Tally(), _Tally()
    store = _store(tmp_path / "threads", PlainSealer())

    asyncio.run(ingest_file(path, store, CHUNKING, PIPELINE, executor, progress=on_threads))
    url = f"file://{tmp_path / 'workers'}"
    with SealingPool(PlainSealer(), 1, store_url=url, progress=in_workers) as pool:
        asyncio.run(pool.ingest_file(path, CHUNKING, PIPELINE))
    asyncio.run(store.close())

    for tally in (on_threads, in_workers):
        assert sum(tally.calls) == 6 * MIB
        assert len(tally.calls) > 3  # as it goes, not once at the end


def test_pack_tells_progress_for_every_byte_wherever_it_is_ingested(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sizes = [POOL_AFTER_BYTES // 3 + i * 100_000 for i in range(4)] + [5_000, 70_000, 0]
    for i, size in enumerate(sizes):
        (src / f"f{i}.bin").write_bytes(_content(size, seed=20 + i))
    tally = _Tally()
    store_root = tmp_path / "store"
    store = _store(store_root, PlainSealer())

    async def pack() -> None:
        with FlistWriter(tmp_path / "img.flist") as image:
            await pack_tree(src, image, store, CHUNKING, PIPELINE, executor, file_pool=pool, progress=tally)
        await store.close()

    url = f"file://{store_root}"
    with SealingPool(PlainSealer(), 2, store_url=url, leave_a_core=False, progress=tally) as pool:
        asyncio.run(pack())
        assert pool.running  # some of the bytes came from the workers
    assert sum(tally.calls) == sum(sizes)
