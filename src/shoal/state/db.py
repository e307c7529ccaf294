"""The device's SQLite database: WAL, ``synchronous=FULL``, a busy timeout, numbered migrations.

All sqlite3 errors are translated here (:func:`translate_sqlite_error`) into
the error tree. Transactions are explicit (``BEGIN IMMEDIATE`` in
:meth:`DeviceDB.transaction`): the connection runs in autocommit mode
otherwise, so a crash before :meth:`transaction` exits leaves nothing of it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shoal.errors import DiskFullError, StorageError, UnsupportedVersionError
from shoal.state.migrations import MIGRATIONS, SCHEMA_VERSION

BUSY_TIMEOUT_MS = 10_000


def translate_sqlite_error(exc: sqlite3.Error, path: Path | str) -> StorageError:
    text = str(exc)
    if "full" in text:
        return DiskFullError(
            f"the device database {str(path)!r} is full: {text}", hint="free some disk space"
        )
    if "locked" in text or "busy" in text:
        return StorageError(
            f"the device database {str(path)!r} is busy: {text}",
            hint="another shoal process may be running on this device; stop it or retry",
        )
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
        return StorageError(
            f"{str(path)!r} is not a shoal device database (or it is damaged)",
            hint="point SHOAL_HOME at the right state folder, or restore it from a backup",
        )
    return StorageError(f"device database {str(path)!r}: {text}")


class DeviceDB:
    """One connection to the device database. Share it between threads only under its lock."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.lock = threading.RLock()
        self._in_tx = False

    @classmethod
    def open(cls, path: Path) -> DeviceDB:
        """Open (creating if needed) and migrate; refuse a database newer than this shoal."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the state folder {str(path.parent)!r}: {exc.strerror}"
            ) from exc
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, path) from exc
        db = cls(conn, path)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"the device database {str(path)!r} cannot use WAL (got {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            db._migrate()
        except sqlite3.Error as exc:
            conn.close()
            raise translate_sqlite_error(exc, path) from exc
        except BaseException:
            conn.close()
            raise
        return db

    @property
    def schema_version(self) -> int:
        version: int = self.conn.execute("PRAGMA user_version").fetchone()[0]
        return version

    def _migrate(self) -> None:
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise UnsupportedVersionError(
                f"the device database {str(self.path)!r} has schema version {current}; "
                f"this shoal knows up to {SCHEMA_VERSION}",
                hint="upgrade shoal on this device (the database was written by a newer version)",
            )
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            with self.transaction() as conn:
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {migration.version}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on any exception). Not reentrant."""
        with self.lock:
            if self._in_tx:
                raise StorageError("nested device database transaction (a bug in shoal)")
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path) from exc
            self._in_tx = True
            try:
                yield self.conn
            except sqlite3.Error as exc:
                self._in_tx = False
                self.conn.rollback()
                raise translate_sqlite_error(exc, self.path) from exc
            except BaseException:
                self._in_tx = False
                self.conn.rollback()
                raise
            self._in_tx = False
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self.conn.rollback()
                raise translate_sqlite_error(exc, self.path) from exc

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads, with sqlite3 errors translated."""
        with self.lock:
            try:
                yield self.conn
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path) from exc

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (they contain no ';' inside literals)."""
    lines = [line.split("--", 1)[0] for line in sql.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
