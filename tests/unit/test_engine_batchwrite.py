"""Batched durability on pull: staged temps are renamed only over what was expected, never over an edit."""

from __future__ import annotations

from pathlib import Path

import pytest
from blake3 import blake3

from shoal.engine.batchwrite import all_prefetched, make_folder, publish, stage
from shoal.engine.disk import observe
from shoal.engine.records import EntryRecord, RecordKind
from shoal.errors import ConflictError, IntegrityError
from shoal.model.ids import ChunkId, chunk_id
from shoal.model.manifest import ChunkRef, Manifest
from shoal.worktree import ArenaRoot
from shoal.worktree.entries import ScanEntry


def record(path: str, parts: list[bytes]) -> tuple[EntryRecord, dict[ChunkId, bytes]]:
    refs = tuple(ChunkRef(chunk_id(blake3(p).digest()), len(p)) for p in parts)
    data = b"".join(parts)
    manifest = Manifest(len(data), refs, blake3(data).digest())
    rec = EntryRecord(
        RecordKind.FILE,
        path,
        "laptop",
        size=len(data),
        mode=0o640,
        mtime_ns=1_700_000_000_000_000_000,
        manifest=manifest.encode(),
    )
    return rec, {ref.id: part for ref, part in zip(refs, parts, strict=True)}


@pytest.fixture
def arena(tmp_path: Path) -> Path:
    path = tmp_path / "arena"
    path.mkdir()
    return path


def temps(root: Path) -> list[Path]:
    return list(root.rglob(".shoal-tmp-*"))


def test_a_batch_lands_whole_with_mode_and_mtime(arena: Path) -> None:
    root = ArenaRoot(arena)
    (arena / "old.txt").write_bytes(b"as last synced")
    staged = []
    for n in range(20):
        rec, pre = record(f"d/f{n}.txt", [b"head %d " % n, b"tail" * n])
        assert all_prefetched(rec, pre)
        staged.append(stage(root, rec.path, rec, None, pre))
    rec, pre = record("old.txt", [b"new version"])
    staged.append(stage(root, "old.txt", rec, observe(root, "old.txt"), pre))
    assert not (arena / "d" / "f3.txt").exists()  # nothing at a real path before publish

    written = publish(root, staged)

    assert all(isinstance(w, ScanEntry) for w in written)
    assert (arena / "d" / "f3.txt").read_bytes() == b"head 3 " + b"tail" * 3
    assert (arena / "old.txt").read_bytes() == b"new version"
    info = (arena / "d" / "f3.txt").stat()
    assert (info.st_mode & 0o777, info.st_mtime_ns) == (0o640, 1_700_000_000_000_000_000)
    assert temps(arena) == []


def test_an_edit_made_after_staging_is_kept_and_only_that_file_is_refused(arena: Path) -> None:
    root = ArenaRoot(arena)
    (arena / "mine.txt").write_bytes(b"synced")
    rec_a, pre_a = record("mine.txt", [b"remote version"])
    rec_b, pre_b = record("new.txt", [b"brand new"])
    rec_c, pre_c = record("raced.txt", [b"remote"])
    batch = [
        stage(root, "mine.txt", rec_a, observe(root, "mine.txt"), pre_a),
        stage(root, "new.txt", rec_b, None, pre_b),
        stage(root, "raced.txt", rec_c, None, pre_c),
    ]
    (arena / "mine.txt").write_bytes(b"the user's unpushed edit, longer")
    (arena / "raced.txt").write_bytes(b"created by the user meanwhile")

    written = publish(root, batch)

    assert isinstance(written[0], ConflictError)
    assert isinstance(written[1], ScanEntry)
    assert isinstance(written[2], ConflictError)
    assert (arena / "mine.txt").read_bytes() == b"the user's unpushed edit, longer"
    assert (arena / "raced.txt").read_bytes() == b"created by the user meanwhile"
    assert (arena / "new.txt").read_bytes() == b"brand new"
    assert temps(arena) == []


def test_a_chunk_of_the_wrong_length_writes_nothing(arena: Path) -> None:
    root = ArenaRoot(arena)
    rec, pre = record("f.txt", [b"twelve bytes"])
    pre = dict.fromkeys(pre, b"short")
    with pytest.raises(IntegrityError, match="manifest"):
        stage(root, "f.txt", rec, None, pre)
    assert list(arena.iterdir()) == []
    rec2, pre2 = record("g.txt", [b"x", b"y"])
    assert not all_prefetched(rec2, dict(list(pre2.items())[:1]))


def test_make_folder_creates_with_its_mode_and_never_over_something(arena: Path) -> None:
    root = ArenaRoot(arena)
    made = make_folder(root, "a/b", 0o4750)
    assert made.kind.value == "dir"
    assert (arena / "a" / "b").stat().st_mode & 0o7777 == 0o750  # no setuid bits from elsewhere
    (arena / "taken").write_text("a user's file")
    for path in ("taken", "a/b"):
        with pytest.raises(ConflictError):
            make_folder(root, path, 0o755)
    assert (arena / "taken").read_text() == "a user's file"
