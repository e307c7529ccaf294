"""The SQLite index of one namespace's packs: where each packed blob lies, and each pack's live bytes.

``<root>/packs/index.sqlite`` (WAL, ``synchronous=FULL``, a busy timeout so several processes may
share it). Two connections per index: one for reads (in WAL mode they never wait for a writer)
and one for write transactions, each behind a lock since worker threads share them. Every write
is one ``BEGIN IMMEDIATE`` transaction, so writers in any process are serialised by SQLite.

The index can always be rebuilt from the packs' trailers; ``meta.complete`` says it has been, so
a reader opening a fresh index waits for the rebuild of another process instead of seeing it empty.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from shoal.model.ids import ChunkId
from shoal.store.packfile import PackEntry

INDEX_NAME = "index.sqlite"
BUSY_TIMEOUT_S = 60.0
CACHE_KIB = 512  # per connection: a hub keeps two per active tenant (SQLite's default is 2 MiB)
_IN_BATCH = 500

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    # A pack's rowid stands for its 32-hex name in ``blobs``, and there is no index by pack (a
    # pack's trailer lists its ids): the index takes about 100 bytes per blob.
    # AUTOINCREMENT: a pid is never reused, so no stale row could ever name another pack.
    "CREATE TABLE IF NOT EXISTS packs (pid INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,"
    " size INTEGER NOT NULL, live INTEGER NOT NULL, blobs INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS blobs (id BLOB PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL,"
    " length INTEGER NOT NULL) WITHOUT ROWID",
)


class UncertainCommitError(sqlite3.Error):
    """COMMIT failed: the transaction may still reach the disk, so keep every file it may name."""


class Location(NamedTuple):
    pack: str
    offset: int
    length: int


class PackUsage(NamedTuple):
    """A pack's bytes of blob data, how many of them are still referenced, and by how many blobs."""

    size: int
    live: int
    blobs: int


class PackIndex:
    """The index of the packs in one directory. Blocking: call from worker threads."""

    def __init__(self, directory: Path, rebuild: Callable[[], list[tuple[str, list[PackEntry]]]]) -> None:
        """``rebuild`` reads every pack's trailer: (pack name, entries), for a missing index."""
        self._path = directory / INDEX_NAME
        self._rebuild = rebuild
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def exists(self) -> bool:
        return self._reader is not None or self._path.exists()

    # -- reads -------------------------------------------------------------------------------

    def locate(self, cid: ChunkId) -> Location | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT packs.name, offset, length FROM blobs JOIN packs ON pid = pack WHERE id = ?", (cid,)
            ).fetchone()
        return None if row is None else Location(*row)

    def locate_many(self, ids: list[ChunkId]) -> dict[ChunkId, Location]:
        """Where each of ``ids`` that a pack holds lies; absent ids are left out."""
        with self._reading() as db:
            rows = _rows_in(db, "id, (SELECT name FROM packs WHERE pid = pack), offset, length", None, ids)
        return {ChunkId(r[0]): Location(r[1], r[2], r[3]) for r in rows if r[1] is not None}

    def present(self, ids: list[ChunkId]) -> set[ChunkId]:
        found: set[ChunkId] = set()
        with self._reading() as db:
            for start in range(0, len(ids), _IN_BATCH):
                batch = ids[start : start + _IN_BATCH]
                query = f"SELECT id FROM blobs WHERE id IN ({','.join('?' * len(batch))})"  # noqa: S608
                found.update(ChunkId(r[0]) for r in db.execute(query, batch))
        return found

    def ids_after(self, after: bytes, limit: int) -> list[ChunkId]:
        """Up to ``limit`` indexed ids greater than ``after``, in order (a page of a listing)."""
        with self._reading() as db:
            rows = db.execute("SELECT id FROM blobs WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
            return [ChunkId(r[0]) for r in rows]

    def live_entries(self, pack: str, listed: list[PackEntry]) -> list[PackEntry]:
        """Those of ``listed`` (a pack's trailer) that the index still places in ``pack``."""
        with self._reading() as db:
            found = db.execute("SELECT pid FROM packs WHERE name = ?", (pack,)).fetchone()
            if found is None:
                return []
            rows = _rows_in(db, "id, offset, length", found[0], [e.cid for e in listed])
        return sorted((PackEntry(ChunkId(r[0]), r[1], r[2]) for r in rows), key=lambda e: e.offset)

    def usage(self) -> dict[str, PackUsage]:
        with self._reading() as db:
            rows = db.execute("SELECT name, size, live, blobs FROM packs")
            return {r[0]: PackUsage(r[1], r[2], r[3]) for r in rows}

    # -- writes ------------------------------------------------------------------------------

    def add_pack(self, pack: str, entries: list[PackEntry], still_there: Callable[[], bool]) -> PackUsage:
        """Reference a pack's blobs (ids already indexed keep their old place); its usage after.

        ``still_there`` is called under the write lock: a sweep of unreferenced packs also runs
        under it, so a pack it has not removed by then stays until the index names it.
        """
        with self._transaction() as db:
            if not still_there():
                raise FileNotFoundError(pack)
            return self._insert(db, pack, entries)

    def remove(self, cid: ChunkId) -> tuple[str, PackUsage] | None:
        """Forget a packed blob: (its pack, the pack's usage after), or None if it was not packed."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT pid, name, size, live - length, blobs - 1 FROM blobs JOIN packs ON pid = pack"
                " WHERE id = ?",
                (cid,),
            ).fetchone()
            if row is None:
                return None
            pid, name, size, live, count = row
            db.execute("DELETE FROM blobs WHERE id = ?", (cid,))
            if count > 0:
                db.execute("UPDATE packs SET live = ?, blobs = ? WHERE pid = ?", (live, count, pid))
            else:
                db.execute("DELETE FROM packs WHERE pid = ?", (pid,))
            return name, PackUsage(size, live, count)

    def move(self, old: str, new: str, entries: list[PackEntry], new_size: int) -> PackUsage | None:
        """Point the blobs still in ``old`` at their copies in ``new``, and drop ``old``.

        Returns the usage of ``new`` (no blobs: nothing names it), or None when nothing changed
        because ``old`` is no longer indexed (another process compacted it meanwhile).
        """
        with self._transaction() as db:
            found = db.execute("SELECT pid, blobs FROM packs WHERE name = ?", (old,)).fetchone()
            if found is None:
                return None
            old_pid, old_count = found
            still = {r[0]: r[1] for r in _rows_in(db, "id, length", old_pid, [e.cid for e in entries])}
            if len(still) != old_count:
                raise sqlite3.IntegrityError(f"pack {old} holds blobs its copy lacks")
            new_pid = self._pack_row(db, new, new_size)
            db.executemany(
                "UPDATE blobs SET pack = ?, offset = ? WHERE id = ? AND pack = ?",
                ((new_pid, e.offset, e.cid, old_pid) for e in entries if e.cid in still),
            )
            db.execute("DELETE FROM packs WHERE pid = ?", (old_pid,))
            return self._record(db, new_pid, new_size, sum(still.values()), len(still))

    def drop_unreferenced(self, candidates: Iterable[str], unlink: Callable[[str], None]) -> int:
        """Call ``unlink`` on each candidate pack no index row names, under the write lock."""
        removed = 0
        with self._transaction() as db:
            for pack in candidates:
                if db.execute("SELECT 1 FROM packs WHERE name = ?", (pack,)).fetchone() is not None:
                    continue
                unlink(pack)
                removed += 1
        return removed

    def is_open(self) -> bool:
        return self._reader is not None or self._writer is not None

    def close_if_idle(self) -> bool:
        """Close the connections unless a thread is using them (never waits); True if closed."""
        if not self._read_lock.acquire(blocking=False):
            return False
        try:
            if not self._write_lock.acquire(blocking=False):
                return False
            try:
                for db in (self._reader, self._writer):
                    if db is not None:
                        db.close()
                self._reader = self._writer = None
            finally:
                self._write_lock.release()
        finally:
            self._read_lock.release()
        return True

    def close(self) -> None:
        for lock, attr in ((self._read_lock, "_reader"), (self._write_lock, "_writer")):
            with lock:
                db = getattr(self, attr)
                if db is not None:
                    db.close()
                    setattr(self, attr, None)

    # -- internals ---------------------------------------------------------------------------

    def _insert(self, db: sqlite3.Connection, pack: str, entries: list[PackEntry]) -> PackUsage:
        """Index a pack's blobs; ids already indexed in another pack keep their place.

        Rows already naming this very pack (a rebuild by another process indexed it between
        our rename and this commit) count as its own.
        """
        size = sum(e.length for e in entries)
        pid = self._pack_row(db, pack, size)
        placed = {
            r[0]: (r[1], r[2]) for r in _rows_in(db, "id, pack, length", None, [e.cid for e in entries])
        }
        new = [e for e in entries if e.cid not in placed]
        db.executemany(
            "INSERT INTO blobs (id, pack, offset, length) VALUES (?, ?, ?, ?)",
            ((e.cid, pid, e.offset, e.length) for e in new),
        )
        own = [length for owner, length in placed.values() if owner == pid]
        return self._record(db, pid, size, sum(e.length for e in new) + sum(own), len(new) + len(own))

    def _pack_row(self, db: sqlite3.Connection, pack: str, size: int) -> int:
        row = db.execute(
            "INSERT INTO packs (name, size, live, blobs) VALUES (?, ?, 0, 0)"
            " ON CONFLICT (name) DO UPDATE SET size = excluded.size RETURNING pid",
            (pack, size),
        ).fetchone()
        return int(row[0])

    def _record(self, db: sqlite3.Connection, pid: int, size: int, live: int, count: int) -> PackUsage:
        """Store a pack's usage; a pack no row names is dropped."""
        if count > 0:
            db.execute("UPDATE packs SET live = ?, blobs = ? WHERE pid = ?", (live, count, pid))
        else:
            db.execute("DELETE FROM packs WHERE pid = ?", (pid,))
        return PackUsage(size, live, count)

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            if self._reader is None:
                self._ensure_built()
                self._reader = _connect(self._path)
            yield self._reader

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            if self._writer is None:
                self._writer = self._open_writer()
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise UncertainCommitError(str(exc)) from exc

    def prepare(self) -> None:
        """Open (creating or rebuilding if need be) the index for writing."""
        self._ensure_built()

    def _ensure_built(self) -> None:
        with self._write_lock:
            if self._writer is None:
                self._writer = self._open_writer()

    def _open_writer(self) -> sqlite3.Connection:
        """Connect for writing; create the schema, and fill the index from the packs if it is new."""
        db = _connect(self._path)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    db.execute(statement)
                done = db.execute("SELECT value FROM meta WHERE key = 'complete'").fetchone()
                if done is None:
                    self._fill(db)
                    db.execute("INSERT INTO meta (key, value) VALUES ('complete', '1')")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    def _fill(self, db: sqlite3.Connection) -> None:
        for pack, entries in self._rebuild():
            self._insert(db, pack, entries)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        _ensure_wal(db)
        db.execute("PRAGMA synchronous = FULL")
    except BaseException:
        db.close()
        raise
    return db


def _ensure_wal(db: sqlite3.Connection) -> None:
    """Put the index in WAL mode (kept in the file: only a new index needs it).

    Switching takes a lock SQLite does not wait for (the busy timeout does not apply), so processes
    opening a new index together, as ``pack``'s workers do, got "database is locked" (6 of 40
    tries of four at once): retry, within the busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.002
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.1)


def _rows_in(
    db: sqlite3.Connection, columns: str, pid: int | None, ids: list[ChunkId]
) -> list[tuple[Any, ...]]:
    """``columns`` of the rows of ``ids`` (in batches of ``_IN_BATCH``), only in pack ``pid`` if given."""
    rows: list[tuple[Any, ...]] = []
    where = "" if pid is None else f" AND pack = {int(pid)}"
    for start in range(0, len(ids), _IN_BATCH):
        batch = ids[start : start + _IN_BATCH]
        query = f"SELECT {columns} FROM blobs WHERE id IN ({','.join('?' * len(batch))}){where}"  # noqa: S608
        rows.extend(db.execute(query, batch))
    return rows
