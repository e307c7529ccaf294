"""Pulled small files made durable a batch at a time: temps, one syncfs, renames, one syncfs.

A file written alone costs two fsyncs (its data, then its folder); a pull of
thousands of small files spends most of its time there. Here each file's
content goes to its temp name with no fsync, one ``syncfs`` makes every temp
of the batch durable, and only then is each renamed into place, each rename
re-checking the destination's stat so an edit made meanwhile is never
clobbered. The caller syncs once more after the renames and only then writes
the index rows and the cursor. A kill at any point leaves whole files at real
paths (or none) and temp files that the next scan removes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shoal.engine.disk import observe
from shoal.engine.records import EntryRecord
from shoal.errors import ConflictError, IntegrityError, UnsafePathError
from shoal.model.ids import ChunkId
from shoal.reconcile.kinds import Kind
from shoal.worktree.atomic import AtomicFile, sync_filesystem
from shoal.worktree.entries import ScanEntry
from shoal.worktree.paths import ArenaRoot, translate_os_error

BATCH_FILES = 256  # temp files held open at once (two descriptors each)


@dataclass(slots=True)
class StagedFile:
    """One file version written to its temp name, waiting for the batch's syncfs and its rename."""

    path: str
    remote: EntryRecord
    expected: ScanEntry | None
    file: AtomicFile


def all_prefetched(remote: EntryRecord, prefetched: Mapping[ChunkId, bytes]) -> bool:
    return all(ref.id in prefetched for ref in remote.decoded_manifest().chunks)


def stage(
    root: ArenaRoot,
    path: str,
    remote: EntryRecord,
    expected: ScanEntry | None,
    prefetched: Mapping[ChunkId, bytes],
) -> StagedFile:
    """Write ``remote`` (every chunk already fetched and verified) to a temp file beside ``path``."""
    manifest = remote.decoded_manifest()
    f = AtomicFile(root, path, unnamed=expected is None)
    try:
        written = 0
        for ref in manifest.chunks:
            data = prefetched[ref.id]
            if len(data) != ref.length:
                raise IntegrityError(
                    f"a chunk of {path!r} has {len(data)} bytes, the manifest says {ref.length}"
                )
            f.write(data)
            written += len(data)
        if written != manifest.size:
            raise IntegrityError(f"{path!r}: wrote {written} bytes, the manifest says {manifest.size}")
    except BaseException:
        f.abort()
        raise
    return StagedFile(path, remote, expected, f)


def publish(root: ArenaRoot, batch: Sequence[StagedFile]) -> list[ScanEntry | ConflictError]:
    """Sync the batch's temps, then rename each into place. A file whose destination changed
    meanwhile gets its ConflictError instead: its temp is dropped and the caller applies that
    entry the careful way. Any other failure drops every temp not yet renamed."""
    out: list[ScanEntry | ConflictError] = []
    try:
        sync_filesystem(root)
        for staged in batch:
            try:
                out.append(
                    staged.file.commit(
                        expected=None if staged.expected is None else staged.expected.stat_key(),
                        mode=staged.remote.mode or 0o644,
                        mtime_ns=staged.remote.mtime_ns,
                        synced=True,
                    )
                )
            except (ConflictError, UnsafePathError) as exc:
                staged.file.abort()
                out.append(exc if isinstance(exc, ConflictError) else ConflictError(exc.message))
    except BaseException:
        for staged in batch:
            staged.file.abort()  # a no-op for the files already renamed
        raise
    return out


def make_folder(root: ArenaRoot, path: str, mode: int) -> ScanEntry:
    """Create a new folder where nothing is, without an fsync of its own: the caller syncs the
    filesystem before the index says it is there (one fsync per folder dominated an initial pull).
    Anything already at ``path`` is a ConflictError and is left alone."""
    try:
        with root.open_parent(path, create=True) as (dir_fd, name):
            os.mkdir(name, mode & 0o777, dir_fd=dir_fd)
            os.chmod(name, mode & 0o777, dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise ConflictError(f"{path!r} appeared on disk; it was left as it is") from None
    except OSError as exc:
        raise translate_os_error(exc, f"creating the folder {path!r}") from exc
    made = observe(root, path)
    if made is None or made.kind is not Kind.DIR:
        raise ConflictError(f"{path!r} changed on disk while it was made; it was left as it is")
    return made
