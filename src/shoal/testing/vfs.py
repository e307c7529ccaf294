"""A test arena for the filesystem: a device index filled by the test, chunks in a file store.

    arena = TestArena.create(tmp_path, {"a.txt": b"hi", "big.bin": os.urandom(10 << 20)})
    fs = arena.filesystem()          # an ArenaFS whose commit callback records changes
    ...
    assert arena.source.gets == 2    # chunks fetched from the store

Files are cut into fixed ``chunk_size`` pieces (the filesystem does not care
how chunks were cut). ``python -m shoal.testing.vfs DIR MOUNTPOINT`` mounts
an arena made earlier in ``DIR`` with a recording commit, for real FUSE tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shoal.chunking.hashing import FileHasher
from shoal.errors import NetworkError
from shoal.model.ids import ChunkId
from shoal.model.manifest import ChunkRef, Manifest
from shoal.model.vv import VersionVector
from shoal.reconcile.kinds import Kind
from shoal.state.arenas import ArenaRegistry
from shoal.state.cache import CacheIndex
from shoal.state.db import DeviceDB
from shoal.state.index import ArenaIndex, IndexEntry, Residency
from shoal.store.base import BlobStore
from shoal.store.cache import CachedChunks, ChunkCache
from shoal.store.file import FileBlobStore
from shoal.store.sealed import PlainSealer, SealedChunkStore
from shoal.vfs.changes import LocalChange
from shoal.vfs.fs import ArenaFS

ARENA_ID = "arena-test"
MTIME_NS = 1_700_000_000_000_000_000


class CountingStore:
    """A blob store that counts (and can refuse) ``get`` calls, in front of a real one."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.gets = 0
        self.got: list[ChunkId] = []
        self.offline = False
        self.fetch_log: Path | None = None  # each fetched id appended here (read by other processes)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def get(self, cid: ChunkId) -> bytes:
        if self.offline:
            raise NetworkError("the hub cannot be reached (test: offline)")
        self.gets += 1
        self.got.append(cid)
        if self.fetch_log is not None:
            with self.fetch_log.open("a") as f:
                f.write(cid.hex() + "\n")
        return await self.inner.get(cid)


@dataclass
class Recorder:
    """A commit callback that keeps what it was given (the content of puts, copied)."""

    changes: list[LocalChange] = field(default_factory=list)
    contents: dict[str, bytes] = field(default_factory=dict)
    log: Path | None = None  # also append each change as a JSON line here (for other processes)

    async def __call__(self, change: LocalChange) -> Manifest | None:
        self.changes.append(change)
        data = change.content.read_bytes() if change.content is not None else None
        if data is not None:
            self.contents[change.path] = data
        if self.log is not None:
            line = {
                "op": change.op.value,
                "path": change.path,
                "from": change.from_path,
                "size": change.size,
                "mode": change.mode,
                "target": change.target,
                "content": data.hex() if data is not None else None,
            }
            with self.log.open("a") as f:
                f.write(json.dumps(line) + "\n")
        return None


class TestArena:
    __test__ = False  # not a pytest class

    def __init__(self, base: Path, db: DeviceDB, store: FileBlobStore, chunk_size: int) -> None:
        self.base = base
        self.db = db
        self.index = ArenaIndex(db, ARENA_ID)
        self.source = CountingStore(store)
        self.sealed = SealedChunkStore(self.source, PlainSealer())  # type: ignore[arg-type]
        self.chunk_size = chunk_size
        self.recorder = Recorder()

    @classmethod
    def create(
        cls,
        base: Path,
        files: Mapping[str, bytes] = {},
        *,
        pinned: Iterable[str] = (),
        dirs: Sequence[str] = (),
        links: Mapping[str, str] = {},
        chunk_size: int = 1 << 20,
    ) -> TestArena:
        (base / "blobs").mkdir(parents=True, exist_ok=True)
        db = DeviceDB.open(base / "state.db")
        ArenaRegistry(db).add(ARENA_ID, "test", base / "root", "http://127.0.0.1:9", {})
        # Blob files, not packs: tests damage or remove a chunk by its path (base / "blobs" / key).
        arena = cls(base, db, FileBlobStore((base / "blobs").absolute(), packs=False), chunk_size)
        asyncio.run(arena.add_files(files, pinned=set(pinned)))
        entries = [
            IndexEntry(d, Kind.DIR, mtime_ns=MTIME_NS, mode=0o755, vv=VersionVector({"t": 1})) for d in dirs
        ]
        entries += [
            IndexEntry(p, Kind.SYMLINK, mtime_ns=MTIME_NS, mode=0o777, target=t, vv=VersionVector({"t": 1}))
            for p, t in links.items()
        ]
        with arena.index.batch() as b:
            b.put(entries)
        return arena

    async def add_files(self, files: Mapping[str, bytes], *, pinned: set[str] = set()) -> None:  # noqa: B006
        entries = []
        for path, data in files.items():
            refs, blobs = [], []
            hasher = FileHasher(None)
            hasher.update(data)
            for start in range(0, len(data), self.chunk_size):
                piece = data[start : start + self.chunk_size]
                cid = self.sealed.chunk_id(piece)
                refs.append(ChunkRef(cid, len(piece)))
                blobs.append((cid, piece))
            await self.sealed.put_many(blobs)
            manifest = Manifest(len(data), tuple(refs), hasher.digest())
            entries.append(
                IndexEntry(
                    path,
                    Kind.FILE,
                    size=len(data),
                    mtime_ns=MTIME_NS,
                    mode=0o644,
                    manifest=manifest.encode(),
                    vv=VersionVector({"t": 1}),
                    residency=Residency.PINNED if path in pinned else Residency.CACHED,
                )
            )
        with self.index.batch() as b:
            b.put(entries)

    def cache(self, limit: int = 1 << 30) -> ChunkCache:
        return ChunkCache.open(self.base / "cache", CacheIndex(self.db), limit)

    def filesystem(self, *, cache: ChunkCache | None = None, readahead_chunks: int = 4) -> ArenaFS:
        chunks = CachedChunks(self.sealed, cache or self.cache())
        fs = ArenaFS(
            self.index, chunks, self.base / "overlay", self.recorder, readahead_chunks=readahead_chunks
        )
        fs.start()
        return fs

    def close(self) -> None:
        self.db.close()


def _serve(base: Path, mountpoint: Path, limit: int) -> None:
    """Mount a TestArena made earlier in ``base`` (the mount test's child process)."""
    from shoal.mount.fuse import serve  # noqa: PLC0415 - pyfuse3 loads only in the mount process
    from shoal.mount.mountpoint import prepare  # noqa: PLC0415

    target = prepare(mountpoint)
    db = DeviceDB.open(base / "state.db")
    arena = TestArena(base, db, FileBlobStore((base / "blobs").absolute(), packs=False), 1 << 20)
    arena.recorder.log = base / "changes.jsonl"
    arena.source.fetch_log = base / "fetches.log"
    if os.environ.get("SHOAL_TEST_OFFLINE"):
        arena.source.offline = True

    async def main() -> None:
        fs = arena.filesystem(cache=arena.cache(limit))
        marker = base / "ready"
        marker.unlink(missing_ok=True)

        def ready() -> None:
            marker.write_text(str(os.getpid()))

        await serve(fs, target, ready=ready)

    try:
        asyncio.run(main())
    finally:
        db.close()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 30)
    shutil.rmtree(Path(sys.argv[1]) / "overlay", ignore_errors=True)
