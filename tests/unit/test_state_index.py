"""The arena index: typed rows, cursor committed with its entries, the push journal, arenas."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.errors import ConflictError, NotFoundError
from shoal.model.vv import VersionVector
from shoal.reconcile import Kind
from shoal.state.arenas import ArenaRegistry
from shoal.state.db import DeviceDB
from shoal.state.index import ArenaIndex, IndexEntry, PushState, Residency


@pytest.fixture
def db(tmp_path: Path) -> Iterator[DeviceDB]:
    database = DeviceDB.open(tmp_path / "device.db")
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def index(db: DeviceDB, tmp_path: Path) -> ArenaIndex:
    ArenaRegistry(db).add("arena-1", "photos", tmp_path / "photos", "http://127.0.0.1:9")
    return ArenaIndex(db, "arena-1")


def _file(path: str, n: int = 1, **kw: object) -> IndexEntry:
    return IndexEntry(path, Kind.FILE, size=n, mtime_ns=n * 1000, inode=n, mode=0o644, **kw)  # type: ignore[arg-type]


def test_entries_round_trip_with_every_field(index: ArenaIndex) -> None:
    entry = IndexEntry(
        "dir/ünï code.txt",
        Kind.FILE,
        size=5,
        mtime_ns=123,
        inode=9,
        mode=0o755,
        manifest=b"\x01manifest",
        vv=VersionVector({"dev-a": 3, "dev-b": 1}),
        residency=Residency.ONLINE_ONLY,
        dirty=True,
    )
    link = IndexEntry("l", Kind.SYMLINK, target="../x", vv=VersionVector({"dev-a": 1}))
    with index.batch() as b:
        b.put([entry, link])
    assert index.get("dir/ünï code.txt") == entry
    assert index.get("l") == link
    assert index.get("missing") is None
    assert index.dirty() == [entry]
    assert index.stat_keys() == {"dir/ünï code.txt": entry.stat_key(), "l": link.stat_key()}


def test_cursor_and_entries_are_committed_together(index: ArenaIndex) -> None:
    with index.batch() as b:
        b.put([_file("a"), _file("b")])
        b.set_cursor(42)
    assert index.cursor == 42

    def crash_midway() -> None:
        with index.batch() as b:
            b.put([_file("c")])
            b.set_cursor(43)
            raise RuntimeError("crash in the middle of applying")

    with pytest.raises(RuntimeError):
        crash_midway()
    assert index.cursor == 42
    assert index.get("c") is None


CRASH_SCRIPT = """
import os, sys
from pathlib import Path
from shoal.reconcile import Kind
from shoal.state.db import DeviceDB
from shoal.state.index import ArenaIndex, IndexEntry
db = DeviceDB.open(Path(sys.argv[1]))
index = ArenaIndex(db, "arena-1")
batch = index.batch()
b = batch.__enter__()
b.put(IndexEntry(f"f{i}", Kind.FILE, size=i) for i in range(1000))
b.set_cursor(999)
os.kill(os.getpid(), 9)  # killed before the transaction commits
"""


def test_a_kill_before_commit_leaves_neither_entries_nor_cursor(index: ArenaIndex, tmp_path: Path) -> None:
    with index.batch() as b:
        b.put([_file("before")])
        b.set_cursor(7)
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path / "device.db")], check=False, timeout=60
    )
    assert proc.returncode == -9
    fresh = DeviceDB.open(tmp_path / "device.db")
    try:
        reopened = ArenaIndex(fresh, "arena-1")
        assert reopened.cursor == 7
        assert [e.path for e in reopened.entries()] == ["before"]
    finally:
        fresh.close()


def test_subtrees_and_tombstones(index: ArenaIndex) -> None:
    with index.batch() as b:
        b.put([IndexEntry("d", Kind.DIR), _file("d/x"), _file("d/y/z"), _file("d0"), _file("d-e")])
        b.put([IndexEntry("gone", Kind.FILE, deleted=True, vv=VersionVector({"a": 2}))])
    assert [e.path for e in index.entries("d")] == ["d", "d/x", "d/y/z"]
    assert "gone" not in index.stat_keys()
    assert index.count() == 5
    assert [e.path for e in index.entries(include_deleted=True)][-1] == "gone"
    with index.batch() as b:
        b.put([_file("d/x", dirty=True)])
    assert index.has_dirty_below("d")
    assert not index.has_dirty_below("d0")
    with index.batch() as b:
        b.remove_subtree("d")
    assert sorted(index.stat_keys()) == ["d-e", "d0"]


def test_get_many_reads_in_chunks(index: ArenaIndex) -> None:
    with index.batch() as b:
        b.put(_file(f"f{i:04}", i) for i in range(1200))
    found = index.get_many([f"f{i:04}" for i in range(0, 1200, 2)] + ["nope"])
    assert len(found) == 600
    assert found["f0100"].size == 100


def test_walking_a_large_index_pages_through_every_entry_once(index: ArenaIndex) -> None:
    with index.batch() as b:
        b.put(_file(f"p/{i:05}", i) for i in range(4500))
        b.put([_file("q")])
    walked = [e.path for e in index.entries()]
    assert walked == [f"p/{i:05}" for i in range(4500)] + ["q"]
    assert sum(1 for _ in index.entries("p")) == 4500


def test_push_journal_survives_until_the_commit_is_recorded(db: DeviceDB, index: ArenaIndex) -> None:
    with index.batch() as b:
        first = b.journal_add("a.txt", "put", b"change-1")
        b.journal_add("b.txt", "delete", b"change-2")
    reopened = ArenaIndex(db, "arena-1")
    assert [(p.path, p.op, p.state) for p in reopened.pending_pushes()] == [
        ("a.txt", "put", PushState.PENDING),
        ("b.txt", "delete", PushState.PENDING),
    ]
    with index.batch() as b:
        b.journal_mark(first, PushState.UPLOADED)
    assert index.pending_pushes()[0].state is PushState.UPLOADED
    with index.batch() as b:
        b.journal_done([first])
        b.put([_file("a.txt", vv=VersionVector({"me": 1}))])
        b.set_cursor(5)
    assert [p.path for p in index.pending_pushes()] == ["b.txt"]


def test_conflicts_are_listed_until_resolved(index: ArenaIndex) -> None:
    with index.batch() as b:
        b.add_conflict("notes.md", "notes.sync-conflict-20261122-010203-ABC.md")
    assert index.conflicts() == [("notes.md", "notes.sync-conflict-20261122-010203-ABC.md")]
    with index.batch() as b:
        b.resolve_conflict("notes.sync-conflict-20261122-010203-ABC.md")
    assert index.conflicts() == []


def test_arena_registry(db: DeviceDB, tmp_path: Path) -> None:
    reg = ArenaRegistry(db)
    rec = reg.add("id-1", "docs", tmp_path / "docs", "http://127.0.0.1:1", {"policy": "lww"})
    assert reg.get("id-1") == rec
    assert reg.by_name("docs").settings == {"policy": "lww"}
    with pytest.raises(ConflictError, match="already joined"):
        reg.add("id-2", "other", tmp_path / "docs", "http://127.0.0.1:1")
    with pytest.raises(ConflictError):
        reg.add("id-3", "docs", tmp_path / "elsewhere", "http://127.0.0.1:1")
    reg.set_paused("id-1", "the arena folder is missing")
    assert reg.get("id-1").paused_reason == "the arena folder is missing"
    reg.update_settings("id-1", {"policy": "keep-both"})
    assert [a.settings for a in reg.all()] == [{"policy": "keep-both"}]
    index = ArenaIndex(db, "id-1")
    with index.batch() as b:
        b.put([_file("x")])
    reg.remove("id-1")
    assert index.count() == 0
    with pytest.raises(NotFoundError):
        reg.get("id-1")
    with pytest.raises(NotFoundError):
        _ = index.cursor
