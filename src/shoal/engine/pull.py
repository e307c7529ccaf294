"""Pull: apply the hub's log since this device's cursor, never clobbering a local edit.

For each entry the device compares the remote version vector with the one it
last synced for that path (the index) and the disk with the index's stat:

* older or equal: an echo of this device's own push, or stale; nothing to do;
* newer and the disk unchanged: write it (atomically; the writer re-checks the
  stat right before its rename);
* concurrent (the hub flagged a race) and the disk unchanged: both sides are
  hub versions; ``reconcile.plan_conflict`` picks the same winner on every
  device. Under keep-both the device that wrote the loser moves it to the
  conflict-copy name, which its next push sends everywhere;
* the disk changed (an edit not pushed yet): a delete never destroys the edit;
  different content is a conflict kept as a copy whatever the policy, since
  that edit exists nowhere else.

Index rows and the cursor are written together, a group of entries at a time,
after the disk changes they describe; a kill in between re-applies the group,
which finds the content already there and only records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from shoal.engine.batchwrite import BATCH_FILES, StagedFile, all_prefetched, make_folder, publish, stage
from shoal.engine.context import ArenaContext, SyncReport
from shoal.engine.cursor import fingerprint, remember
from shoal.engine.disk import (
    disk_content_key,
    locally_changed,
    move_aside,
    observe,
    remove_version,
    same_thing,
    write_version,
)
from shoal.engine.folder import FolderMode, holds_content
from shoal.engine.records import EntryRecord, RecordKind
from shoal.errors import (
    ConflictError,
    CorruptChunkError,
    CursorExpiredError,
    FormatError,
    NotFoundError,
    UnsafePathError,
)
from shoal.model.ids import ChunkId, parse_chunk_id
from shoal.model.manifest import Manifest
from shoal.model.vv import Order, VersionVector
from shoal.net.schemas_sync import ChangeEntry, ChangesPage
from shoal.reconcile.kinds import Kind
from shoal.reconcile.names import is_conflict_copy, split_extension
from shoal.reconcile.winner import ConflictPolicy, Version, plan_conflict
from shoal.state.index import IndexEntry, Residency
from shoal.worktree.atomic import rename, sync_filesystem
from shoal.worktree.entries import ScanEntry
from shoal.worktree.ignore import IgnoreRules
from shoal.worktree.paths import FolderCache
from shoal.worktree.stub import Stub, observe_stub, remove_stub, target_of, write_stub

PAGE = 1000
WRITERS = 8  # files written at once while applying a group
_SLICE = 32  # small files staged, or chunks opened, per worker-thread call
_SMALL = 4 * 1024 * 1024 + 1
_MARK = re.compile(r"\.sync-conflict-\d{8}-\d{6}-[A-Za-z0-9]{1,16}")


def original_of(copy_path: str) -> str:
    """The path a conflict copy belongs to (the marker removed from its name)."""
    head, sep, name = copy_path.rpartition("/")
    return head + sep + _MARK.sub("", name, count=1)


@dataclass(frozen=True, slots=True)
class _Plan:
    entry: ChangeEntry
    record: EntryRecord
    disk: ScanEntry | None
    merged: VersionVector
    own: VersionVector


@dataclass(frozen=True, slots=True)
class _Group:
    """Entries applied together, the small files' chunks they need, and the cursor after them."""

    items: list[tuple[ChangeEntry, EntryRecord]]
    wanted: list[ChunkId]
    cursor: int


_Ahead = tuple[ChangesPage, list[_Group], dict[ChunkId, bytes]]
_EMPTY_PAGE = ChangesPage(entries=[], cursor=0, head=0, more=False)


class _Overlay:
    """Index writes of the current group, visible to later entries before they are flushed.

    ``load`` reads the index rows of a group's paths in one query: nothing but ``flush`` writes
    the index while a group is applied, so those rows stay what the index holds until then."""

    def __init__(self, ctx: ArenaContext) -> None:
        self.ctx = ctx
        self.pending: dict[str, IndexEntry] = {}
        self.known: dict[str, IndexEntry | None] = {}  # index rows read ahead; None: no row
        self.conflicts: list[tuple[str, str]] = []
        self.resolved: list[str] = []
        self.folder: FolderMode | None = None  # folder mode: rows get their path's residency

    def load(self, paths: Iterable[str]) -> None:
        wanted = [p for p in dict.fromkeys(paths) if p not in self.pending and p not in self.known]
        found = self.ctx.index.get_many(wanted)
        self.known.update((p, found.get(p)) for p in wanted)

    def get(self, path: str) -> IndexEntry | None:
        if path in self.pending:
            return self.pending[path]
        if path in self.known:
            return self.known[path]
        return self.ctx.index.get(path)

    def put(self, entry: IndexEntry) -> None:
        if self.folder is not None:
            entry = self.folder.settle(entry, self.get(entry.path))
        self.pending[entry.path] = entry

    def flush(self, cursor: int) -> None:
        with self.ctx.index.batch() as b:
            b.put(self.pending.values())
            for path, copy in self.conflicts:
                b.add_conflict(path, copy)
            for copy in self.resolved:
                b.resolve_conflict(copy)
            b.set_cursor(cursor)
        self.pending.clear()
        self.known.clear()
        self.conflicts.clear()
        self.resolved.clear()


def _tombstone(
    path: str, kind: Kind, vv: VersionVector, own: VersionVector, origin: str, mtime_ns: int = 0
) -> IndexEntry:
    return IndexEntry(path=path, kind=kind, vv=vv, own_vv=own, origin=origin, mtime_ns=mtime_ns, deleted=True)


def _entry_for(written: ScanEntry, remote: EntryRecord, vv: VersionVector, own: VersionVector) -> IndexEntry:
    return IndexEntry(
        path=written.path,
        kind=written.kind,
        size=written.size,
        mtime_ns=written.mtime_ns,
        inode=written.inode,
        mode=written.mode,
        target=written.target,
        manifest=remote.manifest,
        vv=vv,
        own_vv=own,
        origin=remote.device,
        residency=Residency.ONLINE_ONLY if written.stub else Residency.PINNED,  # settled by the overlay
    )


def _stale(e: IndexEntry) -> IndexEntry:
    """The entry marked for the next push to commit the path again (its disk state is unchanged)."""
    return replace(e, dirty=True)


def _version_of_index(e: IndexEntry) -> Version:
    key = b""
    if not e.deleted and e.kind is Kind.FILE and e.manifest is not None:
        key = Manifest.decode(e.manifest).file_hash
    elif not e.deleted and e.kind is Kind.SYMLINK:
        key = (e.target or "").encode("utf-8")
    return Version(e.origin, e.mtime_ns, e.version_vv, e.kind, e.deleted, key)


def _version_of_record(r: EntryRecord, vv: VersionVector, fallback: Kind) -> Version:
    kind = r.kind.as_kind() or fallback
    return Version(r.device, r.mtime_ns, vv, kind, r.deleted, b"" if r.deleted else r.content_key())


def _supersedes(vv: VersionVector, base: IndexEntry | None) -> bool:
    """True when a change with vector ``vv`` is newer than what was last synced at its path."""
    if base is None:
        return True
    return vv.compare(base.version_vv) is Order.AFTER and vv.compare(base.vv) not in (
        Order.EQUAL,
        Order.BEFORE,
    )


class Puller:
    def __init__(
        self, ctx: ArenaContext, report: SyncReport, progress: Callable[[int], None] | None = None
    ) -> None:
        self.ctx = ctx
        self.report = report
        self.progress = progress  # told the bytes fetched: small files' chunks, then each large file
        self.rules: IgnoreRules = ctx.ignore_rules()
        self.overlay = _Overlay(ctx)
        self.key = ctx.store.sealer.id_key
        self._unsynced = False  # folders made in this group wait for its syncfs
        self._ahead: asyncio.Task[_Ahead] | None = None  # what is read while a group is written
        self.folder = self.overlay.folder = FolderMode.for_round(ctx, self.overlay.get)

    async def run(self) -> None:
        ctx = self.ctx
        start = cursor = ctx.index.cursor
        if cursor > 0 and not await self._same_log(cursor):
            await self._hub_went_back(cursor)
            start = cursor = 0
        # The rules the last pull used: what they skipped was never applied, and the cursor is past
        # it. A device without a mark (an older database) has nothing to compare.
        mark = ctx.registry.get(ctx.arena_id).settings.get("rules_mark")
        if cursor > 0 and mark not in (None, self.rules.digest):
            cursor = 0  # these rules may sync what the old ones skipped: read the log again
        cursor, last = await self._read_log(cursor)
        reloaded = ctx.ignore_rules()
        if reloaded.digest != self.rules.digest:
            # This pull brought a new .shoalignore: entries it skipped under the old rules, in this
            # page or long ago, may be synced now. Version vectors make what is here cost nothing.
            self.rules = reloaded
            cursor, last = await self._read_log(0)
        if mark != self.rules.digest:
            settings = dict(ctx.registry.get(ctx.arena_id).settings)  # as the pull left them
            settings["rules_mark"] = self.rules.digest
            ctx.registry.update_settings(ctx.arena_id, settings)
        self.report.cursor = cursor
        if cursor != start:
            if last is not None and last.seq == cursor:
                remember(self.ctx, last)
            await ctx.client.ack(ctx.arena_id, cursor)

    async def _read_log(self, cursor: int) -> tuple[int, ChangeEntry | None]:
        """Apply the log from ``cursor`` to its head; the new cursor and the entry at it."""
        last: ChangeEntry | None = None
        try:
            while True:
                task, self._ahead = self._ahead, None
                try:
                    page, groups, prefetched = await (task if task is not None else self._read_ahead(cursor))
                except CursorExpiredError:
                    if cursor == 0:
                        raise
                    # Away longer than the hub keeps its log: every path's current version is still in
                    # it from the start, and version vectors skip what this device already has.
                    cursor = 0
                    continue
                if page.head < cursor:
                    # Read the restored log from its start: entries are judged by version vectors, so
                    # what this device already has costs nothing, and what others pushed since is not
                    # skipped.
                    await self._hub_went_back(cursor)
                    cursor = 0
                    continue
                await self._apply_page(page, groups, prefetched)
                cursor = page.cursor
                last = page.entries[-1] if page.entries else last
                if not page.more:
                    return cursor, last
        finally:
            if self._ahead is not None and not self._ahead.done():
                self._ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._ahead
            self._ahead = None  # a read of the log again must not take this one's read-ahead

    async def _same_log(self, cursor: int) -> bool:
        mark = self.ctx.registry.get(self.ctx.arena_id).settings.get("cursor_mark")
        if not isinstance(mark, list) or len(mark) != 2 or mark[0] != cursor:
            return True  # nothing to compare with (an older device database, or a kill before the mark)
        try:
            page = await self.ctx.client.changes(self.ctx.arena_id, cursor - 1, 1)
        except CursorExpiredError:
            return True  # the log was compacted past the mark; reading it starts over from 0 below
        return (
            bool(page.entries) and page.entries[0].seq == cursor and fingerprint(page.entries[0]) == mark[1]
        )

    async def _hub_went_back(self, cursor: int) -> None:
        """The hub was restored from an older backup: keep every file, re-push what it lacks."""
        _, items = await self.ctx.client.tree(self.ctx.arena_id)
        on_hub = {item.path_key: VersionVector(item.change.vv) for item in items}
        stale: list[IndexEntry] = []
        for entry in self.ctx.index.entries():
            known = on_hub.get(self.ctx.codec.path_key(entry.path))
            if known is None or known.compare(entry.vv) is not Order.AFTER:
                # Forget the synced stat so the next scan pushes this path again, on top of both vectors.
                merged = entry.vv.merge(known or {})
                stale.append(_stale(replace(entry, vv=merged, own_vv=entry.version_vv)))
        with self.ctx.index.batch() as b:
            b.put(stale)
            b.set_cursor(0)
        self.overlay.known.clear()
        self.report.skipped.append(
            f"the hub's log no longer holds this device's cursor {cursor} (restored from a backup?); "
            f"{len(stale)} paths are pushed again, nothing is deleted"
        )

    # -- a page --------------------------------------------------------------------------

    async def _apply_page(
        self, page: ChangesPage, groups: list[_Group], prefetched: dict[ChunkId, bytes]
    ) -> None:
        """Apply the groups of a page; the next group's chunks (or the next page and its first
        group's chunks) arrive while one is written."""
        for k, group in enumerate(groups):
            nxt = None
            if k + 1 < len(groups):
                nxt = self._ahead = asyncio.create_task(self._prefetch_ahead(groups[k + 1]))
            elif page.more:
                self._ahead = asyncio.create_task(self._read_ahead(page.cursor))
            await self._apply_group(group.items, prefetched, group.cursor)
            if nxt is not None:
                prefetched = (await nxt)[2]
                self._ahead = None

    async def _read_ahead(self, since: int) -> _Ahead:
        """The page after ``since``, its groups, and the first group's chunks."""
        page = await self.ctx.client.changes(self.ctx.arena_id, since, PAGE)
        if page.head < since:
            return page, [], {}
        groups = self._plan_page(page.entries, page.cursor)
        return page, groups, await self._prefetch(groups[0].wanted)

    async def _prefetch_ahead(self, group: _Group) -> _Ahead:
        return _EMPTY_PAGE, [], await self._prefetch(group.wanted)

    def _plan_page(self, entries: list[ChangeEntry], page_cursor: int) -> list[_Group]:
        """Cut a page into groups of at most ``prefetch_bytes`` of small files' chunks (the last
        group, perhaps empty, ends at the page's cursor)."""
        superseded = _superseded(entries)
        decoded = [(entry, self._decode(entry)) for i, entry in enumerate(entries) if i not in superseded]
        # Only decides what to fetch ahead (this runs while the group before is applied): one query.
        rows = self.ctx.index.get_many(r.path for e, r in decoded if e.op in ("put", "rename"))
        groups: list[_Group] = []
        group: list[tuple[ChangeEntry, EntryRecord]] = []
        wanted: dict[ChunkId, None] = {}
        budget = 0
        for entry, record in decoded:
            group.append((entry, record))
            if entry.op in ("put", "rename") and record.size < _SMALL and self._needs(entry, record, rows):
                for hex_id in record.chunk_ids():
                    wanted.setdefault(parse_chunk_id(hex_id), None)
                budget += record.size
            if budget >= self.ctx.options.prefetch_bytes or len(group) >= 2000:
                groups.append(_Group(group, list(wanted), group[-1][0].seq))
                group, wanted, budget = [], {}, 0
        groups.append(_Group(group, list(wanted), page_cursor))
        return groups

    def _decode(self, entry: ChangeEntry) -> EntryRecord:
        record = self.ctx.codec.decode(entry.record)
        expect = entry.to_path_key if entry.op == "rename" else entry.path_key
        if self.ctx.codec.path_key(record.path) != expect:
            raise FormatError(f"change {entry.seq}: its record names a path that does not match its path key")
        if entry.op == "rename" and self.ctx.codec.path_key(record.from_path or "") != entry.path_key:
            raise FormatError(f"change {entry.seq}: the rename's source does not match its path key")
        return record

    def _needs(self, entry: ChangeEntry, record: EntryRecord, rows: Mapping[str, IndexEntry]) -> bool:
        if self.folder is not None and self.folder.wants_stub(record.path):
            return False  # arrives as a stub: nothing to fetch
        if self.rules.is_ignored(record.path):
            return False  # never applied here: its chunks would be fetched for nothing
        base = self.overlay.pending.get(record.path) or rows.get(record.path)
        return base is None or VersionVector(entry.vv).compare(base.vv) in (Order.AFTER, Order.CONCURRENT)

    async def _apply_group(
        self, group: list[tuple[ChangeEntry, EntryRecord]], prefetched: dict[ChunkId, bytes], cursor: int
    ) -> None:
        # Plain file writes of paths nothing else in the group touches run side by side (their
        # fsyncs overlap); everything else follows one at a time, in log order.
        self.overlay.load(p for _, r in group for p in (r.path, r.from_path) if p is not None)
        group = self._drop_echoes(group)
        touched = Counter(p for _, r in group for p in (r.path, r.from_path) if p is not None)
        holding = {p.rpartition("/")[0] for p in touched}  # folders with a touched path inside
        for start in list(holding):
            folder = start
            while folder:
                folder = folder.rpartition("/")[0]
                holding.add(folder)

        made = await self._make_folders(group, touched, prefetched)

        def independent(entry: ChangeEntry, record: EntryRecord) -> bool:
            return (
                entry.op == "put"
                and touched[record.path] == 1
                and record.path not in holding
                and all(a in made or a not in touched for a in _ancestors(record.path))
            )

        alone = [(e, r) for e, r in group if independent(e, r)]
        rest = [(e, r) for e, r in group if not independent(e, r) and r.path not in made]
        gate = asyncio.Semaphore(WRITERS)
        retry: list[tuple[ChangeEntry, EntryRecord]] = []

        async def one(entry: ChangeEntry, record: EntryRecord) -> None:
            async with gate:
                try:
                    await self._apply_entry(entry, record, prefetched, strict=True)
                except (ConflictError, UnsafePathError):
                    retry.append((entry, record))  # once the rest is in place, one at a time

        # New versions of small files over an unchanged disk are made durable a batch at a time.
        plans: list[_Plan] = []
        careful: list[tuple[ChangeEntry, EntryRecord]] = []
        with FolderCache(self.ctx.root) as folders:
            for entry, record in alone:
                plan = self._plain_take(entry, record, prefetched, folders)
                if plan is None:
                    careful.append((entry, record))
                else:
                    plans.append(plan)
        results = await asyncio.gather(*(one(e, r) for e, r in careful), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        for first in range(0, len(plans), BATCH_FILES):
            retry.extend(await self._write_batch(plans[first : first + BATCH_FILES], prefetched))
        for entry, record in rest + sorted(retry, key=lambda item: item[0].seq):
            await self._apply_entry(entry, record, prefetched)
        if plans or self._unsynced:  # renames and new folders, before the index and cursor say so
            await asyncio.get_running_loop().run_in_executor(None, sync_filesystem, self.ctx.root)
            self._unsynced = False
        self.overlay.flush(cursor)

    def _drop_echoes(
        self, group: list[tuple[ChangeEntry, EntryRecord]]
    ) -> list[tuple[ChangeEntry, EntryRecord]]:
        """The group without the entries the index already covers (a push's own changes coming
        back): applying one is a no-op (``_apply_version`` returns first thing), and an initial
        push reads thousands of them. Renames, and paths the group touches twice, stay."""
        touched = Counter(p for _, r in group for p in (r.path, r.from_path) if p is not None)

        def echo(entry: ChangeEntry, record: EntryRecord) -> bool:
            if entry.op == "rename" or touched[record.path] != 1:
                return False
            base = self.overlay.get(record.path)
            return base is not None and VersionVector(entry.vv).compare(base.vv) in (
                Order.EQUAL,
                Order.BEFORE,
            )

        return [(e, r) for e, r in group if not echo(e, r)]

    async def _make_folders(
        self, group: list[tuple[ChangeEntry, EntryRecord]], touched: Counter[str], pre: dict[ChunkId, bytes]
    ) -> set[str]:
        """Apply first, in log order, the folders the group only creates (one mkdir and nothing else
        at that path, every touched ancestor such a folder too), so the new files inside them count
        as independent (an initial sync sends each folder just before its files). Returns the
        folders that are now folders on disk; the others' files take the careful path."""
        made: set[str] = set()
        with FolderCache(self.ctx.root) as folders:
            for entry, record in group:
                path = record.path
                if (
                    entry.op != "mkdir"
                    or touched[path] != 1
                    or any(a not in made and a in touched for a in _ancestors(path))
                ):
                    continue
                plan = self._new_folder(entry, record, folders)
                if plan is not None:
                    try:
                        written = make_folder(folders, path, record.mode or 0o755)
                    except (ConflictError, UnsafePathError):
                        pass  # something appeared there: the careful path below decides
                    else:
                        self.overlay.put(_entry_for(written, record, plan.merged, plan.own))
                        self.report.pulled += 1
                        self._unsynced = True
                        made.add(path)
                        continue
                folders.close()  # the careful path may move things: walk afresh after it
                await self._apply_entry(entry, record, pre)
                disk = observe(self.ctx.root, path)
                if disk is not None and disk.kind is Kind.DIR:
                    made.add(path)
        return made

    def _new_folder(self, entry: ChangeEntry, record: EntryRecord, folders: FolderCache) -> _Plan | None:
        """The plan for a mkdir that supersedes what was last synced at a path where nothing is now
        (made without an fsync of its own); None for anything else. The path is looked at through
        ``folders``."""
        path = record.path
        if self.rules.is_ignored(path, True):
            return None
        base = self.overlay.get(path)
        vv = VersionVector(entry.vv)
        if not _supersedes(vv, base):
            return None
        disk = observe(folders, path)
        if disk is not None or locally_changed(base, disk):
            return None
        merged = (base.vv if base is not None else VersionVector()).merge(vv)
        return _Plan(entry, record, disk, merged, vv)

    def _plain_take(
        self, entry: ChangeEntry, record: EntryRecord, pre: dict[ChunkId, bytes], folders: FolderCache
    ) -> _Plan | None:
        """The plan for a put that only replaces what was last synced with a newer small file whose
        chunks are all fetched; None for anything else (applied one by one, the careful way).
        ``folders``: the planning's open folders (the path is looked at through them)."""
        if entry.op != "put" or record.deleted or record.kind.as_kind() is not Kind.FILE:
            return None
        path = record.path
        if self.rules.is_ignored(path) or not all_prefetched(record, pre) or self._stubbed(path):
            return None
        base = self.overlay.get(path)
        vv = VersionVector(entry.vv)
        if not _supersedes(vv, base):
            return None
        disk = observe(folders, path)
        if locally_changed(base, disk) or (disk is not None and disk.kind is not Kind.FILE):
            return None
        merged = (base.vv if base is not None else VersionVector()).merge(vv)
        return _Plan(entry, record, disk, merged, vv)

    async def _write_batch(
        self, plans: list[_Plan], pre: dict[ChunkId, bytes]
    ) -> list[tuple[ChangeEntry, EntryRecord]]:
        """Stage, sync, rename; index rows go to the overlay. Returns the entries whose destination
        changed meanwhile, for the careful path."""
        with FolderCache(self.ctx.root) as folders:  # each folder walked once for the whole batch
            return await self._write_batch_in(plans, pre, folders)

    async def _write_batch_in(
        self, plans: list[_Plan], pre: dict[ChunkId, bytes], root: FolderCache
    ) -> list[tuple[ChangeEntry, EntryRecord]]:
        loop = asyncio.get_running_loop()

        def stage_slice(part: list[_Plan]) -> list[StagedFile | BaseException]:
            out: list[StagedFile | BaseException] = []
            for p in part:
                try:
                    out.append(stage(root, p.record.path, p.record, p.disk, pre))
                except BaseException as exc:  # noqa: BLE001 - every temp of the batch must be accounted for
                    out.append(exc)
            return out

        # A slice of files per thread call: a hop per small file cost more than writing it.
        slices = [plans[i : i + _SLICE] for i in range(0, len(plans), _SLICE)]
        staged = [
            s
            for part in await asyncio.gather(*(loop.run_in_executor(None, stage_slice, p) for p in slices))
            for s in part
        ]
        ready = [s for s in staged if isinstance(s, StagedFile)]
        failed = [s for s in staged if isinstance(s, BaseException)]
        if failed:
            for s in ready:
                s.file.abort()
            raise failed[0]
        published = await loop.run_in_executor(None, publish, root, ready)
        refused: list[tuple[ChangeEntry, EntryRecord]] = []
        for plan, written in zip(plans, published, strict=True):
            if isinstance(written, ConflictError):
                refused.append((plan.entry, plan.record))
                continue
            self.overlay.put(_entry_for(written, plan.record, plan.merged, plan.own))
            if is_conflict_copy(plan.record.path):
                self.overlay.conflicts.append((original_of(plan.record.path), plan.record.path))
            self.report.pulled += 1
        return refused

    async def _prefetch(self, ids: list[ChunkId]) -> dict[ChunkId, bytes]:
        """Fetch the group's small chunks in a few batched requests and verify each (off the loop).
        A chunk absent or damaged is left out: the file's writer fetches it again and names the file."""
        if not ids:
            return {}
        blobs = await self.ctx.hub_store.get_many(ids)
        fetched = sum(len(v) for v in blobs.values())
        self.report.downloaded_bytes += fetched
        if self.progress is not None:
            self.progress(fetched)
        loop = asyncio.get_running_loop()

        def open_one(cid: ChunkId, blob: bytes) -> bytes | None:
            try:
                return self.ctx.store.open(cid, blob)
            except CorruptChunkError:
                return None

        def open_slice(part: list[tuple[ChunkId, bytes]]) -> list[bytes | None]:
            return [open_one(cid, blob) for cid, blob in part]

        items = list(blobs.items())
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(self.ctx.executor, open_slice, items[i : i + _SLICE])
                for i in range(0, len(items), _SLICE)
            )
        )
        opened = [data for part in parts for data in part]
        return {cid: data for cid, data in zip(blobs, opened, strict=True) if data is not None}

    # -- one entry -----------------------------------------------------------------------

    async def _apply_entry(
        self, entry: ChangeEntry, record: EntryRecord, pre: dict[ChunkId, bytes], *, strict: bool = False
    ) -> None:
        try:
            await self._apply_entry_unnamed(entry, record, pre, strict=strict)
        except CorruptChunkError as exc:  # a damaged or tampered chunk: say which file, write nothing
            raise CorruptChunkError(f"{record.path}: {exc.message}", hint=exc.hint) from exc

    async def _apply_entry_unnamed(
        self, entry: ChangeEntry, record: EntryRecord, pre: dict[ChunkId, bytes], *, strict: bool
    ) -> None:
        vv = VersionVector(entry.vv)
        if entry.op == "rename":
            src = record.from_path or ""
            if self._fast_rename(src, record, vv):
                return
            await self._apply_version(record.path, record, vv, pre, strict=strict)
            tomb = EntryRecord(RecordKind.TOMBSTONE, src, record.device, mtime_ns=record.mtime_ns)
            await self._apply_version(src, tomb, vv, pre)
            return
        await self._apply_version(record.path, record, vv, pre, strict=strict)

    def _fast_rename(self, src: str, record: EntryRecord, vv: VersionVector) -> bool:
        """Move the local file instead of downloading it again, when both ends are as last synced."""
        base_src, base_dst = self.overlay.get(src), self.overlay.get(record.path)
        if (
            base_src is None
            or base_src.deleted
            or base_src.kind is not Kind.FILE
            or base_src.manifest != record.manifest
            or vv.compare(base_src.vv) is not Order.AFTER
            or (base_dst is not None and not base_dst.deleted)
            or self.rules.is_ignored(src)
            or self.rules.is_ignored(record.path)
        ):
            return False
        try:
            disk = self._observe(src)
            if locally_changed(base_src, disk) or disk is None or self._observe(record.path):
                return False
            if disk.stub:  # a stub moves by being written at the new name, naming the new path
                moved = write_stub(self.ctx.root, self._stub(record))
                remove_stub(self.ctx.root, src, self.ctx.arena_id)
            else:
                moved = rename(self.ctx.root, src, record.path, expected=disk.stat_key())
        except (ConflictError, UnsafePathError, NotFoundError):
            return False
        dst_vv = vv.merge(base_dst.vv) if base_dst is not None else vv
        self.overlay.put(_entry_for(moved, record, dst_vv, vv))
        src_vv = base_src.vv.merge(vv)
        self.overlay.put(replace(base_src, deleted=True, vv=src_vv, own_vv=vv, origin=record.device))
        self.report.pulled += 1
        return True

    async def _apply_version(
        self,
        path: str,
        remote: EntryRecord,
        vv: VersionVector,
        pre: dict[ChunkId, bytes],
        *,
        strict: bool = False,
    ) -> None:
        if self.rules.is_ignored(path, remote.kind is RecordKind.DIR):
            return
        base = self.overlay.get(path)
        base_vv = base.vv if base is not None else VersionVector()
        order = vv.compare(base_vv)
        if order in (Order.EQUAL, Order.BEFORE):
            return
        merged = base_vv.merge(vv)
        # Newer than the version at the path (not only than every vector seen there): it supersedes it.
        supersedes = base is None or vv.compare(base.version_vv) is Order.AFTER
        try:
            disk = self._observe(path)
            if (disk is not None and disk.stub) or not locally_changed(base, disk):  # a stub is no edit
                if supersedes:
                    await self._take(path, remote, merged, vv, disk, pre, base)
                else:
                    assert base is not None
                    await self._hub_conflict(path, base, remote, merged, vv, disk, pre)
            else:
                await self._local_conflict(path, base, remote, merged, vv, disk, pre)
        except (ConflictError, UnsafePathError) as exc:
            if strict:
                raise
            self.report.skipped.append(f"{path}: {exc.message}")

    async def _take(
        self,
        path: str,
        remote: EntryRecord,
        merged: VersionVector,
        own: VersionVector,
        disk: ScanEntry | None,
        pre: dict[ChunkId, bytes],
        base: IndexEntry | None,
        *,
        retry: bool = True,
    ) -> None:
        """Make the disk hold the remote version (the local side is as last synced, or gone)."""
        root = self.ctx.root
        if remote.deleted:
            kind = base.kind if base is not None else (disk.kind if disk is not None else Kind.FILE)
            tomb = _tombstone(path, kind, merged, own, remote.device, remote.mtime_ns)
            if disk is not None and disk.stub:
                remove_stub(root, path, self.ctx.arena_id)
            elif disk is not None:
                try:
                    remove_version(root, path, expected=disk)
                except ConflictError as exc:
                    # Not empty (or just edited): keep it; the index keeps the delete, the scan re-pushes it.
                    self.report.skipped.append(f"{path}: kept ({exc.message})")
            self.overlay.put(tomb)
            if is_conflict_copy(path):
                self.overlay.resolved.append(path)
            self.report.pulled += 1
            return
        try:
            written = self._take_stub(path, remote, disk)
            if written is None:
                real = None if disk is not None and disk.stub else disk
                written = await write_version(
                    root, path, remote, self.ctx.store, expected=real, prefetched=pre
                )
                if self.progress is not None and remote.size >= _SMALL:
                    self.progress(remote.size)  # fetched while written, not ahead
                if disk is not None and disk.stub:
                    remove_stub(root, path, self.ctx.arena_id)  # the content replaced it
        except ConflictError:
            if not retry:
                raise
            now = self._observe(path)  # the user got there first: treat it as a local edit
            await self._local_conflict(path, base, remote, merged, own, now, pre)
            return
        self.overlay.put(_entry_for(written, remote, merged, own))
        if is_conflict_copy(path):
            self.overlay.conflicts.append((original_of(path), path))
        self.report.pulled += 1

    async def _hub_conflict(
        self,
        path: str,
        base: IndexEntry,
        remote: EntryRecord,
        merged: VersionVector,
        own: VersionVector,
        disk: ScanEntry | None,
        pre: dict[ChunkId, bytes],
    ) -> None:
        """Two hub versions raced; every device keeps the same winner. Only the device that wrote
        the loser moves it aside (it is the one that has it), and pushes the copy."""
        mine = _version_of_index(base)
        theirs = _version_of_record(remote, own, base.kind)
        plan = plan_conflict(path, mine, theirs, self.ctx.policy)
        if plan.keep is mine:
            if base.origin == self.ctx.device and not base.deleted:
                # The hub's newest change at this path is the loser; commit the winner again on top of
                # both, so the hub's tree (and a device that joins later) shows what every device keeps.
                self.overlay.put(_stale(replace(base, vv=merged, own_vv=base.version_vv)))
            else:
                self.overlay.put(replace(base, vv=merged, own_vv=base.version_vv))
            return
        if (
            plan.copy_path
            and base.origin == self.ctx.device
            and disk is not None
            and disk.kind is not Kind.DIR
            and not disk.stub  # a dehydrated loser is in the hub's history, there is nothing to copy
        ):
            copy_path = self._free_name(plan.copy_path)
            move_aside(self.ctx.root, path, copy_path, expected=disk)
            self.overlay.conflicts.append((path, copy_path))
            self.report.conflicts.append(copy_path)
            disk = None
        await self._take(path, remote, merged, own, disk, pre, base)

    def _observe(self, path: str) -> ScanEntry | None:
        """What is at ``path``: the file itself or, in folder mode, its stub."""
        disk = observe(self.ctx.root, path)
        if self.folder is None:
            return disk
        target = target_of(path)
        if (
            disk is not None
            and target is not None
            and not holds_content(self.overlay.get(path))
            and observe_stub(self.ctx.root, target, self.ctx.arena_id)
        ):
            disk = None  # what is at X.shoal is the stub of X, not a file X.shoal
        return disk or observe_stub(self.ctx.root, path, self.ctx.arena_id)

    def _stubbed(self, path: str) -> bool:
        """True if ``path`` is or becomes a stub (the careful path handles it)."""
        return self.folder is not None and (
            self.folder.wants_stub(path) or observe_stub(self.ctx.root, path, self.ctx.arena_id) is not None
        )

    def _stub(self, remote: EntryRecord) -> Stub:
        digest = remote.decoded_manifest().file_hash
        return Stub(
            self.ctx.arena_id, remote.path, remote.size, remote.mtime_ns, remote.mode or 0o644, digest
        )

    def _take_stub(self, path: str, remote: EntryRecord, disk: ScanEntry | None) -> ScanEntry | None:
        """Write or update ``path``'s stub when the file stays online-only here; None when its content
        is wanted instead (pinned or cached, or a file of the user's holds the stub's name)."""
        if (
            self.folder is None
            or remote.kind is not RecordKind.FILE
            or (disk is not None and not disk.stub)
            or not self.folder.wants_stub(path)
        ):
            return None
        try:
            written = write_stub(self.ctx.root, self._stub(replace(remote, path=path)), durable=False)
        except ConflictError:
            return None
        self._unsynced = True  # one syncfs for the group's stubs, before its index rows
        return written

    def _free_name(self, copy_path: str) -> str:
        """The conflict-copy name, or ``NAME.sync-conflict-…-DEV.2.EXT`` if a copy of that name
        (another loser by the same device in the same second) is already there."""
        if observe(self.ctx.root, copy_path) is None:
            return copy_path
        head, sep, name = copy_path.rpartition("/")
        stem, ext = split_extension(name)
        for n in itertools.count(2):
            candidate = f"{head}{sep}{stem}.{n}{ext}"
            if observe(self.ctx.root, candidate) is None:
                return candidate
        raise AssertionError("unreachable")  # pragma: no cover

    async def _local_conflict(
        self,
        path: str,
        base: IndexEntry | None,
        remote: EntryRecord,
        merged: VersionVector,
        own: VersionVector,
        disk: ScanEntry | None,
        pre: dict[ChunkId, bytes],
    ) -> None:
        """The disk holds something this device has not pushed; it is never thrown away."""
        if disk is None:
            if remote.deleted:  # deleted on both sides
                kind = base.kind if base is not None else Kind.FILE
                self.overlay.put(_tombstone(path, kind, merged, own, remote.device, remote.mtime_ns))
                return
            await self._take(
                path, remote, merged, own, None, pre, base, retry=False
            )  # the edit beats the delete
            return
        if remote.deleted:  # edited here, deleted there: the edit stays and is pushed again
            self.overlay.put(_tombstone(path, disk.kind, merged, own, remote.device, remote.mtime_ns))
            return
        if same_thing(self.ctx.root, disk, remote, self.key):
            self.overlay.put(_entry_for(disk, remote, merged, own))
            if is_conflict_copy(path):
                self.overlay.conflicts.append((original_of(path), path))
            return
        local_key = disk_content_key(self.ctx.root, disk, self.key) or b""
        mine = Version(
            self.ctx.device, disk.mtime_ns, base.vv if base else VersionVector(), disk.kind, False, local_key
        )
        theirs = _version_of_record(remote, own, disk.kind)
        plan = plan_conflict(path, mine, theirs, ConflictPolicy.KEEP_BOTH)
        if plan.keep is theirs:
            if plan.copy_path:
                copy_path = self._free_name(plan.copy_path)
                move_aside(self.ctx.root, path, copy_path, expected=disk)
                self.overlay.conflicts.append((path, copy_path))
                self.report.conflicts.append(copy_path)
            await self._take(path, remote, merged, own, None, pre, base, retry=False)
            return
        if plan.copy_path:
            copy = replace(remote, path=plan.copy_path)
            try:
                await write_version(
                    self.ctx.root, plan.copy_path, copy, self.ctx.store, expected=None, prefetched=pre
                )
                self.overlay.conflicts.append((path, plan.copy_path))
                self.report.conflicts.append(plan.copy_path)
            except ConflictError:
                pass  # the copy is already there (an earlier, interrupted round made it)
        # Remember the remote vector so the local edit's push supersedes it instead of racing it.
        if base is not None and not base.deleted:
            self.overlay.put(replace(base, vv=merged, own_vv=base.version_vv))
        else:
            self.overlay.put(_tombstone(path, disk.kind, merged, own, remote.device, remote.mtime_ns))


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _superseded(entries: list[ChangeEntry]) -> set[int]:
    """Entries a later, non-conflicting change of the same path in this page replaces entirely."""
    raced = {e.path_key for e in entries if e.conflict_with is not None}  # losers may need copies: no skips
    later_clean: set[str] = set()
    out: set[int] = set()
    for i in range(len(entries) - 1, -1, -1):
        e = entries[i]
        if e.op == "rename":
            later_clean.discard(e.path_key)
            if e.to_path_key:
                later_clean.discard(e.to_path_key)
            continue
        if e.path_key in later_clean and e.path_key not in raced:
            out.add(i)
            continue
        if e.conflict_with is None:
            later_clean.add(e.path_key)
    return out


async def pull(ctx: ArenaContext, report: SyncReport, progress: Callable[[int], None] | None = None) -> None:
    await Puller(ctx, report, progress).run()
