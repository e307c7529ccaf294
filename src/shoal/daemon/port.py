"""What the daemon needs of the sync engine for one arena: push local changes, pull remote ones.

The daemon decides *when*; the engine decides *what*. Keeping the interface
this narrow lets the scheduler be tested on its own and lets the program
(``shoal daemon``) choose the engine it builds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from shoal.net.schemas_sync import StreamMessage
from shoal.reconcile.coalesce import Batch
from shoal.state.arenas import ArenaRecord


class ArenaSyncer(Protocol):
    async def push(self, batch: Batch | None) -> object:
        """Commit local changes: the paths of ``batch``, or (None) whatever a full rescan finds.

        Raises NetworkError when the hub is unreachable (nothing is lost: the
        daemon rescans on its next attempt), PausedError when deletion safety
        holds the arena back.
        """

    async def pull(self) -> object:
        """Fetch and apply every change after this device's cursor."""

    async def aclose(self) -> None:
        """Release what the syncer holds (threads, files); the daemon calls it once."""


class HubWatch(Protocol):
    def watch(self, arena_id: str, since: int = 0) -> AsyncIterator[StreamMessage]:
        """Announcements of new commits (``SyncClient.watch`` provides it)."""
        ...


SyncerFactory = Callable[[ArenaRecord], ArenaSyncer]
