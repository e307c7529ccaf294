"""``ArenaSync``: one arena's sync on this device — push, pull, or a whole round.

The daemon drives ``push``/``pull`` as its watcher and the hub's announcements
say; ``shoal sync --once`` calls :meth:`ArenaSync.sync_once`. A round is:
finish journalled commits, push (scan, safety checks, upload, commit), pull
(apply, conflicts, cursor), and push again when the pull produced something
to send (a conflict copy, an edit that won).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from shoal.engine.arenalock import arena_lock
from shoal.engine.context import ENGINE_PREFIXES, SAFETY_PREFIX, ArenaContext, SyncOptions, SyncReport
from shoal.engine.pull import pull
from shoal.engine.push import push
from shoal.engine.records import ArenaCodec
from shoal.errors import PausedError
from shoal.net.sync import SyncClient
from shoal.reconcile.coalesce import Batch
from shoal.state.arenas import ArenaRecord
from shoal.state.db import DeviceDB
from shoal.store.sealed import Sealer

Progress = Callable[[int], None]


class ArenaSync:
    """Push and pull one joined arena. Not safe for concurrent calls: one round at a time."""

    def __init__(
        self,
        db: DeviceDB,
        arena: ArenaRecord,
        client: SyncClient,
        device: str,
        *,
        options: SyncOptions | None = None,
        codec: ArenaCodec | None = None,
        sealer: Sealer | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.ctx = ArenaContext(db, arena, client, device, options=options, codec=codec, sealer=sealer)
        self.progress = progress
        self.last_report = SyncReport()

    def _check_not_paused(self) -> None:
        """A pause the user asked for (not one of the engine's own safety pauses) stops everything."""
        reason = self.ctx.registry.get(self.ctx.arena_id).paused_reason
        if reason is not None and not reason.startswith(ENGINE_PREFIXES):
            raise PausedError(
                f"arena {self.ctx.arena.name!r} is paused: {reason}",
                hint=f"`shoal resume {self.ctx.arena.name}` resumes it",
            )

    def _check_root_for_pull(self) -> None:
        reason = self.ctx.registry.get(self.ctx.arena_id).paused_reason
        if not os.path.isdir(self.ctx.root.root):
            raise PausedError(
                f"arena {self.ctx.arena.name!r} paused: its folder {self.ctx.root.root} is missing; "
                "nothing is written or deleted until it is back"
            )
        if reason is not None and reason.startswith(SAFETY_PREFIX):
            raise PausedError(f"arena {self.ctx.arena.name!r} paused: {reason[len(SAFETY_PREFIX) :]}")

    def _exclusive(self) -> AbstractAsyncContextManager[None]:
        """One round at a time per arena on this device, across processes (the daemon and the CLI)."""
        return arena_lock(self.ctx.db, self.ctx.arena_id, self.ctx.arena.name)

    async def push(self, batch: Batch | None = None) -> None:
        """Commit local changes: those at the watcher's ``batch`` of paths, or everything a full
        rescan finds (``batch`` None). What it did is in :attr:`last_report`."""
        self._check_not_paused()
        report = SyncReport()
        self.last_report = report
        async with self._exclusive():
            await push(self.ctx, report, self.progress, batch)

    async def pull(self) -> None:
        """Apply every change after this device's cursor; what it did is in :attr:`last_report`."""
        self._check_not_paused()
        self._check_root_for_pull()
        report = SyncReport()
        self.last_report = report
        async with self._exclusive():
            await pull(self.ctx, report, self.progress)

    async def sync_once(self) -> SyncReport:
        """One full round: push, pull, and push what the pull left to send."""
        self._check_not_paused()
        async with self._exclusive():
            return await self._round()

    async def _round(self) -> SyncReport:
        report = SyncReport()
        await push(self.ctx, report, self.progress)
        self._check_root_for_pull()
        pulled = SyncReport()
        await pull(self.ctx, pulled, self.progress)
        report.merge(pulled)
        if pulled.conflicts or pulled.skipped or pulled.pulled:
            again = SyncReport()
            await push(self.ctx, again, self.progress)
            report.merge(again)
            report.held_deletes = again.held_deletes or report.held_deletes
        self.last_report = report
        return report

    async def aclose(self) -> None:
        self.ctx.close()
