"""Group commit: concurrent commit requests share one database transaction, so one fsync serves many.

Each request runs inside its own SAVEPOINT, so a refused request (missing
chunk, bad path, reused key) rolls back alone and the others still land. No
request is answered before the shared transaction has committed: an
acknowledged commit is durable, and if the shared commit fails, every
request of the group gets the error and none is acknowledged.

One worker task per hub process drains the queue; while it writes, new
requests queue up and form the next group.

Work may come with a variant for the driver underneath (the commit does:
``hub.sync.commit_sqlite``, ``hub.sync.commit_postgres``), the same
statements without SQLAlchemy's execution machinery per statement. On SQLite
a group of those runs in one trip to the connection's thread; on PostgreSQL
each item runs in a psycopg pipeline, its savepoint sent along with its
reads and its release along with its writes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.hub.db.engine import HubDatabase
from shoal.hub.db.sqlite_driver import run_on_thread

T = TypeVar("T")
MAX_GROUP = 64


@dataclass(slots=True)
class _Pending:
    work: Callable[[AsyncConnection], Awaitable[Any]]
    on_sqlite: Callable[[sqlite3.Connection], Any] | None
    on_postgres: Callable[[psycopg.AsyncConnection[Any]], Awaitable[Any]] | None
    done: asyncio.Future[Any]


_Outcome = tuple[_Pending, Any, BaseException | None]


def _run_on_sqlite(raw: sqlite3.Connection, group: Sequence[_Pending]) -> list[_Outcome]:
    """``_run_each`` on the connection's thread, with plain ``sqlite3`` calls."""
    outcomes: list[_Outcome] = []
    for item in group:
        assert item.on_sqlite is not None
        raw.execute("SAVEPOINT shoal_item")
        try:
            value = item.on_sqlite(raw)
        except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
            raw.execute("ROLLBACK TO SAVEPOINT shoal_item")
            raw.execute("RELEASE SAVEPOINT shoal_item")
            outcomes.append((item, None, exc))
        else:
            raw.execute("RELEASE SAVEPOINT shoal_item")
            outcomes.append((item, value, None))
    return outcomes


async def _run_on_postgres(raw: psycopg.AsyncConnection[Any], group: Sequence[_Pending]) -> list[_Outcome]:
    """``_run_each`` with psycopg calls: each item pipelined, two round trips for a commit.

    Each item's pipeline is synced before the next item starts, so an item's failure
    (raised at its own sync) is never blamed on another, and rolls back only its savepoint.
    """
    outcomes: list[_Outcome] = []
    try:
        for item in group:
            assert item.on_postgres is not None
            try:
                async with raw.pipeline():
                    await raw.execute("SAVEPOINT shoal_item")
                    value = await item.on_postgres(raw)
                    await raw.execute("RELEASE SAVEPOINT shoal_item")
            except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
                await raw.execute("ROLLBACK TO SAVEPOINT shoal_item")
                await raw.execute("RELEASE SAVEPOINT shoal_item")
                error = (
                    sa.exc.DBAPIError.instance(None, None, exc, psycopg.Error)
                    if isinstance(exc, psycopg.Error)
                    else exc
                )
                outcomes.append((item, None, error))
            else:
                outcomes.append((item, value, None))
    except psycopg.Error as exc:  # the transaction itself failed: SQLAlchemy's error, as from any statement
        raise sa.exc.DBAPIError.instance(None, None, exc, psycopg.Error) from exc
    return outcomes


async def _postgres_connection(conn: AsyncConnection) -> psycopg.AsyncConnection[Any]:
    driver = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, psycopg.AsyncConnection):
        raise TypeError("the PostgreSQL group path needs a psycopg connection")
    return driver


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark an outcome as seen even when its request went away, so asyncio does not log it as lost."""
    if not future.cancelled():
        future.exception()


async def _run_each(conn: AsyncConnection, group: Sequence[_Pending]) -> list[_Outcome]:
    """Each item in its own savepoint, a refused one rolled back alone."""
    outcomes: list[_Outcome] = []
    for item in group:
        try:
            async with conn.begin_nested():
                outcomes.append((item, await item.work(conn), None))
        except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
            outcomes.append((item, None, exc))
    return outcomes


class CommitGroup:
    """Queue write work for the next shared transaction and await its own outcome."""

    def __init__(self, db: HubDatabase, max_group: int = MAX_GROUP) -> None:
        self._db = db
        self._max = max_group
        self._queue: list[_Pending] = []
        self._worker: asyncio.Task[None] | None = None

    async def run(
        self,
        work: Callable[[AsyncConnection], Awaitable[T]],
        on_sqlite: Callable[[sqlite3.Connection], T] | None = None,
        on_postgres: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]] | None = None,
    ) -> T:
        """Run ``work`` in the next group; on SQLite ``on_sqlite`` instead, on PostgreSQL
        ``on_postgres``, when given (same effect)."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_consume)
        self._queue.append(_Pending(work, on_sqlite, on_postgres, done))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        # Shielded: a client that hangs up does not pull its work out of a transaction half way.
        return await asyncio.shield(done)

    async def _drain(self) -> None:
        while self._queue:
            group, self._queue = self._queue[: self._max], self._queue[self._max :]
            await self._run_group(group)

    async def _run_group(self, group: list[_Pending]) -> None:
        one_trip = self._db.is_sqlite and all(item.on_sqlite is not None for item in group)
        pipelined = self._db.dialect == "postgresql" and all(item.on_postgres is not None for item in group)
        try:
            async with self._db.write() as conn:
                if one_trip:
                    outcomes = await run_on_thread(conn, lambda raw: _run_on_sqlite(raw, group))
                elif pipelined:
                    outcomes = await _run_on_postgres(await _postgres_connection(conn), group)
                else:
                    outcomes = await _run_each(conn, group)
        except BaseException as exc:  # the shared commit failed: nothing of this group is durable
            for item in group:
                if not item.done.done():
                    item.done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for item, result, error in outcomes:
            if item.done.done():
                continue
            if error is not None:
                item.done.set_exception(error)
            else:
                item.done.set_result(result)
