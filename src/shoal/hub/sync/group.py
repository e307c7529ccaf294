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
in one trip to the database's writer thread (``hub.db.pg_writer``), all its
items together (``PostgresBatch``: ``hub.sync.commit_postgres`` reads for all
of them at once and writes for all of them at once).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.hub.db.engine import HubDatabase
from shoal.hub.db.sqlite_driver import run_on_thread

T = TypeVar("T")
MAX_GROUP = 64


@dataclass(slots=True)
class _Pending:
    work: Callable[[AsyncConnection], Awaitable[Any]]
    on_sqlite: Callable[[sqlite3.Connection], Any] | None
    on_postgres: PostgresBatch | None
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


@dataclass(frozen=True, slots=True)
class PostgresBatch:
    """Work a whole group can do together on PostgreSQL: ``run`` takes every item of the group.

    ``run`` gets the writer's connection, inside the group's transaction, and the items in
    order; it returns one (value, error) per item, and keeps a database failure of one item
    from the others (``hub.sync.commit_postgres`` rolls back and runs each alone).
    """

    run: Callable[[psycopg.Connection[Any], list[Any]], list[tuple[Any, BaseException | None]]]
    item: Any


def _one_batch(group: Sequence[_Pending]) -> PostgresBatch | None:
    """The group's PostgreSQL batch, if every item has one and all of the same kind."""
    first = group[0].on_postgres
    if first is None or any(item.on_postgres is None or item.on_postgres.run != first.run for item in group):
        return None
    return first


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
        on_postgres: PostgresBatch | None = None,
    ) -> T:
        """Run ``work`` in the next group; on SQLite ``on_sqlite`` instead, on PostgreSQL
        ``on_postgres`` with the group's other items of its kind, when given (same effect)."""
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
        batch = _one_batch(group) if self._db.dialect == "postgresql" else None
        try:
            if batch is not None:
                run = batch.run
                items = [item.on_postgres.item for item in group if item.on_postgres is not None]
                answers = await self._db.write_on_thread(lambda raw: run(raw, items))
                outcomes = [(item, value, error) for item, (value, error) in zip(group, answers, strict=True)]
            else:
                async with self._db.write() as conn:
                    if one_trip:
                        outcomes = await run_on_thread(conn, lambda raw: _run_on_sqlite(raw, group))
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
