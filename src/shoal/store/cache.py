"""The device's chunk cache: verified plaintext chunks in files named by id, within a size limit.

Layout: ``<root>/ab/<64 hex>``, written to a temp file and renamed, so a
reader sees a whole chunk or none. The cache holds **verified plaintext**:
a chunk reaches it only after ``SealedChunkStore`` checked it, and
:class:`CachedChunks` checks the id again each time it loads a chunk from
disk, so a torn or rotted file is dropped and fetched again, never served.
Keeping plaintext (not sealed envelopes) means cached reads cost a file read
and a BLAKE3, not a decompression and an AEAD open per read. Files are not
fsynced: every chunk here can be fetched again from the hub, and the check on
load catches what a crash left half-written.

The limit is shared with pinned content (DESIGN.md): ``reserved()`` is what
pinned files outside the cache take, and chunks of pinned files inside it
count too. Eviction is LRU within priorities: unreferenced chunks first,
then chunks of unpinned files; pinned chunks are never evicted (a cache full
of pinned chunks stores nothing more and says so in :meth:`ChunkCache.status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from shoal.errors import ShoalError, StorageError
from shoal.model.ids import ChunkId
from shoal.store.base import blob_key, id_from_blob_name, is_shard_name

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
FLUSH_EVERY = 256  # metadata writes buffered before one transaction


class Priority(enum.IntEnum):
    """Eviction order: lower goes first; PINNED never goes."""

    UNREFERENCED = 0
    UNPINNED = 1
    PINNED = 2


class CacheMeta(Protocol):
    """Where the cache keeps its metadata (``shoal.state.cache.CacheIndex``)."""

    def load(self) -> list[tuple[ChunkId, int, int, int]]: ...

    def record(self, cid: ChunkId, size: int, last_access_ns: int, priority: int) -> None: ...

    def touch(self, cid: ChunkId, now_ns: int) -> None: ...

    def forget(self, ids: Iterable[ChunkId]) -> None: ...

    def set_priorities(self, priorities: Mapping[ChunkId, int]) -> None: ...

    def flush(self) -> None: ...


@dataclass(slots=True)
class _Slot:
    size: int
    last_ns: int
    priority: Priority


@dataclass(frozen=True, slots=True)
class CacheStatus:
    root: Path
    limit: int
    used: int  # bytes of chunks in the cache
    reserved: int  # bytes of pinned files outside the cache, counted against the same limit
    chunks: dict[Priority, int] = field(default_factory=dict)
    bytes: dict[Priority, int] = field(default_factory=dict)

    @property
    def over_limit(self) -> bool:
        return self.used + self.reserved > self.limit


def _no_reserve() -> int:
    return 0


class ChunkCache:
    """Chunks on disk plus their metadata in memory (authoritative while open) and in ``meta``.

    Thread-safe: the blocking calls (:meth:`read`, :meth:`store`) run in worker threads.
    """

    def __init__(
        self,
        root: Path,
        meta: CacheMeta,
        limit: int,
        *,
        reserved: Callable[[], int] = _no_reserve,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.root = root
        self._root_text = str(root)
        self.meta = meta
        self.limit = limit
        self.reserved = reserved
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict[ChunkId, _Slot] = {}
        self._used = 0
        self._writes = 0

    @classmethod
    def open(
        cls,
        root: Path,
        meta: CacheMeta,
        limit: int,
        *,
        reserved: Callable[[], int] = _no_reserve,
        clock: Callable[[], int] = time.time_ns,
    ) -> ChunkCache:
        """Open (creating) the cache at ``root``: rows without a file are forgotten, files without a
        row (a crash before the metadata was written) are adopted as unreferenced."""
        cache = cls(root, meta, limit, reserved=reserved, clock=clock)
        try:
            root.mkdir(parents=True, exist_ok=True)
            on_disk = cache._walk()
        except OSError as exc:
            raise StorageError(f"cannot open the chunk cache {root}: {exc.strerror}") from exc
        rows = {cid: (size, last, prio) for cid, size, last, prio in meta.load()}
        gone = [cid for cid in rows if cid not in on_disk]
        meta.forget(gone)
        now = clock()
        for cid, size in on_disk.items():
            if cid in rows:
                _, last, prio = rows[cid]
                cache._slots[cid] = _Slot(size, last, Priority(prio))
            else:
                cache._slots[cid] = _Slot(size, now, Priority.UNREFERENCED)
                meta.record(cid, size, now, Priority.UNREFERENCED)
            cache._used += size
        meta.flush()
        return cache

    def _walk(self) -> dict[ChunkId, int]:
        found: dict[ChunkId, int] = {}
        for shard in os.scandir(self.root):
            if not (shard.is_dir(follow_symlinks=False) and is_shard_name(shard.name)):
                continue
            for item in os.scandir(shard.path):
                if item.name.startswith(TEMP_PREFIX):
                    with contextlib.suppress(OSError):
                        os.unlink(item.path)
                    continue
                cid = id_from_blob_name(shard.name, item.name)
                if cid is not None and item.is_file(follow_symlinks=False):
                    found[cid] = item.stat(follow_symlinks=False).st_size
        return found

    def _path(self, cid: ChunkId) -> Path:
        return self.root / blob_key(cid)

    # -- reads and writes ---------------------------------------------------------------------

    def contains(self, cid: ChunkId) -> bool:
        with self._lock:
            return cid in self._slots

    def read(self, cid: ChunkId) -> bytes | None:
        """The cached bytes of ``cid`` (not yet verified: the caller checks them), or None."""
        with self._lock:
            slot = self._slots.get(cid)
        if slot is None:
            return None
        hex_id = cid.hex()
        try:
            # os-level calls on a string path: this runs for every uncached-in-memory read of a mount.
            fd = os.open(f"{self._root_text}/{hex_id[:2]}/{hex_id}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.read(fd, slot.size + 1)
            finally:
                os.close(fd)
        except FileNotFoundError:
            self.drop(cid)
            return None
        except OSError as exc:
            raise StorageError(f"cannot read chunk cache file {self._path(cid)}: {exc.strerror}") from exc
        if len(data) != slot.size:  # damaged behind our back: fetch it again rather than serve it
            log.warning("chunk cache: %s has the wrong size; dropped and fetched again", hex_id)
            self.drop(cid)
            return None
        now = self._clock()
        with self._lock:
            slot.last_ns = now
        self.meta.touch(cid, now)
        return data

    def store(self, cid: ChunkId, data: bytes, priority: Priority) -> bool:
        """Keep verified ``data``; False when it does not fit (the rest is pinned) or the disk is full."""
        size = len(data)
        with self._lock:
            slot = self._slots.get(cid)
            if slot is not None:
                if priority > slot.priority:
                    slot.priority = priority
                    self.meta.record(cid, slot.size, slot.last_ns, priority)
                return True
            if not self._make_room_locked(size, priority):
                return False
            self._used += size  # reserved now: concurrent stores must not all count on the same room
        path = self._path(cid)
        temp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(6)}"
        try:
            path.parent.mkdir(exist_ok=True)
            with open(temp, "wb") as f:
                f.write(data)
            os.replace(temp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            with self._lock:
                self._used -= size
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                log.warning("chunk cache %s: disk full, chunk served without caching", self.root)
                return False
            raise StorageError(f"cannot write to the chunk cache {self.root}: {exc.strerror}") from exc
        now = self._clock()
        with self._lock:
            if cid in self._slots:
                self._used -= size  # another store of the same chunk got there first
            else:
                self._slots[cid] = _Slot(size, now, priority)
        self.meta.record(cid, size, now, priority)
        self._count_write()
        return True

    def drop(self, cid: ChunkId) -> None:
        """Remove one chunk whatever its priority (a damaged file)."""
        with self._lock:
            slot = self._slots.pop(cid, None)
            if slot is not None:
                self._used -= slot.size
        with contextlib.suppress(FileNotFoundError):
            self._path(cid).unlink()
        self.meta.forget([cid])

    def _count_write(self) -> None:
        self._writes += 1
        if self._writes % FLUSH_EVERY == 0:
            self.meta.flush()

    # -- room ---------------------------------------------------------------------------------

    def _make_room_locked(self, size: int, priority: Priority) -> bool:
        budget = self.limit - self.reserved()
        if self._used + size <= budget:
            return True
        if priority is Priority.PINNED:
            # Pinned content is kept whatever it costs; make what room unpinned chunks give.
            self._evict_locked(self._used + size - budget + budget // 16)
            return True
        # Evict a little more than needed, so a full cache does not sort its slots on every write.
        self._evict_locked(self._used + size - budget + budget // 16)
        return self._used + size <= budget

    def _evict_locked(self, need: int, floor: Priority = Priority.PINNED) -> int:
        """Evict at least ``need`` bytes of chunks below ``floor`` (LRU within priority); bytes freed."""
        if need <= 0:
            return 0
        victims = sorted(
            ((s.priority, s.last_ns, cid) for cid, s in self._slots.items() if s.priority < floor),
        )
        freed = 0
        gone: list[ChunkId] = []
        for _, _, cid in victims:
            if freed >= need:
                break
            slot = self._slots.pop(cid)
            self._used -= slot.size
            freed += slot.size
            gone.append(cid)
            with contextlib.suppress(FileNotFoundError):
                self._path(cid).unlink()
        self.meta.forget(gone)
        return freed

    def shrink(self, target: int | None = None) -> int:
        """Evict (never pinned) until the cache and pinned files fit in ``target`` (default: the limit)."""
        goal = self.limit if target is None else target
        with self._lock:
            freed = self._evict_locked(self._used + self.reserved() - goal)
        self.meta.flush()
        return freed

    def clear(self) -> int:
        """Evict every chunk that is not pinned; bytes freed."""
        with self._lock:
            freed = self._evict_locked(self._used + 1)
        self.meta.flush()
        return freed

    # -- priorities and status ---------------------------------------------------------------

    def size_of(self, cid: ChunkId) -> int | None:
        with self._lock:
            slot = self._slots.get(cid)
            return None if slot is None else slot.size

    def priority_of(self, cid: ChunkId) -> Priority | None:
        with self._lock:
            slot = self._slots.get(cid)
            return None if slot is None else slot.priority

    def reclassify(self, referenced: Mapping[ChunkId, int]) -> None:
        """Set every chunk's priority from what current files reference (absent: unreferenced)."""
        changed: dict[ChunkId, int] = {}
        with self._lock:
            for cid, slot in self._slots.items():
                want = Priority(referenced.get(cid, Priority.UNREFERENCED))
                if want != slot.priority:
                    slot.priority = want
                    changed[cid] = want
        if changed:
            self.meta.set_priorities(changed)

    def set_priority(self, ids: Iterable[ChunkId], priority: Priority) -> None:
        changed: dict[ChunkId, int] = {}
        with self._lock:
            for cid in ids:
                slot = self._slots.get(cid)
                if slot is not None and slot.priority != priority:
                    slot.priority = priority
                    changed[cid] = priority
        if changed:
            self.meta.set_priorities(changed)

    def status(self) -> CacheStatus:
        chunks = dict.fromkeys(Priority, 0)
        sizes = dict.fromkeys(Priority, 0)
        with self._lock:
            for slot in self._slots.values():
                chunks[slot.priority] += 1
                sizes[slot.priority] += slot.size
            used = self._used
        return CacheStatus(self.root, self.limit, used, self.reserved(), chunks, sizes)

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    def flush(self) -> None:
        self.meta.flush()


class ChunkSource(Protocol):
    """Where missing chunks come from: ``SealedChunkStore`` (its ``get`` returns verified plaintext)."""

    def chunk_id(self, data: bytes | memoryview) -> ChunkId: ...

    async def get(self, cid: ChunkId) -> bytes: ...


@runtime_checkable
class MultiKeySource(ChunkSource, Protocol):
    """A source whose chunks may carry ids under several keys (an encrypted arena's key epochs)."""

    def id_matches(self, cid: ChunkId, data: bytes) -> bool: ...


@runtime_checkable
class StreamingChunkSource(ChunkSource, Protocol):
    """A source that also fetches many chunks in one request (the hub's batched fetch)."""

    def stream(self, ids: Sequence[ChunkId]) -> AsyncIterator[tuple[ChunkId, bytes | ShoalError]]:
        """Verified plaintext (or why a chunk failed its check) as each arrives; absent ids left out."""
        ...


class CachedChunks:
    """Read-through chunks: memory, then the disk cache (checked again), then ``source``.

    Concurrent readers of one chunk share one fetch (single flight). A few recently used chunks
    stay in memory so the many small reads the kernel makes of one chunk cost one file read.
    """

    def __init__(
        self,
        source: ChunkSource,
        cache: ChunkCache,
        *,
        hot_chunks: int = 12,
        max_fetches: int = 8,
    ) -> None:
        self.source = source
        self.cache = cache
        self.fetches = 0  # chunks fetched from the source (tests count them)
        self._hot: OrderedDict[ChunkId, bytes] = OrderedDict()
        self._hot_max = hot_chunks
        self._inflight: dict[ChunkId, asyncio.Future[bytes]] = {}
        self._gate = asyncio.Semaphore(max_fetches)
        self._background: set[asyncio.Task[None]] = set()
        self._stores: set[asyncio.Task[bool]] = set()
        self._storing: dict[ChunkId, bytes] = {}  # chunks a running store is writing
        # Chunk files this process has checked (or written): the cache only ever replaces a file by
        # renaming a whole verified one over it, so a file checked once stays good for the session.
        self._verified: set[ChunkId] = set()

    def is_cached(self, cid: ChunkId) -> bool:
        return cid in self._hot or self.cache.contains(cid)

    async def get(self, cid: ChunkId, priority: Priority = Priority.UNPINNED) -> bytes:
        """Verified plaintext of ``cid``; the source's errors (missing, corrupt, offline) pass through."""
        data = self._hot.get(cid)
        if data is not None:
            self._hot.move_to_end(cid)
            return data
        data = self._storing.get(cid)  # fetched ahead, pushed out of memory, not on disk yet
        if data is not None:
            self._remember(cid, data)
            return data
        pending = self._inflight.get(cid)
        if pending is None and self.cache.contains(cid):
            # Fast path, no task: the cache is read on the event loop anyway (see _load).
            data = self._read_verified(cid)
            if data is not None:
                self._raise_priority(cid, priority)
                self._remember(cid, data)
                return data
        if pending is None:
            pending = self._start(cid, priority)
        # The fetch runs in its own task: a reader that is interrupted does not cancel it for the others.
        return await asyncio.shield(pending)

    def _start(self, cid: ChunkId, priority: Priority) -> asyncio.Future[bytes]:
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[bytes] = loop.create_future()
        self._inflight[cid] = pending  # before the task runs, so nobody starts the same fetch twice
        task = loop.create_task(self._fill(cid, priority, pending))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return pending

    async def _fill(self, cid: ChunkId, priority: Priority, pending: asyncio.Future[bytes]) -> None:
        try:
            data = await self._load(cid, priority)
        except asyncio.CancelledError:
            pending.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every reader waiting for this chunk
            pending.set_exception(exc)
            pending.exception()  # marked retrieved: a failed read-ahead nobody waited for logs nothing
            return
        finally:
            self._inflight.pop(cid, None)
        self._remember(cid, data)
        pending.set_result(data)

    async def _load(self, cid: ChunkId, priority: Priority) -> bytes:
        # Read the cache on the event loop: a chunk file is in the page cache or one local read away,
        # and worker threads contending for the GIL with the loop cost more than the read (measured).
        cached = self._read_verified(cid)
        if cached is not None:
            self._raise_priority(cid, priority)
            return cached
        async with self._gate:
            data = await self.source.get(cid)
        self.fetches += 1
        await asyncio.to_thread(self.cache.store, cid, data, priority)
        self._verified.add(cid)
        return data

    def _raise_priority(self, cid: ChunkId, priority: Priority) -> None:
        current = self.cache.priority_of(cid)
        if current is not None and priority > current:
            self.cache.set_priority([cid], priority)

    def _read_verified(self, cid: ChunkId) -> bytes | None:
        data = self.cache.read(cid)
        if data is None:
            return None
        if cid in self._verified:
            return data
        if not self._id_matches(cid, data):
            log.warning(
                "chunk cache: %s failed its check (damaged file); dropped and fetched again", cid.hex()
            )
            self.cache.drop(cid)
            return None
        self._verified.add(cid)
        return data

    def _id_matches(self, cid: ChunkId, data: bytes) -> bool:
        if isinstance(self.source, MultiKeySource):
            return self.source.id_matches(cid, data)
        return self.source.chunk_id(data) == cid

    def _remember(self, cid: ChunkId, data: bytes) -> None:
        self._hot[cid] = data
        self._hot.move_to_end(cid)
        while len(self._hot) > self._hot_max:
            self._hot.popitem(last=False)

    def forget_hot(self) -> None:
        """Drop the in-memory chunks (after ``cache clear``)."""
        self._hot.clear()

    def prefetch(self, ids: Iterable[ChunkId], priority: Priority = Priority.UNPINNED) -> None:
        """Start fetching chunks in the background (read-ahead); failures are left for the real read.

        With a streaming source, chunks not on disk are fetched together in one request once they
        are at least half of ``ids`` (the window) or include its first (the next to be read), so a
        sliding read-ahead window asks in batches rather than one request per chunk.
        """
        window = list(dict.fromkeys(ids))
        wanted = [
            cid
            for cid in window
            if cid not in self._hot and cid not in self._inflight and cid not in self._storing
        ]
        if not isinstance(self.source, StreamingChunkSource):
            for cid in wanted:
                self._start(cid, priority)
            return
        remote = []
        for cid in wanted:
            if self.cache.contains(cid):
                self._start(cid, priority)
            else:
                remote.append(cid)
        if remote and (2 * len(remote) >= len(window) or remote[0] == window[0]):
            self._start_batch(self.source, remote, priority)

    def _start_batch(self, source: StreamingChunkSource, ids: list[ChunkId], priority: Priority) -> None:
        loop = asyncio.get_running_loop()
        pending = {cid: loop.create_future() for cid in ids}
        self._inflight.update(pending)
        task = loop.create_task(self._fill_batch(source, pending, priority))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _fill_batch(
        self, source: StreamingChunkSource, pending: dict[ChunkId, asyncio.Future[bytes]], priority: Priority
    ) -> None:
        waiting = dict(pending)
        try:
            async with self._gate:
                async for cid, got in source.stream(list(waiting)):
                    future = waiting.pop(cid, None)
                    if future is None:
                        continue
                    self._inflight.pop(cid, None)
                    if isinstance(got, ShoalError):
                        _fail(future, got)
                        continue
                    self.fetches += 1
                    self._verified.add(cid)
                    self._remember(cid, got)
                    _resolve(future, got)
                    self._store_later(cid, got, priority)
            await self._fill_left_out(waiting, priority)
        except asyncio.CancelledError:
            for future in waiting.values():
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every reader still waiting on the batch
            for future in waiting.values():
                _fail(future, exc)
        finally:
            for cid, future in pending.items():
                if self._inflight.get(cid) is future:
                    del self._inflight[cid]

    def _store_later(self, cid: ChunkId, data: bytes, priority: Priority) -> None:
        """Write a fetched chunk to disk in a thread while the batch goes on receiving (awaited on close)."""
        self._storing[cid] = data
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self.cache.store, cid, data, priority)
        )
        self._stores.add(task)
        task.add_done_callback(self._stores.discard)
        task.add_done_callback(lambda _: self._storing.pop(cid, None))
        task.add_done_callback(_log_store_failure)

    async def _fill_left_out(self, waiting: dict[ChunkId, asyncio.Future[bytes]], priority: Priority) -> None:
        """Ids a batch left out (the hub does not hold them): one request each says why."""
        for cid, future in list(waiting.items()):
            try:
                data = await self._load(cid, priority)
            except ShoalError as exc:
                _fail(future, exc)
            else:
                self._remember(cid, data)
                _resolve(future, data)
            waiting.pop(cid, None)
            self._inflight.pop(cid, None)

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*self._stores, return_exceptions=True)  # finished, so the flush records them
        await asyncio.to_thread(self.cache.flush)


def _log_store_failure(task: asyncio.Task[bool]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("chunk cache: could not keep a fetched chunk (%s); it will be fetched again", exc)


def _resolve(future: asyncio.Future[bytes], data: bytes) -> None:
    if not future.done():
        future.set_result(data)


def _fail(future: asyncio.Future[bytes], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
        future.exception()  # marked retrieved: a failed read-ahead nobody waited for logs nothing
