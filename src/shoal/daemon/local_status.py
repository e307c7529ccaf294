"""Status read from the device's own state when no daemon runs (``shoal status`` without a daemon)."""

from __future__ import annotations

from shoal.daemon.runner import is_user_pause
from shoal.daemon.status import ArenaState, ArenaStatus, DaemonStatus
from shoal.engine.context import HELD_PREFIX, SAFETY_PREFIX
from shoal.state.arenas import ArenaRegistry
from shoal.state.db import DeviceDB
from shoal.state.index import ArenaIndex
from shoal.worktree.paths import ArenaRoot
from shoal.worktree.watch import RootState, root_state


def local_status(db: DeviceDB, hub_url: str | None = None) -> DaemonStatus:
    arenas = []
    for record in ArenaRegistry(db).all():
        index = ArenaIndex(db, record.arena_id)
        state = ArenaState.STOPPED
        reason: str | None = None
        hint: str | None = "start syncing with `shoal daemon`"
        root = root_state(ArenaRoot(record.root))
        held = record.paused_reason or ""
        if held.startswith(HELD_PREFIX):
            reason = held.removeprefix(HELD_PREFIX)
            hint = "`shoal sync --confirm-deletes` deletes them everywhere; restoring the files cancels it"
        elif record.paused_reason:
            state, reason = ArenaState.PAUSED, record.paused_reason.removeprefix(SAFETY_PREFIX)
            hint = f"`shoal resume {record.name}`" if is_user_pause(reason) else None
        elif root is RootState.MISSING:
            state, reason = ArenaState.PAUSED, f"the folder {record.root} is missing; nothing is deleted"
            hint = "mount or restore the folder"
        elif root is RootState.EMPTY and index.count() > 0:
            state = ArenaState.PAUSED
            reason = f"the folder {record.root} is empty but had synced files; nothing is deleted"
            hint = "mount or restore the folder"
        arenas.append(
            ArenaStatus(
                arena_id=record.arena_id,
                name=record.name,
                root=str(record.root),
                state=state,
                reason=reason,
                hint=hint,
                pending=len(index.dirty()),
                conflicts=len(index.conflicts()),
                cursor=index.cursor,
                watch="stopped",
            )
        )
    return DaemonStatus(False, None, hub_url, arenas)
