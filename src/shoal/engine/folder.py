"""Folder mode inside a sync round: which paths are stubs, and what the scan's stubs mean.

Residency is kept per path in the index (``entries.residency``): a file is
``pinned`` (content always here), ``cached`` (unpinned, content here for
now) or ``online-only`` (unpinned, a stub ``NAME.shoal`` on disk). A folder
row is ``pinned`` or, unpinned, ``online-only``. A path the index does not
know yet inherits from its nearest folder row, else from the arena's default
(``settings["residency"]``, set at join). The index row of a stubbed file
holds the stub file's inode and mtime, the file's size and mode
(:func:`shoal.worktree.stub.as_file_entry`), so the by-stat scan works
unchanged.

Push side: :func:`apply_stubs` turns the scan's stub files into the entries
of the files they stand for; a stub is never content. The pull side asks
:meth:`FolderMode.wants_stub` before fetching anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from shoal.engine.context import ArenaContext, SyncReport
from shoal.errors import ShoalError
from shoal.model.manifest import Manifest
from shoal.reconcile.kinds import Kind
from shoal.state.arenas import ArenaRecord
from shoal.state.index import IndexEntry, Residency
from shoal.worktree.entries import STUB_SUFFIX, ScanEntry, StatKey
from shoal.worktree.scan import ScanResult
from shoal.worktree.stub import (
    Stub,
    as_file_entry,
    remove_stub_file,
    stub_files,
    stub_path,
    target_of,
    write_stub,
)

RESIDENCY_SETTING = "residency"  # the arena's default for new paths: "pinned" or "online-only"
Lookup = Callable[[str], IndexEntry | None]


def arena_default(arena: ArenaRecord) -> Residency:
    value = arena.settings.get(RESIDENCY_SETTING, Residency.PINNED.value)
    return Residency.PINNED if value == Residency.PINNED.value else Residency.ONLINE_ONLY


def _live(entry: IndexEntry | None) -> bool:
    return entry is not None and not entry.deleted


def file_hash_of(entry: IndexEntry) -> bytes | None:
    return None if entry.manifest is None else Manifest.decode(entry.manifest).file_hash


def stub_of(entry: IndexEntry, arena_id: str) -> Stub:
    """The stub describing a synced file version."""
    digest = file_hash_of(entry)
    assert digest is not None, "only files with content have stubs"
    return Stub(arena_id, entry.path, entry.size, entry.mtime_ns, entry.mode, digest)


class FolderMode:
    """Residency decisions of one round; ``get`` reads the index as the round sees it."""

    def __init__(self, default: Residency, get: Lookup) -> None:
        self.default = default
        self.get = get

    @classmethod
    def for_round(cls, ctx: ArenaContext, get: Lookup | None = None) -> FolderMode | None:
        """None when every path of the arena is pinned (no stub can exist): the round skips it all."""
        default = arena_default(ctx.registry.get(ctx.arena_id))
        if default is Residency.PINNED and not ctx.index.has_unpinned():
            return None
        return cls(default, get or ctx.index.get)

    def inherited(self, path: str) -> Residency:
        """PINNED or ONLINE_ONLY (unpinned): the setting of the nearest folder above ``path``."""
        folder = path.rpartition("/")[0]
        while folder:
            entry = self.get(folder)
            if entry is not None and not entry.deleted and entry.kind is Kind.DIR:
                return Residency.PINNED if entry.residency is Residency.PINNED else Residency.ONLINE_ONLY
            folder = folder.rpartition("/")[0]
        return self.default

    def wants_stub(self, path: str) -> bool:
        """True if a new version of the file at ``path`` should arrive as a stub, not as content."""
        entry = self.get(path)
        if entry is not None and not entry.deleted and entry.kind is Kind.FILE:
            return entry.residency is Residency.ONLINE_ONLY
        return self.inherited(path) is Residency.ONLINE_ONLY

    def settle(self, entry: IndexEntry, prior: IndexEntry | None) -> IndexEntry:
        """The residency an index row gets when a version with content lands at its path: the
        path's own (an online-only file now holding content is cached), else its folder's."""
        if entry.deleted or entry.residency is Residency.ONLINE_ONLY:
            return entry  # a tombstone, or a stub written on purpose
        if prior is not None and not prior.deleted and prior.kind is entry.kind:
            residency = prior.residency
        else:
            residency = self.inherited(entry.path)
        if entry.kind is not Kind.DIR and residency is Residency.ONLINE_ONLY:
            residency = Residency.CACHED
        return replace(entry, residency=residency)

    def settle_all(self, entries: Iterable[IndexEntry]) -> list[IndexEntry]:
        return [self.settle(e, self.get(e.path)) for e in entries]


@dataclass(slots=True)
class StubView:
    """What the stubs of one scan mean for the push."""

    moves: dict[str, str] = field(default_factory=dict)  # old path → new path of a moved stub
    rewrite: dict[str, Stub] = field(default_factory=dict)  # path → its stub, which names another path
    stale: list[str] = field(default_factory=list)  # stub files next to their file (left when not tidying)

    def drop_stubs(self, ctx: ArenaContext, upserts: list[ScanEntry], report: SyncReport) -> list[ScanEntry]:
        """Upserts without stubs (never content). A touched or replaced stub only refreshes its row's
        stat: what the file is comes from the index, never from the stub (a stub of another version,
        left by a pull cut short, is rewritten when the pull applies that version again)."""
        targets = set(self.moves.values())
        stubs = [e for e in upserts if e.stub and e.path not in targets]
        if not stubs:
            return upserts
        known = ctx.index.get_many(e.path for e in stubs)
        refreshed: list[IndexEntry] = []
        for disk in stubs:
            entry = known.get(disk.path)
            if entry is None or entry.deleted or entry.kind is not Kind.FILE or entry.manifest is None:
                report.skipped.append(f"{stub_path(disk.path)}: a stub of a file this device does not know")
            else:
                refreshed.append(
                    replace(entry, mtime_ns=disk.mtime_ns, inode=disk.inode, residency=Residency.ONLINE_ONLY)
                )
        if refreshed:
            with ctx.index.batch() as b:
                b.put(refreshed)
        return [e for e in upserts if not e.stub or e.path in targets]

    def rewrite_moved(self, ctx: ArenaContext) -> None:
        """After the push committed their renames: make each moved stub name its new path."""
        if not self.rewrite:
            return
        rows = ctx.index.get_many(self.rewrite)
        fixed: list[IndexEntry] = []
        for path, stub in self.rewrite.items():
            entry = rows.get(path)
            if entry is None or entry.deleted or entry.residency is not Residency.ONLINE_ONLY:
                continue
            try:
                written = write_stub(ctx.root, replace(stub, path=path))
            except ShoalError:
                continue  # the old stub stays valid for this path (its inode is what the index holds)
            fixed.append(replace(entry, mtime_ns=written.mtime_ns, inode=written.inode))
        if fixed:
            with ctx.index.batch() as b:
                b.put(fixed)


def apply_stubs(
    ctx: ArenaContext, scan: ScanResult, index_keys: Mapping[str, StatKey] | None = None, *, tidy: bool = True
) -> StubView:
    """Replace the scan's stub files by the files they stand for; remove stale stubs.

    A stub at ``X.shoal`` naming ``X`` of this arena stands for ``X``; next to a real ``X`` it is
    stale (``X`` is a local edit) and is removed if shoal left it there (:func:`_left_by_shoal`),
    else it is the user's copy and an ordinary file. A stub naming another path ``Y`` stands for
    ``X`` when it is the stub the index recorded at ``X`` (same inode and mtime), or when the
    user moved it there: ``Y`` is an online-only file gone from disk whose hash the stub names.
    Given the index's stat keys, stubs exactly as recorded are taken without reading them.
    Anything else called ``*.shoal`` stays an ordinary file, and so does a stub-like file the index
    holds as a synced file of its own (it arrived as content). ``tidy=False`` (fsck) removes nothing.
    """
    view = StubView()
    if index_keys:
        _adopt_unchanged(ctx, scan, index_keys)
    found = stub_files(scan, ctx.arena_id, ctx.root)
    if not found:
        return view
    synced = ctx.index.get_many(found)  # a file synced as content with the content here stays one
    found = {f: s for f, s in found.items() if not holds_content(synced.get(f))}
    exact = {f: s for f, s in found.items() if s.path == target_of(f)}
    others = {f: s for f, s in found.items() if f not in exact}
    disks = {f: scan.entries.pop(f) for f in exact}  # first: a stub file is never "the real X"
    rows = ctx.index.get_many(s.path for s in exact.values()) if exact else {}
    for stub_file, stub in exact.items():
        target = stub.path
        if target in scan.entries:  # a real X next to X.shoal: X is the local version
            if not _left_by_shoal(stub, disks[stub_file], rows.get(target)):
                scan.entries[stub_file] = disks[stub_file]  # a copy the user made: an ordinary file
            elif not tidy or not remove_stub_file(ctx.root, stub_file, ctx.arena_id):
                view.stale.append(stub_file)
            continue
        scan.entries[target] = as_file_entry(stub, disks[stub_file])
    if not others:
        return view
    wanted = {target_of(f) or "" for f in others} | {s.path for s in others.values()}
    known = ctx.index.get_many(wanted)
    sources = Counter(s.path for s in others.values())
    for stub_file, stub in others.items():
        target = target_of(stub_file) or ""
        disk = scan.entries[stub_file]
        if target in scan.entries:
            continue
        here, origin = known.get(target), known.get(stub.path)
        if (
            _is_stub_row(here)
            and here is not None
            and (here.inode, here.mtime_ns) == (disk.inode, disk.mtime_ns)
        ):
            del scan.entries[stub_file]
            scan.entries[target] = as_file_entry(stub, disk, target)
            view.rewrite[target] = stub
        elif (
            _is_stub_row(origin)
            and origin is not None
            and stub.path not in scan.entries
            and sources[stub.path] == 1
            and file_hash_of(origin) == stub.file_hash
            and not _live(here)
        ):
            del scan.entries[stub_file]
            scan.entries[target] = as_file_entry(stub, disk, target)
            view.rewrite[target] = stub
            view.moves[stub.path] = target
    return view


def _adopt_unchanged(ctx: ArenaContext, scan: ScanResult, known: Mapping[str, StatKey]) -> None:
    """Stubs exactly as the index recorded them (an online-only file's row holds its stub's inode
    and mtime) stand for their files without being read: a rescan of many stubs stays a stat each."""
    candidates = [p for p in scan.entries if p.endswith(STUB_SUFFIX)]
    if not candidates:
        return
    online = ctx.index.online_only()
    for stub_file in candidates:
        target = target_of(stub_file)
        key = known.get(target or "")
        disk = scan.entries[stub_file]
        if (
            target is None
            or target not in online
            or key is None
            or target in scan.entries
            or disk.kind is not Kind.FILE
            or (key[2], key[3]) != (disk.mtime_ns, disk.inode)
        ):
            continue
        del scan.entries[stub_file]
        scan.entries[target] = ScanEntry(
            path=target,
            kind=Kind.FILE,
            size=key[1],
            mtime_ns=disk.mtime_ns,
            inode=disk.inode,
            mode=key[4],
            stub=True,
        )


def _left_by_shoal(stub: Stub, disk: ScanEntry, row: IndexEntry | None) -> bool:
    """True for a stub next to its file that shoal left (hydrate, or an edit over the stub, while the
    index still says online-only; or a dehydrate cut short: exactly the stub of the synced version,
    with its mtime). Anything else is the user's copy."""
    if row is None or row.deleted or row.kind is not Kind.FILE or row.manifest is None:
        return False
    if row.residency is Residency.ONLINE_ONLY:
        return True
    return disk.mtime_ns == row.mtime_ns and stub == stub_of(row, stub.arena)


def holds_content(entry: IndexEntry | None) -> bool:
    return entry is not None and not entry.deleted and entry.residency is not Residency.ONLINE_ONLY


def _is_stub_row(entry: IndexEntry | None) -> bool:
    return (
        entry is not None
        and not entry.deleted
        and entry.kind is Kind.FILE
        and entry.residency is Residency.ONLINE_ONLY
    )
