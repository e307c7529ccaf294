"""``scan_paths``: the watcher's hinted paths only, folders whole, ignored parents respected."""

from __future__ import annotations

from pathlib import Path

from shoal.reconcile import Kind
from shoal.worktree import ArenaRoot, IgnoreRules
from shoal.worktree.scan import scan_paths


def test_hinted_paths_only_with_new_folders_whole(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "edited.txt").write_text("x")
    (tmp_path / "a" / "untouched.txt").write_text("y")
    (tmp_path / "new" / "deep").mkdir(parents=True)
    (tmp_path / "new" / "deep" / "f.txt").write_text("z")
    (tmp_path / "a" / ".shoal-tmp-123").write_text("partial")
    result = scan_paths(
        ArenaRoot(tmp_path), ["a/edited.txt", "new", "new/deep/f.txt", "gone.txt", "a/.shoal-tmp-123"]
    )
    assert set(result.entries) == {"a/edited.txt", "new", "new/deep", "new/deep/f.txt"}
    assert result.entries["new/deep"].kind is Kind.DIR
    assert not result.temp_files  # left to the full scan
    assert not result.root_missing


def test_a_path_below_an_ignored_folder_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "out.o").write_bytes(b"o")
    (tmp_path / ".shoalignore").write_text("build/\n")
    rules = IgnoreRules.load(tmp_path)
    result = scan_paths(ArenaRoot(tmp_path), ["build/out.o"], ignore=rules.scanner_filter)
    assert result.entries == {}
    assert result.ignored == {"build/out.o"}


def test_a_missing_root_is_reported(tmp_path: Path) -> None:
    result = scan_paths(ArenaRoot(tmp_path / "absent"), ["x"])
    assert result.root_missing
