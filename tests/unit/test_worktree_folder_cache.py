"""A batch's folder cache answers as the root does, walks each folder once, never follows a symlink,
and gives back every descriptor it kept."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shoal.errors import UnsafePathError
from shoal.worktree import ArenaRoot, write_file
from shoal.worktree.paths import FolderCache


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_it_sees_what_the_root_sees_and_writes_where_the_root_would(tmp_path: Path) -> None:
    root = ArenaRoot(tmp_path)
    for n in range(30):
        write_file(root, f"d{n % 3}/e{n % 2}/f{n}.txt", [b"x" * n], expected=None)
    before = _open_fds()
    with FolderCache(root) as folders:
        for n in range(30):
            path = f"d{n % 3}/e{n % 2}/f{n}.txt"
            assert folders.lstat(path) == root.lstat(path)
        assert folders.lstat("d0/e0/missing.txt") is None
        assert folders.lstat("nowhere/at/all.txt") is None
        write_file(folders, "new/deeper/g.txt", [b"made through the cache"], expected=None)
        assert _open_fds() == before + 1 + 3 + 6 + 2  # the root and each folder once, not per file
    assert _open_fds() == before
    assert (tmp_path / "new" / "deeper" / "g.txt").read_bytes() == b"made through the cache"


def test_a_symlinked_folder_is_never_followed(tmp_path: Path) -> None:
    arena, outside = tmp_path / "arena", tmp_path / "outside"
    arena.mkdir()
    outside.mkdir()
    (arena / "link").symlink_to(outside, target_is_directory=True)
    with FolderCache(ArenaRoot(arena)) as folders:
        with pytest.raises(UnsafePathError):
            write_file(folders, "link/escape.txt", [b"no"], expected=None)
        with pytest.raises(UnsafePathError):
            folders.lstat("link/escape.txt")
    assert list(outside.iterdir()) == []


def test_threads_share_one_walk_per_folder(tmp_path: Path) -> None:
    root = ArenaRoot(tmp_path)
    before = _open_fds()
    with FolderCache(root) as folders, ThreadPoolExecutor(4) as pool:
        written = list(
            pool.map(
                lambda n: write_file(folders, f"p{n % 4}/q/f{n}.txt", [b"%d" % n], expected=None), range(200)
            )
        )
    assert len(written) == 200
    assert _open_fds() == before
    assert sorted(p.name for p in (tmp_path / "p3" / "q").iterdir()) == sorted(
        f"f{n}.txt" for n in range(3, 200, 4)
    )
