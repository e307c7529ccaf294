"""A group of writes on PostgreSQL in one trip to a thread of its own, like SQLite's one-trip groups.

Every commit of an arena waits for the arena's row lock, so groups of commits
run one after the other, and a group's length is what bounds the commit rate.
Run as coroutines on the event loop, each statement's answer waited behind
whatever else the loop had to do (the requests of every other client):
groups took 12 ms for one commit, 30 ms for eight, while the database needed
a fraction of it. Here a group runs on one thread, on one dedicated psycopg
connection, from ``BEGIN`` to ``COMMIT`` without waiting for the loop; the loop
goes on serving requests meanwhile.

The connection is opened on first use and checked before each group (a
server that ended it is noticed before a group is sent, as in the pool); a
group that fails on a broken connection fails for all its requests, none of
which is acknowledged, and the next group opens a fresh connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg

from shoal.hub.db.pg_pool import is_gone

T = TypeVar("T")


class PostgresWriter:
    """Runs write transactions, one at a time, on a dedicated connection and thread."""

    def __init__(self, connect_kwargs: dict[str, Any]) -> None:
        self._connect_kwargs = connect_kwargs
        self._conn: psycopg.Connection[Any] | None = None
        # One thread: the connection is only ever used from it, one transaction at a time.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-pg-writer")

    async def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``work`` in one transaction on the writer's thread: committed if it returns, else rolled back.

        A database failure comes back as ``psycopg.Error``; anything ``work`` raises comes back as is.
        """
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._transaction, work)

    def _transaction(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        conn = self._connection()
        try:
            with conn.transaction():
                return work(conn)
        except BaseException:
            if conn.broken or conn.closed:
                self._conn = None
            raise

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and is_gone(conn):
            conn.close()
            conn = None
        if conn is None:
            conn = self._conn = psycopg.connect(**self._connect_kwargs, autocommit=True)
        return conn

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
