"""Invariant check of one arena on this device: index vs disk vs hub. Tests end with it.

Problems found (each a sentence): a push left in the journal, a temp file at
rest, a path whose disk state differs from the index (an unpushed change), a
path on disk the index does not know, a hub head this device has not applied
or disagrees with, a path the index holds that the hub does not, a chunk a
manifest names that the hub lacks, a cursor past the hub's head.
"""

from __future__ import annotations

import asyncio

from shoal.engine.context import ArenaContext
from shoal.engine.folder import apply_stubs
from shoal.engine.records import RecordKind
from shoal.model.manifest import Manifest
from shoal.model.vv import Order, VersionVector
from shoal.state.index import IndexEntry
from shoal.worktree.entries import stat_changed
from shoal.worktree.scan import scan_tree


async def fsck(ctx: ArenaContext) -> list[str]:
    problems: list[str] = []
    index = ctx.index
    pending = index.pending_pushes()
    if pending:
        problems.append(f"{len(pending)} commit(s) still in the push journal")
    rules = ctx.ignore_rules()
    scan = await asyncio.to_thread(scan_tree, ctx.root, ignore=rules.scanner_filter)
    problems += [f"{t}: a temp file was left behind" for t in scan.temp_files]
    stubs = apply_stubs(ctx, scan, tidy=False)  # a stub is the on-disk form of an online-only file
    problems += [f"{s}: a stale stub next to its file" for s in stubs.stale]
    live = {e.path: e for e in index.entries()}
    for path, entry in live.items():
        disk = scan.entries.get(path)
        if disk is None:
            problems.append(f"{path}: in the index but not on disk")
        elif stat_changed(entry.stat_key(), disk):
            problems.append(f"{path}: changed on disk since it was synced")
    for path in scan.entries:
        if path not in live:
            problems.append(f"{path}: on disk but not in the index")

    problems += await _against_hub(ctx, live)
    return problems


async def _against_hub(ctx: ArenaContext, live: dict[str, IndexEntry]) -> list[str]:
    problems: list[str] = []
    index = ctx.index
    rules = ctx.ignore_rules()
    arena = await ctx.client.get_arena(ctx.arena_id)
    if index.cursor > arena.head:
        problems.append(f"the cursor {index.cursor} is past the hub's head {arena.head}")
    _, items = await ctx.client.tree(ctx.arena_id)
    on_hub: dict[str, VersionVector] = {}
    for item in items:
        record = ctx.codec.decode(item.change.record)
        if record.deleted:
            continue
        on_hub[record.path] = VersionVector(item.change.vv)
        have = live.get(record.path)
        if have is None and rules.is_ignored(record.path, record.kind is RecordKind.DIR):
            continue  # excluded on this device by its own rules
        if have is None:
            problems.append(f"{record.path}: on the hub but not in this device's index")
        elif have.vv.compare(on_hub[record.path]) in (Order.BEFORE, Order.CONCURRENT):
            problems.append(f"{record.path}: the hub has a version this device has not applied")
    wanted: set[str] = set()
    for path, entry in live.items():
        if path not in on_hub:
            problems.append(f"{path}: in this device's index but not on the hub")
        if entry.manifest is not None:
            wanted.update(ref.id.hex() for ref in Manifest.decode(entry.manifest).chunks)
    missing = await ctx.client.missing_chunks(sorted(wanted))
    problems += [f"chunk {cid} named by a manifest is not on the hub" for cid in missing]
    return problems
