"""This device's place in the hub's log: the cursor, its fingerprint, and moving it past own commits.

The pull keeps a fingerprint of the entry at the cursor, so a hub restored from
an older backup, whose log has since grown past the cursor again, is told apart
from the log the device read (seqs alone would match).

A push moves the cursor itself past what it committed when nothing else came
in between: every entry from the cursor on is then this device's own new
version, which the pull would read back only to drop as an echo (an initial
push of 20k files read 20k entries back, ~2 s of CPU).
"""

from __future__ import annotations

import contextlib

from blake3 import blake3

from shoal.engine.context import ArenaContext, SyncReport
from shoal.errors import ShoalError
from shoal.net.schemas_sync import ChangeEntry, CommitResult

# Changes whose echo the pull only drops: new versions of one path each. A rename is applied even
# as an echo (the pull checks the disk); deletes are left to the pull too, so a commit holding
# either is read back as before.
SKIPPABLE_OPS = frozenset({"put", "mkdir", "symlink"})


def fingerprint(entry: ChangeEntry) -> str:
    digest: str = blake3(
        entry.record + entry.device.encode() + repr(sorted(entry.vv.items())).encode()
    ).hexdigest()
    return digest[:32]


def remember(ctx: ArenaContext, entry: ChangeEntry) -> None:
    """Keep the fingerprint of ``entry``, the entry at the cursor."""
    settings = dict(ctx.registry.get(ctx.arena_id).settings)
    settings["cursor_mark"] = [entry.seq, fingerprint(entry)]
    ctx.registry.update_settings(ctx.arena_id, settings)


def note_commit(report: SyncReport, ops: list[str], result: CommitResult) -> None:
    """Record a commit the pull would only drop as echoes (see :func:`skip_own_commits`)."""
    if not result.conflicts and all(op in SKIPPABLE_OPS for op in ops):
        report.own_commits.append((result.first, result.last))


async def skip_own_commits(ctx: ArenaContext, report: SyncReport) -> None:
    """Move the cursor past this push's commits that directly follow it.

    Only a run of commits starting right after the cursor qualifies: any entry
    another device committed in between stops it, and the pull reads from
    there. The hub is asked for the entry at the new cursor, which must be this
    device's, to remember its fingerprint. Nothing is lost if this fails: the
    pull reads the entries and drops them."""
    start = cursor = ctx.index.cursor
    for first, last in sorted(report.own_commits):
        if first != cursor + 1:
            break
        cursor = last
    if cursor == start:
        return
    try:
        page = await ctx.client.changes(ctx.arena_id, cursor - 1, 1)
    except ShoalError:  # offline, a token that just expired, a compacted log: the pull decides
        return
    entry = page.entries[0] if page.entries else None
    if entry is None or entry.seq != cursor or entry.device != ctx.device:
        return
    with ctx.index.batch() as b:
        b.set_cursor(cursor)
    remember(ctx, entry)
    report.cursor = max(report.cursor, cursor)
    with contextlib.suppress(ShoalError):  # the next pull that moves the cursor acknowledges it
        await ctx.client.ack(ctx.arena_id, cursor)
