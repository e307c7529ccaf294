"""A blob store in a local directory: ``file:///dir``.

Layout (``shoal.store.base``): ``<dir>/ab/abcd…`` (one shard level, like git and restic),
scoped namespaces under ``<dir>/ns/<segment>/``. A blob is written to a temp file in its shard
directory, fsynced, renamed into place and the directory fsynced, so after a crash at any point
only whole blobs are visible. Temp files are named ``.tmp-…``; ``iterate`` and ``has_many`` never
see them and ``sweep_temp`` removes the ones a killed writer left behind.

Groups of small blobs go into pack files instead (``shoal.store.packs``, ``<dir>/packs/``), one
file and one fsync per group; every read looks in the pack index first, then at the blob's own
file, so stores written before packs existed (or with ``packs=False``) read the same.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import errno
import itertools
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from urllib.parse import quote

from shoal.errors import ChunkMissingError, DiskFullError, StorageError
from shoal.model.ids import ChunkId
from shoal.store.base import (
    NAMESPACE_DIR,
    BlobStore,
    blob_key,
    id_from_blob_name,
    is_shard_name,
    scope_segments,
)
from shoal.store.packs import PackSet

TEMP_PREFIX = ".tmp-"
DEFAULT_PARALLEL = 8
_HAS_BATCH = 512
_LIST_PAGE = 10_000  # packed ids per index query in iterate
# Many small blobs are bound by fsync latency, so a batch of them is made durable by one
# syncfs instead (docs/dev/stores.md has the measurements); large blobs keep an fsync each.
_BATCH_SYNC_MIN = 8
_BATCH_SYNC_MAX_AVG = 64 * 1024
_STAGE_SLICE_MIN = 16  # blobs per staging thread in a batch, at least
# Blobs up to this many stored bytes (a small file's only chunk, a file's short tail chunk, sealed)
# go into pack files when a group of at least PACK_MIN_GROUP of them is written together.
PACK_MAX_BLOB = 257 * 1024
PACK_MIN_GROUP = 4
PACK_TARGET_BYTES = 16 * 1024 * 1024  # a larger group is split into packs of about this size
_OPEN_INDEXES = 32  # namespaces whose pack index connections stay open (see _Namespaces)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# Temp names: pid, a random token per process (pids repeat across containers sharing a store) and a
# counter. A fresh random token per blob cost a few percent of the GIL time of packing small files.
_TEMP_TOKEN = secrets.token_hex(4)
_temp_serial = itertools.count()


class FileBlobStore(BlobStore):
    """Blobs as files under ``root``. Blocking I/O runs in worker threads."""

    def __init__(
        self,
        root: Path,
        *,
        max_parallel: int = DEFAULT_PARALLEL,
        sync_batches: bool = True,
        packs: bool = True,
        _anchor: Path | None = None,
        _shared: _Namespaces | None = None,
    ) -> None:
        """``packs``: write groups of small blobs into pack files (see put_many).

        ``sync_batches``: without packs, make a batch of small blobs durable with one syncfs.
        """
        if not root.is_absolute():
            raise StorageError(f"a file store needs an absolute directory, got {str(root)!r}")
        self._root = root
        # The directory the store was opened on: if it is gone (an unmounted disk), reads fail
        # loudly instead of reporting chunks missing. Scoped namespaces appear on first write.
        self._anchor = _anchor or root
        self._url = "file://" + quote(str(root)) + ("" if packs else "?packs=off")
        self._max_parallel = max(1, max_parallel)
        self._sync_batches = sync_batches and _syncfs is not None
        self._packing = packs
        # Handles on one store directory share each namespace's pack index and group commit
        # (the hub makes a scoped handle per request), and the top-level handle closes them.
        self._owner = _shared is None
        self._shared = _shared or _Namespaces()
        self._packs = self._shared.packs(root, self._make_dirs, self._fsync_dir)
        self._root_str = str(root)
        self._known_dirs: set[str] = set()  # shard directories made or seen, not checked again

    @property
    def url(self) -> str:
        return self._url

    @property
    def root(self) -> Path:
        return self._root

    def scoped(self, prefix: str) -> FileBlobStore:
        root = self._root
        for segment in scope_segments(prefix):
            root = root / NAMESPACE_DIR / segment
        return FileBlobStore(
            root,
            max_parallel=self._max_parallel,
            sync_batches=self._sync_batches,
            packs=self._packing,
            _anchor=self._anchor,
            _shared=self._shared,
        )

    async def close(self) -> None:
        if self._owner:
            await asyncio.to_thread(self._shared.close)

    # -- reads -------------------------------------------------------------------------------

    async def has_many(self, ids: Iterable[ChunkId]) -> set[ChunkId]:
        wanted = list(dict.fromkeys(ids))
        batches = [wanted[i : i + _HAS_BATCH] for i in range(0, len(wanted), _HAS_BATCH)]
        found: set[ChunkId] = set()
        for present in await asyncio.gather(*(asyncio.to_thread(self._has_batch, b) for b in batches)):
            found.update(present)
        return found

    def _has_batch(self, ids: list[ChunkId]) -> list[ChunkId]:
        packed = self._packs.present(ids)
        present = list(packed)
        for cid in ids:
            if cid in packed:
                continue
            path = self._str_path(cid)
            try:
                os.stat(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._storage_error("check", path, exc) from exc
            present.append(cid)
        return present

    async def get(self, cid: ChunkId) -> bytes:
        return await asyncio.to_thread(self._read, cid)

    def _read(self, cid: ChunkId) -> bytes:
        packed = self._packs.read(cid)
        if packed is not None:
            return packed
        path = self._path(cid)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise self._missing(cid) from None
        except OSError as exc:
            raise self._storage_error("read", path, exc) from exc

    async def get_many(self, ids: Iterable[ChunkId]) -> dict[ChunkId, bytes]:
        # One thread hop for the lot: a hub answering a fetch of small blobs had spent ten times
        # more of its CPU handing reads to threads one blob at a time than reading.
        return await asyncio.to_thread(self._read_many, list(dict.fromkeys(ids)))

    def _read_many(self, ids: list[ChunkId]) -> dict[ChunkId, bytes]:
        found = self._packs.read_many(ids)
        for cid in ids:
            if cid not in found:
                with contextlib.suppress(ChunkMissingError):
                    found[cid] = self._read(cid)
        return found

    async def size(self, cid: ChunkId) -> int:
        return await asyncio.to_thread(self._stat_size, cid)

    def _stat_size(self, cid: ChunkId) -> int:
        packed = self._packs.size(cid)
        if packed is not None:
            return packed
        path = self._path(cid)
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            raise self._missing(cid) from None
        except OSError as exc:
            raise self._storage_error("check", path, exc) from exc

    async def iterate(self) -> AsyncIterator[ChunkId]:
        # Packed ids a page at a time, then blob files not also packed: memory stays bounded.
        after = b""
        while page := await asyncio.to_thread(self._packs.ids_after, after, _LIST_PAGE):
            for cid in page:
                yield cid
            after = page[-1]
        shards = await asyncio.to_thread(self._list_shards)
        for shard in shards:
            for cid in await asyncio.to_thread(self._list_shard_unpacked, shard):
                yield cid

    def _list_shard_unpacked(self, shard: str) -> list[ChunkId]:
        """The shard's blob files, less those also packed (already listed)."""
        found = self._list_shard(shard)
        packed = self._packs.present(found)
        return [cid for cid in found if cid not in packed]

    def _list_shards(self) -> list[str]:
        try:
            with os.scandir(self._root) as entries:
                return sorted(e.name for e in entries if is_shard_name(e.name) and e.is_dir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._storage_error("list", self._root, exc) from exc

    def _list_shard(self, shard: str) -> list[ChunkId]:
        found = []
        try:
            with os.scandir(self._root / shard) as entries:
                for entry in entries:
                    cid = id_from_blob_name(shard, entry.name)
                    if cid is not None and entry.is_file():
                        found.append(cid)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._storage_error("list", self._root / shard, exc) from exc
        return found

    # -- writes ------------------------------------------------------------------------------

    async def put_many(self, blobs: Sequence[tuple[ChunkId, bytes]]) -> None:
        """Store ``blobs`` durably; returns once every one of them survives a crash.

        Concurrent calls of small blobs are committed as a group (see ``_GroupCommit``): while
        one group is being written and synced, the calls arriving meanwhile join the next one.
        With packs, a group of at least ``PACK_MIN_GROUP`` blobs of at most ``PACK_MAX_BLOB``
        bytes is written as pack files; larger blobs always get a file each.
        """
        unique = dict(blobs)
        if not unique:
            return
        if self._packing:
            for cid in unique:
                blob_key(cid)  # FormatError for a malformed id, before anything is written
            packable = {cid: data for cid, data in unique.items() if len(data) <= PACK_MAX_BLOB}
            large = {cid: data for cid, data in unique.items() if len(data) > PACK_MAX_BLOB}
            writes: list[Awaitable[None]] = [self._group_commit().put(packable)] if packable else []
            if large:
                writes.append(self._put_each(large))
            await _gather_all(writes)
            return
        small = sum(len(data) for data in unique.values()) <= _BATCH_SYNC_MAX_AVG * len(unique)
        if self._sync_batches and small:
            await self._group_commit().put(unique)
        else:
            await self._put_each(unique)

    def _group_commit(self) -> _GroupCommit:
        return self._shared.groups(self._root_str, self._put_group)

    async def _put_group(self, blobs: dict[ChunkId, bytes]) -> None:
        if self._packing and len(blobs) >= PACK_MIN_GROUP:
            await self._put_packed(blobs)
        elif self._sync_batches and len(blobs) >= _BATCH_SYNC_MIN:
            await self._put_batch(blobs)
        else:
            await self._put_each(blobs)

    async def _put_packed(self, blobs: dict[ChunkId, bytes]) -> None:
        """One pack per ``PACK_TARGET_BYTES`` of blobs, written in parallel, each one fsync."""
        groups: list[list[tuple[ChunkId, bytes]]] = [[]]
        size = 0
        for item in blobs.items():
            if size >= PACK_TARGET_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(item)
            size += len(item[1])
        limit = asyncio.Semaphore(self._max_parallel)

        async def write(group: list[tuple[ChunkId, bytes]]) -> None:
            async with limit:
                await asyncio.to_thread(self._packs.write, group)

        await _gather_all([write(group) for group in groups])

    async def _put_each(self, blobs: dict[ChunkId, bytes]) -> None:
        """fsync each temp file, rename it, then fsync each touched directory once."""
        limit = asyncio.Semaphore(self._max_parallel)

        async def put_one(cid: ChunkId, data: bytes) -> str | None:
            async with limit:
                staged = await asyncio.to_thread(self._stage, cid, data, fsync=True)
            if staged is None:
                return None
            await asyncio.to_thread(self._rename, *staged)
            return os.path.dirname(staged[1])

        written = await asyncio.gather(*(put_one(cid, data) for cid, data in blobs.items()))
        dirs = {path for path in written if path is not None}
        await asyncio.gather(*(asyncio.to_thread(self._fsync_dir, d) for d in dirs))

    async def _put_batch(self, blobs: dict[ChunkId, bytes]) -> None:
        """Write every temp file, make them all durable with one syncfs, rename, syncfs again.

        The data is durable before any rename, so a crash still shows only whole blobs. syncfs
        also flushes whatever else is dirty on that filesystem, hence only for small blobs.
        """
        await asyncio.to_thread(self._make_dirs, self._root)
        sync_fd = await asyncio.to_thread(self._open_dir, self._root)
        try:
            # A few threads each stage a slice: one hop per blob would cost more than the write.
            items = list(blobs.items())
            slices = max(1, min(self._max_parallel, len(items) // _STAGE_SLICE_MIN))
            results = await asyncio.gather(
                *(asyncio.to_thread(self._stage_all, items[i::slices]) for i in range(slices)),
                return_exceptions=True,
            )
            staged = [pair for r in results if isinstance(r, list) for pair in r]
            failures = [r for r in results if isinstance(r, BaseException)]
            try:
                if failures:
                    raise failures[0]
                await asyncio.to_thread(self._sync_filesystem, sync_fd)
            except BaseException:
                await asyncio.to_thread(_unlink_all, [temp for temp, _ in staged])
                raise
            await asyncio.to_thread(self._rename_all, staged)
            await asyncio.to_thread(self._sync_filesystem, sync_fd)
        finally:
            os.close(sync_fd)

    def _stage_all(self, items: list[tuple[ChunkId, bytes]]) -> list[tuple[str, str]]:
        """Stage each blob without fsync; on a failure remove this slice's temp files and raise."""
        staged: list[tuple[str, str]] = []
        try:
            for cid, data in items:
                if (pair := self._stage(cid, data, fsync=False)) is not None:
                    staged.append(pair)
        except BaseException:
            _unlink_all([temp for temp, _ in staged])
            raise
        return staged

    def _stage(self, cid: ChunkId, data: bytes, *, fsync: bool) -> tuple[str, str] | None:
        """Write ``data`` to a temp file next to the blob's place: (temp, final), or None if stored.

        Paths are ``str`` here: building ``Path`` objects cost as much as a syscall per blob.
        """
        final = self._str_path(cid)
        if os.path.exists(final):
            return None
        shard_dir, _, name = final.rpartition("/")
        if shard_dir not in self._known_dirs:
            self._make_dirs(Path(shard_dir))
            self._known_dirs.add(shard_dir)
        temp = f"{shard_dir}/{TEMP_PREFIX}{name[:16]}-{os.getpid()}-{_TEMP_TOKEN}{next(_temp_serial):x}"
        try:
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:  # the shard directory was removed since we made it
                self._known_dirs.discard(shard_dir)
                self._make_dirs(Path(shard_dir))
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            _unlink_quietly(temp)
            raise self._write_error(f"chunk {cid.hex()}", final, exc) from exc
        return temp, final

    def _rename(self, temp: str, final: str) -> None:
        # Same id means same content (or an equally valid sealing of it): a concurrent
        # writer's rename winning over ours, or ours over theirs, is harmless.
        try:
            os.rename(temp, final)
        except OSError as exc:
            _unlink_quietly(temp)
            raise self._write_error(os.path.basename(final), final, exc) from exc

    def _rename_all(self, staged: list[tuple[str, str]]) -> None:
        for done, (temp, final) in enumerate(staged):
            try:
                self._rename(temp, final)
            except StorageError:
                _unlink_all([temp for temp, _ in staged[done + 1 :]])
                raise

    def _sync_filesystem(self, fd: int) -> None:
        assert _syncfs is not None
        if _syncfs(fd) != 0:
            exc = OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            raise self._write_error("new chunks", self._root, exc)

    def _write_error(self, what: str, path: Path | str, exc: OSError) -> StorageError:
        if exc.errno in _NO_SPACE:
            return DiskFullError(
                f"no space left to write {what} to the store at {self._root}",
                hint="free space on that disk (nothing partial was kept), then retry",
            )
        return self._storage_error("write", path, exc)

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and any missing parents, fsyncing each parent that gained an entry."""
        missing: list[Path] = []
        probe = directory
        while not probe.is_dir():
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno in _NO_SPACE:
                    raise DiskFullError(
                        f"no space left to create {path} in the store at {self._root}",
                        hint="free space on that disk, then retry",
                    ) from exc
                raise self._storage_error("create directory", path, exc) from exc
            self._fsync_dir(path.parent)

    def _open_dir(self, directory: Path | str) -> int:
        try:
            return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise self._storage_error("open", directory, exc) from exc

    def _fsync_dir(self, directory: Path | str) -> None:
        fd = self._open_dir(directory)
        try:
            os.fsync(fd)
        except OSError as exc:
            raise self._storage_error("sync directory", directory, exc) from exc
        finally:
            os.close(fd)

    async def delete(self, cid: ChunkId) -> None:
        await asyncio.to_thread(self._unlink, cid)

    def _unlink(self, cid: ChunkId) -> None:
        path = self._path(cid)  # FormatError for a malformed id
        self._packs.delete(cid)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._storage_error("delete", path, exc) from exc

    async def sweep_temp(self, older_than: float) -> int:
        """Remove temp files older than ``older_than`` seconds, here and in scoped namespaces.

        Returns how many were removed. Keep ``older_than`` well above the time one write can
        take (minutes), or a slow writer elsewhere loses its temp file and has to retry.
        """
        return await asyncio.to_thread(self._sweep, self._root, time.time() - older_than)

    def _sweep(self, root: Path, cutoff: float) -> int:
        # Packs no index row names (a writer killed before its commit) count as temp files too.
        removed = self._shared.packs(root, self._make_dirs, self._fsync_dir).sweep(cutoff)
        try:
            with os.scandir(root) as entries:
                names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise self._storage_error("list", root, exc) from exc
        for name, is_dir in names:
            if is_dir and is_shard_name(name):
                removed += self._sweep_shard(root / name, cutoff)
            elif is_dir and name == NAMESPACE_DIR:
                for scope in _subdirs(root / name):
                    removed += self._sweep(scope, cutoff)
        return removed

    def _sweep_shard(self, shard: Path, cutoff: float) -> int:
        removed = 0
        with os.scandir(shard) as entries:
            stale = [
                e.path
                for e in entries
                if e.name.startswith(TEMP_PREFIX) and e.stat(follow_symlinks=False).st_mtime < cutoff
            ]
        for path in stale:
            _unlink_quietly(Path(path))
            removed += 1
        return removed

    # -- helpers -----------------------------------------------------------------------------

    def _path(self, cid: ChunkId) -> Path:
        return self._root / blob_key(cid)

    def _str_path(self, cid: ChunkId) -> str:
        return f"{self._root_str}/{blob_key(cid)}"

    def _missing(self, cid: ChunkId) -> StorageError | ChunkMissingError:
        if not self._anchor.is_dir():
            return StorageError(
                f"the store directory {self._anchor} does not exist",
                hint="check the store URL, and that the disk holding it is mounted",
            )
        return ChunkMissingError(f"chunk {cid.hex()} is not in the store at {self._root}")

    def _storage_error(self, action: str, path: Path | str, exc: OSError) -> StorageError:
        reason = exc.strerror or str(exc)
        return StorageError(f"could not {action} {path} in the store at {self._root}: {reason}")


class _Namespaces:
    """The pack sets and group commits of one store directory's namespaces, made on first use.

    A hub has a namespace per tenant: past ``_OPEN_INDEXES`` namespaces with open index
    connections, the least recently used idle ones are closed (they reopen on next use).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._packs: collections.OrderedDict[str, PackSet] = collections.OrderedDict()
        self._groups: dict[str, _GroupCommit] = {}

    def packs(
        self, root: Path, make_dirs: Callable[[Path], None], fsync_dir: Callable[[Path], None]
    ) -> PackSet:
        key = str(root)
        with self._lock:
            found = self._packs.get(key)
            if found is None:
                found = self._packs[key] = PackSet(root, make_dirs, fsync_dir)
            self._packs.move_to_end(key)
            open_sets = [p for p in self._packs.values() if p.is_open()]
            for idle in open_sets[: max(0, len(open_sets) - _OPEN_INDEXES)]:
                idle.close_if_idle()  # never waits: one in use stays open
            return found

    def groups(self, key: str, write: Callable[[dict[ChunkId, bytes]], Awaitable[None]]) -> _GroupCommit:
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._groups.get(key)
            if found is None or found.loop is not loop:
                found = self._groups[key] = _GroupCommit(loop, write)
            return found

    def close(self) -> None:
        with self._lock:
            packs = list(self._packs.values())
        for pack_set in packs:
            pack_set.close()


async def _gather_all(writes: list[Awaitable[None]]) -> None:
    """Await every write (none is left running unobserved), then raise the first failure."""
    results = await asyncio.gather(*writes, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


class _GroupCommit:
    """Coalesces concurrent ``put_many`` calls of small blobs into one write-and-sync.

    The first call is written at once by a flusher task; calls arriving while it runs join
    the next group, written as soon as the current one is durable. Each caller waits for the
    group holding its blobs, so a call never returns before its own blobs are durable, and a
    failed group fails every call in it. The flusher is a task of its own: a cancelled caller
    leaves the others' writes running (and its own blobs may still be stored, which is harmless).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        write: Callable[[dict[ChunkId, bytes]], Awaitable[None]],
    ) -> None:
        self.loop = loop
        self._write = write
        self._next: dict[ChunkId, bytes] = {}
        self._next_done: asyncio.Future[None] = loop.create_future()
        self._flusher: asyncio.Task[None] | None = None

    async def put(self, blobs: dict[ChunkId, bytes]) -> None:
        self._next.update(blobs)
        done = self._next_done
        if self._flusher is None:
            self._flusher = self.loop.create_task(self._flush())
        await asyncio.shield(done)

    async def _flush(self) -> None:
        try:
            while self._next:
                blobs, done = self._next, self._next_done
                self._next, self._next_done = {}, self.loop.create_future()
                try:
                    await self._write(blobs)
                except BaseException as exc:
                    done.set_exception(
                        exc
                        if isinstance(exc, Exception)
                        else StorageError("writing chunks to the store was interrupted")
                    )
                    done.exception()  # retrieved: a group whose callers all left must not warn
                    if not isinstance(exc, Exception):
                        raise
                else:
                    done.set_result(None)
        finally:
            self._flusher = None
            if self._next:  # interrupted with callers still waiting for the next group
                self._next_done.set_exception(StorageError("writing chunks to the store was interrupted"))
                self._next_done.exception()
                self._next = {}
                self._next_done = self.loop.create_future()


def _unlink_quietly(path: Path | str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _unlink_all(paths: Sequence[Path | str]) -> None:
    for path in paths:
        _unlink_quietly(path)


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's syncfs(2): flushes one filesystem, reporting writeback errors since the fd was opened."""
    try:
        # The program's own symbols, libc's among them (find_library would run ldconfig at import).
        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return function


_syncfs = _load_syncfs()


def _subdirs(directory: Path) -> list[Path]:
    try:
        with os.scandir(directory) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
