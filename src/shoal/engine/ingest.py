"""The ingest pipeline: read → chunk → hash → (dedup) → compress → seal → store, for one file.

One reader step at a time runs on the loop's default executor: it reads a
batch of chunks (FastCDC) and feeds the whole-file hash. Each batch then becomes a task that
hashes its chunks in parallel on the executor, asks the store which ids it
lacks, seals only those in parallel and uploads them. A byte budget
(``PipelineSettings.max_inflight_bytes``) stops reading while too much
plaintext is in flight, so memory stays bounded whatever the file size.
See ``docs/dev/pipeline.md`` for the measurements behind the design.
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.chunking.chunker import BlockChunker
from shoal.chunking.hashing import FileHasher
from shoal.errors import ChangedWhileReadingError, NotFoundError, ShoalError, StorageError, UsageError
from shoal.model.ids import ChunkId
from shoal.model.manifest import ChunkRef, Manifest
from shoal.settings import ChunkingSettings, PipelineSettings
from shoal.store.sealed import SealedChunkStore, Sealer

if TYPE_CHECKING:  # sealpool imports this module
    from shoal.engine.sealpool import SealedRead, SealingPool


@dataclass(frozen=True, slots=True)
class IngestResult:
    manifest: Manifest
    stat: os.stat_result  # the file's stat before reading, unchanged after it
    bytes_read: int
    chunks: int
    new_chunks: int  # chunks this call sealed and uploaded
    bytes_stored: int  # sealed bytes this call uploaded


async def ingest_file(
    path: Path,
    store: SealedChunkStore,
    settings: ChunkingSettings,
    pipeline: PipelineSettings,
    executor: Executor,
    budget: InflightBudget | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Chunk, dedup, seal and store one regular file; its manifest names only chunks now in the store.

    The gear seed comes from ``store.sealer`` (encrypted arenas key their cut
    points), whatever ``settings.seed`` says. Without a ``budget``, all calls
    sharing ``executor`` share one of ``pipeline.max_inflight_bytes``, so
    ingesting many files at once stays in bounded memory too. Raises
    ChangedWhileReadingError when the file changed while it was read,
    NotFoundError when it vanished. ``progress`` is told the plaintext bytes of
    each batch once stored (for a large file, several times as it goes).
    """
    loop = asyncio.get_running_loop()
    chunking = store.sealer.chunking(settings)
    if budget is None:
        budget = _shared_budgets.setdefault(executor, InflightBudget(pipeline.max_inflight_bytes))
    # A file up to the minimum chunk size is one chunk: one executor step reads, checks, hashes and
    # seals it (most files in a tree are small, and each hop between loop and thread costs).
    small_reserve = 2 * chunking.min_size  # its plaintext and its sealed copy
    await budget.acquire(small_reserve)
    try:
        reader, whole = await loop.run_in_executor(
            executor, _open_and_read_small, path, chunking, store.sealer
        )
        if whole is not None:
            result = await _store_whole(reader, whole, store)
            if progress is not None:
                progress(result.bytes_read)
            return result
    finally:
        budget.release(small_reserve)
    return await _ingest_stream(reader, store, chunking, pipeline, executor, budget, progress)


async def _ingest_stream(
    reader: _FileReader,
    store: SealedChunkStore,
    chunking: ChunkingSettings,
    pipeline: PipelineSettings,
    executor: Executor,
    budget: InflightBudget,
    progress: Callable[[int], None] | None,
) -> IngestResult:
    """The streaming path for files of more than one chunk."""
    loop = asyncio.get_running_loop()
    batch_target = max(chunking.max_size, pipeline.max_inflight_bytes // 4)
    claimed: set[ChunkId] = set()
    tasks: list[asyncio.Task[_BatchResult]] = []
    reading: asyncio.Future[list[memoryview]] | None = None
    try:
        while (remaining := reader.stat.st_size - reader.bytes_read) > 0:
            # Reserve what this batch can hold: what it reads (at least one chunk more than a maximal
            # chunk), plus the chunk the last batch's end cut short and carried over.
            target = min(batch_target, remaining)
            reserve = max(target, chunking.max_size + 1) + chunking.max_size
            await budget.acquire(reserve)
            try:
                # Reads (with the FastCDC and whole-file hash riding along) have threads of their own, so
                # they never queue behind hash/seal jobs on ``executor`` nor behind the store's writes and
                # fsyncs on the default executor: read-ahead overlaps sealing and uploading.
                reading = loop.run_in_executor(_readers(), reader.read_batch, target)
                batch = await asyncio.shield(reading)  # a cancellation must not orphan a running read
            except BaseException:
                budget.release(reserve)
                raise
            used = sum(len(chunk) for chunk in batch)
            budget.release(reserve - used)
            if not batch:
                break
            tasks.append(
                asyncio.create_task(
                    _store_batch(
                        batch,
                        used,
                        store=store,
                        claimed=claimed,
                        budget=budget,
                        executor=executor,
                        progress=progress,
                    )
                )
            )
            del batch
        results = await asyncio.gather(*tasks)
        file_stat = await loop.run_in_executor(_readers(), reader.check_unchanged)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        if reading is not None and not reading.done():
            await asyncio.wait([reading])  # never close the file under a running read
        reader.close()

    refs = tuple(ref for result in results for ref in result.refs)
    manifest = Manifest(size=reader.bytes_read, chunks=refs, file_hash=reader.file_hash())
    return IngestResult(
        manifest=manifest,
        stat=file_stat,
        bytes_read=reader.bytes_read,
        chunks=len(refs),
        new_chunks=sum(r.new_chunks for r in results),
        bytes_stored=sum(r.bytes_stored for r in results),
    )


@dataclass(frozen=True, slots=True)
class _Whole:
    """A one-chunk file, read, hashed and sealed in one step (no chunk for an empty file)."""

    cid: ChunkId | None
    length: int
    blob: bytes


async def _store_whole(reader: _FileReader, whole: _Whole, store: SealedChunkStore) -> IngestResult:
    refs: tuple[ChunkRef, ...] = ()
    new_chunks = bytes_stored = 0
    if whole.cid is not None:
        refs = (ChunkRef(whole.cid, whole.length),)
        written, _ = await store.store_missing([whole.cid], {whole.cid: whole.blob})
        if written:
            new_chunks, bytes_stored = 1, len(whole.blob)
    return IngestResult(
        manifest=Manifest(size=whole.length, chunks=refs, file_hash=reader.file_hash()),
        stat=reader.stat,
        bytes_read=whole.length,
        chunks=len(refs),
        new_chunks=new_chunks,
        bytes_stored=bytes_stored,
    )


SMALL_SLICE_FILES = 16  # files per executor job in a batch: enough to make the thread hop cheap


async def ingest_small_files(
    files: Sequence[tuple[Path | str, int]],
    store: SealedChunkStore,
    settings: ChunkingSettings,
    pipeline: PipelineSettings,
    executor: Executor,
    budget: InflightBudget | None = None,
    pool: SealingPool | None = None,
) -> list[IngestResult | ShoalError | None]:
    """Ingest a batch of one-chunk files, given as (path, size the caller saw), with few thread hops.

    Workers read, check and hash the files a slice at a time; one ``has_many``
    asks for the whole batch, workers seal the new chunks, one put stores
    them. With a ``pool`` its processes read and seal every file (sealing a
    chunk the store turns out to hold is cheaper than a second trip), and
    only the new ones are stored. Returns one item per file, in order: its result; the ShoalError
    that kept it out (it vanished, changed while read, cannot be read), the
    other files going on; or None when it is now larger than its given size
    or than one chunk, or is a copy whose chunk a worker sealed for an earlier
    file that the store does not hold yet, for :func:`ingest_file` to take. A store failure
    raises for the whole batch. Budget as in :func:`ingest_file`: plaintext
    and sealed copy of the given sizes.
    """
    loop = asyncio.get_running_loop()
    chunking = store.sealer.chunking(settings)
    if budget is None:
        budget = _shared_budgets.setdefault(executor, InflightBudget(pipeline.max_inflight_bytes))
    reserve = 2 * sum(min(size, chunking.min_size) for _, size in files)
    await budget.acquire(reserve)
    try:
        limits = [(str(path), min(size, chunking.min_size)) for path, size in files]
        slices = [limits[i : i + SMALL_SLICE_FILES] for i in range(0, len(limits), SMALL_SLICE_FILES)]
        if pool is not None:
            return await _store_sealed_reads(
                [read for part in await asyncio.gather(*map(pool.read_and_seal, slices)) for read in part],
                store,
            )
        reads = [
            read
            for part in await asyncio.gather(
                *(
                    loop.run_in_executor(executor, _read_small_slice, part, chunking, store.sealer)
                    for part in slices
                )
            )
            for read in part
        ]
        wanted: dict[ChunkId, bytes] = {}
        for read in reads:
            if isinstance(read, SmallRead) and read.cid is not None:
                wanted.setdefault(read.cid, read.data)
        # Seal only what the store lacks; store_missing then waits for a chunk another batch is
        # storing rather than writing (and counting) it twice.
        present = await store.has_many(wanted) if wanted else set()
        todo = [(cid, data) for cid, data in wanted.items() if cid not in present]
        lacking = wanted.keys() - present
        parts = [todo[i : i + SMALL_SLICE_FILES] for i in range(0, len(todo), SMALL_SLICE_FILES)]
        sealed = {
            cid: blob
            for part in await asyncio.gather(
                *(loop.run_in_executor(executor, _seal_slice, part, store.sealer) for part in parts)
            )
            for cid, blob in part
        }
        del todo, parts
        written, missing = await store.store_missing(lacking, sealed) if lacking else (set(), set())
        del wanted
    finally:
        budget.release(reserve)
    stored = {cid: len(sealed[cid]) for cid in written}
    return [None if _is_read_of(read, missing) else _small_result(read, stored) for read in reads]


async def _store_sealed_reads(
    reads: list[SealedRead | ShoalError | None], store: SealedChunkStore
) -> list[IngestResult | ShoalError | None]:
    """Store the chunks of a pool's reads that the store lacks, each once, even when another batch
    is storing the same chunk meanwhile; the batch's results.

    A copy's read comes unsealed when its worker sealed the chunk for an earlier file. If no batch
    stored that chunk (its own failed), the copy's result is None, for the one-file path to read
    it again: an image never names a chunk the store lacks.
    """
    sealed: dict[ChunkId, bytes] = {}
    wanted: set[ChunkId] = set()
    for read in reads:
        if read is not None and not isinstance(read, ShoalError) and read.cid is not None:
            wanted.add(read.cid)
            if read.sealed is not None:
                sealed.setdefault(read.cid, read.sealed)
    written, missing = await store.store_missing(wanted, sealed) if wanted else (set(), set())
    stored = {cid: len(sealed[cid]) for cid in written}
    del sealed
    return [None if _is_read_of(read, missing) else _small_result(read, stored) for read in reads]


def _is_read_of(read: SmallRead | SealedRead | ShoalError | None, ids: set[ChunkId]) -> bool:
    return bool(ids) and read is not None and not isinstance(read, ShoalError) and read.cid in ids


@dataclass(frozen=True, slots=True)
class SmallRead:
    stat: os.stat_result
    cid: ChunkId | None  # None for an empty file
    data: bytes
    file_hash: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def _read_small_slice(
    files: list[tuple[str, int]], chunking: ChunkingSettings, sealer: Sealer
) -> list[SmallRead | ShoalError | None]:
    return [read_small_file(path, limit, sealer) for path, limit in files]


def read_small_file(path: Path | str, limit: int, sealer: Sealer) -> SmallRead | ShoalError | None:
    """Read a one-chunk file whole on a bare descriptor: open, fstat, read, fstat, stat, close.

    Each syscall lets another thread take the GIL, and a file object cost three more (a second
    fstat, Python's own, and a read that only confirms the end); ~20k small files made them count.
    Checks as :class:`_FileReader` does; None when the file is larger than ``limit``.
    """
    try:
        fd = _open_fd(path)
    except OSError as exc:
        return _open_error(path, exc)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return _not_regular(path)
        if before.st_size > limit:
            return None
        data = _read_upto(fd, before.st_size)
        _check_unchanged(path, fd, before, len(data))
    except OSError as exc:
        return StorageError(f"{path}: read failed: {exc.strerror or exc}")
    except ShoalError as exc:
        return exc
    finally:
        os.close(fd)
    # A one-chunk file's hash is its chunk id (same keyed BLAKE3 of the same bytes): hash once.
    cid = sealer.chunk_id(data)
    return SmallRead(before, cid if data else None, data, cid)


def _read_upto(fd: int, size: int) -> bytes:
    """The file's bytes, asking for one more than ``size`` so a file that grew shows it.

    A read returning exactly ``size`` bytes ends it: a regular file's read is short only at its
    end, and a file that grew after it fails the stamp check that follows.
    """
    data = os.read(fd, size + 1)
    if len(data) >= size:
        return data
    parts = [data]
    got = len(data)
    while got <= size and (more := os.read(fd, size + 1 - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _seal_slice(chunks: list[tuple[ChunkId, bytes]], sealer: Sealer) -> list[tuple[ChunkId, bytes]]:
    return [(cid, sealer.seal(cid, data)) for cid, data in chunks]


def _small_result(
    read: SmallRead | SealedRead | ShoalError | None, stored: dict[ChunkId, int]
) -> IngestResult | ShoalError | None:
    if read is None or isinstance(read, ShoalError):
        return read
    refs: tuple[ChunkRef, ...] = ()
    new_chunks = bytes_stored = 0
    if read.cid is not None:
        refs = (ChunkRef(read.cid, read.size),)
        # A chunk shared by several files of the batch counts as new for the first one only.
        if (size := stored.pop(read.cid, None)) is not None:
            new_chunks, bytes_stored = 1, size
    return IngestResult(
        manifest=Manifest(size=read.size, chunks=refs, file_hash=read.file_hash),
        stat=read.stat,
        bytes_read=read.size,
        chunks=len(refs),
        new_chunks=new_chunks,
        bytes_stored=bytes_stored,
    )


def _open_and_read_small(
    path: Path, chunking: ChunkingSettings, sealer: Sealer
) -> tuple[_FileReader, _Whole | None]:
    """Open ``path``; if it is one chunk long, also read, check, hash, seal and close it."""
    reader = _FileReader(path, chunking, sealer.id_key)
    if reader.stat.st_size > chunking.min_size:
        return reader, None
    try:
        data = reader.read_whole()
        if not data:
            return reader, _Whole(None, 0, b"")
        cid = sealer.chunk_id(data)
        return reader, _Whole(cid, len(data), sealer.seal(cid, data))
    finally:
        reader.close()


@dataclass(frozen=True, slots=True)
class _BatchResult:
    refs: list[ChunkRef]
    new_chunks: int
    bytes_stored: int


async def _store_batch(
    batch: list[memoryview],
    size: int,
    *,
    store: SealedChunkStore,
    claimed: set[ChunkId],
    budget: InflightBudget,
    executor: Executor,
    progress: Callable[[int], None] | None,
) -> _BatchResult:
    loop = asyncio.get_running_loop()
    try:
        ids = await asyncio.gather(*(loop.run_in_executor(executor, store.chunk_id, c) for c in batch))
        refs = [ChunkRef(cid, len(chunk)) for cid, chunk in zip(ids, batch, strict=True)]
        # Claim ids synchronously (no await in between), so two batches never upload the same chunk.
        first: dict[ChunkId, memoryview] = {}
        for cid, chunk in zip(ids, batch, strict=True):
            if cid not in claimed and cid not in first:
                first[cid] = chunk
        claimed.update(first)
        present = await store.has_many(first) if first else set()
        todo = [(cid, chunk) for cid, chunk in first.items() if cid not in present]
        sealed = await asyncio.gather(
            *(loop.run_in_executor(executor, store.seal, cid, c) for cid, c in todo)
        )
        blobs = list(zip((cid for cid, _ in todo), sealed, strict=True))
        del first, todo, sealed
        batch.clear()  # drop the plaintext while the (possibly slow) upload runs
        if blobs:
            await store.put_sealed_many(blobs)
        if progress is not None:
            progress(size)
        return _BatchResult(refs, len(blobs), sum(len(blob) for _, blob in blobs))
    finally:
        budget.release(size)


# The threads that read large files, shared by every event loop (a read needs no loop), one pool per
# process since a pool's threads do not survive a fork. Four: pack streams at most four files at once.
_READER_THREADS = 4
_reader_pools: dict[int, ThreadPoolExecutor] = {}


def _readers() -> ThreadPoolExecutor:
    pool = _reader_pools.get(os.getpid())
    if pool is None:
        pool = ThreadPoolExecutor(_READER_THREADS, thread_name_prefix="shoal-read")
        pool = _reader_pools.setdefault(os.getpid(), pool)
    return pool


# One budget per executor unless the caller passes its own. Budgets are only touched from the event
# loop thread, so an executor must not be shared by two event loops running at the same time.
_shared_budgets: weakref.WeakKeyDictionary[Executor, InflightBudget] = weakref.WeakKeyDictionary()


class InflightBudget:
    """A limit on plaintext bytes in flight, shareable by several concurrent ``ingest_file`` calls.

    Waiters are served in order. A request larger than the whole limit is let
    through when nothing else is in flight, so nothing can wait forever.
    """

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self._used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def used(self) -> int:
        return self._used

    async def acquire(self, amount: int) -> None:
        if not self._waiters and self._fits(amount):
            self._used += amount
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiters.append((amount, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(amount)  # granted just before the cancellation landed
            else:
                self._wake()  # a cancelled head of the queue must not block those behind it
            raise

    def release(self, amount: int) -> None:
        self._used -= amount
        self._wake()

    def _fits(self, amount: int) -> bool:
        return self._used == 0 or self._used + amount <= self._limit

    def _wake(self) -> None:
        while self._waiters:
            amount, granted = self._waiters[0]
            if granted.done():
                self._waiters.popleft()
                continue
            if not self._fits(amount):
                return
            self._waiters.popleft()
            self._used += amount
            granted.set_result(None)


def _open_fd(path: Path | str) -> int:
    """Non-blocking open, so a FIFO cannot hang us."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


def _open_for_reading(path: Path | str) -> io.FileIO:
    """Unbuffered (the chunker reads into its own buffers); non-blocking open so a FIFO cannot hang us."""
    fd = _open_fd(path)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _not_regular(path)
        return io.FileIO(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _not_regular(path: Path | str) -> UsageError:
    return UsageError(f"{path} is not a regular file", hint="only regular files have content to ingest")


def _open_error(path: Path | str, exc: OSError) -> ShoalError:
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"{path}: the file vanished before it could be read")
    return StorageError(f"{path}: cannot open for reading: {exc.strerror or exc}")


def _check_unchanged(path: Path | str, fd: int, before: os.stat_result, bytes_read: int) -> None:
    """The stat from before reading must equal the open file's and the path's now, and the bytes
    read the size; otherwise ChangedWhileReadingError names the file."""
    try:
        after_fd = os.fstat(fd)
        after_path = os.stat(path)
    except FileNotFoundError as exc:
        raise ChangedWhileReadingError(
            f"{path} was deleted or renamed while it was being read", hint=_RETRY_HINT
        ) from exc
    except OSError as exc:
        raise StorageError(f"{path}: cannot stat: {exc.strerror or exc}") from exc
    stamp = _stamp(before)
    if _stamp(after_fd) != stamp or _stamp(after_path) != stamp or bytes_read != before.st_size:
        raise ChangedWhileReadingError(f"{path} changed while it was being read", hint=_RETRY_HINT)


class _FileReader:
    """The file side of the pipeline; its methods run on the executor, one at a time."""

    def __init__(self, path: Path | str, chunking: ChunkingSettings, hash_key: bytes | None) -> None:
        self.path = path
        try:
            self._file = _open_for_reading(path)
            self.stat = os.fstat(self._file.fileno())
        except OSError as exc:
            raise _open_error(path, exc) from exc
        self._chunking = chunking
        self._chunks: BlockChunker | None = None  # made on first use: most files are read whole
        self._hasher = FileHasher(hash_key)
        self.bytes_read = 0

    def read_batch(self, target: int) -> list[memoryview]:
        """The next chunks, about ``target`` bytes, as views into one buffer; [] at the end."""
        if self._chunks is None:
            self._chunks = BlockChunker(self._file, self._chunking)
        try:
            batch = self._chunks.next_block(target)
        except OSError as exc:
            raise StorageError(f"{self.path}: read failed: {exc.strerror or exc}") from exc
        for chunk in batch:
            self._hasher.update(chunk)
        self.bytes_read += sum(len(chunk) for chunk in batch)
        return batch

    def read_whole(self) -> bytes:
        """Read the whole (small) file and check that it did not change meanwhile."""
        buf = bytearray(self.stat.st_size + 1)  # one byte more: a file that grew shows it
        filled = 0
        with memoryview(buf) as view:
            try:
                while filled < len(buf) and (n := self._file.readinto(view[filled:])):
                    filled += n
            except OSError as exc:
                raise StorageError(f"{self.path}: read failed: {exc.strerror or exc}") from exc
            data = bytes(view[:filled])
        self._hasher.update(data)
        self.bytes_read = filled
        self.check_unchanged()
        return data

    def check_unchanged(self) -> os.stat_result:
        """Compare the stat from before reading with the open file's and the path's now."""
        _check_unchanged(self.path, self._file.fileno(), self.stat, self.bytes_read)
        return self.stat

    def file_hash(self) -> bytes:
        return self._hasher.digest()

    def close(self) -> None:
        self._file.close()


_RETRY_HINT = "it will be read again once it stops changing"


def _stamp(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
