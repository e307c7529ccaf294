"""Mount writes recorded in the arena folder: the version the mount showed is replaced, an edit made
in the folder behind the mount's back never is."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
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

Base = tuple[str, int, int, int, int, str | None]


@dataclass
class Setup:
    commit: FolderCommit
    root: Path
    overlay: Path
    base: Base  # the synced stat of a.txt, as the mount's node holds it


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_bytes(b"synced")
    os.chmod(root / "a.txt", 0o644)
    db = DeviceDB.open(tmp_path / "state.db")
    ArenaRegistry(db).add("arena-1", "docs", root, "http://127.0.0.1:9")
    st = os.lstat(root / "a.txt")
    entry = IndexEntry(
        "a.txt", Kind.FILE, st.st_size, st.st_mtime_ns, st.st_ino, 0o644, vv=VersionVector({"d": 1})
    )
    with ArenaIndex(db, "arena-1").batch() as b:
        b.put([entry])
    db.close()
    overlay = tmp_path / "overlay"
    overlay.write_bytes(b"from the mount")
    return Setup(FolderCommit(ArenaRoot(root)), root, overlay, entry.stat_key())


def _put(path: str, overlay: Path, base: Base | None = None) -> LocalChange:
    size = overlay.stat().st_size
    return LocalChange(ChangeOp.PUT, path, Kind.FILE, 0o644, 0, size, content=overlay, base=base)


def test_the_version_the_mount_showed_is_replaced(setup: Setup) -> None:
    commit, root, overlay, base = setup.commit, setup.root, setup.overlay, setup.base
    assert asyncio.run(commit(_put("a.txt", overlay, base))) is None
    assert (root / "a.txt").read_bytes() == b"from the mount"
    overlay.write_bytes(b"second save")
    asyncio.run(commit(_put("a.txt", overlay, base)))  # the mount's own earlier write is not a conflict
    assert (root / "a.txt").read_bytes() == b"second save"
    assert sorted(p.name for p in root.iterdir()) == ["a.txt"]


def test_an_edit_made_in_the_folder_meanwhile_is_kept_and_the_mount_content_becomes_a_copy(
    setup: Setup,
) -> None:
    commit, root, overlay, base = setup.commit, setup.root, setup.overlay, setup.base
    (root / "a.txt").write_bytes(b"edited in the folder, not pushed yet")
    asyncio.run(commit(_put("a.txt", overlay, base)))
    assert (root / "a.txt").read_bytes() == b"edited in the folder, not pushed yet"
    copies = [p for p in root.iterdir() if p.name != "a.txt"]
    assert len(copies) == 1
    assert ".sync-conflict-" in copies[0].name
    assert copies[0].read_bytes() == b"from the mount"


def test_deleting_through_the_mount_spares_a_folder_edit(setup: Setup) -> None:
    commit, root, base = setup.commit, setup.root, setup.base
    (root / "a.txt").write_bytes(b"edited in the folder")
    with pytest.raises(ConflictError):
        asyncio.run(commit(LocalChange(ChangeOp.DELETE, "a.txt", Kind.FILE, base=base)))
    assert (root / "a.txt").read_bytes() == b"edited in the folder"


def test_folders_links_and_renames(setup: Setup) -> None:
    commit, root, overlay, base = setup.commit, setup.root, setup.overlay, setup.base
    asyncio.run(commit(LocalChange(ChangeOp.MKDIR, "sub", Kind.DIR, 0o755)))
    asyncio.run(commit(_put("sub/new.txt", overlay)))
    asyncio.run(commit(LocalChange(ChangeOp.RENAME, "sub/moved.txt", Kind.FILE, from_path="sub/new.txt")))
    asyncio.run(commit(LocalChange(ChangeOp.SYMLINK, "ln", Kind.SYMLINK, target="sub/moved.txt")))
    asyncio.run(commit(LocalChange(ChangeOp.DELETE, "a.txt", Kind.FILE, base=base)))
    assert (root / "sub" / "moved.txt").read_bytes() == b"from the mount"
    assert os.readlink(root / "ln") == "sub/moved.txt"
    assert not (root / "a.txt").exists()
