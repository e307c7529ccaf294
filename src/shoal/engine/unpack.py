"""Restore a tree from an flist image and a chunk store.

Every chunk is verified by the sealed store before a byte of it reaches the
destination; a file is written to a hidden temp file beside its final name
and renamed into place only once all its chunks and its whole-file hash have
checked out. A file that fails is reported by name and never appears.
Entries whose path would land outside the destination, or beneath a symlink
of the image, are refused.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from shoal.chunking.hashing import FileHasher
from shoal.errors import (
    ChunkMissingError,
    DiskFullError,
    IntegrityError,
    ShoalError,
    StorageError,
    UnsafePathError,
    UsageError,
)
from shoal.model import Manifest
from shoal.state.flist import EntryKind, FlistEntry, FlistReader
from shoal.store.sealed import SealedChunkStore

TEMP_PREFIX = ".shoal-unpack-"
PREFETCH_CHUNKS = 8


@dataclass
class UnpackReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes_written: int = 0
    failures: list[str] = field(default_factory=list)


ProgressFn = Callable[[int], None]


def _checked_destination(dest: Path, entry: FlistEntry, symlink_dirs: set[str]) -> Path:
    parts = entry.path.split("/")
    for depth in range(1, len(parts)):
        if "/".join(parts[:depth]) in symlink_dirs:
            raise UnsafePathError(f"image entry {entry.path!r} lies beneath a symlink of the image")
    target = dest.joinpath(*parts)
    if os.path.commonpath([dest, target]) != str(dest):
        raise UnsafePathError(f"image entry {entry.path!r} would land outside {dest}")
    return target


async def _chunks_in_order(store: SealedChunkStore, manifest: Manifest) -> AsyncIterator[bytes]:
    """Yield a file's chunks in order, fetching up to PREFETCH_CHUNKS ahead."""
    pending: list[asyncio.Task[bytes]] = []
    refs = iter(manifest.chunks)
    try:
        for ref in refs:
            pending.append(asyncio.ensure_future(store.get(ref.id)))
            if len(pending) >= PREFETCH_CHUNKS:
                yield await pending.pop(0)
        while pending:
            yield await pending.pop(0)
    finally:
        for task in pending:
            task.cancel()


async def _write_file(
    store: SealedChunkStore,
    target: Path,
    entry: FlistEntry,
    hash_key: bytes | None,
    progress: ProgressFn,
) -> int:
    manifest = entry.manifest
    if manifest is None:
        raise IntegrityError(f"{entry.path}: the image has no chunk list for this file")
    tmp = target.with_name(f"{TEMP_PREFIX}{os.getpid()}-{target.name}"[:255])
    hasher = FileHasher(hash_key)
    written = 0
    try:
        with open(tmp, "wb") as out:
            async for index, data in _enumerate(_chunks_in_order(store, manifest)):
                if len(data) != manifest.chunks[index].length:
                    raise IntegrityError(f"{entry.path}: chunk {index} has the wrong length")
                hasher.update(data)
                out.write(data)
                written += len(data)
                progress(len(data))
            if written != manifest.size or hasher.digest() != manifest.file_hash:
                raise IntegrityError(f"{entry.path}: the restored content does not match its recorded hash")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, entry.mode & 0o7777)
        os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


async def _enumerate(source: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    index = 0
    async for item in source:
        yield index, item
        index += 1


def _os_error(path: str, exc: OSError) -> ShoalError:
    if exc.errno == 28:  # ENOSPC
        return DiskFullError(f"{path}: no space left on the destination", hint="free space and unpack again")
    return StorageError(f"{path}: {exc.strerror or exc}")


async def unpack_tree(
    image: FlistReader,
    dest: Path,
    store: SealedChunkStore,
    *,
    hash_key: bytes | None = None,
    progress: ProgressFn = lambda _n: None,
) -> UnpackReport:
    """Restore ``image`` under ``dest`` (which must be absent or empty)."""
    dest = dest.absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest} exists and is not an empty directory", hint="unpack into a new directory")
    dest.mkdir(parents=True, exist_ok=True)
    report = UnpackReport()
    dirs: list[tuple[Path, FlistEntry]] = []
    symlinks: list[tuple[Path, FlistEntry]] = []
    symlink_paths: set[str] = set()
    for entry in image.entries():
        try:
            target = _checked_destination(dest, entry, symlink_paths)
            if entry.kind is EntryKind.DIR:
                target.mkdir(exist_ok=True)
                dirs.append((target, entry))
                report.dirs += 1
            elif entry.kind is EntryKind.SYMLINK:
                symlink_paths.add(entry.path)
                symlinks.append((target, entry))
            else:
                report.bytes_written += await _write_file(store, target, entry, hash_key, progress)
                report.files += 1
        except (IntegrityError, ChunkMissingError, UnsafePathError) as exc:
            report.failures.append(f"{entry.path}: {exc}")
        except OSError as exc:
            raise _os_error(entry.path, exc) from exc
    # Symlinks last, so no file is ever written through one; then directory times, deepest first.
    for target, entry in symlinks:
        try:
            os.symlink(entry.target or "", target)
            os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
            report.symlinks += 1
        except OSError as exc:
            report.failures.append(f"{entry.path}: cannot create symlink: {exc.strerror or exc}")
    for target, entry in reversed(dirs):
        os.chmod(target, entry.mode & 0o7777)
        os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns))
    if "root_mode" in image.meta:
        os.chmod(dest, int(image.meta["root_mode"]) & 0o7777)
        os.utime(dest, ns=(int(image.meta["root_mtime_ns"]),) * 2)
    return report
