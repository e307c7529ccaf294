"""The per-arena index: path → what it was when last synced, plus the cursor and the push journal.

Every write goes through :meth:`ArenaIndex.batch`, one transaction in which
entries, tombstones, the cursor and journal rows change together: after a
crash the index never claims a cursor whose changes it does not hold, nor
changes without their cursor.
"""

from __future__ import annotations

import enum
import sqlite3
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from shoal.errors import FormatError, NotFoundError
from shoal.model.vv import VersionVector
from shoal.reconcile.kinds import Kind
from shoal.state.db import DeviceDB

# (kind, size, mtime_ns, inode, mode, symlink target): the same shape as shoal.worktree's StatKey.
StatKey = tuple[str, int, int, int, int, str | None]


class Residency(enum.StrEnum):
    PINNED = "pinned"
    CACHED = "cached"
    ONLINE_ONLY = "online-only"


@dataclass(frozen=True, slots=True)
class IndexEntry:
    path: str
    kind: Kind
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    mode: int = 0
    target: str | None = None
    manifest: bytes | None = None  # the encoded Manifest of a file version
    vv: VersionVector = field(default_factory=VersionVector)
    residency: Residency = Residency.PINNED
    dirty: bool = False  # changed locally, not yet committed by the hub
    deleted: bool = False  # a tombstone: the path was deleted at version ``vv``
    origin: str = ""  # the device that wrote this version (conflict tie-breaks)
    own_vv: VersionVector | None = None  # this version's own vector; None: the same as ``vv``

    @property
    def version_vv(self) -> VersionVector:
        return self.vv if self.own_vv is None else self.own_vv

    def stat_key(self) -> StatKey:
        return (self.kind.value, self.size, self.mtime_ns, self.inode, self.mode, self.target)


class PushState(enum.StrEnum):
    PENDING = "pending"
    UPLOADED = "uploaded"  # every chunk is on the hub; only the commit is left


@dataclass(frozen=True, slots=True)
class PendingPush:
    id: int
    path: str
    op: str
    payload: bytes
    state: PushState
    created_ns: int


def encode_vv(vv: VersionVector) -> bytes:
    packed: bytes = msgpack.packb(vv.to_dict(), use_bin_type=True)
    return packed


def decode_vv(data: bytes) -> VersionVector:
    try:
        raw = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise FormatError(f"malformed version vector in the device index: {exc}") from exc
    if not isinstance(raw, dict):
        raise FormatError("malformed version vector in the device index")
    return VersionVector({str(k): int(v) for k, v in raw.items()})


_SELECT = (
    "SELECT path, kind, size, mtime_ns, inode, mode, target, manifest, vv, residency, dirty, deleted, origin,"
    " own_vv"
    " FROM entries WHERE arena_id = ?"
)
_BY_PATH = _SELECT + " AND path = ?"
_FILES_BY_INODE = "SELECT path FROM entries WHERE arena_id = ? AND deleted = 0 AND kind = ? AND inode IN"
_PAGE = 2000
_DIRTY = _SELECT + " AND dirty = 1 ORDER BY path"
_UPSERT = (
    "INSERT OR REPLACE INTO entries (arena_id, path, kind, size, mtime_ns, inode, mode, target, manifest, vv,"
    " residency, dirty, deleted, origin, own_vv) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _row(arena_id: str, e: IndexEntry) -> tuple[Any, ...]:
    return (
        arena_id,
        e.path,
        e.kind.value,
        e.size,
        e.mtime_ns,
        e.inode,
        e.mode,
        e.target,
        e.manifest,
        encode_vv(e.vv),
        e.residency.value,
        int(e.dirty),
        int(e.deleted),
        e.origin,
        None if e.own_vv is None else encode_vv(e.own_vv),
    )


def _entry(row: tuple[Any, ...]) -> IndexEntry:
    path, kind, size, mtime_ns, inode, mode, target, manifest, vv, residency, dirty, deleted, origin, own = (
        row
    )
    return IndexEntry(
        path=path,
        kind=Kind(kind),
        size=size,
        mtime_ns=mtime_ns,
        inode=inode,
        mode=mode,
        target=target,
        manifest=manifest,
        vv=decode_vv(vv),
        residency=Residency(residency),
        dirty=bool(dirty),
        deleted=bool(deleted),
        origin=origin,
        own_vv=None if own is None else decode_vv(own),
    )


def _subtree_bounds(under: str) -> tuple[str, str]:
    """[low, high) of the paths strictly below ``under`` in SQLite's binary text order."""
    return under + "/", under + "0"  # '0' is the character right after '/'


class IndexBatch:
    """Writes inside one open transaction; obtained from :meth:`ArenaIndex.batch`."""

    def __init__(self, conn: sqlite3.Connection, arena_id: str) -> None:
        self._conn = conn
        self._arena = arena_id

    def put(self, entries: Iterable[IndexEntry]) -> None:
        self._conn.executemany(_UPSERT, (_row(self._arena, e) for e in entries))

    def remove(self, paths: Iterable[str]) -> None:
        """Forget paths entirely (use a tombstone entry to remember a delete's version)."""
        self._conn.executemany(
            "DELETE FROM entries WHERE arena_id = ? AND path = ?", ((self._arena, p) for p in paths)
        )

    def remove_subtree(self, under: str) -> None:
        low, high = _subtree_bounds(under)
        self._conn.execute(
            "DELETE FROM entries WHERE arena_id = ? AND (path = ? OR (path >= ? AND path < ?))",
            (self._arena, under, low, high),
        )

    def set_cursor(self, cursor: int) -> None:
        done = self._conn.execute(
            "UPDATE arenas SET cursor = ? WHERE arena_id = ?", (cursor, self._arena)
        ).rowcount
        if not done:
            raise NotFoundError(f"no arena {self._arena!r} is joined on this device")

    def journal_add(self, path: str, op: str, payload: bytes) -> int:
        cur = self._conn.execute(
            "INSERT INTO push_journal (arena_id, path, op, payload, created_ns) VALUES (?,?,?,?,?)",
            (self._arena, path, op, payload, time.time_ns()),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def journal_mark(self, push_id: int, state: PushState) -> None:
        self._conn.execute(
            "UPDATE push_journal SET state = ? WHERE arena_id = ? AND id = ?",
            (state.value, self._arena, push_id),
        )

    def journal_done(self, push_ids: Iterable[int]) -> None:
        self._conn.executemany(
            "DELETE FROM push_journal WHERE arena_id = ? AND id = ?", ((self._arena, i) for i in push_ids)
        )

    def add_conflict(self, path: str, copy_path: str) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO conflicts (arena_id, path, copy_path, detected_ns) VALUES (?,?,?,?)",
            (self._arena, path, copy_path, time.time_ns()),
        )

    def resolve_conflict(self, copy_path: str) -> None:
        self._conn.execute(
            "DELETE FROM conflicts WHERE arena_id = ? AND copy_path = ?", (self._arena, copy_path)
        )


class ArenaIndex:
    def __init__(self, db: DeviceDB, arena_id: str) -> None:
        self.db = db
        self.arena_id = arena_id

    def batch(self) -> _BatchContext:
        """``with index.batch() as b: b.put(...); b.set_cursor(n)``: all or nothing."""
        return _BatchContext(self)

    @property
    def cursor(self) -> int:
        with self.db.reading() as conn:
            row = conn.execute("SELECT cursor FROM arenas WHERE arena_id = ?", (self.arena_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no arena {self.arena_id!r} is joined on this device")
        cursor: int = row[0]
        return cursor

    def get(self, path: str) -> IndexEntry | None:
        with self.db.reading() as conn:
            row = conn.execute(_BY_PATH, (self.arena_id, path)).fetchone()
        return None if row is None else _entry(row)

    def get_many(self, paths: Iterable[str]) -> dict[str, IndexEntry]:
        found: dict[str, IndexEntry] = {}
        wanted = list(paths)
        with self.db.reading() as conn:
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                query = f"{_SELECT} AND path IN ({marks})"
                for row in conn.execute(query, (self.arena_id, *part)):
                    entry = _entry(row)
                    found[entry.path] = entry
        return found

    def entries(self, under: str = "", *, include_deleted: bool = False) -> Iterator[IndexEntry]:
        """Entries in path order (all, or ``under`` and below), read a page at a time so that
        walking 100k entries never holds them all in memory."""
        sql = _SELECT + " AND path > ?"
        args: list[Any] = [self.arena_id]
        if under:
            low, high = _subtree_bounds(under)
            sql += " AND (path = ? OR (path >= ? AND path < ?))"
            args += [under, low, high]
        if not include_deleted:
            sql += " AND deleted = 0"
        sql += f" ORDER BY path LIMIT {_PAGE}"
        after = ""
        while True:
            with self.db.reading() as conn:
                rows = conn.execute(sql, [args[0], after, *args[1:]]).fetchall()
            for row in rows:
                yield _entry(row)
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]

    def stat_keys(self) -> dict[str, StatKey]:
        """path → stat key of every live entry: the compact form a rescan compares against."""
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT path, kind, size, mtime_ns, inode, mode, target FROM entries"
                " WHERE arena_id = ? AND deleted = 0",
                (self.arena_id,),
            )
            return {row[0]: row[1:] for row in rows}

    def files_with_inodes(self, inodes: Collection[int]) -> set[str]:
        """Paths of live files recorded with any of ``inodes``: the other names of a hard link."""
        found: set[str] = set()
        ordered = sorted(inodes)
        with self.db.reading() as conn:
            for start in range(0, len(ordered), 500):  # SQLite's bound on parameters per statement
                part = ordered[start : start + 500]
                marks = ",".join("?" * len(part))
                query = f"{_FILES_BY_INODE} ({marks})"
                rows = conn.execute(query, (self.arena_id, Kind.FILE.value, *part))
                found.update(row[0] for row in rows)
        return found

    def count(self) -> int:
        with self.db.reading() as conn:
            n: int = conn.execute(
                "SELECT count(*) FROM entries WHERE arena_id = ? AND deleted = 0", (self.arena_id,)
            ).fetchone()[0]
        return n

    def online_only(self) -> set[str]:
        """Paths of the live files this device keeps as stubs."""
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT path FROM entries WHERE arena_id = ? AND deleted = 0 AND residency = 'online-only'"
                " AND kind = 'file'",
                (self.arena_id,),
            )
            return {row[0] for row in rows}

    def has_unpinned(self) -> bool:
        """True if any path of the arena is unpinned on this device (folder mode is in use)."""
        with self.db.reading() as conn:
            row = conn.execute(
                "SELECT 1 FROM entries WHERE arena_id = ? AND deleted = 0 AND residency != 'pinned' LIMIT 1",
                (self.arena_id,),
            ).fetchone()
        return row is not None

    def dirty(self) -> list[IndexEntry]:
        with self.db.reading() as conn:
            rows = conn.execute(_DIRTY, (self.arena_id,)).fetchall()
        return [_entry(row) for row in rows]

    def has_dirty_below(self, folder: str) -> bool:
        """True if an unpushed local change lies below ``folder`` (reconcile's has_unsynced_children)."""
        low, high = _subtree_bounds(folder)
        with self.db.reading() as conn:
            row = conn.execute(
                "SELECT 1 FROM entries WHERE arena_id = ? AND dirty = 1 AND path >= ? AND path < ? LIMIT 1",
                (self.arena_id, low, high),
            ).fetchone()
        return row is not None

    def pending_pushes(self) -> list[PendingPush]:
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT id, path, op, payload, state, created_ns FROM push_journal"
                " WHERE arena_id = ? ORDER BY id",
                (self.arena_id,),
            ).fetchall()
        return [PendingPush(i, p, op, payload, PushState(s), c) for i, p, op, payload, s, c in rows]

    def conflicts(self) -> list[tuple[str, str]]:
        """Open conflicts as (path, conflict copy path), for ``shoal conflicts``."""
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT path, copy_path FROM conflicts WHERE arena_id = ? ORDER BY path, copy_path",
                (self.arena_id,),
            ).fetchall()
        return [(p, c) for p, c in rows]


def hydrated_bytes(db: DeviceDB) -> int:
    """Bytes of file content kept in arena folders on this device (pinned and cached files of every
    joined arena; stubs of online-only files count nothing): the cache's share given to them."""
    with db.reading() as conn:
        total: int | None = conn.execute(
            "SELECT sum(size) FROM entries WHERE deleted = 0 AND kind = 'file' AND residency != 'online-only'"
        ).fetchone()[0]
    return total or 0


class _BatchContext:
    def __init__(self, index: ArenaIndex) -> None:
        self._index = index
        self._tx = index.db.transaction()

    def __enter__(self) -> IndexBatch:
        conn = self._tx.__enter__()
        return IndexBatch(conn, self._index.arena_id)

    def __exit__(self, *exc: Any) -> bool | None:
        return self._tx.__exit__(*exc)
