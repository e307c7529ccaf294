"""The hub's SQLite access paths: one trip per statement, deferred BEGIN/SAVEPOINT, inline single reads."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import ConflictError
from shoal.hub.db.engine import HubDatabase, open_database
from shoal.hub.db.inline_read import InlineReader, Unavailable

meta = sa.MetaData()
items = sa.Table(
    "items",
    meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(32), nullable=False, unique=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
)
T = TypeVar("T")
BY_NAME = sa.select(items.c.id, items.c.revoked_at).where(items.c.name == sa.bindparam("name"))


async def _open(path: Path) -> HubDatabase:
    db = await open_database(f"sqlite+aiosqlite:///{path}")
    async with db.write() as conn:
        await conn.run_sync(meta.create_all)
    return db


def _run(path: Path, body: Callable[[HubDatabase], Awaitable[T]]) -> T:
    """Open a hub database at ``path`` with the test table, run ``body`` on it, close it."""

    async def main() -> T:
        db = await _open(path)
        try:
            return await body(db)
        finally:
            await db.close()

    return asyncio.run(main())


async def _insert_in_savepoint(conn: AsyncConnection, names: list[str]) -> None:
    async with conn.begin_nested():
        for name in names:
            await conn.execute(items.insert(), {"name": name})


async def _insert_in_transaction(db: HubDatabase, names: list[str]) -> None:
    async with db.write() as conn:
        for name in names:
            await conn.execute(items.insert(), {"name": name})


def test_a_failed_savepoint_rolls_back_alone_and_the_rest_commits(tmp_path: Path) -> None:
    async def main(db: HubDatabase) -> list[str]:
        async with db.write() as conn:
            await conn.execute(items.insert(), {"name": "a"})
            with pytest.raises(sa.exc.IntegrityError):
                await _insert_in_savepoint(conn, ["b", "a"])  # a duplicate: this savepoint fails
            async with conn.begin_nested():
                await conn.execute(items.insert(), {"name": "c"})
        async with db.read() as conn:
            return list((await conn.execute(sa.select(items.c.name).order_by(items.c.id))).scalars())

    assert _run(tmp_path / "hub.db", main) == ["a", "c"]


def test_a_failed_write_transaction_leaves_nothing_and_the_connection_usable(tmp_path: Path) -> None:
    async def main(db: HubDatabase) -> list[str]:
        with pytest.raises(ConflictError):
            await _insert_in_transaction(db, ["x", "x"])
        async with db.write() as conn:  # empty transactions commit fine
            pass
        async with db.read() as conn:
            pass
        async with db.write() as conn:
            await conn.execute(items.insert(), {"name": "y"})
        async with db.read() as conn:
            return list((await conn.execute(sa.select(items.c.name))).scalars())

    assert _run(tmp_path / "hub.db", main) == ["y"]


def test_a_write_transaction_holds_the_sqlite_write_lock_from_its_first_statement(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"

    async def main(db: HubDatabase) -> None:
        async with db.write() as conn:
            await conn.execute(sa.select(items.c.id))  # a read only: BEGIN IMMEDIATE took the lock
            other = sqlite3.connect(path, isolation_level=None, timeout=0)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("INSERT INTO items (name) VALUES ('elsewhere')")
            other.close()

    _run(path, main)


def test_single_reads_see_what_another_process_committed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"

    async def main(db: HubDatabase) -> None:
        async with db.write() as conn:
            await conn.execute(items.insert(), {"name": "token"})
        found = await db.read_one(BY_NAME, {"name": "token"})
        assert found == {"id": 1, "revoked_at": None}
        other = sqlite3.connect(path, isolation_level=None)  # like the admin CLI: another writer
        other.execute("UPDATE items SET revoked_at = 1.5 WHERE name = 'token'")
        other.close()
        found = await db.read_one(BY_NAME, {"name": "token"})
        assert found == {"id": 1, "revoked_at": 1.5}
        assert await db.read_one(BY_NAME, {"name": "nobody"}) is None

    _run(path, main)


def test_single_reads_fall_back_to_the_pool_when_the_inline_read_cannot_run(tmp_path: Path) -> None:
    async def main(db: HubDatabase) -> None:
        async with db.write() as conn:
            await conn.execute(items.insert(), {"name": "token"})
        # A database this reader cannot use answers UNAVAILABLE; read_one still answers right.
        broken = InlineReader(str(tmp_path / "missing" / "hub.db"), db.engine.dialect)
        assert isinstance(broken.first(BY_NAME, {"name": "token"}), Unavailable)
        fallback = HubDatabase(db.engine, db.url, broken)
        assert await fallback.read_one(BY_NAME, {"name": "token"}) == {"id": 1, "revoked_at": None}

    _run(tmp_path / "hub.db", main)


def test_the_inline_reader_stays_on_the_thread_that_opened_it(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE, revoked_at REAL)")
    setup.execute("INSERT INTO items (name) VALUES ('token')")
    setup.close()
    reader = InlineReader(str(path), sqlite_dialect.dialect())
    assert reader.first(BY_NAME, {"name": "token"}) == {"id": 1, "revoked_at": None}
    answers: list[object] = []
    worker = threading.Thread(target=lambda: answers.append(reader.first(BY_NAME, {"name": "token"})))
    worker.start()
    worker.join()
    assert isinstance(answers[0], Unavailable)
    reader.close()
