"""Ignore rules: gitignore syntax, the device overlay, the fail-closed deny list, git locks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shoal.worktree import IgnoreRules, git_dir_of, git_locks, is_git_locked


@pytest.mark.parametrize(
    "path",
    [
        "notes.txt.swp",
        "src/.main.py.swo",
        "draft~",
        ".#draft.md",
        "4913",
        "db/app.sqlite-journal",
        "db/app.sqlite-wal",
        "db/app.sqlite-shm",
        ".shoal-tmp-abcdef",
    ],
)
def test_always_excluded_even_when_a_rule_allows_it(path: str) -> None:
    rules = IgnoreRules("!*\n!**/*\n")
    explanation = rules.explain(path)
    assert explanation is not None
    assert explanation.startswith("always excluded")


@pytest.mark.parametrize(
    "path", [".env", "app/.env.production", "certs/server.pem", ".ssh/id_rsa", "id_ed25519.pub"]
)
def test_secrets_are_excluded_unless_allowed_explicitly(path: str) -> None:
    assert IgnoreRules().is_ignored(path)
    explanation = IgnoreRules().explain(path)
    assert explanation is not None
    assert "secrets" in explanation
    name = path.rpartition("/")[2]
    assert not IgnoreRules(f"!{name}\n").is_ignored(path)


def test_gitignore_syntax_with_negation_and_folders() -> None:
    rules = IgnoreRules("# build output\nbuild/\n*.log\n!important.log\n/top-only.txt\n")
    assert rules.is_ignored("build", is_dir=True)
    assert rules.is_ignored("build/deep/file.o")
    assert rules.is_ignored("sub/x.log")
    assert not rules.is_ignored("sub/important.log")
    assert rules.is_ignored("top-only.txt")
    assert not rules.is_ignored("sub/top-only.txt")
    assert not rules.is_ignored("src/main.py")
    assert rules.explain("sub/x.log") == ".shoalignore line 3: *.log"
    assert rules.explain("build/deep/file.o") == ".shoalignore line 2: build/"


def test_one_rule_set_answers_many_paths_as_a_fresh_one_would() -> None:
    # A pull asks one rule set about thousands of paths; what it remembers of their folders must
    # never change an answer, in whatever order the paths come.
    text = "build/\n*.log\n!keep/*.log\ncache/tmp/\n"
    folders = ["", "build", "src", "src/build", "keep", "cache", "cache/tmp", "cache/tmpx", ".env", "a.swp"]
    paths = [f"{f}/{name}" if f else name for f in folders for name in ("x.log", "main.py", "deep/y.txt")]
    shared = IgnoreRules(text)
    for path in [*paths, *reversed(paths), *paths]:
        assert shared.explain(path) == IgnoreRules(text).explain(path), path
    assert shared.is_ignored("src/build/deep/y.txt")
    assert shared.is_ignored("cache/tmp/main.py")
    assert not shared.is_ignored("cache/tmpx/main.py")
    assert shared.is_ignored(".env/main.py")
    assert not shared.is_ignored("keep/x.log")


def test_device_overlay_comes_after_the_synced_rules() -> None:
    rules = IgnoreRules("*.iso\n", overlay="big/\n!keep.iso\n")
    assert rules.is_ignored("big/film.mkv")
    assert rules.explain("big/film.mkv") == "device overlay line 1: big/"
    assert not rules.is_ignored("keep.iso")
    assert rules.is_ignored("other.iso")


def test_load_reads_shoalignore_and_overlay(tmp_path: Path) -> None:
    root = tmp_path / "arena"
    root.mkdir()
    (root / ".shoalignore").write_text("*.tmp\n")
    overlay = tmp_path / "overlay"
    overlay.write_text("videos/\n")
    rules = IgnoreRules.load(root, overlay)
    assert rules.is_ignored("a.tmp")
    assert rules.is_ignored("videos/x.mp4")
    assert not rules.is_ignored(".shoalignore")
    assert not IgnoreRules.load(tmp_path / "nowhere").is_ignored("a.tmp")


def test_git_folders_sync_as_files_but_not_while_locked(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert not IgnoreRules().is_ignored(".git/HEAD")
    assert not is_git_locked(repo)
    (repo / ".git" / "index.lock").write_bytes(b"")
    assert is_git_locked(repo)
    (repo / ".git" / "index.lock").unlink()
    ref_lock = repo / ".git" / "refs" / "heads" / "main.lock"
    ref_lock.write_bytes(b"")
    assert git_locks(repo / ".git") == ["refs/heads/main.lock"]
    ref_lock.unlink()
    assert not is_git_locked(repo)
    assert not is_git_locked(tmp_path / "not-a-repo")


def test_git_dir_of() -> None:
    assert git_dir_of("proj/.git/refs/heads/main") == "proj/.git"
    assert git_dir_of(".git") == ".git"
    assert git_dir_of("proj/src/a.py") is None


def test_shoal_state_inside_the_root_is_never_synced(tmp_path: Path) -> None:
    root = tmp_path / "home"
    rules = IgnoreRules.load(
        root, state_dirs=[root / ".local" / "share" / "shoal-hub", tmp_path / "elsewhere"]
    )
    assert rules.is_ignored(".local/share/shoal-hub", is_dir=True)
    assert rules.is_ignored(".local/share/shoal-hub/chunks/ab/cdef")
    assert not rules.is_ignored(".local/share/other.txt")
    assert "shoal's own state" in (rules.explain(".local/share/shoal-hub/db.sqlite") or "")
    assert rules.digest != IgnoreRules.load(root).digest  # a pull reads again when this changes
