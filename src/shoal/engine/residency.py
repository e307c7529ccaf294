"""``pin``, ``unpin``, ``hydrate``, ``dehydrate`` and residency status of paths in folder mode.

Every command holds the arena's sync lock (the same ``flock`` a sync round
takes), so a push never sees a half-made swap between a file and its stub.
Each file is swapped in an order that a kill at any point leaves the old
state, the new state, or both side by side, never neither:

* hydrate: content written to a temp file (every chunk verified), fsynced,
  renamed to ``NAME`` (never over anything); index row; stub removed. A stub
  left next to its file is stale and the next push removes it.
* dehydrate: stub written; ``NAME`` removed only if its stat is still the one
  the index synced (an edit made meanwhile stays, and the new stub goes);
  index row. A stub whose row still describes the file only refreshes the row.

Dehydrate refuses, naming the path, anything not safely on the hub: a local
edit since the last sync, a path marked dirty, a file the index does not
know, a pending push, a chunk the hub lacks. A pinned file that is
dehydrated becomes unpinned (the report says so).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Protocol

from shoal.engine.arenalock import arena_lock as sync_lock
from shoal.engine.context import ArenaContext
from shoal.engine.disk import locally_changed, observe, record_of, write_version
from shoal.engine.folder import RESIDENCY_SETTING, stub_of
from shoal.errors import ConflictError, CorruptChunkError, NotFoundError, ShoalError
from shoal.model.ids import ChunkId
from shoal.model.manifest import Manifest
from shoal.reconcile.kinds import Kind
from shoal.state.arenas import ArenaRecord, ArenaRegistry
from shoal.state.db import DeviceDB
from shoal.state.index import ArenaIndex, IndexEntry, Residency
from shoal.worktree.atomic import delete
from shoal.worktree.paths import ArenaRoot
from shoal.worktree.stub import observe_stub, remove_stub, target_of, write_stub

HYDRATE_PARALLEL = 8  # files fetched and written at once
SMALL_FILE = 4 * 1024 * 1024 + 1  # files under this are fetched ahead, a group at a time
PREFETCH_BYTES = 32 * 1024 * 1024


def arena_lock(
    ctx: ArenaContext, on_wait: Callable[[], None] | None = None
) -> AbstractAsyncContextManager[None]:
    """The arena's sync lock, waited for (``on_wait`` is told once the wait gets long)."""
    return sync_lock(ctx.db, ctx.arena_id, ctx.arena.name, on_wait=on_wait)


class ArenaView(Protocol):
    """What reading residency needs of an arena (an ``ArenaContext`` is one; so is a ``LocalArena``)."""

    @property
    def arena(self) -> ArenaRecord: ...
    @property
    def arena_id(self) -> str: ...
    @property
    def index(self) -> ArenaIndex: ...
    @property
    def registry(self) -> ArenaRegistry: ...
    @property
    def root(self) -> ArenaRoot: ...


@dataclass(frozen=True, slots=True)
class LocalArena:
    """An arena on this device read without the hub (``shoal status PATH``)."""

    arena: ArenaRecord
    index: ArenaIndex
    registry: ArenaRegistry
    root: ArenaRoot

    @classmethod
    def open(cls, db: DeviceDB, arena: ArenaRecord) -> LocalArena:
        return cls(arena, ArenaIndex(db, arena.arena_id), ArenaRegistry(db), ArenaRoot(arena.root))

    @property
    def arena_id(self) -> str:
        return self.arena.arena_id


@dataclass(slots=True)
class ResidencyReport:
    changed: list[str] = field(default_factory=list)  # what was done, one line per path
    refused: list[str] = field(default_factory=list)  # "PATH: why", nothing done there
    bytes_fetched: int = 0


@dataclass(frozen=True, slots=True)
class PathStatus:
    path: str
    kind: Kind
    residency: Residency  # a folder: pinned or online-only (unpinned)
    size: int  # a folder: the files below it
    files: int  # files at or below the path
    local: int  # of which the content is on disk


def resolve_path(ctx: ArenaView, path: str) -> IndexEntry | None:
    """The live index entry ``path`` means (``NAME.shoal`` means ``NAME`` when that is a stub here);
    None for the arena's top."""
    if path in ("", "."):
        return None
    entry = ctx.index.get(path)
    if entry is None or entry.deleted:
        target = target_of(path)
        other = ctx.index.get(target) if target is not None else None
        if other is not None and not other.deleted:
            return other
        raise NotFoundError(f"{path!r} is not a synced path of arena {ctx.arena.name!r}")
    return entry


def _below(ctx: ArenaView, top: IndexEntry | None) -> list[IndexEntry]:
    if top is None:
        return list(ctx.index.entries())
    if top.kind is not Kind.DIR:
        return [top]
    return list(ctx.index.entries(top.path))


def _set_default(ctx: ArenaContext, residency: Residency) -> None:
    settings = dict(ctx.registry.get(ctx.arena_id).settings)
    settings[RESIDENCY_SETTING] = residency.value
    ctx.registry.update_settings(ctx.arena_id, settings)


def _put(ctx: ArenaContext, rows: Iterable[IndexEntry]) -> None:
    rows = list(rows)
    if rows:
        with ctx.index.batch() as b:
            b.put(rows)


def _content_local(ctx: ArenaView, entry: IndexEntry) -> bool:
    disk = observe(ctx.root, entry.path)
    if disk is None or disk.kind is not Kind.FILE:
        return False
    target = target_of(entry.path)  # a file named X.shoal may be the stub of X, not this file
    return not (
        entry.residency is Residency.ONLINE_ONLY
        and target is not None
        and observe_stub(ctx.root, target, ctx.arena_id) is not None
    )


async def hydrate_file(
    ctx: ArenaContext,
    entry: IndexEntry,
    residency: Residency,
    prefetched: Mapping[ChunkId, bytes] | None = None,
) -> int:
    """Put ``entry``'s content in place of its stub; returns the bytes fetched (0: already local)."""
    root = ctx.root
    if _content_local(ctx, entry):
        if entry.residency is Residency.ONLINE_ONLY:  # a file written over its stub, not yet pushed
            raise ConflictError(
                f"{entry.path!r} holds a local version that is not pushed yet",
                hint="run `shoal sync --once` first",
            )
        if entry.residency is not residency:
            _put(ctx, [replace(entry, residency=residency)])
        return 0
    if observe_stub(root, entry.path, ctx.arena_id) is None:
        raise NotFoundError(
            f"{entry.path!r} is neither on disk nor a stub here (deleted locally?)",
            hint="run `shoal sync --once` first",
        )
    try:
        written = await write_version(
            root, entry.path, record_of(entry, entry.origin), ctx.store, expected=None, prefetched=prefetched
        )
    except ShoalError as exc:
        exc.message = f"{entry.path!r}: {exc.message} (its stub was kept)"
        raise
    _put(
        ctx,
        [
            replace(
                entry, mtime_ns=written.mtime_ns, inode=written.inode, mode=written.mode, residency=residency
            )
        ],
    )
    remove_stub(root, entry.path, ctx.arena_id)
    return written.size


def _why_not_pushed(ctx: ArenaContext, entry: IndexEntry) -> str | None:
    if entry.dirty:
        return "it has a change not yet pushed; run `shoal sync --once` first"
    if entry.manifest is None:
        return "the index holds no content for it"
    disk = observe(ctx.root, entry.path)
    if disk is not None and locally_changed(entry, disk):
        return "it was edited here since it was last synced; run `shoal sync --once` first"
    return None


def dehydrate_file(ctx: ArenaContext, entry: IndexEntry) -> bool:
    """Replace the synced, unchanged file by its stub; False if it already was one."""
    root = ctx.root
    disk = observe(root, entry.path)
    if disk is None:
        if observe_stub(root, entry.path, ctx.arena_id) is None:
            raise NotFoundError(f"{entry.path!r} is not on disk here; run `shoal sync --once` first")
        if entry.residency is not Residency.ONLINE_ONLY:
            _put(ctx, [replace(entry, residency=Residency.ONLINE_ONLY)])
        return False
    stub = write_stub(root, stub_of(entry, ctx.arena_id))
    try:
        delete(root, entry.path, expected=disk.stat_key())
    except ShoalError:
        remove_stub(root, entry.path, ctx.arena_id)
        raise
    _put(ctx, [replace(entry, mtime_ns=stub.mtime_ns, inode=stub.inode, residency=Residency.ONLINE_ONLY)])
    return True


async def hydrate(
    ctx: ArenaContext, paths: list[str], *, pin: bool = False, on_wait: Callable[[], None] | None = None
) -> ResidencyReport:
    """Fetch the content of every stub at or below ``paths``; with ``pin`` also pin them (and their
    folders, so files arriving later are fetched too). Unpinned files become cached."""
    report = ResidencyReport()
    async with arena_lock(ctx, on_wait):
        tops = [resolve_path(ctx, p) for p in paths]
        for top in tops:
            if pin and top is None:
                _set_default(ctx, Residency.PINNED)
            entries = _below(ctx, top)
            for entry in entries:
                if entry.kind is Kind.DIR:
                    await _hydrate_one(ctx, entry, pin, report)
            await _hydrate_files(ctx, [e for e in entries if e.kind is Kind.FILE], pin, report)
    report.changed.sort()
    return report


async def _hydrate_files(
    ctx: ArenaContext, files: list[IndexEntry], pin: bool, report: ResidencyReport
) -> None:
    """Each file is swapped on its own (its own index row), so files go side by side; every task is
    awaited before the caller releases the lock."""
    gate = asyncio.Semaphore(HYDRATE_PARALLEL)

    async def one(entry: IndexEntry, pre: Mapping[ChunkId, bytes]) -> None:
        async with gate:
            await _hydrate_one(ctx, entry, pin, report, pre)

    # X.shoal waits for X, whose stub holds its name (in path order, after everything else).
    paths = {e.path for e in files}
    later = [e for e in files if target_of(e.path) in paths]
    waiting = {e.path for e in later}
    for group in _groups([e for e in files if e.path not in waiting]):
        pre = await _prefetch(ctx, group)
        results = await asyncio.gather(*(one(e, pre) for e in group), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
    for entry in later:
        await _hydrate_one(ctx, entry, pin, report)


def _groups(files: list[IndexEntry]) -> Iterator[list[IndexEntry]]:
    """Files in groups whose small files' content is fetched ahead together (up to 32 MiB)."""
    group: list[IndexEntry] = []
    budget = 0
    for entry in files:
        group.append(entry)
        budget += entry.size if entry.size < SMALL_FILE else 0
        if budget >= PREFETCH_BYTES or len(group) >= 1000:
            yield group
            group, budget = [], 0
    if group:
        yield group


async def _prefetch(ctx: ArenaContext, group: list[IndexEntry]) -> dict[ChunkId, bytes]:
    """The chunks of the group's small stubs, in a few batched requests, each verified; a chunk
    absent or damaged is left out (the file's writer fetches it again and fails naming the file)."""
    ids: dict[ChunkId, None] = {}
    for entry in group:
        if entry.size < SMALL_FILE and entry.manifest is not None and not _content_local(ctx, entry):
            ids.update((ref.id, None) for ref in Manifest.decode(entry.manifest).chunks)
    if not ids:
        return {}
    blobs = await ctx.hub_store.get_many(list(ids))
    opened: dict[ChunkId, bytes] = {}
    for cid, blob in blobs.items():
        with contextlib.suppress(CorruptChunkError):
            opened[cid] = ctx.store.open(cid, blob)
    return opened


async def _hydrate_one(
    ctx: ArenaContext,
    entry: IndexEntry,
    pin: bool,
    report: ResidencyReport,
    prefetched: Mapping[ChunkId, bytes] | None = None,
) -> None:
    if entry.kind is Kind.DIR:
        if pin and entry.residency is not Residency.PINNED:
            _put(ctx, [replace(entry, residency=Residency.PINNED)])
            report.changed.append(f"{entry.path}/: pinned")
        return
    if entry.kind is not Kind.FILE:
        return
    wanted = Residency.PINNED if pin or entry.residency is Residency.PINNED else Residency.CACHED
    try:
        fetched = await hydrate_file(ctx, entry, wanted, prefetched)
    except ShoalError as exc:  # the stub stays; the others go on
        report.refused.append(str(exc))
        return
    report.bytes_fetched += fetched
    if fetched or wanted is not entry.residency:
        report.changed.append(
            f"{entry.path}: {wanted.value}" + (f", {fetched} bytes fetched" if fetched else "")
        )


async def unpin(
    ctx: ArenaContext, paths: list[str], *, on_wait: Callable[[], None] | None = None
) -> ResidencyReport:
    """Unpin: content stays (cached) until `dehydrate`; new files below arrive as stubs."""
    report = ResidencyReport()
    async with arena_lock(ctx, on_wait):
        for top in [resolve_path(ctx, p) for p in paths]:
            if top is None:
                _set_default(ctx, Residency.ONLINE_ONLY)
            rows = []
            for entry in _below(ctx, top):
                if entry.kind is Kind.DIR and entry.residency is Residency.PINNED:
                    rows.append(replace(entry, residency=Residency.ONLINE_ONLY))
                elif entry.kind is not Kind.DIR and entry.residency is Residency.PINNED:
                    rows.append(replace(entry, residency=Residency.CACHED))
                else:
                    continue
                report.changed.append(f"{entry.path}{'/' if entry.kind is Kind.DIR else ''}: unpinned")
            _put(ctx, rows)
    return report


async def dehydrate(
    ctx: ArenaContext, paths: list[str], *, on_wait: Callable[[], None] | None = None
) -> ResidencyReport:
    """Turn the clean, pushed files at or below ``paths`` into stubs; refuse (and keep) the rest."""
    report = ResidencyReport()
    async with arena_lock(ctx, on_wait):
        tops = [resolve_path(ctx, p) for p in paths]
        entries = [e for top in tops for e in _below(ctx, top)]
        if any(top is None for top in tops):
            _set_default(ctx, Residency.ONLINE_ONLY)
        pending = bool(ctx.index.pending_pushes())
        files = [e for e in entries if e.kind is Kind.FILE]
        unsafe = await _not_on_hub(ctx, files)
        for entry in entries:
            if entry.kind is Kind.DIR:
                if entry.residency is Residency.PINNED:
                    _put(ctx, [replace(entry, residency=Residency.ONLINE_ONLY)])
                    report.changed.append(f"{entry.path}/: unpinned")
                continue
            if entry.kind is not Kind.FILE:
                continue
            why = "a push is still pending; run `shoal sync --once` first" if pending else None
            why = why or unsafe.get(entry.path) or _why_not_pushed(ctx, entry)
            if why is not None:
                report.refused.append(f"{entry.path}: {why}")
                continue
            try:
                done = dehydrate_file(ctx, entry)
            except ShoalError as exc:
                report.refused.append(f"{entry.path}: {exc.message}")
                continue
            if done:
                note = " (was pinned: now unpinned)" if entry.residency is Residency.PINNED else ""
                report.changed.append(f"{entry.path}: online-only{note}")
    return report


async def _not_on_hub(ctx: ArenaContext, files: list[IndexEntry]) -> dict[str, str]:
    """Files some chunk of which the hub does not hold: their local copy may be the only one."""
    by_chunk: dict[str, list[str]] = {}
    for entry in files:
        if entry.manifest is not None and entry.residency is not Residency.ONLINE_ONLY:
            for ref in Manifest.decode(entry.manifest).chunks:
                by_chunk.setdefault(ref.id.hex(), []).append(entry.path)
    missing = await ctx.client.missing_chunks(sorted(by_chunk)) if by_chunk else []
    return {
        path: "the hub lacks some of its content; it stays here (run `shoal sync --once`)"
        for cid in missing
        for path in by_chunk[cid]
    }


def status(ctx: ArenaView, paths: list[str]) -> list[PathStatus]:
    """Residency, size and local presence of each path (a folder: totals of the files below)."""
    found: list[PathStatus] = []
    for path in paths:
        try:
            top = resolve_path(ctx, path)
        except NotFoundError:
            continue  # not synced (new, ignored): nothing to say about its residency
        files = [e for e in _below(ctx, top) if e.kind is Kind.FILE]
        local = sum(1 for e in files if _content_local(ctx, e))
        size = sum(e.size for e in files)
        if top is None:
            default = ctx.registry.get(ctx.arena_id).settings.get(RESIDENCY_SETTING, "pinned")
            found.append(PathStatus("", Kind.DIR, Residency(default), size, len(files), local))
        elif top.kind is Kind.FILE:
            found.append(PathStatus(top.path, top.kind, top.residency, top.size, 1, local))
        else:
            found.append(PathStatus(top.path, top.kind, top.residency, size, len(files), local))
    return found
