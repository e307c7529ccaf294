"""Pack a directory tree into an flist image whose file contents live as chunks in a store.

The walk never follows symlinks (a symlink is recorded as a symlink, so loops
cannot trap it). Files are ingested several at a time, each through the
bounded-memory pipeline of ``shoal.engine.ingest``. A file that cannot be
read, or that changes while it is read, is left out of the image and
reported by name; everything else is still packed, and the caller decides the
exit status (``shoal pack`` exits non-zero and lists them).
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from shoal.engine.ingest import IngestResult, ingest_file, ingest_small_files
from shoal.engine.sealpool import POOL_AFTER_BYTES, POOL_AFTER_FILES, SealingPool
from shoal.errors import (
    ChangedWhileReadingError,
    ConfigError,
    DiskFullError,
    NotFoundError,
    ShoalError,
    StorageError,
    UnsafePathError,
    UsageError,
)
from shoal.model import Manifest, validate_path
from shoal.model.paths import path_within
from shoal.settings import ChunkingSettings, PipelineSettings
from shoal.state.flist import EntryKind, FlistEntry, FlistWriter, StatKey
from shoal.store.sealed import SealedChunkStore

# A small file (one chunk) holds little memory while in flight and spends most of its time waiting
# for the store to make it durable, so many run at once and the store commits them in groups.
# A large file keeps a chunker buffer (2 x max chunk) outside the byte budget, and its chunks already
# keep every core busy, so only a few run at once.
SMALL_BATCH_FILES = 64  # one-chunk files read, sealed and stored together (one dedup query, one put)
SMALL_BATCH_BYTES = 4 * 1024 * 1024
SMALL_BATCHES_IN_FLIGHT = 16  # while one group commit (syncfs) runs, the next batches read and seal
LARGE_FILES_IN_FLIGHT = 4
ENTRY_BATCH = 512  # image rows written with one statement
REUSE_BATCH = 512  # unchanged files whose chunks are confirmed present with one has_many


@dataclass
class PackReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes_read: int = 0
    chunks: int = 0
    new_chunks: int = 0
    bytes_stored: int = 0
    unchanged: int = 0  # files whose stat matched the parent image: chunk list reused, not read
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # what this pack writes inside the folder

    @property
    def dedup_ratio(self) -> float:
        """Bytes read per byte newly stored (higher is better; inf when nothing new was stored)."""
        return self.bytes_read / self.bytes_stored if self.bytes_stored else float("inf")

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / 1e6 / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class _Found:
    rel: str
    path: str  # on disk; a str, since a Path per entry costs more than the stat (20k-file trees)
    st: os.stat_result
    kind: EntryKind

    @property
    def disk(self) -> Path:
        return Path(self.path)


def own_paths(root: Path, written: Mapping[Path, str | None]) -> dict[str, str | None]:
    """Which of the paths a pack writes (``written``: path -> what it is, None for a temporary file
    not worth telling) lie under ``root``, by their path relative to it; the walk leaves them out.
    An image written into the folder it packs would otherwise hold its own half-written copy, and a
    store inside it the chunks being stored."""
    inside: dict[str, str | None] = {}
    for path, what in written.items():
        rel = path_within(root, path)
        if rel == ".":
            raise UsageError(f"{root} is {what or 'written by this pack'}", hint="pack another folder")
        if rel is not None:
            inside[rel] = what
    return inside


def walk_tree(
    root: Path,
    skipped: list[str],
    leave_out: Mapping[str, str | None] | None = None,
    left_out: list[str] | None = None,
) -> Iterator[_Found]:
    """Every dir, regular file and symlink under ``root``, parents first, never following symlinks.
    Paths in ``leave_out`` (see :func:`own_paths`) are passed over, and told to ``left_out``."""
    stack = [("", str(root))]
    while stack:
        rel_dir, disk_dir = stack.pop()
        try:
            with os.scandir(disk_dir) as listing:
                items = sorted(listing, key=lambda item: item.name)
        except OSError as exc:
            skipped.append(f"{rel_dir or '.'}/: cannot list: {exc.strerror or exc}")
            continue
        for item in items:
            rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
            if leave_out and rel in leave_out:
                what = leave_out[rel]
                if what is not None and left_out is not None:
                    left_out.append(f"{rel} ({what})")
                continue
            try:
                validate_path(rel)
                st = item.stat(follow_symlinks=False)
            except UnsafePathError as exc:
                skipped.append(f"{rel!r}: {exc.message}")
                continue
            except OSError as exc:
                skipped.append(f"{rel}: cannot stat: {exc.strerror or exc}")
                continue
            if stat.S_ISDIR(st.st_mode):
                yield _Found(rel, item.path, st, EntryKind.DIR)
                stack.append((rel, item.path))
            elif stat.S_ISREG(st.st_mode):
                yield _Found(rel, item.path, st, EntryKind.FILE)
            elif stat.S_ISLNK(st.st_mode):
                yield _Found(rel, item.path, st, EntryKind.SYMLINK)
            else:
                skipped.append(f"{rel}: not a regular file, directory or symlink (skipped)")


class _Packer:
    """One pack run: the walk feeds files to bounded ingest tasks or to the unchanged-file batch."""

    def __init__(
        self,
        image: FlistWriter,
        store: SealedChunkStore,
        ingest: Callable[[_Found], Awaitable[IngestResult]],
        ingest_small: Callable[[list[tuple[str, int]]], Awaitable[list[IngestResult | ShoalError | None]]],
        progress: Callable[[int], None],
        small_size: int,
    ) -> None:
        self.image = image
        self.store = store
        self.ingest = ingest
        self.ingest_small = ingest_small
        self.progress = progress
        self.report = PackReport()
        self.tasks: list[asyncio.Task[None]] = []
        self.reusable: list[tuple[_Found, Manifest]] = []
        self.small: list[_Found] = []
        self.entries: list[FlistEntry] = []  # added to the image in batches
        self.small_bytes = 0
        self.small_size = small_size
        self.small_gate = asyncio.Semaphore(SMALL_BATCHES_IN_FLIGHT)
        self.large_gate = asyncio.Semaphore(LARGE_FILES_IN_FLIGHT)

    def add_entry(self, entry: FlistEntry) -> None:
        self.entries.append(entry)
        if len(self.entries) >= ENTRY_BATCH:
            self.flush_entries()

    def flush_entries(self) -> None:
        entries, self.entries = self.entries, []
        self.image.add_many(entries)

    def add_file(self, found: _Found, manifest: Manifest) -> None:
        self.add_entry(
            FlistEntry(
                path=found.rel,
                kind=EntryKind.FILE,
                mode=stat.S_IMODE(found.st.st_mode),
                mtime_ns=found.st.st_mtime_ns,
                size=manifest.size,
                manifest=manifest,
                ctime_ns=found.st.st_ctime_ns,
                inode=found.st.st_ino,
            )
        )
        self.report.files += 1

    def add_other(self, found: _Found) -> None:
        mode, mtime = stat.S_IMODE(found.st.st_mode), found.st.st_mtime_ns
        if found.kind is EntryKind.DIR:
            self.add_entry(FlistEntry(found.rel, EntryKind.DIR, mode, mtime))
            self.report.dirs += 1
            return
        try:
            target = os.readlink(found.path)
        except OSError as exc:
            self.report.skipped.append(f"{found.rel}: cannot read the link: {exc.strerror or exc}")
            return
        self.add_entry(FlistEntry(found.rel, EntryKind.SYMLINK, mode, mtime, target=target))
        self.report.symlinks += 1

    async def schedule(self, found: _Found) -> None:
        # The size is the walk's; a file that grew past one chunk since comes back from the batch.
        if found.st.st_size <= self.small_size:
            self.small.append(found)
            self.small_bytes += found.st.st_size
            if len(self.small) >= SMALL_BATCH_FILES or self.small_bytes >= SMALL_BATCH_BYTES:
                await self.flush_small()
            return
        await self.start(self.pack_file(found))

    async def flush_small(self) -> None:
        batch, self.small, self.small_bytes = self.small, [], 0
        if batch:
            await self.start(self.pack_small(batch))

    async def start(self, work: Coroutine[None, None, None]) -> None:
        self.tasks.append(asyncio.create_task(work))
        await _wait_below(self.tasks, 2 * (SMALL_BATCHES_IN_FLIGHT + LARGE_FILES_IN_FLIGHT))

    async def reuse_unchanged(self) -> None:
        batch, self.reusable = self.reusable, []
        if not batch:
            return
        present = await self.store.has_many({ref.id for _, manifest in batch for ref in manifest.chunks})
        for found, manifest in batch:
            if all(ref.id in present for ref in manifest.chunks):
                self.add_file(found, manifest)
                self.report.unchanged += 1
                self.progress(manifest.size)
            else:  # never point at a chunk the store no longer holds: read the file again
                await self.schedule(found)

    async def pack_small(self, batch: list[_Found]) -> None:
        async with self.small_gate:
            try:
                results = await self.ingest_small([(found.path, found.st.st_size) for found in batch])
            except DiskFullError:
                raise
            except (ChangedWhileReadingError, StorageError) as exc:
                self.report.skipped.extend(f"{found.rel}: {exc.message}" for found in batch)
                return
        for found, result in zip(batch, results, strict=True):
            if result is None:  # it grew past one chunk since the walk, or its copy is not stored yet
                await self.pack_file(found)
            elif isinstance(result, ShoalError):  # it vanished, changed or cannot be read
                self.report.skipped.append(f"{found.rel}: {result.message}")
            else:
                self.add_result(found, result)

    async def pack_file(self, found: _Found) -> None:
        async with self.large_gate:
            try:
                result = await self.ingest(found)
            except (DiskFullError, ConfigError):
                raise
            except (ChangedWhileReadingError, StorageError, NotFoundError, UsageError) as exc:
                self.report.skipped.append(f"{found.rel}: {exc.message}")
                return
        self.add_result(found, result, told=True)  # progress was told batch by batch

    def add_result(self, found: _Found, result: IngestResult, *, told: bool = False) -> None:
        self.add_file(found, result.manifest)
        self.report.bytes_read += result.bytes_read
        self.report.chunks += result.chunks
        self.report.new_chunks += result.new_chunks
        self.report.bytes_stored += result.bytes_stored
        if not told:
            self.progress(result.bytes_read)


async def pack_tree(
    root: Path,
    image: FlistWriter,
    store: SealedChunkStore,
    chunking: ChunkingSettings,
    pipeline: PipelineSettings,
    executor: Executor,
    *,
    parent: Mapping[str, tuple[StatKey, bytes]] | None = None,
    progress: Callable[[int], None] = lambda _n: None,
    pool: SealingPool | None = None,
    file_pool: SealingPool | None = None,
    leave_out: Mapping[str, str | None] | None = None,
) -> PackReport:
    """Walk ``root``, store new chunks, and add every entry to ``image`` (the caller commits it).

    ``progress`` is told the bytes of each file as it is stored (a large file's batch by batch:
    give the ``file_pool`` the same callable, as its workers tell it theirs). ``parent`` is an
    earlier image's stat cache (``FlistReader.stat_cache``): a
    file whose size, mtime, ctime and inode still match keeps its chunk list
    without being read, once the store confirms it still holds every chunk.
    With a ``pool``, one-chunk files are read and sealed in its worker processes; with a
    ``file_pool`` (one that knows the store), larger files are ingested whole in its workers.
    ``leave_out`` names what this pack itself writes inside ``root`` (:func:`own_paths`).
    """
    if not root.is_dir():
        raise ShoalError(f"{root} is not a directory", hint="give the folder to pack")
    started = time.perf_counter()
    root_st = root.stat()
    image.set_meta("root_mode", str(stat.S_IMODE(root_st.st_mode)))
    image.set_meta("root_mtime_ns", str(root_st.st_mtime_ns))

    large_bytes = 0

    def ingest(found: _Found) -> Awaitable[IngestResult]:
        nonlocal large_bytes
        large_bytes += found.st.st_size
        if file_pool is not None and large_bytes >= POOL_AFTER_BYTES:
            return file_pool.ingest_file(found.disk, chunking, pipeline)  # it tells its own progress
        return ingest_file(found.disk, store, chunking, pipeline, executor, progress=progress)

    small_files = 0

    def ingest_small(files: list[tuple[str, int]]) -> Awaitable[list[IngestResult | ShoalError | None]]:
        nonlocal small_files
        small_files += len(files)
        use = pool if small_files > POOL_AFTER_FILES else None
        return ingest_small_files(files, store, chunking, pipeline, executor, pool=use)

    packer = _Packer(image, store, ingest, ingest_small, progress, store.sealer.chunking(chunking).min_size)
    try:
        for found in walk_tree(root, packer.report.skipped, leave_out, packer.report.left_out):
            if found.kind is not EntryKind.FILE:
                packer.add_other(found)
            elif parent is not None and _unchanged(found.st, parent.get(found.rel)):
                packer.reusable.append((found, Manifest.decode(parent[found.rel][1])))
                if len(packer.reusable) >= REUSE_BATCH:
                    await packer.reuse_unchanged()
            else:
                await packer.schedule(found)
        await packer.reuse_unchanged()
        await packer.flush_small()
        await _wait_below(packer.tasks, 0)
        packer.flush_entries()
    finally:
        for task in packer.tasks:
            task.cancel()
    packer.report.seconds = time.perf_counter() - started
    return packer.report


def _unchanged(st: os.stat_result, cached: tuple[StatKey, bytes] | None) -> bool:
    return cached is not None and cached[0] == StatKey(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


async def _wait_below(tasks: list[asyncio.Task[None]], limit: int) -> None:
    """Wait until fewer than ``limit`` tasks are running (0: all done); raise the first failure."""
    while tasks and len(tasks) >= max(limit, 1):
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            tasks.remove(task)
            task.result()
