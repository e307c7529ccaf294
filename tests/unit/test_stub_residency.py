"""Which paths become stubs in folder mode, and the residency a written index row gets."""

from __future__ import annotations

from shoal.engine.folder import FolderMode
from shoal.reconcile.kinds import Kind
from shoal.state.index import IndexEntry, Residency


def _mode(rows: list[IndexEntry], default: Residency = Residency.ONLINE_ONLY) -> FolderMode:
    by_path = {row.path: row for row in rows}
    return FolderMode(default, by_path.get)


def _dir(path: str, residency: Residency) -> IndexEntry:
    return IndexEntry(path=path, kind=Kind.DIR, residency=residency)


def _file(path: str, residency: Residency, *, deleted: bool = False) -> IndexEntry:
    return IndexEntry(path=path, kind=Kind.FILE, size=3, residency=residency, deleted=deleted)


def test_a_new_path_inherits_from_its_nearest_folder_else_the_arena_default() -> None:
    mode = _mode([_dir("a", Residency.PINNED), _dir("a/b", Residency.ONLINE_ONLY)])
    assert mode.inherited("a/x.txt") is Residency.PINNED
    assert mode.inherited("a/b/c/deep.txt") is Residency.ONLINE_ONLY
    assert mode.inherited("top.txt") is Residency.ONLINE_ONLY
    assert _mode([], Residency.PINNED).inherited("z/top.txt") is Residency.PINNED
    assert mode.wants_stub("a/b/new.txt")
    assert not mode.wants_stub("a/new.txt")


def test_a_known_file_keeps_its_own_residency_whatever_its_folder() -> None:
    mode = _mode(
        [
            _dir("a", Residency.ONLINE_ONLY),
            _file("a/pinned.txt", Residency.PINNED),
            _file("a/cached.txt", Residency.CACHED),
            _file("a/gone.txt", Residency.PINNED, deleted=True),
        ]
    )
    assert not mode.wants_stub("a/pinned.txt")
    assert not mode.wants_stub("a/cached.txt")  # a cached file gets new content, stays cached
    assert mode.wants_stub("a/gone.txt")  # deleted: a new file there inherits again


def test_settle_keeps_a_paths_residency_and_content_makes_online_only_cached() -> None:
    mode = _mode([_dir("p", Residency.PINNED), _dir("u", Residency.ONLINE_ONLY)])
    written = IndexEntry(path="u/f.txt", kind=Kind.FILE, size=3)  # content landed, residency not chosen yet
    assert mode.settle(written, None).residency is Residency.CACHED
    assert mode.settle(IndexEntry(path="p/f.txt", kind=Kind.FILE), None).residency is Residency.PINNED
    assert mode.settle(written, _file("u/f.txt", Residency.ONLINE_ONLY)).residency is Residency.CACHED
    assert mode.settle(written, _file("u/f.txt", Residency.PINNED)).residency is Residency.PINNED
    stub = IndexEntry(path="p/s.txt", kind=Kind.FILE, residency=Residency.ONLINE_ONLY)
    assert mode.settle(stub, None).residency is Residency.ONLINE_ONLY  # a stub written on purpose
    assert mode.settle(IndexEntry(path="u/d", kind=Kind.DIR), None).residency is Residency.ONLINE_ONLY
    tomb = IndexEntry(path="p/t", kind=Kind.FILE, deleted=True)
    assert mode.settle(tomb, None) == tomb
