"""Rechecking the tokens of long-lived watchers without a database read per watcher.

A commit's announcement wakes every WebSocket and SSE watcher of the arena at
once. Each must learn whether its token is still valid, but a household's
watchers mostly share a few tokens: a token checked within the last
``min_interval`` seconds counts as valid, and watchers arriving while a check of
their token is in flight wait for that one check instead of starting their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

MAX_REMEMBERED = 10_000


class TokenRecheck:
    """``await recheck(token)`` returns if the token is valid and raises what ``check`` raised if not."""

    def __init__(self, check: Callable[[str], Awaitable[object]], min_interval: float) -> None:
        self._check = check
        self._min_interval = min_interval
        self._valid_at: dict[str, float] = {}
        self._in_flight: dict[str, asyncio.Future[None]] = {}

    async def __call__(self, token: str) -> None:
        while True:
            if time.monotonic() - self._valid_at.get(token, -self._min_interval) < self._min_interval:
                return
            shared = self._in_flight.get(token)
            if shared is None:
                break
            try:
                await asyncio.shield(shared)
                return
            except asyncio.CancelledError:
                if not shared.cancelled():
                    raise  # this watcher was cancelled; a cancelled shared check is retried instead
        await self._run_check(token)

    async def _run_check(self, token: str) -> None:
        started = time.monotonic()
        shared: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight[token] = shared
        try:
            await self._check(token)
        except Exception as exc:
            shared.set_exception(exc)
            shared.exception()  # seen: a failure nobody else awaited is not a lost error
            raise
        except BaseException:
            shared.cancel()
            raise
        finally:
            del self._in_flight[token]
        shared.set_result(None)
        if len(self._valid_at) >= MAX_REMEMBERED:
            self._valid_at.clear()
        self._valid_at[token] = started
