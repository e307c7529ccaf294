"""Push: scan by stat, upload new content, detect renames, commit with a journalled idempotency key.

Order of one push: replay journalled commits a kill interrupted; scan; check
deletion safety (a missing or emptied root pauses, a mass delete waits for
confirmation); ingest changed files (chunks reach the hub before any commit
names them); commit in batches, each journalled first; record each commit in
the index in the same transaction that clears its journal row.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from shoal.engine.context import ENGINE_PREFIXES, HELD_PREFIX, SAFETY_PREFIX, ArenaContext, SyncReport
from shoal.engine.cursor import note_commit, skip_own_commits
from shoal.engine.folder import FolderMode, apply_stubs
from shoal.engine.hints import hinted_scope
from shoal.engine.journal import CommitBatch
from shoal.engine.records import EntryRecord, RecordKind
from shoal.engine.smallfiles import ingest_many
from shoal.errors import ChunkMissingError, PausedError, ShoalError
from shoal.model.vv import VersionVector
from shoal.net.schemas_sync import MAX_COMMIT_CHANGES, ChangeIn
from shoal.net.sync import new_idempotency_key
from shoal.reconcile.coalesce import Batch
from shoal.reconcile.kinds import Kind
from shoal.reconcile.safety import Identity, detect_moves
from shoal.state.index import IndexEntry, PushState, Residency
from shoal.worktree.atomic import remove_temp
from shoal.worktree.entries import ScanEntry, StatKey
from shoal.worktree.ignore import ARENA_MARKER, is_git_locked
from shoal.worktree.scan import ScanResult, compare, scan_tree

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class _Planned:
    change: ChangeIn
    after: list[IndexEntry]


async def replay_journal(ctx: ArenaContext, report: SyncReport) -> None:
    """Finish commits a killed push left: same key, so the hub creates nothing twice."""
    for pending in ctx.index.pending_pushes():
        try:
            batch = CommitBatch.decode(pending.payload)
            await ctx.client.commit(ctx.arena_id, batch.changes, idempotency_key=batch.key)
        except ChunkMissingError:
            # The chunks never all arrived: forget the batch, the next scan pushes those paths again.
            with ctx.index.batch() as b:
                b.journal_done([pending.id])
            continue
        with ctx.index.batch() as b:
            b.put(batch.after)
            b.journal_done([pending.id])
        report.pushed += len(batch.changes)


def check_root(ctx: ArenaContext, scan: ScanResult, indexed: int) -> None:
    """Pause (recorded for ``shoal status``) when the root is missing, unreadable or suddenly empty."""
    where = str(ctx.root.root)
    reason: str | None = None
    if scan.root_missing:
        reason = (
            f"the arena folder {where} is missing (an unmounted disk?); nothing is deleted until it is back"
        )
    elif "" in scan.unreadable:
        reason = f"the arena folder {where} cannot be read; nothing is deleted until it can"
    elif _suddenly_empty(ctx, scan, indexed):
        reason = (
            f"the arena folder {where} is empty but {indexed} synced paths were in it; nothing is deleted "
            "until files reappear, or run `shoal sync --confirm-deletes` to delete them everywhere"
        )
    if reason is not None:
        ctx.registry.set_paused(ctx.arena_id, SAFETY_PREFIX + reason)
        raise PausedError(f"arena {ctx.arena.name!r} paused: {reason}")
    if not has_marker(ctx):
        write_marker(ctx)
    current = ctx.registry.get(ctx.arena_id).paused_reason
    if current is not None and current.startswith(ENGINE_PREFIXES):
        ctx.registry.set_paused(ctx.arena_id, None)


def _suddenly_empty(ctx: ArenaContext, scan: ScanResult, indexed: int) -> bool:
    """Empty of synced paths and without the marker: a user who empties the folder leaves the marker,
    a bare mount point (the disk is not mounted) has none."""
    if scan.entries or scan.collisions or indexed == 0 or ctx.options.confirm_deletes:
        return False
    return not has_marker(ctx)


def has_marker(ctx: ArenaContext) -> bool:
    return (ctx.root.root / ARENA_MARKER).is_file()


def write_marker(ctx: ArenaContext) -> None:
    """Mark the root as this arena's (the marker is never synced)."""
    with contextlib.suppress(OSError):
        (ctx.root.root / ARENA_MARKER).write_text(f"shoal arena {ctx.arena_id}\n")


def _under(path: str, folders: Iterable[str]) -> bool:
    return any(path == f or path.startswith(f + "/") for f in folders)


def _locked_git_dirs(ctx: ArenaContext, scan: ScanResult) -> set[str]:
    locked = set()
    for path, entry in scan.entries.items():
        if entry.kind is Kind.DIR and path.rpartition("/")[2] == ".git":
            repo = ctx.root.root / path.rpartition("/")[0] if "/" in path else ctx.root.root
            if is_git_locked(Path(repo)):
                locked.add(path)
    return locked


def _hold_mass_deletes(ctx: ArenaContext, deleted: list[str], indexed: int, report: SyncReport) -> list[str]:
    """The deletes to push now: none while a mass delete waits for ``--confirm-deletes``."""
    opts = ctx.options
    many = len(deleted) >= opts.delete_min_entries and indexed >= opts.delete_min_entries
    if not many or len(deleted) / indexed <= opts.delete_share or opts.confirm_deletes:
        return deleted
    report.held_deletes = len(deleted)
    reason = (
        f"{len(deleted)} of {indexed} synced paths were deleted here; they are kept everywhere else "
        "until you run `shoal sync --confirm-deletes`"
    )
    ctx.registry.set_paused(ctx.arena_id, HELD_PREFIX + reason)
    return []


def _marked_again(ctx: ArenaContext, scan: ScanResult, listed: set[str], locked: set[str]) -> list[ScanEntry]:
    """Unchanged paths the pull marked to be committed again (a race won here, a restored hub)."""
    out = []
    for marked in ctx.index.dirty():
        again = scan.entries.get(marked.path)
        if (
            again is not None
            and not marked.deleted
            and again.path not in listed
            and not _under(again.path, locked)
        ):
            out.append(again)
    return out


def _identity_of_index(e: IndexEntry) -> Identity:
    return Identity(e.kind, e.inode, e.size, e.mtime_ns)


def _identity_of_scan(e: ScanEntry) -> Identity:
    return Identity(e.kind, e.inode, e.size, e.mtime_ns)


async def _scan(
    ctx: ArenaContext, batch: Batch | None, report: SyncReport
) -> tuple[ScanResult, Mapping[str, StatKey], int]:
    """The scan, the index rows it is compared with, and the arena's live count: everything, or
    only the hinted paths and the rows at and below them. What it cannot sync goes to ``report``."""
    rules = ctx.ignore_rules()
    scope = await asyncio.to_thread(hinted_scope, ctx, batch, rules) if batch else None
    if scope is not None:
        scan, keys, indexed = scope.scan, scope.index_keys, scope.indexed
    else:
        scan = await asyncio.to_thread(scan_tree, ctx.root, ignore=rules.scanner_filter)
        keys = await asyncio.to_thread(ctx.index.stat_keys)
        indexed = len(keys)
    report.unsyncable += [f"{p.path}: {p.reason}" for p in scan.problems]
    report.whole_scan = report.whole_scan or scope is None
    return scan, keys, indexed


async def push(
    ctx: ArenaContext, report: SyncReport, progress: Progress | None = None, batch: Batch | None = None
) -> None:
    """Push what changed: everything a full scan finds, or, given the watcher's ``batch``, what
    changed at those paths (``engine/hints.py`` says when a hint is not enough). The cursor then
    moves past this push's own commits if nothing else came in between (``engine/cursor.py``)."""
    await _push_changes(ctx, report, progress, batch)
    await skip_own_commits(ctx, report)


async def _push_changes(
    ctx: ArenaContext, report: SyncReport, progress: Progress | None, batch: Batch | None
) -> None:
    await replay_journal(ctx, report)
    scan, index_keys, indexed = await _scan(ctx, batch, report)
    for temp in scan.temp_files:
        with contextlib.suppress(ShoalError, OSError):
            remove_temp(ctx.root, temp)
    stubs = await asyncio.to_thread(apply_stubs, ctx, scan, index_keys)  # stand for files, never content
    check_root(ctx, scan, indexed)
    diff = compare(index_keys, scan)
    locked = _locked_git_dirs(ctx, scan)
    if locked:
        report.skipped += [f"{g}: git holds a lock; synced once it is released" for g in sorted(locked)]
    upserts = [e for e in diff.new + diff.changed if not _under(e.path, locked)]
    upserts += _marked_again(ctx, scan, {e.path for e in upserts}, locked)
    deleted = [p for p in diff.deleted if not _under(p, locked)]
    upserts = stubs.drop_stubs(ctx, upserts, report)
    if not upserts and not deleted:
        return
    known = ctx.index.get_many([e.path for e in upserts] + deleted)

    # Renames: a path that vanished shows up elsewhere with the same inode, size and mtime.
    gone = {p: _identity_of_index(known[p]) for p in deleted if known[p].kind is Kind.FILE}
    appeared = {e.path: _identity_of_scan(e) for e in upserts if e.kind is Kind.FILE and e.path not in known}
    moves = dict(detect_moves(gone, appeared))
    moves.update((src, dst) for src, dst in stubs.moves.items() if src in gone and dst not in moves.values())
    moved_to = set(moves.values())
    deleted = [p for p in deleted if p not in moves]
    upserts = [e for e in upserts if e.path not in moved_to]

    deleted = _hold_mass_deletes(ctx, deleted, indexed, report)

    scanned = {e.path: e for e in upserts}
    renamed = {dst: scan.entries[dst] for dst in moved_to}
    tombstones = ctx.index.get_many(list(moved_to))
    # Order for the devices that apply it: folders before what they hold, renames before the deletes
    # of the folders they leave, deletes deepest first, and a folder turned into a file or symlink
    # only once its old content is deleted.
    replacing: list[_Planned] = []

    def planned(entries: Iterable[ScanEntry], manifests: Mapping[str, bytes]) -> list[_Planned]:
        out: list[_Planned] = []
        for entry in sorted(entries, key=lambda e: e.path):
            prior = known.get(entry.path)
            manifest = manifests.get(entry.path) if entry.kind is Kind.FILE else None
            if entry.kind is Kind.FILE and manifest is None:
                continue  # changed while read, vanished or unreadable: the next round sees it
            plan = _put(ctx, entry, prior, manifest)
            was_dir = prior is not None and not prior.deleted and prior.kind is Kind.DIR
            (replacing if was_dir and entry.kind is not Kind.DIR else out).append(plan)
        return out

    async def files_ready(manifests: dict[str, bytes]) -> None:
        await _commit_all(ctx, planned((scanned[p] for p in manifests), manifests), report)

    # Folders and symlinks first; then each group of files as soon as its chunks are on the hub.
    await _commit_all(ctx, planned((e for e in upserts if e.kind is not Kind.FILE), {}), report)
    await ingest_many(ctx, [e for e in upserts if e.kind is Kind.FILE], report, progress, files_ready)
    plans = [
        _rename(ctx, known[src], renamed[dst], tombstones.get(dst)) for src, dst in sorted(moves.items())
    ]
    plans += [_delete(ctx, known[path]) for path in sorted(deleted, key=lambda p: (-p.count("/"), p))]
    await _commit_all(ctx, plans + replacing, report)
    stubs.rewrite_moved(ctx)


async def _commit_all(ctx: ArenaContext, plans: list[_Planned], report: SyncReport) -> None:
    _settle_residency(ctx, plans)
    for start in range(0, len(plans), MAX_COMMIT_CHANGES):
        await _commit(ctx, plans[start : start + MAX_COMMIT_CHANGES], report)
        report.pushed += len(plans[start : start + MAX_COMMIT_CHANGES])


def _settle_residency(ctx: ArenaContext, plans: list[_Planned]) -> None:
    """Folder mode: new and edited paths get their own or their folder's residency."""
    folder = FolderMode.for_round(ctx)
    if folder is not None:
        for plan in plans:
            plan.after[:] = folder.settle_all(plan.after)


def _bumped(ctx: ArenaContext, *bases: IndexEntry | None) -> tuple[VersionVector, VersionVector]:
    base = VersionVector()
    for entry in bases:
        if entry is not None:
            base = base.merge(entry.vv)
    return base, base.bump(ctx.device)


def _change(
    ctx: ArenaContext, op: str, record: EntryRecord, base: VersionVector, vv: VersionVector, **extra: object
) -> ChangeIn:
    fields: dict[str, object] = {
        "op": op,
        "path_key": ctx.codec.path_key(record.from_path or record.path),
        "record": ctx.codec.encode(record),
        "chunks": record.chunk_ids(),
        "base_vv": base.to_dict(),
        "vv": vv.to_dict(),
        "device": ctx.device,
    }
    if ctx.codec.sends_paths:
        fields["path"] = record.from_path or record.path
    fields.update(extra)
    return ChangeIn.model_validate(fields)


def _put(ctx: ArenaContext, entry: ScanEntry, prior: IndexEntry | None, manifest: bytes | None) -> _Planned:
    base, vv = _bumped(ctx, prior)
    kind = RecordKind(entry.kind.value)
    record = EntryRecord(
        kind=kind,
        path=entry.path,
        device=ctx.device,
        size=entry.size if kind is RecordKind.FILE else 0,
        mode=entry.mode,
        mtime_ns=entry.mtime_ns,
        target=entry.target,
        manifest=manifest,
    )
    op = {RecordKind.FILE: "put", RecordKind.DIR: "mkdir", RecordKind.SYMLINK: "symlink"}[kind]
    after = IndexEntry(
        path=entry.path,
        kind=entry.kind,
        size=record.size,
        mtime_ns=entry.mtime_ns,
        inode=entry.inode,
        mode=entry.mode,
        target=entry.target,
        manifest=manifest,
        vv=vv,
        origin=ctx.device,
    )
    return _Planned(_change(ctx, op, record, base, vv), [after])


def _rename(ctx: ArenaContext, src: IndexEntry, dst: ScanEntry, dst_prior: IndexEntry | None) -> _Planned:
    base, vv = _bumped(ctx, src, dst_prior)
    record = EntryRecord(
        kind=RecordKind.FILE,
        path=dst.path,
        device=ctx.device,
        size=src.size,
        mode=dst.mode,
        mtime_ns=dst.mtime_ns,
        manifest=src.manifest,
        from_path=src.path,
    )
    extra: dict[str, object] = {"to_path_key": ctx.codec.path_key(dst.path)}
    if ctx.codec.sends_paths:
        extra["to_path"] = dst.path
    moved = IndexEntry(
        path=dst.path,
        kind=Kind.FILE,
        size=src.size,
        mtime_ns=dst.mtime_ns,
        inode=dst.inode,
        mode=dst.mode,
        manifest=src.manifest,
        vv=vv,
        residency=Residency.ONLINE_ONLY if dst.stub else src.residency,
        origin=ctx.device,
    )
    tomb = replace(src, deleted=True, vv=vv, origin=ctx.device, dirty=False)
    return _Planned(_change(ctx, "rename", record, base, vv, **extra), [moved, tomb])


def _delete(ctx: ArenaContext, prior: IndexEntry) -> _Planned:
    base, vv = _bumped(ctx, prior)
    now = time.time_ns()
    record = EntryRecord(kind=RecordKind.TOMBSTONE, path=prior.path, device=ctx.device, mtime_ns=now)
    tomb = replace(prior, deleted=True, vv=vv, origin=ctx.device, mtime_ns=now, dirty=False)
    return _Planned(_change(ctx, "delete", record, base, vv), [tomb])


async def _commit(ctx: ArenaContext, plans: list[_Planned], report: SyncReport) -> None:
    batch = CommitBatch(
        key=new_idempotency_key(),
        changes=[p.change for p in plans],
        after=[e for p in plans for e in p.after],
    )
    with ctx.index.batch() as b:
        push_id = b.journal_add(f"{len(plans)} changes", "commit", batch.encode())
        b.journal_mark(push_id, PushState.UPLOADED)
    result = await ctx.client.commit(ctx.arena_id, batch.changes, idempotency_key=batch.key)
    with ctx.index.batch() as b:
        b.put(batch.after)
        b.journal_done([push_id])
    note_commit(report, [c.op for c in batch.changes], result)
