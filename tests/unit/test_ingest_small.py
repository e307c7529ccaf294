"""Batches of one-chunk files: bytes restore, dedup inside a batch, one bad file does not sink the rest."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shoal.chunking.hashing import chunk_id
from shoal.engine import ingest
from shoal.engine.ingest import IngestResult, ingest_small_files
from shoal.engine.sealpool import SealedRead, SealingPool
from shoal.errors import ChangedWhileReadingError, NotFoundError, ShoalError, StorageError, UsageError
from shoal.model.ids import ChunkId
from shoal.settings import MIB, ChunkingSettings, PipelineSettings
from shoal.store.sealed import PlainSealer, SealedChunkStore, Sealer
from shoal.testing.memory_store import MemoryBlobStore

CHUNKING = ChunkingSettings()
PIPELINE = PipelineSettings(workers=2, max_inflight_bytes=16 * MIB)


def _run(
    files: Sequence[Path],
    store: SealedChunkStore,
    executor: ThreadPoolExecutor,
    pool: SealingPool | None = None,
) -> list[IngestResult | ShoalError | None]:
    given = [(path, path.stat().st_size if path.exists() else 0) for path in files]
    return asyncio.run(ingest_small_files(given, store, CHUNKING, PIPELINE, executor, pool=pool))


async def _restore(store: SealedChunkStore, result: IngestResult) -> bytes:
    return b"".join([await store.get(ref.id) for ref in result.manifest.chunks])


def test_batch_restores_every_file_and_stores_shared_content_once(
    tmp_path: Path, executor: ThreadPoolExecutor, sealer: Sealer
) -> None:
    contents = [b"file %d\n" % i * (i + 1) * 37 for i in range(40)] + [b"same bytes\n" * 500] * 3 + [b""]
    paths = []
    for i, content in enumerate(contents):
        paths.append(tmp_path / f"f{i:02d}")
        paths[-1].write_bytes(content)
    store = SealedChunkStore(MemoryBlobStore(), sealer)

    results = _run(paths, store, executor)

    assert all(isinstance(r, IngestResult) for r in results)
    done = [r for r in results if isinstance(r, IngestResult)]
    for content, result in zip(contents, done, strict=True):
        assert asyncio.run(_restore(store, result)) == content
        assert result.manifest.size == len(content)
        assert result.manifest.file_hash == chunk_id(content, sealer.id_key)
    # The three copies: one chunk, counted as new for the first file only.
    assert [r.new_chunks for r in done[40:43]] == [1, 0, 0]
    assert done[43].chunks == 0
    assert done[43].new_chunks == 0
    assert sum(r.new_chunks for r in done) == 41

    again = _run(paths, store, executor)
    assert sum(r.new_chunks for r in again if isinstance(r, IngestResult)) == 0


def test_bad_files_are_reported_and_the_rest_stored(
    tmp_path: Path, executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "good.txt"
    good.write_bytes(b"keep me\n" * 100)
    gone = tmp_path / "gone.txt"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    replaced = tmp_path / "replaced.txt"
    replaced.write_bytes(b"old content " * 100)
    real_open = ingest._open_fd

    def open_then_replace(p: Path | str) -> int:
        opened = real_open(p)
        if Path(p) == replaced:  # same size, new inode: an editor's atomic save while we read
            (tmp_path / "new").write_bytes(b"new content " * 100)
            os.replace(tmp_path / "new", p)
        return opened

    monkeypatch.setattr(ingest, "_open_fd", open_then_replace)
    store = SealedChunkStore(MemoryBlobStore(), PlainSealer())

    results = _run([gone, good, fifo, replaced], store, executor)

    assert isinstance(results[0], NotFoundError)
    assert "gone.txt" in results[0].message
    assert isinstance(results[2], UsageError)
    assert "pipe" in results[2].message
    assert isinstance(results[3], ChangedWhileReadingError)
    assert "replaced.txt" in results[3].message
    stored = results[1]
    assert isinstance(stored, IngestResult)
    assert asyncio.run(_restore(store, stored)) == b"keep me\n" * 100


def test_file_that_grew_past_its_given_size_is_handed_back(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    small, grown = tmp_path / "small", tmp_path / "grown"
    small.write_bytes(b"x" * 1000)
    grown.write_bytes(b"y" * 1000)
    store = SealedChunkStore(MemoryBlobStore(), PlainSealer())
    with grown.open("ab") as f:
        f.write(b"y" * 10)
    given = [(small, 1000), (grown, 1000)]

    results = asyncio.run(ingest_small_files(given, store, CHUNKING, PIPELINE, executor))

    assert isinstance(results[0], IngestResult)
    assert results[1] is None
    assert asyncio.run(store.blobs.has_many([chunk_id(b"y" * 1010)])) == set()


@pytest.mark.parametrize("change", ["append", "truncate", "rewrite-same-size"])
def test_file_changed_between_its_stat_and_its_read_is_left_out(
    tmp_path: Path, executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    steady, moving = tmp_path / "steady.txt", tmp_path / "moving.txt"
    steady.write_bytes(b"steady " * 300)
    moving.write_bytes(b"moving " * 300)
    real_read = ingest._read_upto

    def change_then_read(fd: int, size: int) -> bytes:
        if os.fstat(fd).st_ino == moving.stat().st_ino:
            if change == "append":
                with moving.open("ab") as f:
                    f.write(b"more")
            elif change == "truncate":
                os.truncate(moving, 100)
            else:  # same size, new bytes and times: only the times can tell
                os.utime(moving, ns=(0, 10**9))
                moving.write_bytes(b"MOVING " * 300)
        return real_read(fd, size)

    monkeypatch.setattr(ingest, "_read_upto", change_then_read)
    store = SealedChunkStore(MemoryBlobStore(), PlainSealer())

    results = _run([steady, moving], store, executor)

    assert isinstance(results[1], ChangedWhileReadingError)
    assert "moving.txt" in results[1].message
    assert isinstance(results[0], IngestResult)
    assert asyncio.run(_restore(store, results[0])) == b"steady " * 300
    assert (
        len(asyncio.run(store.blobs.has_many([chunk_id(b"moving " * 300), chunk_id(b"MOVING " * 300)]))) == 0
    )


def test_a_directory_given_as_a_file_is_refused(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    (tmp_path / "dir").mkdir()
    results = _run([tmp_path / "dir"], SealedChunkStore(MemoryBlobStore(), PlainSealer()), executor)
    assert isinstance(results[0], UsageError)
    assert "not a regular file" in results[0].message


class _DyingSealer(PlainSealer):
    """Ends its worker process at the first seal, as the kernel's OOM killer would."""

    def seal(self, cid: ChunkId, plaintext: bytes | memoryview) -> bytes:
        os._exit(9)


def test_worker_processes_store_what_threads_store(
    tmp_path: Path, executor: ThreadPoolExecutor, sealer: Sealer
) -> None:
    contents = [os.urandom(i * 97) + b"text " * i for i in range(60)] + [b"twice\n" * 300] * 2
    paths = []
    for i, content in enumerate(contents):
        paths.append(tmp_path / f"f{i:02d}")
        paths[-1].write_bytes(content)
    given = [(path, path.stat().st_size) for path in paths]
    by_threads = SealedChunkStore(MemoryBlobStore(), sealer)
    by_workers = SealedChunkStore(MemoryBlobStore(), sealer)

    threads = asyncio.run(ingest_small_files(given, by_threads, CHUNKING, PIPELINE, executor))
    with SealingPool(sealer, 2) as pool:
        workers = asyncio.run(ingest_small_files(given, by_workers, CHUNKING, PIPELINE, executor, pool=pool))

    done = [r for r in workers if isinstance(r, IngestResult)]
    assert len(done) == len(contents)
    assert [r.manifest for r in done] == [r.manifest for r in threads if isinstance(r, IngestResult)]
    for content, result in zip(contents, done, strict=True):
        assert asyncio.run(_restore(by_workers, result)) == content
    assert [r.new_chunks for r in done[-2:]] == [1, 0]
    assert sum(r.new_chunks for r in done) == len(contents) - 2  # the empty file and the second copy


def test_worker_processes_report_bad_files_by_name(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    good = tmp_path / "good.txt"
    good.write_bytes(b"keep me\n" * 100)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    given = [(tmp_path / "gone.txt", 10), (good, 800), (fifo, 0), (good, 100)]
    store = SealedChunkStore(MemoryBlobStore(), PlainSealer())

    with SealingPool(store.sealer, 1) as pool:
        results = asyncio.run(ingest_small_files(given, store, CHUNKING, PIPELINE, executor, pool=pool))

    assert isinstance(results[0], NotFoundError)
    assert "gone.txt" in results[0].message
    assert isinstance(results[1], IngestResult)
    assert asyncio.run(_restore(store, results[1])) == b"keep me\n" * 100
    assert isinstance(results[2], UsageError)
    assert "pipe" in results[2].message
    assert results[3] is None  # larger than the size given: handed back for the large-file path


def test_a_dead_worker_process_fails_the_batch_with_a_clear_error(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"content\n" * 50)
    store = SealedChunkStore(MemoryBlobStore(), _DyingSealer())

    with SealingPool(store.sealer, 1) as pool, pytest.raises(StorageError, match="worker process") as caught:
        asyncio.run(ingest_small_files([(path, 400)], store, CHUNKING, PIPELINE, executor, pool=pool))

    assert caught.value.hint is not None
    assert asyncio.run(store.blobs.has_many([chunk_id(b"content\n" * 50)])) == set()


def _original_and_copy(folder: Path, content: bytes) -> tuple[Path, Path]:
    original, copy = folder / "original.txt", folder / "copy.txt"
    original.write_bytes(content)
    copy.write_bytes(content)
    return original, copy


def test_a_worker_seals_a_copy_once_and_the_copy_names_the_stored_chunk(
    tmp_path: Path, executor: ThreadPoolExecutor, sealer: Sealer
) -> None:
    content = b"the same notes in two folders\n" * 200
    original, copy = _original_and_copy(tmp_path, content)
    store = SealedChunkStore(MemoryBlobStore(), sealer)

    with SealingPool(sealer, 1) as pool:
        first = _run([original], store, executor, pool)
        again = asyncio.run(pool.read_and_seal([(str(copy), len(content))]))
        second = _run([copy], store, executor, pool)

    assert isinstance(again[0], SealedRead)
    assert again[0].sealed is None  # not sealed a second time
    assert isinstance(first[0], IngestResult)
    assert isinstance(second[0], IngestResult)
    assert second[0].manifest == first[0].manifest
    assert (first[0].new_chunks, second[0].new_chunks) == (1, 0)
    assert asyncio.run(_restore(store, second[0])) == content


def test_a_copy_whose_chunk_is_not_stored_yet_is_handed_back(
    tmp_path: Path, executor: ThreadPoolExecutor, sealer: Sealer
) -> None:
    # The worker sealed the chunk for an earlier file whose batch never stored it (still storing,
    # or failed): the copy must not be recorded with a chunk the store lacks.
    content = b"copied before the original was stored\n" * 100
    original, copy = _original_and_copy(tmp_path, content)
    store = SealedChunkStore(MemoryBlobStore(), sealer)

    with SealingPool(sealer, 1) as pool:
        asyncio.run(pool.read_and_seal([(str(original), len(content))]))
        results = _run([copy], store, executor, pool)

    assert results == [None]  # for the one-file path to read again
    assert asyncio.run(store.blobs.has_many([sealer.chunk_id(content)])) == set()
