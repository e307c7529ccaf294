"""Opening the hub database and running transactions on it.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL`` so a
committed transaction survives a kill -9 or power loss; writers inside one
process queue on an asyncio lock and start with ``BEGIN IMMEDIATE``, so a
write never fails half way on a lock held by another process (an admin
command), it waits up to ``busy_timeout`` instead. PostgreSQL uses psycopg 3.
Foreign driver errors become :class:`~shoal.errors.StorageError` here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shoal.errors import ConflictError, ShoalError, StorageError
from shoal.hub.config import redact_url
from shoal.hub.db.inline_read import InlineReader, Unavailable
from shoal.hub.db.pg_pool import check_on_checkout
from shoal.hub.db.pg_read import PostgresReader
from shoal.hub.db.pg_writer import PostgresWriter
from shoal.hub.db.sqlite_driver import one_trip_dbapi

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Connections kept open: each SQLite one is a thread plus four PRAGMAs to open, so the pool is sized
# for the concurrent requests of a busy hub and an overflow connection (closed again when it is
# returned) stays rare.
SQLITE_POOL_SIZE = 32
SQLITE_MAX_OVERFLOW = 32


class HubDatabase:
    """An async engine plus the discipline the hub needs: serialized SQLite writers, translated errors."""

    def __init__(self, engine: AsyncEngine, url: str, inline: InlineReader | None = None) -> None:
        self.engine = engine
        self.url = url
        self.dialect = engine.dialect.name
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._inline = inline
        self._postgres = PostgresReader(engine.dialect) if self.dialect == "postgresql" else None
        self._pg_writer: PostgresWriter | None = None
        if self.dialect == "postgresql":
            _, connect_kwargs = engine.dialect.create_connect_args(engine.url)  # what the pool connects with
            self._pg_writer = PostgresWriter(dict(connect_kwargs))

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (a consistent snapshot in both backends)."""
        try:
            async with self.engine.connect() as conn, conn.begin():
                yield conn
        except (ShoalError, asyncio.CancelledError):
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise _translate(exc, self.url) from exc

    async def read_one(self, statement: sa.Select[Any], params: dict[str, Any]) -> Mapping[str, Any] | None:
        """The first row of one small read-only statement (plain column types), its own snapshot.

        SQLite reads it on this thread (``hub.db.inline_read``), or else without BEGIN/COMMIT
        around it (one trip to a connection's thread instead of two); PostgreSQL in autocommit
        mode, straight on psycopg (``hub.db.pg_read``: one round trip instead of three).
        """
        if self._inline is not None:
            found = self._inline.first(statement, params)
            if not isinstance(found, Unavailable):
                return found
        try:
            async with self.engine.connect() as conn:
                if self._postgres is not None:  # one statement is its own snapshot: no BEGIN, no ROLLBACK
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                    return await self._postgres.first(conn, statement, params)
                if self._write_lock is not None:
                    await conn.execution_options(shoal_begin="")
                row = (await conn.execute(statement, params)).first()
                return None if row is None else dict(row._mapping)
        except (ShoalError, asyncio.CancelledError):
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise _translate(exc, self.url) from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block ends normally, rolled back otherwise."""
        if self._write_lock is None:
            async with self._transaction(immediate=False) as conn:
                yield conn
            return
        async with self._write_lock, self._transaction(immediate=True) as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(self, *, immediate: bool) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                if immediate:
                    await conn.execution_options(shoal_begin="BEGIN IMMEDIATE")
                async with conn.begin():
                    yield conn
        except (ShoalError, asyncio.CancelledError):
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise _translate(exc, self.url) from exc

    async def write_on_thread(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """PostgreSQL: ``work`` in one write transaction on a thread of its own (``hub.db.pg_writer``)."""
        if self._pg_writer is None:
            raise TypeError("write_on_thread is for PostgreSQL")
        try:
            return await self._pg_writer.run(work)
        except psycopg.Error as exc:
            raise _translate(sa.exc.DBAPIError.instance(None, None, exc, psycopg.Error), self.url) from exc

    async def close(self) -> None:
        if self._pg_writer is not None:
            await self._pg_writer.close()
        if self._inline is not None:
            self._inline.close()
        await self.engine.dispose()


def _translate(exc: sa.exc.SQLAlchemyError, url: str) -> ShoalError:
    if isinstance(exc, sa.exc.IntegrityError):
        return ConflictError(
            "the change collides with existing data", hint="it was probably made concurrently; retry"
        )
    text = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
    return StorageError(
        f"the hub database failed: {text}",
        hint=f"check that the database at {redact_url(url)} is reachable and has space",
    )


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Take transaction control away from the driver so BEGIN is ours (see _sqlite_on_begin).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    begin = conn.get_execution_options().get("shoal_begin", "BEGIN")
    if begin:  # "" (``read_one``): the statement runs in SQLite's autocommit mode, its own snapshot
        conn.exec_driver_sql(begin)


async def open_database(url: str) -> HubDatabase:
    """Open (and for SQLite, create the parent directory of) the database at ``url``."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the hub data directory for {path}: {exc.strerror}") from exc
        kwargs.update(pool_size=SQLITE_POOL_SIZE, max_overflow=SQLITE_MAX_OVERFLOW)
        if url.startswith("sqlite+aiosqlite"):
            kwargs["module"] = one_trip_dbapi()
    else:
        kwargs.update(pool_size=10, max_overflow=20)
    try:
        engine = create_async_engine(url, **kwargs)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StorageError(f"cannot open the hub database {redact_url(url)}: {exc}") from exc
    inline = None
    if engine.dialect.name == "postgresql":
        check_on_checkout(engine)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        path = url.split(":///", 1)[1]
        if path and ":memory:" not in path and "?" not in path:
            inline = InlineReader(path, engine.dialect)
    return HubDatabase(engine, url, inline)
