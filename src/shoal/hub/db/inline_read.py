"""Small SQLite reads on the event loop's own thread, for the one read every request makes.

Checking a bearer token is one indexed select of a few rows' worth of pages
that stay in the page cache: it takes tens of microseconds, while a trip to an
aiosqlite thread (queue, wake the thread, wake the event loop) costs more
than that in CPU alone. So the hub keeps one plain ``sqlite3`` connection in
autocommit mode for such reads: each statement is its own snapshot of the
latest committed state, written by this process or any other (the admin
CLI), and nothing is cached between calls.

It never waits: ``busy_timeout`` is 0, and any SQLite error (a busy database
during WAL recovery, a call from another thread) answers :data:`UNAVAILABLE`,
so the caller reads through the ordinary connection pool instead. Only plain
column types (integers, floats, text, NULL) come back as they are stored.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler


class Unavailable:
    """The inline read could not run; read through the pool."""


UNAVAILABLE: Final = Unavailable()


class InlineReader:
    """One autocommit, query-only ``sqlite3`` connection, opened on first use by the first thread using it."""

    def __init__(self, path: str, dialect: Dialect) -> None:
        self._path = path
        self._dialect = dialect
        self._conn: sqlite3.Connection | None = None
        self._thread: int | None = None
        self._compiled: dict[sa.Select[Any], SQLCompiler] = {}

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA query_only=1")
            self._conn, self._thread = conn, threading.get_ident()
        return self._conn

    def first(
        self, statement: sa.Select[Any], params: Mapping[str, Any]
    ) -> Mapping[str, Any] | Unavailable | None:
        """The first row of ``statement`` as a mapping, None if there is none, or UNAVAILABLE."""
        if self._thread is not None and self._thread != threading.get_ident():
            return UNAVAILABLE
        compiled = self._compiled.get(statement)
        if compiled is None:
            made = statement.compile(dialect=self._dialect)
            assert isinstance(made, SQLCompiler)
            compiled = self._compiled[statement] = made
        values = compiled.construct_params(dict(params)) or {}
        args = [values[name] for name in compiled.positiontup or ()]
        try:
            cursor = self._connection().execute(compiled.string, args)
            try:
                row = cursor.fetchone()
                names = [column[0] for column in cursor.description]
            finally:
                cursor.close()
        except sqlite3.Error:
            return UNAVAILABLE
        return None if row is None else dict(zip(names, row, strict=True))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
