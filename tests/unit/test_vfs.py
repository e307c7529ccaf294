"""The arena filesystem without a kernel: names from the index, reads fetch only what they touch."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from shoal.errors import ChunkMissingError, IntegrityError, NetworkError, NotFoundError, UnsafePathError
from shoal.reconcile.kinds import Kind
from shoal.state.index import Residency
from shoal.store.base import blob_key
from shoal.store.cache import Priority
from shoal.testing.vfs import TestArena
from shoal.vfs.changes import ChangeOp
from shoal.vfs.errors import ExistsError, IsAFolderError, NotEmptyError
from shoal.vfs.fs import ArenaFS
from shoal.vfs.residency import residency_of, set_residency
from shoal.vfs.tree import ROOT_INODE

T = TypeVar("T")
MIB = 1 << 20
CHUNK = 64 * 1024


def run(call: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await call()

    return asyncio.run(main())


@pytest.fixture
def big() -> bytes:
    return random.Random(7).randbytes(4 * MIB + 123)


@pytest.fixture
def arena(tmp_path: Path, big: bytes) -> TestArena:
    made = TestArena.create(
        tmp_path / "arena",
        {"docs/a.txt": b"hello\n", "big.bin": big, "empty": b""},
        dirs=["docs", "docs/sub"],
        links={"link": "docs/a.txt"},
        chunk_size=CHUNK,
    )
    yield made  # type: ignore[misc]
    made.close()


def _ino(fs: ArenaFS, path: str) -> int:
    ino = ROOT_INODE
    for name in path.split("/"):
        ino = fs.lookup(ino, name.encode()).ino
    return ino


async def _read_all(fs: ArenaFS, path: str, step: int = 128 * 1024) -> bytes:
    fh = await fs.open(_ino(fs, path))
    parts, offset = [], 0
    while True:
        data = await fs.read(fh, offset, step)
        if not data:
            break
        parts.append(data)
        offset += len(data)
    await fs.release(fh)
    return b"".join(parts)


def test_names_sizes_modes_and_times_come_from_the_index_without_fetching(
    arena: TestArena, big: bytes
) -> None:
    fs = arena.filesystem()
    listing = dict(fs.readdir(ROOT_INODE))
    assert sorted(listing) == ["big.bin", "docs", "empty", "link"]
    assert listing["big.bin"].size == len(big)
    assert listing["big.bin"].mode == 0o644
    assert listing["docs"].kind is Kind.DIR
    assert fs.readlink(_ino(fs, "link")) == "docs/a.txt"
    assert [n for n, _ in fs.readdir(_ino(fs, "docs"))] == ["a.txt", "sub"]
    with pytest.raises(NotFoundError):
        fs.lookup(ROOT_INODE, b"nope")
    assert arena.source.gets == 0


def test_a_read_fetches_only_the_chunks_it_touches(arena: TestArena, big: bytes) -> None:
    fs = arena.filesystem(readahead_chunks=0)
    rng = random.Random(1)

    async def main() -> None:
        fh = await fs.open(_ino(fs, "big.bin"))
        for _ in range(20):
            before = arena.source.gets
            offset = rng.randrange(len(big))
            assert await fs.read(fh, offset, 1) == big[offset : offset + 1]
            assert arena.source.gets - before <= 2
            fs.chunks.forget_hot()
        before = arena.source.gets
        offset = CHUNK - 10  # straddles two chunks
        assert await fs.read(fh, offset, 20) == big[offset : offset + 20]
        assert arena.source.gets - before <= 2
        await fs.release(fh)

    run(main)
    assert arena.source.gets <= 42
    assert len(set(arena.source.got)) == arena.source.gets  # no chunk fetched twice


def test_a_sequential_read_returns_the_bytes_and_reads_ahead(arena: TestArena, big: bytes) -> None:
    fs = arena.filesystem(readahead_chunks=4)
    assert run(lambda: _read_all(fs, "big.bin")) == big
    assert arena.source.gets == len(big) // CHUNK + 1  # every chunk once, read-ahead included
    again = arena.filesystem()  # from the disk cache now
    assert run(lambda: _read_all(again, "big.bin")) == big
    assert arena.source.gets == len(big) // CHUNK + 1


def test_a_read_larger_than_the_cache_keeps_it_within_its_limit_and_pinned_content_stays(
    tmp_path: Path,
) -> None:
    rng = random.Random(3)
    files = {"pinned.bin": rng.randbytes(256 * 1024), "huge.bin": rng.randbytes(3 * MIB)}
    arena = TestArena.create(tmp_path / "a", files, pinned=["pinned.bin"], chunk_size=CHUNK)
    cache = arena.cache(limit=MIB)
    fs = arena.filesystem(cache=cache)
    assert run(lambda: _read_all(fs, "pinned.bin")) == files["pinned.bin"]
    assert run(lambda: _read_all(fs, "huge.bin")) == files["huge.bin"]
    assert cache.used <= MIB
    status = cache.status()
    assert status.bytes[Priority.PINNED] == 256 * 1024
    pinned_ids = [
        arena.sealed.chunk_id(files["pinned.bin"][i : i + CHUNK]) for i in range(0, 256 * 1024, CHUNK)
    ]
    assert all(cache.contains(cid) for cid in pinned_ids)
    arena.close()


def test_writes_go_to_the_overlay_and_reach_the_commit_on_close(arena: TestArena) -> None:
    fs = arena.filesystem()

    async def main() -> None:
        fh, _ = await fs.create(_ino(fs, "docs"), b"new.txt", 0o600)
        assert await fs.write(fh, 0, b"hello ") == 6
        assert await fs.write(fh, 6, b"world") == 5
        assert await fs.read(fh, 0, 100) == b"hello world"
        await fs.flush(fh)
        await fs.release(fh)
        fh = await fs.open(_ino(fs, "docs/a.txt"), write=True)  # an edit in the middle of a fetched file
        await fs.write(fh, 1, b"EY")
        await fs.fsync(fh)
        await fs.release(fh)

    run(main)
    assert arena.recorder.contents == {"docs/new.txt": b"hello world", "docs/a.txt": b"hEYlo\n"}
    puts = [c for c in arena.recorder.changes if c.op is ChangeOp.PUT]
    assert [(c.path, c.mode, c.size) for c in puts] == [("docs/new.txt", 0o600, 11), ("docs/a.txt", 0o644, 6)]
    assert fs.getattr(_ino(fs, "docs/new.txt")).size == 11
    assert run(lambda: _read_all(fs, "docs/a.txt")) == b"hEYlo\n"  # the overlay serves until recorded


def test_truncate_open_with_o_trunc_and_unchanged_close_commit_nothing_extra(arena: TestArena) -> None:
    fs = arena.filesystem()

    async def main() -> None:
        fh = await fs.open(_ino(fs, "docs/a.txt"))
        await fs.flush(fh)
        await fs.release(fh)
        await fs.setattr(_ino(fs, "big.bin"), size=10)
        fh = await fs.open(_ino(fs, "empty"), write=True, truncate=True)
        await fs.write(fh, 0, b"x")
        await fs.release(fh)

    run(main)
    assert [c.path for c in arena.recorder.changes] == ["big.bin", "empty"]
    assert len(arena.recorder.contents["big.bin"]) == 10
    assert arena.recorder.contents["empty"] == b"x"


def test_folders_links_renames_and_deletes(arena: TestArena) -> None:
    fs = arena.filesystem()

    async def main() -> None:
        await fs.mkdir(ROOT_INODE, b"new", 0o755)
        await fs.symlink(_ino(fs, "new"), b"ln", b"../big.bin")
        await fs.rename(ROOT_INODE, b"docs", _ino(fs, "new"), b"docs2")
        with pytest.raises(NotEmptyError):
            await fs.rmdir(_ino(fs, "new"), b"docs2")
        with pytest.raises(IsAFolderError):
            await fs.unlink(ROOT_INODE, b"new")
        with pytest.raises(ExistsError):
            await fs.mkdir(ROOT_INODE, b"new", 0o755)
        with pytest.raises(UnsafePathError):
            await fs.mkdir(ROOT_INODE, b"..", 0o755)
        await fs.unlink(_ino(fs, "new/docs2"), b"a.txt")
        await fs.setattr(_ino(fs, "big.bin"), mode=0o600, mtime_ns=5)

    run(main)
    assert fs.readlink(_ino(fs, "new/ln")) == "../big.bin"
    assert [n for n, _ in fs.readdir(_ino(fs, "new/docs2"))] == ["sub"]
    assert fs.getattr(_ino(fs, "big.bin")).mode == 0o600
    ops = [(c.op.value, c.path, c.from_path) for c in arena.recorder.changes]
    assert ops == [
        ("mkdir", "new", None),
        ("symlink", "new/ln", None),
        ("rename", "new/docs2", "docs"),
        ("delete", "new/docs2/a.txt", None),
        ("meta", "big.bin", None),
    ]


def test_refresh_keeps_unsaved_work_and_takes_the_index(arena: TestArena) -> None:
    fs = arena.filesystem()

    async def main() -> None:
        fh, _ = await fs.create(ROOT_INODE, b"draft", 0o644)
        await fs.write(fh, 0, b"unsaved")
        await arena.add_files({"docs/remote.txt": b"from elsewhere"})
        fs.refresh()
        assert await fs.read(fh, 0, 10) == b"unsaved"
        await fs.release(fh)

    run(main)
    assert "remote.txt" in dict(fs.readdir(_ino(fs, "docs")))
    assert run(lambda: _read_all(fs, "docs/remote.txt")) == b"from elsewhere"
    assert run(lambda: _read_all(fs, "draft")) == b"unsaved"


def test_residency_is_a_value_per_path_and_can_be_set(arena: TestArena, big: bytes) -> None:
    fs = arena.filesystem()
    ino = _ino(fs, "big.bin")
    assert residency_of(fs, ino) is Residency.ONLINE_ONLY
    run(lambda: set_residency(fs, ino, Residency.PINNED))
    assert residency_of(fs, ino) is Residency.PINNED
    assert arena.source.gets == len(big) // CHUNK + 1  # pinning hydrates
    assert arena.index.get("big.bin").residency is Residency.PINNED  # type: ignore[union-attr]
    assert fs.chunks.cache.clear() == 0  # pinned content is not evicted by clear
    run(lambda: set_residency(fs, ino, Residency.CACHED))
    assert residency_of(fs, ino) is Residency.CACHED
    run(lambda: set_residency(fs, ino, Residency.ONLINE_ONLY))
    assert residency_of(fs, ino) is Residency.ONLINE_ONLY
    assert fs.chunks.cache.used == 0


def test_missing_corrupt_or_offline_content_is_an_error_never_zeros(arena: TestArena, big: bytes) -> None:
    fs = arena.filesystem(readahead_chunks=0)
    first = arena.sealed.chunk_id(big[:CHUNK])
    (arena.base / "blobs" / blob_key(first)).unlink()

    async def read_at(offset: int) -> bytes:
        fh = await fs.open(_ino(fs, "big.bin"))
        try:
            return await fs.read(fh, offset, 10)
        finally:
            await fs.release(fh)

    with pytest.raises(ChunkMissingError):
        run(lambda: read_at(0))
    second = arena.sealed.chunk_id(big[CHUNK : 2 * CHUNK])
    path = arena.base / "blobs" / blob_key(second)
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))
    with pytest.raises(IntegrityError):
        run(lambda: read_at(CHUNK))
    assert not fs.chunks.cache.contains(second)
    assert run(lambda: read_at(3 * CHUNK)) == big[3 * CHUNK : 3 * CHUNK + 10]  # cached now
    arena.source.offline = True
    assert run(lambda: read_at(3 * CHUNK)) == big[3 * CHUNK : 3 * CHUNK + 10]  # offline: cached still reads
    with pytest.raises(NetworkError):
        run(lambda: read_at(5 * CHUNK))


def test_a_killed_mount_leaves_no_overlay_behind(arena: TestArena) -> None:
    leftover = arena.base / "overlay" / "w-dead"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(os.urandom(10))
    arena.filesystem()
    assert not leftover.exists()
