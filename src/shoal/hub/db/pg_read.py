"""Small PostgreSQL reads straight on psycopg, for the one read every request makes.

The bearer-token check is one indexed select per request. Through SQLAlchemy's
execution machinery it cost the hub about as much CPU as the round trip itself;
here the statement is compiled once and sent as is on the pooled connection's
psycopg handle, in autocommit mode (the caller sets it), so it is one round
trip and its own snapshot of the latest committed state. Only plain column
types (integers, floats, text, NULL) come back as they are stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler


class PostgresReader:
    """Compiles each statement once for this dialect and reads its first row on psycopg."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._compiled: dict[sa.Select[Any], SQLCompiler] = {}

    async def first(
        self, conn: AsyncConnection, statement: sa.Select[Any], params: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        compiled = self._compiled.get(statement)
        if compiled is None:
            made = statement.compile(dialect=self._dialect)
            assert isinstance(made, SQLCompiler)
            compiled = self._compiled[statement] = made
        driver = (await conn.get_raw_connection()).driver_connection
        if not isinstance(driver, psycopg.AsyncConnection):
            raise TypeError("PostgresReader needs a psycopg connection")
        try:
            cursor = await driver.execute(compiled.string, compiled.construct_params(dict(params)))
            row = await cursor.fetchone()
        except psycopg.Error as exc:  # SQLAlchemy's error, as from any other statement
            raise sa.exc.DBAPIError.instance(compiled.string, None, exc, psycopg.Error) from exc
        if row is None:
            return None
        names = [column.name for column in cursor.description or ()]
        return dict(zip(names, row, strict=True))
