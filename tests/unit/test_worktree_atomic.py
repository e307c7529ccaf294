"""Atomic writes, deletes and moves never clobber what the user changed meanwhile."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.errors import ConflictError, DiskFullError, UnsafePathError
from shoal.reconcile import Kind
from shoal.worktree import (
    ArenaRoot,
    AtomicFile,
    atomic,
    delete,
    make_dir,
    make_symlink,
    remove_temp,
    rename,
    scan_tree,
    write_file,
)


@pytest.fixture
def arena(tmp_path: Path) -> Path:
    path = tmp_path / "arena"
    path.mkdir()
    return path


def _temps(path: Path) -> list[str]:
    return [p.name for p in path.rglob(".shoal-tmp-*")]


def test_write_creates_file_with_content_mode_and_mtime(arena: Path) -> None:
    root = ArenaRoot(arena)
    entry = write_file(
        root, "a/b/c.sh", [b"#!/bin/sh\n", b"echo hi\n"], expected=None, mode=0o4755, mtime_ns=10**18
    )
    path = arena / "a" / "b" / "c.sh"
    assert path.read_bytes() == b"#!/bin/sh\necho hi\n"
    info = path.stat()
    assert info.st_mode & 0o7777 == 0o755  # never a setuid bit from another device
    assert info.st_mtime_ns == 10**18
    assert scan_tree(root).entries["a/b/c.sh"] == entry
    assert not _temps(arena)


def test_replace_when_the_destination_is_as_expected(arena: Path) -> None:
    root = ArenaRoot(arena)
    first = write_file(root, "f", [b"one"], expected=None)
    second = write_file(root, "f", [b"two"], expected=first.stat_key())
    assert (arena / "f").read_bytes() == b"two"
    assert second.inode != first.inode


def test_a_destination_changed_before_the_rename_is_not_clobbered(arena: Path) -> None:
    root = ArenaRoot(arena)
    first = write_file(root, "doc.txt", [b"synced"], expected=None)
    with AtomicFile(root, "doc.txt") as f:
        f.write(b"remote version")
        (arena / "doc.txt").write_bytes(b"the user's unsaved... now saved edit")
        with pytest.raises(ConflictError, match="changed on disk"):
            f.commit(expected=first.stat_key())
    assert (arena / "doc.txt").read_bytes() == b"the user's unsaved... now saved edit"
    assert not _temps(arena)


def test_after_a_conflict_both_versions_can_be_kept(arena: Path) -> None:
    root = ArenaRoot(arena)
    first = write_file(root, "d/notes.md", [b"synced"], expected=None)
    with AtomicFile(root, "d/notes.md") as f:
        f.write(b"theirs")
        (arena / "d" / "notes.md").write_bytes(b"mine")
        with pytest.raises(ConflictError):
            f.commit(expected=first.stat_key())
        f.retarget("d/notes.sync-conflict-20261122-010203-ABC.md")
        f.commit(expected=None)
    assert (arena / "d" / "notes.md").read_bytes() == b"mine"
    assert (arena / "d" / "notes.sync-conflict-20261122-010203-ABC.md").read_bytes() == b"theirs"
    assert not _temps(arena)


def test_a_file_created_meanwhile_is_not_clobbered(arena: Path) -> None:
    root = ArenaRoot(arena)
    with AtomicFile(root, "new.txt") as f:
        f.write(b"remote")
        (arena / "new.txt").write_bytes(b"local")
        with pytest.raises(ConflictError):
            f.commit(expected=None)
    assert (arena / "new.txt").read_bytes() == b"local"
    assert not _temps(arena)


def test_a_deleted_destination_is_a_conflict_too(arena: Path) -> None:
    root = ArenaRoot(arena)
    first = write_file(root, "gone", [b"x"], expected=None)
    (arena / "gone").unlink()
    with pytest.raises(ConflictError, match="deleted"):
        write_file(root, "gone", [b"remote"], expected=first.stat_key())
    assert not (arena / "gone").exists()


def test_delete_only_what_is_still_as_expected(arena: Path) -> None:
    root = ArenaRoot(arena)
    entry = write_file(root, "f", [b"x"], expected=None)
    (arena / "f").write_bytes(b"edited")
    with pytest.raises(ConflictError):
        delete(root, "f", expected=entry.stat_key())
    assert (arena / "f").read_bytes() == b"edited"
    fresh = scan_tree(root).entries["f"]
    assert delete(root, "f", expected=fresh.stat_key())
    assert not (arena / "f").exists()
    assert not delete(root, "f", expected=fresh.stat_key())


def test_a_folder_with_content_is_not_deleted(arena: Path) -> None:
    root = ArenaRoot(arena)
    folder = make_dir(root, "d")
    (arena / "d" / "new").write_bytes(b"unsynced")
    with pytest.raises(ConflictError, match="not empty"):
        delete(root, "d", expected=folder.stat_key())
    assert (arena / "d" / "new").exists()


def test_make_dir_is_idempotent_but_never_replaces_a_file(arena: Path) -> None:
    root = ArenaRoot(arena)
    assert make_dir(root, "x/y").kind is Kind.DIR
    assert make_dir(root, "x/y").kind is Kind.DIR
    (arena / "file").write_bytes(b"f")
    with pytest.raises(ConflictError):
        make_dir(root, "file")
    assert (arena / "file").read_bytes() == b"f"


def test_symlinks_are_created_and_retargeted_atomically(arena: Path) -> None:
    root = ArenaRoot(arena)
    link = make_symlink(root, "l", "/etc/passwd", expected=None, mtime_ns=5 * 10**17)
    assert os.readlink(arena / "l") == "/etc/passwd"
    assert link.target == "/etc/passwd"
    moved = make_symlink(root, "l", "../elsewhere", expected=link.stat_key())
    assert os.readlink(arena / "l") == "../elsewhere"
    with pytest.raises(ConflictError):
        make_symlink(root, "l", "x", expected=link.stat_key())
    assert moved.kind is Kind.SYMLINK


def test_writes_never_follow_a_symlinked_folder_out_of_the_root(tmp_path: Path, arena: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (arena / "escape").symlink_to(outside)
    root = ArenaRoot(arena)
    with pytest.raises(UnsafePathError):
        write_file(root, "escape/planted", [b"x"], expected=None)
    with pytest.raises(UnsafePathError):
        make_dir(root, "escape/sub")
    assert list(outside.iterdir()) == []


def test_rename_moves_only_the_expected_entry_onto_a_free_name(arena: Path) -> None:
    root = ArenaRoot(arena)
    entry = write_file(root, "a", [b"content"], expected=None)
    write_file(root, "taken", [b"other"], expected=None)
    with pytest.raises(ConflictError, match="already exists"):
        rename(root, "a", "taken", expected=entry.stat_key())
    moved = rename(root, "a", "sub/b", expected=entry.stat_key())
    assert moved.inode == entry.inode
    assert (arena / "sub" / "b").read_bytes() == b"content"
    assert (arena / "taken").read_bytes() == b"other"


KILL_SCRIPT = """
import os, sys
from shoal.worktree import ArenaRoot, AtomicFile
f = AtomicFile(ArenaRoot(sys.argv[1]), "big.bin")
f.write(b"x" * 100000)
os.kill(os.getpid(), 9)
"""


def test_a_kill_between_write_and_rename_leaves_only_an_ignored_temp_file(arena: Path) -> None:
    (arena / "big.bin").write_bytes(b"old")
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(arena)], check=False, timeout=60)
    assert proc.returncode == -9
    assert (arena / "big.bin").read_bytes() == b"old"
    result = scan_tree(ArenaRoot(arena))
    assert set(result.entries) == {"big.bin"}
    assert len(result.temp_files) == 1
    remove_temp(ArenaRoot(arena), result.temp_files[0])
    assert not _temps(arena)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=False)
    if done.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_is_a_clear_error_and_leaves_no_temp(tiny_fs: Path) -> None:
    root = ArenaRoot(tiny_fs)
    write_file(root, "keep", [b"k"], expected=None)
    with pytest.raises(DiskFullError, match="no space"):
        write_file(root, "huge", [b"x" * 65536] * 4, expected=None)
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["keep"]


def test_a_new_file_is_written_unnamed_and_linked_into_place(arena: Path) -> None:
    root = ArenaRoot(arena)
    (arena / "d").mkdir()
    with AtomicFile(root, "d/new.txt", unnamed=True) as f:
        f.write(b"remote ")
        f.write(b"content")
        assert list((arena / "d").iterdir()) == []  # nothing with a name until the commit
        entry = f.commit(expected=None, mode=0o640, mtime_ns=10**18)
    path = arena / "d" / "new.txt"
    assert path.read_bytes() == b"remote content"
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.stat().st_mtime_ns == 10**18
    assert scan_tree(root).entries["d/new.txt"] == entry
    assert [p.name for p in (arena / "d").iterdir()] == ["new.txt"]


def test_an_unnamed_file_never_replaces_one_created_meanwhile(arena: Path) -> None:
    root = ArenaRoot(arena)
    with AtomicFile(root, "new.txt", unnamed=True) as f:
        f.write(b"remote")
        (arena / "new.txt").write_bytes(b"local")
        with pytest.raises(ConflictError):
            f.commit(expected=None)
        f.retarget("new.sync-conflict-20261207-010203-ABC.txt")
        f.commit(expected=None)
    assert (arena / "new.txt").read_bytes() == b"local"
    assert (arena / "new.sync-conflict-20261207-010203-ABC.txt").read_bytes() == b"remote"
    assert not _temps(arena)


def test_an_unnamed_file_can_still_replace_the_expected_one(arena: Path) -> None:
    root = ArenaRoot(arena)
    first = write_file(root, "f", [b"one"], expected=None)
    with AtomicFile(root, "f", unnamed=True) as f:
        f.write(b"two")
        f.commit(expected=first.stat_key())
    assert (arena / "f").read_bytes() == b"two"
    assert not _temps(arena)


def test_an_aborted_unnamed_file_leaves_nothing(arena: Path) -> None:
    root = ArenaRoot(arena)
    with AtomicFile(root, "gone.txt", unnamed=True) as f:
        f.write(b"never committed")
    assert list(arena.iterdir()) == []


def test_without_proc_an_unnamed_file_falls_back_to_a_named_temp(
    arena: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(atomic, "_PROC_FD", str(arena / "no-proc-here"))
    root = ArenaRoot(arena)
    with AtomicFile(root, "new.txt", unnamed=True) as f:
        f.write(b"content")
        assert len(_temps(arena)) == 1
        f.commit(expected=None)
    assert (arena / "new.txt").read_bytes() == b"content"
    assert not _temps(arena)


def test_a_refused_link_sends_the_file_the_careful_way_and_turns_unnamed_files_off(
    arena: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = ArenaRoot(arena)
    real_link = os.link

    def sandboxed_link(src: str, dst: str, **kwargs: object) -> None:
        if src.startswith("/proc/"):
            raise PermissionError(1, "Operation not permitted")
        real_link(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", sandboxed_link)
    monkeypatch.setattr(atomic._Unnamed, "refused", False)
    with AtomicFile(root, "first.txt", unnamed=True) as f:
        f.write(b"first")
        with pytest.raises(ConflictError, match="refused to link"):
            f.commit(expected=None)
    assert list(arena.iterdir()) == []  # nothing half-made
    assert atomic._Unnamed.refused
    with AtomicFile(root, "first.txt", unnamed=True) as f:  # the careful path's second try
        f.write(b"first")
        assert len(_temps(arena)) == 1  # a named temp this time
        f.commit(expected=None)
    assert (arena / "first.txt").read_bytes() == b"first"
    assert not _temps(arena)
