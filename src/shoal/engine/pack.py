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
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from shoal.engine.ingest import IngestResult, ingest_file
from shoal.errors import ChangedWhileReadingError, DiskFullError, ShoalError, StorageError, UnsafePathError
from shoal.model import validate_path
from shoal.settings import ChunkingSettings, PipelineSettings
from shoal.state.flist import EntryKind, FlistEntry, FlistWriter
from shoal.store.sealed import SealedChunkStore

FILES_IN_FLIGHT = 16


@dataclass
class PackReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes_read: int = 0
    chunks: int = 0
    new_chunks: int = 0
    bytes_stored: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)

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
    disk: Path
    st: os.stat_result
    kind: EntryKind


def walk_tree(root: Path, skipped: list[str]) -> Iterator[_Found]:
    """Every dir, regular file and symlink under ``root``, parents first, never following symlinks."""
    stack = [("", root)]
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
                yield _Found(rel, Path(item.path), st, EntryKind.DIR)
                stack.append((rel, Path(item.path)))
            elif stat.S_ISREG(st.st_mode):
                yield _Found(rel, Path(item.path), st, EntryKind.FILE)
            elif stat.S_ISLNK(st.st_mode):
                yield _Found(rel, Path(item.path), st, EntryKind.SYMLINK)
            else:
                skipped.append(f"{rel}: not a regular file, directory or symlink (skipped)")


async def pack_tree(
    root: Path,
    image: FlistWriter,
    store: SealedChunkStore,
    chunking: ChunkingSettings,
    pipeline: PipelineSettings,
    executor: Executor,
    *,
    progress: Callable[[int], None] = lambda _n: None,
) -> PackReport:
    """Walk ``root``, store new chunks, and add every entry to ``image`` (the caller commits it)."""
    if not root.is_dir():
        raise ShoalError(f"{root} is not a directory", hint="give the folder to pack")
    report = PackReport()
    started = time.perf_counter()
    root_st = root.stat()
    image.set_meta("root_mode", str(stat.S_IMODE(root_st.st_mode)))
    image.set_meta("root_mtime_ns", str(root_st.st_mtime_ns))
    gate = asyncio.Semaphore(FILES_IN_FLIGHT)
    tasks: list[asyncio.Task[None]] = []

    async def pack_file(found: _Found) -> None:
        async with gate:
            try:
                result: IngestResult = await ingest_file(found.disk, store, chunking, pipeline, executor)
            except ChangedWhileReadingError as exc:
                report.skipped.append(f"{found.rel}: {exc.message}")
                return
            except DiskFullError:
                raise
            except StorageError as exc:
                report.skipped.append(f"{found.rel}: {exc.message}")
                return
        image.add(
            FlistEntry(
                path=found.rel,
                kind=EntryKind.FILE,
                mode=stat.S_IMODE(found.st.st_mode),
                mtime_ns=found.st.st_mtime_ns,
                size=result.manifest.size,
                manifest=result.manifest,
            )
        )
        report.files += 1
        report.bytes_read += result.bytes_read
        report.chunks += result.chunks
        report.new_chunks += result.new_chunks
        report.bytes_stored += result.bytes_stored
        progress(result.bytes_read)

    try:
        for found in walk_tree(root, report.skipped):
            mode, mtime = stat.S_IMODE(found.st.st_mode), found.st.st_mtime_ns
            if found.kind is EntryKind.DIR:
                image.add(FlistEntry(found.rel, EntryKind.DIR, mode, mtime))
                report.dirs += 1
            elif found.kind is EntryKind.SYMLINK:
                try:
                    target = os.readlink(found.disk)
                except OSError as exc:
                    report.skipped.append(f"{found.rel}: cannot read the link: {exc.strerror or exc}")
                    continue
                image.add(FlistEntry(found.rel, EntryKind.SYMLINK, mode, mtime, target=target))
                report.symlinks += 1
            else:
                tasks.append(asyncio.create_task(pack_file(found)))
                await _wait_below(tasks, 4 * FILES_IN_FLIGHT)
        await _wait_below(tasks, 0)
    finally:
        for task in tasks:
            task.cancel()
    report.seconds = time.perf_counter() - started
    return report


async def _wait_below(tasks: list[asyncio.Task[None]], limit: int) -> None:
    """Wait until fewer than ``limit`` tasks are running (0: all done); raise the first failure."""
    while tasks and len(tasks) >= max(limit, 1):
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            tasks.remove(task)
            task.result()
