"""How a push's scan reads stubs: what they stand for, what stays an ordinary file, what is removed.

Real device database and folder; no hub (the scan never talks to it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from shoal.chunking.hashing import chunk_id
from shoal.engine.context import ArenaContext
from shoal.engine.folder import apply_stubs, stub_of
from shoal.model.manifest import ChunkRef, Manifest
from shoal.net.sync import SyncClient
from shoal.reconcile.kinds import Kind
from shoal.state.arenas import ArenaRegistry
from shoal.state.db import DeviceDB
from shoal.state.index import IndexEntry, Residency
from shoal.worktree.scan import ScanResult, scan_tree
from shoal.worktree.stub import write_stub

ARENA = "arena-scan"


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ArenaContext]:
    db = DeviceDB.open(tmp_path / "state.db")
    root = tmp_path / "root"
    root.mkdir()
    record = ArenaRegistry(db).add(ARENA, "docs", root, "http://127.0.0.1:9", {"residency": "online-only"})
    context = ArenaContext(db, record, cast(SyncClient, None), "dev1")
    try:
        yield context
    finally:
        context.close()
        db.close()


def _manifest(content: bytes) -> bytes:
    cid = chunk_id(content)
    return Manifest(size=len(content), chunks=(ChunkRef(cid, len(content)),), file_hash=cid).encode()


def _online(ctx: ArenaContext, path: str, content: bytes) -> IndexEntry:
    """Index ``path`` as an online-only file and write its stub, as a pull does."""
    entry = IndexEntry(
        path,
        Kind.FILE,
        size=len(content),
        mtime_ns=1_600_000_000_000_000_000,
        mode=0o644,
        manifest=_manifest(content),
    )
    disk = write_stub(ctx.root, stub_of(entry, ARENA))
    row = IndexEntry(
        path,
        Kind.FILE,
        size=len(content),
        mtime_ns=disk.mtime_ns,
        inode=disk.inode,
        mode=0o644,
        manifest=entry.manifest,
        residency=Residency.ONLINE_ONLY,
    )
    with ctx.index.batch() as b:
        b.put([row])
    return row


def _reordered(scan: ScanResult) -> ScanResult:
    scan.entries = dict(reversed(scan.entries.items()))
    return scan


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_keys", [False, True])
def test_twin_files_both_online_only_stay_stubs_in_any_listing_order(
    ctx: ArenaContext, reverse: bool, with_keys: bool
) -> None:
    _online(ctx, "twin", b"twin\n")  # its stub is twin.shoal ...
    _online(ctx, "twin.shoal", b"not a stub\n")  # ... the name of this file, whose stub is twin.shoal.shoal
    scan = scan_tree(ctx.root)
    if reverse:
        scan = _reordered(scan)
    view = apply_stubs(ctx, scan, ctx.index.stat_keys() if with_keys else None)
    assert set(scan.entries) == {"twin", "twin.shoal"}
    assert all(scan.entries[p].stub for p in ("twin", "twin.shoal"))
    keys = ctx.index.stat_keys()
    assert scan.entries["twin"].stat_key() == keys["twin"]
    assert scan.entries["twin.shoal"].stat_key() == keys["twin.shoal"]
    assert view.stale == []
    assert (ctx.root.root / "twin.shoal").is_file()
    assert (ctx.root.root / "twin.shoal.shoal").is_file()


def test_a_stale_stub_goes_only_when_shoal_left_it(ctx: ArenaContext) -> None:
    row = _online(ctx, "a.txt", b"hello\n")
    (ctx.root.root / "a.txt").write_bytes(b"written over the stub\n")
    scan = scan_tree(ctx.root)
    apply_stubs(ctx, scan)
    assert not (ctx.root.root / "a.txt.shoal").exists()  # the row says online-only: shoal's stub
    assert not scan.entries["a.txt"].stub  # the real file is the local version

    # A pinned file with a copy of its stub next to it (a user's file): kept, and an ordinary file.
    pinned = IndexEntry("b.txt", Kind.FILE, size=6, mtime_ns=row.mtime_ns, mode=0o644, manifest=row.manifest)
    with ctx.index.batch() as b:
        b.put([pinned])
    (ctx.root.root / "b.txt").write_bytes(b"hello\n")
    copy = ctx.root.root / "b.txt.shoal"
    copy.write_bytes(stub_of(pinned, ARENA).encode())  # same bytes, but its own mtime
    scan = scan_tree(ctx.root)
    view = apply_stubs(ctx, scan)
    assert copy.exists()
    assert "b.txt.shoal" in scan.entries
    assert not scan.entries["b.txt.shoal"].stub
    assert view.stale == []


def test_a_moved_stub_is_a_rename_and_a_copied_one_is_an_ordinary_file(ctx: ArenaContext) -> None:
    _online(ctx, "old.txt", b"content\n")
    (ctx.root.root / "old.txt.shoal").rename(ctx.root.root / "new.txt.shoal")
    scan = scan_tree(ctx.root)
    view = apply_stubs(ctx, scan)
    assert view.moves == {"old.txt": "new.txt"}
    assert scan.entries["new.txt"].stub
    assert "old.txt" not in scan.entries

    _online(ctx, "kept.txt", b"kept\n")
    (ctx.root.root / "copy.shoal").write_bytes((ctx.root.root / "kept.txt.shoal").read_bytes())
    scan = scan_tree(ctx.root)
    view = apply_stubs(ctx, scan)
    assert "copy.shoal" in scan.entries  # names kept.txt, which is still there: not a move
    assert not scan.entries["copy.shoal"].stub
    assert "kept.txt" not in view.moves
