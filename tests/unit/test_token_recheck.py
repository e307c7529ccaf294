"""Watchers woken together share one token check, and still learn at once when a token died."""

from __future__ import annotations

import asyncio

import pytest

from shoal.errors import AuthError
from shoal.hub.auth.recheck import TokenRecheck


class Checks:
    """A token check that takes a little time, like a database read, and counts its calls."""

    def __init__(self, valid: set[str]) -> None:
        self.valid = valid
        self.calls: list[str] = []

    async def __call__(self, token: str) -> None:
        self.calls.append(token)
        await asyncio.sleep(0.01)
        if token not in self.valid:
            raise AuthError("the access token is not valid")


async def _watchers_woken_together_share_one_check() -> None:
    checks = Checks({"a", "b"})
    recheck = TokenRecheck(checks, min_interval=60)
    await asyncio.gather(*(recheck(t) for t in ["a"] * 200 + ["b"] * 50))
    assert sorted(checks.calls) == ["a", "b"]
    await recheck("a")
    assert len(checks.calls) == 2  # checked within the interval: not read again


async def _a_revoked_token_fails_every_watcher_sharing_the_check() -> None:
    checks = Checks({"a"})
    recheck = TokenRecheck(checks, min_interval=0)
    await recheck("a")
    checks.valid.clear()  # revoked
    outcomes = await asyncio.gather(*(recheck("a") for _ in range(20)), return_exceptions=True)
    assert all(isinstance(o, AuthError) for o in outcomes)
    assert len(checks.calls) == 2


async def _a_cancelled_check_leaves_the_other_watchers_checking_for_themselves() -> None:
    checks = Checks({"a"})
    recheck = TokenRecheck(checks, min_interval=60)
    first = asyncio.create_task(recheck("a"))
    await asyncio.sleep(0)  # the first watcher's check is in flight
    others = [asyncio.create_task(recheck("a")) for _ in range(5)]
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.gather(*others)  # none of them saw the cancellation
    assert len(checks.calls) == 2


def test_watchers_woken_together_share_one_check() -> None:
    asyncio.run(_watchers_woken_together_share_one_check())


def test_a_revoked_token_fails_every_watcher_sharing_the_check() -> None:
    asyncio.run(_a_revoked_token_fails_every_watcher_sharing_the_check())


def test_a_cancelled_check_leaves_the_other_watchers_checking_for_themselves() -> None:
    asyncio.run(_a_cancelled_check_leaves_the_other_watchers_checking_for_themselves())
