"""SQLAlchemy's aiosqlite adapter with one trip to the connection's thread per statement.

aiosqlite runs each SQLite connection in its own thread; SQLAlchemy's adapter
makes a trip there (queue, wake the thread, wake the event loop) for every
DBAPI call: create the cursor, execute, fetch, close. A trip costs far more
CPU than a small indexed statement, so here one trip does all four.

Transaction-control statements that return nothing (``BEGIN …``,
``SAVEPOINT x``, ``RELEASE SAVEPOINT x``) wait on the connection and run in
the same trip as the next statement, commit or rollback, in their order: the
database sees exactly the same sequence of statements, and a write
transaction still takes SQLite's lock (``BEGIN IMMEDIATE``) before its first
statement. A rollback drops what is waiting, since it undoes all of it, and
skips the trip entirely when SQLite has no transaction open.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable, Sequence
from threading import Thread
from types import ModuleType
from typing import Any, TypeVar

import aiosqlite
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

T = TypeVar("T")

_DEFERRED_PREFIXES = ("BEGIN", "SAVEPOINT ", "RELEASE SAVEPOINT ")

# What one trip brings back: description, rowcount, lastrowid, rows.
_Outcome = tuple[Any, int, int | None, list[Any]]


def _deferrable(operation: str, parameters: object) -> bool:
    return not parameters and operation.lstrip().upper().startswith(_DEFERRED_PREFIXES)


def _run_pending(raw: sqlite3.Connection, pending: Sequence[str]) -> None:
    for statement in pending:
        raw.execute(statement).close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A client-side cursor whose execute is one trip: cursor, execute, fetchall and close together."""

    __slots__ = ("_outcome", "_size")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:  # no trip here
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._rows = collections.deque()
        self._soft_closed_memoized = EMPTY_DICT
        self._outcome: _Outcome = (None, -1, None, [])
        self._size = 1

    @property
    def arraysize(self) -> int:
        return self._size

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._size = value

    @property
    def description(self) -> Any:
        return self._outcome[0]

    @property
    def rowcount(self) -> int:
        return self._outcome[1]

    @property
    def lastrowid(self) -> Any:
        return self._outcome[2]

    async def _async_soft_close(self) -> None:
        return None  # rows are already fetched and the sqlite3 cursor closed

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        connection = self._adapt_connection
        assert isinstance(connection, OneTripConnection)
        if _deferrable(operation, parameters):
            connection.pending.append(operation)
            self._outcome = (None, -1, None, [])
            return None
        pending = connection.take_pending()
        raw = self._connection._conn

        def run() -> _Outcome:
            _run_pending(raw, pending)
            cursor = raw.execute(operation) if parameters is None else raw.execute(operation, parameters)
            try:
                rows = cursor.fetchall() if cursor.description else []
                return cursor.description, cursor.rowcount, cursor.lastrowid, rows
            finally:
                cursor.close()

        self._outcome = connection.trip(run)
        self._rows = collections.deque(self._outcome[3])
        return None

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        connection = self._adapt_connection
        assert isinstance(connection, OneTripConnection)
        pending = connection.take_pending()
        raw = self._connection._conn

        def run() -> _Outcome:
            _run_pending(raw, pending)
            cursor = raw.executemany(operation, seq_of_parameters)
            try:
                return None, cursor.rowcount, cursor.lastrowid, []
            finally:
                cursor.close()

        self._outcome = connection.trip(run)
        self._rows.clear()
        return None


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """An aiosqlite connection whose cursors take one trip per statement (see the module notes)."""

    __slots__ = ("pending",)

    _cursor_cls = OneTripCursor  # type: ignore[assignment]  # the base names its own cursor class

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.pending: list[str] = []

    def take_pending(self) -> list[str]:
        pending, self.pending = self.pending, []
        return pending

    def trip(self, fn: Any) -> Any:
        """Run ``fn`` on the connection's thread and wait for it (from SQLAlchemy's greenlet)."""
        try:
            return await_(self._connection._execute(fn))
        except Exception as error:  # noqa: BLE001 - re-raised as SQLAlchemy expects (the base adapter's way)
            self._handle_exception(error)

    def commit(self) -> None:
        if not self._connection._connection:
            return
        pending = self.take_pending()
        raw: sqlite3.Connection = self._connection._conn
        if not raw.in_transaction and all(p.lstrip().upper().startswith("BEGIN") for p in pending):
            return  # the transaction never ran a statement: nothing to commit

        def run() -> None:
            _run_pending(raw, pending)
            raw.commit()

        self.trip(run)

    def rollback(self) -> None:
        self.pending.clear()  # undone by the rollback anyway
        if not self._connection._connection or not self._connection._conn.in_transaction:
            return
        super().rollback()


async def run_on_thread(conn: AsyncConnection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` with the plain ``sqlite3`` connection on its own thread, in one trip.

    The transaction-control statements waiting on the connection (the ``BEGIN
    IMMEDIATE`` of a write) run first, in the same trip. What ``fn`` raises
    comes back as is; a failure of the waiting statements comes back as
    SQLAlchemy's error, as from any other statement.
    """
    adapted: object = (await conn.get_raw_connection()).dbapi_connection
    if not isinstance(adapted, OneTripConnection):
        raise TypeError("run_on_thread needs a connection of the one-trip SQLite driver")
    pending = adapted.take_pending()
    raw: sqlite3.Connection = adapted._connection._conn

    def run() -> tuple[bool, Any]:
        try:
            _run_pending(raw, pending)
        except sqlite3.Error as error:
            return False, error
        return True, fn(raw)

    ran, value = await adapted._connection._execute(run)
    if not ran:
        raise sa.exc.DBAPIError.instance(None, None, value, sqlite3.Error)
    result: T = value
    return result


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module handed to SQLAlchemy (``create_async_engine(url, module=...)``)."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        connection = self.aiosqlite.connect(*arg, **kw)
        thread = connection if isinstance(connection, Thread) else connection._thread
        thread.daemon = True
        return OneTripConnection(self, await_(connection))


def one_trip_dbapi() -> OneTripDBAPI:
    sqlite_module: ModuleType = sqlite3
    return OneTripDBAPI(aiosqlite, sqlite_module)
