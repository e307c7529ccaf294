"""The arena's disk as the pull side sees it: what is at a path now, its content hash, and
writing a remote version there (atomically, never over an unexpected local change)."""

from __future__ import annotations

import asyncio
import functools
import os
import stat as st
from collections.abc import Mapping

from shoal.chunking.hashing import FileHasher
from shoal.engine.records import EntryRecord, RecordKind
from shoal.errors import IntegrityError, StorageError
from shoal.model.ids import ChunkId
from shoal.reconcile.kinds import Kind
from shoal.state.index import IndexEntry
from shoal.store.sealed import SealedChunkStore
from shoal.worktree.atomic import AtomicFile, delete, make_dir, make_symlink, rename
from shoal.worktree.entries import ScanEntry, entry_from_stat, stat_changed
from shoal.worktree.paths import ArenaRoot


def observe(root: ArenaRoot, path: str) -> ScanEntry | None:
    """What is at ``path`` now (never following a symlink); None when nothing is."""
    info = root.lstat(path)
    if info is None:
        return None
    target = None
    if st.S_ISLNK(info.st_mode):
        with root.open_parent(path) as (fd, name):
            try:
                target = os.readlink(name, dir_fd=fd)
            except OSError as exc:
                raise StorageError(f"cannot read the symlink {path!r}: {exc.strerror}") from exc
    return entry_from_stat(path, info, target)


def locally_changed(base: IndexEntry | None, disk: ScanEntry | None) -> bool:
    """True if the disk differs from the last synced state (new, edited, retyped or deleted)."""
    live = base is not None and not base.deleted
    if disk is None:
        return live
    if not live:
        return True
    assert base is not None
    return stat_changed(base.stat_key(), disk)


def hash_file(root: ArenaRoot, path: str, key: bytes | None) -> bytes | None:
    """The whole-file hash (keyed like the arena's), or None if the file cannot be read."""
    hasher = FileHasher(key)
    try:
        with root.open_parent(path) as (fd, name):
            file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            with os.fdopen(file_fd, "rb") as f:
                while piece := f.read(1 << 20):
                    hasher.update(piece)
    except OSError:
        return None
    return hasher.digest()


def disk_content_key(root: ArenaRoot, disk: ScanEntry, key: bytes | None) -> bytes | None:
    if disk.kind is Kind.FILE:
        return hash_file(root, disk.path, key)
    if disk.kind is Kind.SYMLINK:
        return (disk.target or "").encode("utf-8")
    return b""


def same_thing(root: ArenaRoot, disk: ScanEntry, remote: EntryRecord, key: bytes | None) -> bool:
    """True when the disk already holds exactly the remote version's content (metadata aside)."""
    kind = remote.kind.as_kind()
    if kind is None or disk.kind is not kind:
        return False
    if kind is Kind.DIR:
        return True
    if kind is Kind.FILE and disk.size != remote.size:
        return False
    return disk_content_key(root, disk, key) == remote.content_key()


async def write_version(
    root: ArenaRoot,
    path: str,
    remote: EntryRecord,
    store: SealedChunkStore,
    *,
    expected: ScanEntry | None,
    prefetched: Mapping[ChunkId, bytes] | None = None,
) -> ScanEntry:
    """Make ``path`` hold ``remote`` (a file, folder or symlink), replacing ``expected`` only if it
    is still what is there. Raises ConflictError and leaves the disk alone otherwise."""
    kind = remote.kind.as_kind()
    assert kind is not None, "a tombstone is applied with remove_version"
    if expected is not None and expected.kind is not kind and expected.kind is Kind.DIR:
        delete(root, path, expected=expected.stat_key())  # a folder replaced by a file: must be empty
        expected = None
    if kind is Kind.DIR:
        if expected is not None and expected.kind is not Kind.DIR:
            delete(root, path, expected=expected.stat_key())
        made = make_dir(root, path, mode=remote.mode or 0o755)
        wanted = (remote.mode or 0o755) & 0o777
        return made if made.mode == wanted else _chmod_dir(root, path, wanted)
    if kind is Kind.SYMLINK:
        assert remote.target is not None
        return make_symlink(
            root,
            path,
            remote.target,
            expected=None if expected is None else expected.stat_key(),
            mtime_ns=remote.mtime_ns,
        )
    return await _write_file(root, path, remote, store, expected, prefetched or {})


async def _write_file(
    root: ArenaRoot,
    path: str,
    remote: EntryRecord,
    store: SealedChunkStore,
    expected: ScanEntry | None,
    prefetched: Mapping[ChunkId, bytes],
) -> ScanEntry:
    manifest = remote.decoded_manifest()
    loop = asyncio.get_running_loop()
    with AtomicFile(root, path) as f:
        written = 0
        for ref in manifest.chunks:
            data = prefetched.get(ref.id)
            if data is None:
                data = await store.get(ref.id)  # verified against its id
            if len(data) != ref.length:
                raise IntegrityError(
                    f"a chunk of {path!r} has {len(data)} bytes, the manifest says {ref.length}"
                )
            await loop.run_in_executor(None, f.write, data)
            written += len(data)
        if written != manifest.size:
            raise IntegrityError(f"{path!r}: wrote {written} bytes, the manifest says {manifest.size}")
        commit = functools.partial(
            f.commit,
            expected=None if expected is None else expected.stat_key(),
            mode=remote.mode or 0o644,
            mtime_ns=remote.mtime_ns,
        )
        return await loop.run_in_executor(None, commit)  # fsyncs: off the event loop


def _chmod_dir(root: ArenaRoot, path: str, mode: int) -> ScanEntry:
    """Give an existing folder the synced mode (opened without following a symlink)."""
    with root.open_parent(path) as (dir_fd, name):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            raise StorageError(f"cannot open the folder {path!r}: {exc.strerror}") from exc
        try:
            os.fchmod(fd, mode)
            info = os.fstat(fd)
        finally:
            os.close(fd)
    entry = entry_from_stat(path, info)
    assert entry is not None
    return entry


def remove_version(root: ArenaRoot, path: str, *, expected: ScanEntry) -> bool:
    """Delete ``path`` if it is still ``expected``; a folder that is not empty raises ConflictError."""
    return delete(root, path, expected=expected.stat_key())


def move_aside(root: ArenaRoot, path: str, copy_path: str, *, expected: ScanEntry) -> ScanEntry:
    """Move a local version to its conflict-copy name (same folder), never over an existing file."""
    return rename(root, path, copy_path, expected=expected.stat_key())


def record_of(entry: IndexEntry, device: str) -> EntryRecord:
    """The record describing an index entry (a tombstone when it is deleted)."""
    kind = RecordKind.TOMBSTONE if entry.deleted else RecordKind(entry.kind.value)
    return EntryRecord(
        kind=kind,
        path=entry.path,
        device=device,
        size=entry.size,
        mode=entry.mode,
        mtime_ns=entry.mtime_ns,
        target=entry.target,
        manifest=entry.manifest,
    )
