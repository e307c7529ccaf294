"""Announcing new cursors per arena to the WebSocket and SSE watchers of this hub process.

``Notifier`` is the interface; ``InProcessNotifier`` is the embedded default.
A NATS-backed notifier (several hub processes sharing one database) implements
the same two methods. Announcements coalesce: a slow watcher only ever sees
the newest cursor, never an unbounded queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol


class Subscription:
    """One watcher of one arena: waits for the newest announced cursor."""

    def __init__(self, arena_id: int) -> None:
        self.arena_id = arena_id
        self._latest = -1
        self._seen = -1
        self._event = asyncio.Event()

    def offer(self, cursor: int) -> None:
        if cursor > self._latest:
            self._latest = cursor
            self._event.set()

    async def next_cursor(self, timeout: float | None = None) -> int | None:
        """The newest cursor announced since the last call, or None after ``timeout`` seconds."""
        while self._latest <= self._seen:
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), timeout)
            except TimeoutError:
                return None
        self._seen = self._latest
        return self._latest


class Notifier(Protocol):
    def subscribe(self, arena_id: int) -> AbstractAsyncContextManager[Subscription]: ...

    async def publish(self, arena_id: int, cursor: int) -> None: ...

    async def close(self) -> None: ...


class InProcessNotifier:
    """Fan-out inside one hub process; commits call ``publish`` after their transaction committed."""

    def __init__(self) -> None:
        self._subs: dict[int, set[Subscription]] = {}

    @asynccontextmanager
    async def subscribe(self, arena_id: int) -> AsyncIterator[Subscription]:
        sub = Subscription(arena_id)
        self._subs.setdefault(arena_id, set()).add(sub)
        try:
            yield sub
        finally:
            watchers = self._subs.get(arena_id)
            if watchers is not None:
                watchers.discard(sub)
                if not watchers:
                    del self._subs[arena_id]

    async def publish(self, arena_id: int, cursor: int) -> None:
        for sub in list(self._subs.get(arena_id, ())):
            sub.offer(cursor)

    def watcher_count(self, arena_id: int | None = None) -> int:
        if arena_id is not None:
            return len(self._subs.get(arena_id, ()))
        return sum(len(s) for s in self._subs.values())

    async def close(self) -> None:
        self._subs.clear()
