"""The scanner on real temp trees: odd names, symlinks, loops, unreadable folders, by-stat diffs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from shoal.errors import UnsafePathError
from shoal.reconcile import Kind
from shoal.worktree import ArenaRoot, IgnoreRules, compare, name_from_disk, scan_tree
from shoal.worktree.paths import BadName


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    path = tmp_path / "arena"
    path.mkdir()
    return path


def _tree(root: Path) -> None:
    (root / "dir with spaces").mkdir()
    (root / "dir with spaces" / "ünïcødé.txt").write_bytes(b"u")
    (root / "new\nline").write_bytes(b"n")
    (root / "empty").mkdir()
    (root / "bin.sh").write_bytes(b"#!/bin/sh\n")
    (root / "bin.sh").chmod(0o755)


def test_scan_records_files_folders_and_modes(tree: Path) -> None:
    _tree(tree)
    result = scan_tree(ArenaRoot(tree))
    assert set(result.entries) == {
        "dir with spaces",
        "dir with spaces/ünïcødé.txt",
        "new\nline",
        "empty",
        "bin.sh",
    }
    assert result.entries["empty"].kind is Kind.DIR
    assert result.entries["bin.sh"].mode == 0o755
    assert result.entries["new\nline"].size == 1
    assert not result.problems


def test_symlinks_are_recorded_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "loop").symlink_to(".")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to("..")
    (root / "dangling").symlink_to("/nonexistent/x")
    result = scan_tree(ArenaRoot(root))
    assert set(result.entries) == {"escape", "loop", "sub", "sub/up", "dangling"}
    assert result.entries["escape"].kind is Kind.SYMLINK
    assert result.entries["escape"].target == str(outside)
    assert result.entries["loop"].target == "."
    assert all("secret" not in p for p in result.entries)


def test_undecodable_names_are_reported_not_dropped(tree: Path) -> None:
    os.mkdir(os.fsencode(tree) + b"/bad\xffname")
    (tree / "good").write_bytes(b"g")
    result = scan_tree(ArenaRoot(tree))
    assert set(result.entries) == {"good"}
    assert len(result.problems) == 1
    assert "UTF-8" in result.problems[0].reason
    assert "bad" in result.problems[0].path
    assert isinstance(name_from_disk(b"bad\xff"), BadName)


def test_ignored_and_temp_files_are_skipped(tree: Path) -> None:
    (tree / ".shoalignore").write_text("build/\n*.log\n")
    (tree / "build").mkdir()
    (tree / "build" / "out.o").write_bytes(b"o")
    (tree / "a.log").write_bytes(b"l")
    (tree / ".shoal-tmp-0123").write_bytes(b"partial")
    (tree / "notes.txt.swp").write_bytes(b"s")
    (tree / "keep.txt").write_bytes(b"k")
    (tree / "photo.jpg.shoal").write_bytes(b"stub")
    rules = IgnoreRules.load(tree)
    result = scan_tree(ArenaRoot(tree), ignore=rules.scanner_filter)
    assert set(result.entries) == {".shoalignore", "keep.txt", "photo.jpg.shoal"}
    assert not result.entries["photo.jpg.shoal"].stub  # by name alone it is an ordinary file
    assert result.ignored == {"build", "a.log", "notes.txt.swp"}
    assert result.temp_files == [".shoal-tmp-0123"]


def test_compare_finds_new_changed_deleted_by_stat(tree: Path) -> None:
    root = ArenaRoot(tree)
    for name in ("a", "b", "c"):
        (tree / name).write_bytes(name.encode())
    (tree / "d").mkdir()
    index = {p: e.stat_key() for p, e in scan_tree(root).entries.items()}
    (tree / "a").write_bytes(b"longer a")
    (tree / "b").unlink()
    (tree / "new").write_bytes(b"n")
    (tree / "d" / "child").write_bytes(b"c")  # changes d's mtime, not d itself
    diff = compare(index, scan_tree(root))
    assert [e.path for e in diff.changed] == ["a"]
    assert diff.deleted == ["b"]
    assert sorted(e.path for e in diff.new) == ["d/child", "new"]
    assert diff.unchanged == 2


def test_missing_root_reports_no_deletions(tmp_path: Path) -> None:
    root = ArenaRoot(tmp_path / "unmounted")
    result = scan_tree(root)
    assert result.root_missing
    assert compare({"a": ("file", 1, 1, 1, 0o644, None)}, result).deleted == []


def test_subtree_scan_only_reports_below_it(tree: Path) -> None:
    (tree / "x").mkdir()
    (tree / "x" / "one").write_bytes(b"1")
    (tree / "y").write_bytes(b"y")
    root = ArenaRoot(tree)
    index = {p: e.stat_key() for p, e in scan_tree(root).entries.items()}
    (tree / "x" / "one").unlink()
    (tree / "x" / "two").write_bytes(b"2")
    (tree / "y").unlink()
    result = scan_tree(root, under="x")
    assert set(result.entries) == {"x", "x/two"}
    diff = compare(index, result, under="x")
    assert diff.deleted == ["x/one"]  # y is outside the subtree: not judged
    assert [e.path for e in diff.new] == ["x/two"]


def test_paths_never_leave_the_root(tmp_path: Path) -> None:
    root = ArenaRoot(tmp_path / "r")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        root.disk_path("../etc/passwd")
    with pytest.raises(UnsafePathError):
        root.arena_path(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError), root.open_parent("link/r/x"):
        pass
    assert root.arena_path(tmp_path / "r" / "a" / "b") == "a/b"


UNREADABLE_SCRIPT = """
import sys
from shoal.worktree import ArenaRoot, compare, scan_tree
result = scan_tree(ArenaRoot(sys.argv[1]))
diff = compare({"locked/inside": ("file", 1, 1, 1, 0o644, None)}, result)
print(sorted(result.entries), sorted(result.unreadable), diff.deleted, [p.path for p in result.problems])
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to drop to 'nobody'")
def test_unreadable_folders_are_reported_and_not_deleted() -> None:
    # Root reads everything, so the scan runs as 'nobody' on a tree it may enter.
    with tempfile.TemporaryDirectory(prefix="shoal-scan-") as tmp:
        os.chmod(tmp, 0o755)
        Path(tmp, "ok").write_bytes(b"ok")
        Path(tmp, "locked").mkdir(mode=0o700)
        Path(tmp, "locked", "inside").write_bytes(b"x")
        src = str(Path(__file__).resolve().parents[2] / "src")
        out = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-c",
                UNREADABLE_SCRIPT,
                tmp,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={"PYTHONPATH": src, "PATH": os.environ.get("PATH", "")},
        )
    assert out.stdout.strip() == "['locked', 'ok'] ['locked'] [] ['locked']"


def test_names_equal_after_unicode_normalisation_are_reported_not_synced(tree: Path) -> None:
    (tree / "caf\u00e9.txt").write_bytes(b"nfc")
    (tree / "cafe\u0301.txt").write_bytes(b"nfd")
    (tree / "plain.txt").write_bytes(b"p")
    result = scan_tree(ArenaRoot(tree))
    assert set(result.entries) == {"plain.txt"}
    assert result.collisions == {"caf\u00e9.txt", "cafe\u0301.txt"}
    assert len(result.problems) == 2
    index = {"caf\u00e9.txt": ("file", 3, 1, 1, 0o644, None)}
    assert compare(index, result).deleted == []  # unknown is not deleted


def test_symlink_targets_that_are_not_utf8_are_reported(tree: Path) -> None:
    os.symlink(b"target\xff", os.fsencode(tree) + b"/odd")
    result = scan_tree(ArenaRoot(tree))
    assert result.entries == {}
    assert "UTF-8" in result.problems[0].reason
