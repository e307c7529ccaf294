"""The device database: pragmas, migrations from empty, refusing a newer schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shoal.errors import NotFoundError, StorageError, UnsupportedVersionError, UsageError
from shoal.state.arenas import ArenaRegistry
from shoal.state.db import DeviceDB
from shoal.state.migrations import MIGRATIONS, SCHEMA_VERSION


def test_a_new_database_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    db = DeviceDB.open(tmp_path / "state" / "device.db")
    assert db.schema_version == SCHEMA_VERSION
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    tables = {r[0] for r in db.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"arenas", "entries", "push_journal", "conflicts"} <= tables
    db.close()
    again = DeviceDB.open(tmp_path / "state" / "device.db")
    assert again.schema_version == SCHEMA_VERSION
    again.close()


def test_migrations_are_numbered_in_order_and_commented() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert all(m.comment for m in MIGRATIONS)


def test_a_database_from_a_newer_shoal_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "device.db"
    DeviceDB.open(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(UnsupportedVersionError, match="upgrade shoal") as info:
        DeviceDB.open(path)
    assert f"schema version {SCHEMA_VERSION + 1}" in str(info.value)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    raw.close()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "device.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="not a shoal device database"):
        DeviceDB.open(path)


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    db = DeviceDB.open(tmp_path / "device.db")

    def fail_midway() -> None:
        with db.transaction() as conn:
            conn.execute(
                "INSERT INTO arenas (arena_id, name, root, hub_url, created_ns) VALUES ('a','a','/r','h',0)"
            )
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_midway()
    assert db.conn.execute("SELECT count(*) FROM arenas").fetchone()[0] == 0
    db.close()


def test_the_arena_a_command_means(tmp_path: Path) -> None:
    db = DeviceDB.open(tmp_path / "device.db")
    try:
        registry = ArenaRegistry(db)
        with pytest.raises(NotFoundError, match="no arena is joined"):
            registry.choose(None, tmp_path)
        registry.add("id-docs", "docs", tmp_path / "docs", "http://127.0.0.1:1")
        assert registry.choose(None, tmp_path / "elsewhere").name == "docs"  # the only one
        registry.add("id-photos", "photos", tmp_path / "photos", "http://127.0.0.1:1")
        assert registry.choose(None, tmp_path / "photos" / "2024").name == "photos"  # the one around here
        assert registry.choose("docs", tmp_path / "photos").name == "docs"  # a name wins
        assert registry.choose("id-docs").name == "docs"  # so does an id
        with pytest.raises(UsageError, match=r"2 arenas are joined here \(docs, photos\)"):
            registry.choose(None, tmp_path)
    finally:
        db.close()
