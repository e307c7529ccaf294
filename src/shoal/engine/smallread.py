"""Reading and sealing a push's one-chunk files: what ``engine.smallfiles`` runs on threads and its
worker processes run in slices.

Kept apart from ``smallfiles`` so that a spawned worker imports only this (about 0.1 s), not the
hub client and its pydantic schemas that ``smallfiles`` needs (0.28 s), while the first group of
an initial sync waits for it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from shoal.chunking.hashing import FileHasher
from shoal.errors import ShoalError
from shoal.model.ids import ChunkId
from shoal.model.manifest import ChunkRef, Manifest
from shoal.store.sealed import Sealer
from shoal.worktree.entries import ScanEntry
from shoal.worktree.paths import ArenaRoot


@dataclass(frozen=True, slots=True)
class Loaded:
    path: str
    cid: ChunkId | None
    data: bytes
    manifest: bytes


def read_small(
    root: ArenaRoot, entry: ScanEntry, id_key: bytes | None, chunk_id: Callable[[bytes], ChunkId]
) -> Loaded | str:
    """Read one small file whole; a reason string when it changed since the scan or cannot be read."""
    try:
        with root.open_parent(entry.path) as (dir_fd, name):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            with os.fdopen(fd, "rb", buffering=0) as f:
                before = os.fstat(fd)
                data = f.read(entry.size + 1)
                after = os.fstat(fd)
    except (OSError, ShoalError) as exc:
        return f"{entry.path}: cannot read it ({exc}); tried again next round"
    stamp = (before.st_ino, before.st_size, before.st_mtime_ns)
    if (
        stamp != (entry.inode, entry.size, entry.mtime_ns)
        or stamp != (after.st_ino, after.st_size, after.st_mtime_ns)
        or len(data) != entry.size
    ):
        return f"{entry.path}: changed while it was read; tried again next round"
    hasher = FileHasher(id_key)
    hasher.update(data)
    cid = chunk_id(data) if data else None
    refs = (ChunkRef(cid, len(data)),) if cid is not None else ()
    manifest = Manifest(size=len(data), chunks=refs, file_hash=hasher.digest())
    return Loaded(entry.path, cid, data, manifest.encode())


SealedFile = tuple[str, ChunkId | None, bytes, bytes]  # path, chunk id, sealed chunk, encoded manifest


def read_and_seal_slice(sealer: Sealer, work: tuple[ArenaRoot, list[ScanEntry]]) -> list[SealedFile | str]:
    """In a worker process: read (as :func:`read_small`) and seal each file of a slice."""
    root, entries = work
    out: list[SealedFile | str] = []
    for entry in entries:
        loaded = read_small(root, entry, sealer.id_key, sealer.chunk_id)
        if isinstance(loaded, str):
            out.append(loaded)
        else:
            sealed = sealer.seal(loaded.cid, loaded.data) if loaded.cid is not None else b""
            out.append((loaded.path, loaded.cid, sealed, loaded.manifest))
    return out
