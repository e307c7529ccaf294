"""Files read, hashed, sealed (and, for large files, stored) in worker processes, so every core works.

On threads this work does not scale: each small file is a handful of short
system calls (open, fstat, read, fstat, stat, close), and each one hands the
GIL to another thread. Packing 20k files of ~10 KB took longer with two
threads than with one (3.02 s against 2.90 s; 113k context switches against
51k). A worker process holds the arena's sealer (sent once, at its start),
takes a slice of paths, and answers each file's stat, chunk id and sealed
chunk, or the error that kept it out; the parent only asks the store which
ids it lacks, stores those and records the files.

A pool given the store's URL also ingests whole large files: the worker
opens the store itself and runs the ordinary streaming pipeline
(``ingest_file``) there, with threads of its own, so only the file's path
goes in and its manifest comes back; no chunk crosses a pipe. In one process
that pipeline was bound by the GIL (the chunk and buffer copies, the
per-chunk bookkeeping) to about 1.5 cores; each worker has a GIL of its own.
The store must be safe for several writer processes, as ``file://`` and
``s3://`` stores are.

Workers are started with ``spawn`` on first use: a daemon or a push runs
threads and an event loop, which ``fork`` must not copy. Callers hand work to
the pool only past ``POOL_AFTER_FILES`` one-chunk files or
``POOL_AFTER_BYTES`` of larger ones: starting the workers (~0.15 s, an
interpreter importing shoal) costs more than a few hundred small files take
on threads (a repack of a few edited files, a daemon's usual round).

A command that has not started any thread yet (``shoal pack``) forks its
pools' workers up front instead (:func:`fork_workers`): a forked worker starts
in milliseconds and imports nothing. On the mixed bench corpus the three
spawned workers had spent 0.45 CPU-s importing, and the first large file
waited ~0.15 s for its worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import multiprocessing.util
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing.queues import SimpleQueue
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, TypeVar

from shoal.engine.heap import GC_THRESHOLDS, tune_heap_for_streaming
from shoal.engine.ingest import IngestResult, SmallRead, ingest_file, read_small_file
from shoal.errors import ShoalError, StorageError
from shoal.model.ids import ChunkId
from shoal.settings import MIB, ChunkingSettings, PipelineSettings
from shoal.store.sealed import SealedChunkStore, Sealer
from shoal.store.url import open_blob_store

POOL_AFTER_FILES = 512
POOL_AFTER_BYTES = 32 * MIB
# Chunk ids a worker remembers having sealed, so it does not seal a copy's chunk again: ~100 bytes
# each; past this many it starts afresh (copies usually sit near their originals in a walk).
SEALED_IDS_KEPT = 100_000
_PARENT_POLL_SECONDS = 0.5
_STOP_POLL_SECONDS = 0.05
_A = TypeVar("_A")
_R = TypeVar("_R")


class SealedRead(NamedTuple):
    """A one-chunk file as a worker read it: its stat before reading (unchanged after), its chunk id
    (None for an empty file) and that chunk sealed, or None when this worker sealed the same chunk
    for an earlier file (a copy). A tuple: it unpickles several times faster than a slotted
    dataclass, and the parent unpickles one per file."""

    stat: os.stat_result
    cid: ChunkId | None
    size: int
    file_hash: bytes
    sealed: bytes | None


class SealingPool:
    """Worker processes that read and seal slices of one-chunk files, and with a ``store_url`` ingest
    whole large files, for one sealer.

    ``workers`` is the caller's worker count (threads, one per core by default), capped at the
    cores. With ``leave_a_core`` the pool runs one process fewer, at least one: the parent stays
    busy too, storing and recording what they seal. On 2 cores one worker packed 20k small files
    in 2.20-2.27 s, two in 2.33-2.38 s; but a pack of large files needs every core in workers,
    since there the parent only waits.
    """

    def __init__(
        self,
        sealer: Sealer,
        workers: int,
        *,
        store_url: str | None = None,
        leave_a_core: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self._sealer = sealer
        self._store_url = store_url
        self._processes = max(1, min(workers, os.cpu_count() or 1) - (1 if leave_a_core else 0))
        # Made on first use: even an idle spawn-context pool starts a helper process (multiprocessing's
        # resource tracker), which a pack of one large file or a push of a few files need not pay.
        self._pool: ProcessPoolExecutor | None = None
        # Told the bytes of each large-file batch the workers store, from a thread of ours. With a
        # progress at all, it may be replaced before the first job (a bar shown once workers forked).
        self.progress = progress
        self._progress_queue: SimpleQueue[int | None] | None = None
        self._stop: EventType | None = None  # set by stop(); the workers poll it
        self._progress_thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the worker processes were started (they are, at the first job)."""
        return self._pool is not None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._create("spawn")
            self._start_threads()
        assert self._pool is not None
        return self._pool

    def _create(self, method: str) -> ProcessPoolExecutor:
        context = multiprocessing.get_context(method)
        if self.progress is not None and self._store_url is not None:
            self._progress_queue = context.SimpleQueue()
        self._stop = context.Event()
        self._pool = ProcessPoolExecutor(
            self._processes,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self._sealer, os.getpid(), self._store_url, self._progress_queue, self._stop),
        )
        return self._pool

    def _start_threads(self) -> None:
        if self._progress_queue is not None:
            self._progress_thread = threading.Thread(
                target=_tell_progress,
                args=(self._progress_queue, self),
                name="shoal-worker-progress",
                daemon=True,
            )
            self._progress_thread.start()

    async def read_and_seal(self, files: Sequence[tuple[str, int]]) -> list[SealedRead | ShoalError | None]:
        """Per ``(path, limit)``: the sealed read, the ShoalError that kept the file out (vanished,
        changed while read, unreadable), or None when it is now larger than ``limit``."""
        return await self.run(_read_and_seal, list(files))

    async def ingest_file(
        self, path: Path, chunking: ChunkingSettings, pipeline: PipelineSettings
    ) -> IngestResult:
        """:func:`shoal.engine.ingest.ingest_file` in a worker, into the pool's store; raises as it does.

        Each worker bounds its plaintext in flight by a share of ``pipeline.max_inflight_bytes``.
        """
        if self._store_url is None:
            raise ValueError("this pool was made without a store_url")
        # Twice the budget in all, split between the workers: at one budget each, two workers
        # overlapped their stores' fsyncs better (2.73-2.75 s against 2.81-2.85 s on the mixed bench).
        share = min(
            pipeline.max_inflight_bytes, max(2 * pipeline.max_inflight_bytes // self._processes, 16 * MIB)
        )
        job = (str(path), chunking, replace(pipeline, max_inflight_bytes=share))
        result = await self.run(_ingest_in_worker, job)
        if isinstance(result, ShoalError):
            raise result
        return result

    async def run(self, work: Callable[[Sealer, _A], _R], arg: _A) -> _R:
        """``work(sealer, arg)`` in a worker process; ``work`` is a module-level function (it is
        sent by name), ``arg`` and the answer are pickled."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), _with_sealer, work, arg)
        except BrokenProcessPool as exc:
            raise StorageError(
                "a worker process reading and sealing files died",
                hint="the machine may be out of memory; run the command again",
            ) from exc

    def stop(self) -> None:
        """Have the workers give up the large files they are storing (an interrupted or failed
        command): each notices within ~50 ms and answers its job with an error, so :meth:`close`,
        which still follows, need not wait for whole files. What they stored stays valid."""
        if self._stop is not None:
            self._stop.set()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._progress_queue is not None and self._progress_thread is not None:
            self._progress_queue.put(None)  # every worker has exited: nothing follows it
            self._progress_thread.join()
            self._progress_queue.close()
            self._progress_queue = self._progress_thread = None

    def __enter__(self) -> SealingPool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Worker:
    """What a worker process holds between tasks."""

    sealer: Sealer | None = None
    store_url: str | None = None
    progress: SimpleQueue[int | None] | None = None
    stop: EventType | None = None
    ingest: _WorkerIngest | None = None  # made by the first large file
    sealed_ids: set[ChunkId] = set()  # noqa: RUF012  (reset by _start_worker, once per process)


@dataclass(frozen=True, slots=True)
class _WorkerIngest:
    """A worker's own event loop, threads and store handle, kept from one large file to the next."""

    loop: asyncio.AbstractEventLoop
    executor: ThreadPoolExecutor
    store: SealedChunkStore

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.store.close())
        finally:
            self.executor.shutdown()
            self.loop.close()


def _start_worker(
    sealer: Sealer,
    parent: int,
    store_url: str | None,
    progress: SimpleQueue[int | None] | None,
    stop: EventType,
) -> None:
    _Worker.sealer = sealer
    _Worker.store_url = store_url
    _Worker.progress = progress
    _Worker.stop = stop
    _Worker.sealed_ids = set()  # a forked worker would start with its parent's
    # Ctrl-C reaches the whole process group: the parent decides (it stops the pool), so a worker
    # neither dies with a traceback in the middle of a queue read nor leaves its pool hanging.
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # also drops one that arrived while it was forked
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # The parent's reasons hold here too (shoal.engine.heap): megabyte buffers reused rather than
    # faulted in again, and no GC passes over the objects the imports made.
    tune_heap_for_streaming()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    # A worker waits for its next task on a pipe it also holds the writing end of, so it would wait
    # forever once the parent is killed: it leaves as soon as it has been handed to another parent.
    # The parent's pid comes from the parent: one killed while this worker was starting is gone by now.
    threading.Thread(target=_exit_with_parent, args=(parent,), name="shoal-parent-watch", daemon=True).start()


def fork_workers(*pools: SealingPool) -> bool:
    """Start these pools' workers now, forked from this process; False (they will be spawned at their
    first job, as usual) unless this process runs no other thread: a fork copies every lock as it is,
    and a lock some other thread held stays held in the child for good.

    Every pool's workers are forked before any pool starts its own threads (its manager, the progress
    drain), for the same reason.
    """
    launch = getattr(ProcessPoolExecutor, "_launch_processes", None)  # what a fork pool runs first
    if (
        threading.active_count() > 1
        or launch is None
        or "fork" not in multiprocessing.get_all_start_methods()
        or any(pool.running for pool in pools)
    ):
        return False
    # Ctrl-C waits until every pool runs: one landing in a child during fork's own hooks (before the
    # worker ignores it) left a worker dead and its pool waiting, and one landing here before the
    # pools' threads started left pools nothing would shut down. The children and the pools'
    # threads start with SIGINT blocked; the parent gets it once this returns.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        for pool in pools:
            launch(pool._create("fork"))
        for pool in pools:
            assert pool._pool is not None
            # The first job starts the pool's manager thread, which alone tells idle workers to leave
            # at shutdown: a pool never used would otherwise wait forever for workers that wait for it.
            pool._pool.submit(os.getpid)
            pool._start_threads()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return True


def _tell_progress(queue: SimpleQueue[int | None], pool: SealingPool) -> None:
    while (stored := queue.get()) is not None:
        # Keep draining whatever the display does: a full queue would block every worker's next put.
        with contextlib.suppress(Exception):
            if pool.progress is not None:
                pool.progress(stored)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_SECONDS)
    os._exit(1)


def _with_sealer(work: Callable[[Sealer, _A], _R], arg: _A) -> _R:
    sealer = _Worker.sealer
    assert sealer is not None, "the pool's initializer sets the sealer"
    return work(sealer, arg)


def _read_and_seal(sealer: Sealer, files: list[tuple[str, int]]) -> list[SealedRead | ShoalError | None]:
    out: list[SealedRead | ShoalError | None] = []
    sealed_ids = _Worker.sealed_ids
    for path, limit in files:
        read = read_small_file(path, limit, sealer)
        if not isinstance(read, SmallRead):
            out.append(read)
            continue
        sealed: bytes | None = b""
        if read.cid in sealed_ids:
            sealed = None  # the parent has it, or will see it missing and read the file again
        elif read.cid is not None:
            sealed = sealer.seal(read.cid, read.data)
            if len(sealed_ids) >= SEALED_IDS_KEPT:
                sealed_ids.clear()
            sealed_ids.add(read.cid)
        out.append(SealedRead(read.stat, read.cid, len(read.data), read.file_hash, sealed))
    return out


def _ingest_in_worker(
    sealer: Sealer, job: tuple[str, ChunkingSettings, PipelineSettings]
) -> IngestResult | ShoalError:
    """One large file through the streaming pipeline, in this worker; a ShoalError is answered, not
    raised, so it reaches the parent whole."""
    path, chunking, pipeline = job
    ingest = _Worker.ingest
    if ingest is None:
        assert _Worker.store_url is not None, "SealingPool.ingest_file checks for a store_url"
        executor = ThreadPoolExecutor(pipeline.workers, thread_name_prefix="shoal-worker")
        store = SealedChunkStore(open_blob_store(_Worker.store_url), sealer, executor=executor)
        ingest = _Worker.ingest = _WorkerIngest(asyncio.new_event_loop(), executor, store)
        # Run as the worker exits after the pool's shutdown (not after a kill): closing the store
        # checkpoints its pack index, whose write-ahead log would otherwise stay behind, 4 MB of it
        # after one pack of the mixed bench corpus.
        multiprocessing.util.Finalize(None, ingest.close, exitpriority=10)
    report = _Worker.progress.put if _Worker.progress is not None else None
    work = ingest_file(Path(path), ingest.store, chunking, pipeline, ingest.executor, progress=report)
    try:
        return ingest.loop.run_until_complete(_unless_stopped(work))
    except ShoalError as exc:
        return exc


async def _unless_stopped(work: Coroutine[None, None, IngestResult]) -> IngestResult:
    """``work``, cancelled if the pool is told to stop meanwhile (StorageError then)."""
    job = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait([job], timeout=_STOP_POLL_SECONDS)
        if done:
            return job.result()
        if _Worker.stop is not None and _Worker.stop.is_set():
            job.cancel()
            await asyncio.wait([job])
            raise StorageError("stopped before the file was stored")
