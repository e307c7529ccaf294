"""The stub format: what is a stub of this arena, and writing, reading and removing stubs on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.errors import ConflictError
from shoal.worktree.paths import ArenaRoot
from shoal.worktree.scan import scan_tree
from shoal.worktree.stub import (
    MAX_STUB_BYTES,
    Stub,
    observe_stub,
    parse_stub,
    read_stub,
    remove_stub,
    stub_files,
    target_of,
    write_stub,
)

ARENA = "arena-1"
STUB = Stub(ARENA, "docs/report.pdf", 123_456, 1_600_000_000_123_456_789, 0o640, bytes(range(32)))


def test_a_stub_round_trips_and_names_what_it_stands_for() -> None:
    data = STUB.encode()
    assert len(data) < 1024
    doc = json.loads(data)
    assert doc["shoal-stub"] == 1
    assert doc["path"] == "docs/report.pdf"
    assert doc["size"] == 123_456
    assert "shoal hydrate" in doc["note"]
    assert parse_stub(data, ARENA) == STUB


@pytest.mark.parametrize(
    "change",
    [
        {"arena": "another-arena"},
        {"shoal-stub": 2},
        {"shoal-stub": "1"},
        {"size": -1},
        {"size": 1.5},
        {"size": True},
        {"mode": 0o10000},
        {"hash": "zz" * 32},
        {"hash": "ab"},
        {"path": ""},
        {"path": 7},
    ],
)
def test_anything_else_is_not_a_stub(change: dict[str, object]) -> None:
    doc = json.loads(STUB.encode()) | change
    assert parse_stub(json.dumps(doc).encode(), ARENA) is None


def test_not_json_too_big_or_not_an_object_is_not_a_stub() -> None:
    assert parse_stub(b"my own notes\n", ARENA) is None
    assert parse_stub(b"\xff\xfe", ARENA) is None
    assert parse_stub(b"[1, 2]", ARENA) is None
    padded = json.loads(STUB.encode()) | {"note": "x" * MAX_STUB_BYTES}
    assert parse_stub(json.dumps(padded).encode(), ARENA) is None


def test_target_of_a_stub_file_name() -> None:
    assert target_of("a/b.txt.shoal") == "a/b.txt"
    assert target_of("b.txt") is None
    assert target_of("a/.shoal") is None


def test_write_stub_is_atomic_with_the_files_mtime_and_replaces_only_stubs(tmp_path: Path) -> None:
    root = ArenaRoot(tmp_path)
    entry = write_stub(root, STUB)
    on_disk = tmp_path / "docs" / "report.pdf.shoal"
    assert on_disk.stat().st_mtime_ns == STUB.mtime_ns
    assert (entry.path, entry.size, entry.mode, entry.stub) == ("docs/report.pdf", 123_456, 0o640, True)
    assert entry.inode == on_disk.stat().st_ino
    assert read_stub(root, "docs/report.pdf.shoal", ARENA) == STUB
    assert observe_stub(root, "docs/report.pdf", ARENA) == entry
    assert observe_stub(root, "docs/report.pdf", "another-arena") is None

    newer = Stub(ARENA, STUB.path, 7, STUB.mtime_ns + 1, 0o644, bytes(32))
    write_stub(root, newer)  # over a stub of the same arena: fine, it holds no content
    assert read_stub(root, "docs/report.pdf.shoal", ARENA) == newer
    assert [p.name for p in (tmp_path / "docs").iterdir()] == ["report.pdf.shoal"]  # no temp left

    (tmp_path / "mine.txt.shoal").write_text("my own file\n")
    with pytest.raises(ConflictError, match=r"mine\.txt\.shoal"):
        write_stub(root, Stub(ARENA, "mine.txt", 1, 1, 0o644, bytes(32)))
    assert (tmp_path / "mine.txt.shoal").read_text() == "my own file\n"


def test_a_stub_at_another_name_does_not_stand_for_that_name(tmp_path: Path) -> None:
    root = ArenaRoot(tmp_path)
    write_stub(root, STUB)
    (tmp_path / "copy.shoal").write_bytes((tmp_path / "docs" / "report.pdf.shoal").read_bytes())
    assert observe_stub(root, "copy", ARENA) is None
    assert remove_stub(root, "copy", ARENA) is False
    assert (tmp_path / "copy.shoal").exists()
    scan = scan_tree(root)
    assert set(stub_files(scan, ARENA, root)) == {"docs/report.pdf.shoal", "copy.shoal"}
    assert stub_files(scan, "another-arena", root) == {}


def test_remove_stub_removes_only_a_stub(tmp_path: Path) -> None:
    root = ArenaRoot(tmp_path)
    (tmp_path / "notes.shoal").write_text("not a stub\n")
    assert remove_stub(root, "notes", ARENA) is False
    assert (tmp_path / "notes.shoal").exists()
    write_stub(root, STUB)
    assert remove_stub(root, STUB.path, ARENA) is True
    assert not (tmp_path / "docs" / "report.pdf.shoal").exists()


def test_a_symlink_named_like_a_stub_is_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_bytes(STUB.encode())
    (tmp_path / "arena").mkdir()
    (tmp_path / "arena" / "docs").mkdir()
    (tmp_path / "arena" / "docs" / "report.pdf.shoal").symlink_to(outside)
    root = ArenaRoot(tmp_path / "arena")
    assert read_stub(root, "docs/report.pdf.shoal", ARENA) is None
    assert observe_stub(root, "docs/report.pdf", ARENA) is None
