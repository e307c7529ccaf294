"""Mount writes recorded in the arena folder: the version the mount showed is replaced, an edit made
in the folder behind the mount's back never is."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from shoal.errors import ConflictError
from shoal.model.vv import VersionVector
from shoal.mount.folder_commit import FolderCommit
from shoal.reconcile.kinds import Kind
from shoal.state.arenas import ArenaRegistry
from shoal.state.db import DeviceDB
from shoal.state.index import ArenaIndex, IndexEntry
from shoal.vfs.changes import ChangeOp, LocalChange
from shoal.worktree.paths import ArenaRoot


@pytest.fixture
def setup(tmp_path: Path) -> tuple[FolderCommit, Path, Path]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_bytes(b"synced")
    db = DeviceDB.open(tmp_path / "state.db")
    ArenaRegistry(db).add("arena-1", "docs", root, "http://127.0.0.1:9")
    index = ArenaIndex(db, "arena-1")
    st = os.lstat(root / "a.txt")
    with index.batch() as b:
        b.put(
            [
                IndexEntry(
                    "a.txt",
                    Kind.FILE,
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ino,
                    0o644,
                    vv=VersionVector({"d": 1}),
                )
            ]
        )
    os.chmod(root / "a.txt", 0o644)
    overlay = tmp_path / "overlay"
    overlay.write_bytes(b"from the mount")
    return FolderCommit(ArenaRoot(root), index), root, overlay


def _put(path: str, overlay: Path) -> LocalChange:
    return LocalChange(ChangeOp.PUT, path, Kind.FILE, 0o644, 0, overlay.stat().st_size, content=overlay)


def test_the_version_the_mount_showed_is_replaced(setup: tuple[FolderCommit, Path, Path]) -> None:
    commit, root, overlay = setup
    assert asyncio.run(commit(_put("a.txt", overlay))) is None
    assert (root / "a.txt").read_bytes() == b"from the mount"
    overlay.write_bytes(b"second save")
    asyncio.run(commit(_put("a.txt", overlay)))  # the mount's own earlier write is not a conflict
    assert (root / "a.txt").read_bytes() == b"second save"
    assert sorted(p.name for p in root.iterdir()) == ["a.txt"]


def test_an_edit_made_in_the_folder_meanwhile_is_kept_and_the_mount_content_becomes_a_copy(
    setup: tuple[FolderCommit, Path, Path],
) -> None:
    commit, root, overlay = setup
    (root / "a.txt").write_bytes(b"edited in the folder, not pushed yet")
    asyncio.run(commit(_put("a.txt", overlay)))
    assert (root / "a.txt").read_bytes() == b"edited in the folder, not pushed yet"
    copies = [p for p in root.iterdir() if p.name != "a.txt"]
    assert len(copies) == 1
    assert ".sync-conflict-" in copies[0].name
    assert copies[0].read_bytes() == b"from the mount"


def test_deleting_through_the_mount_spares_a_folder_edit(setup: tuple[FolderCommit, Path, Path]) -> None:
    commit, root, _ = setup
    (root / "a.txt").write_bytes(b"edited in the folder")
    with pytest.raises(ConflictError):
        asyncio.run(commit(LocalChange(ChangeOp.DELETE, "a.txt", Kind.FILE)))
    assert (root / "a.txt").read_bytes() == b"edited in the folder"


def test_folders_links_and_renames(setup: tuple[FolderCommit, Path, Path]) -> None:
    commit, root, overlay = setup
    asyncio.run(commit(LocalChange(ChangeOp.MKDIR, "sub", Kind.DIR, 0o755)))
    asyncio.run(commit(_put("sub/new.txt", overlay)))
    asyncio.run(commit(LocalChange(ChangeOp.RENAME, "sub/moved.txt", Kind.FILE, from_path="sub/new.txt")))
    asyncio.run(commit(LocalChange(ChangeOp.SYMLINK, "ln", Kind.SYMLINK, target="sub/moved.txt")))
    asyncio.run(commit(LocalChange(ChangeOp.DELETE, "a.txt", Kind.FILE)))
    assert (root / "sub" / "moved.txt").read_bytes() == b"from the mount"
    assert os.readlink(root / "ln") == "sub/moved.txt"
    assert not (root / "a.txt").exists()
