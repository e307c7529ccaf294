"""Metadata of the device's chunk cache: which chunks it holds, their size, last access and priority.

The cache itself (files named by chunk id) is ``shoal.store.cache``; this is
its SQL. Rows are written in batches: touching a chunk on every read would
cost a transaction (and an fsync) per read, so accesses are remembered in
memory and written by :meth:`CacheIndex.flush`. A lost batch only makes the
cache forget some accesses or some files; ``shoal.store.cache`` adopts
files it has no row for when it opens.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Iterator, Mapping

from shoal.errors import FormatError
from shoal.model.ids import ChunkId
from shoal.model.manifest import Manifest
from shoal.state.db import DeviceDB


class Priority(enum.IntEnum):
    """Eviction order: lower goes first; PINNED never goes."""

    UNREFERENCED = 0
    UNPINNED = 1
    PINNED = 2


# (chunk id, size, last access in ns, priority): one row of the table.
CacheRow = tuple[ChunkId, int, int, int]


class CacheIndex:
    """The ``cache_chunks`` table, with writes buffered until :meth:`flush`."""

    def __init__(self, db: DeviceDB) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._upserts: dict[ChunkId, CacheRow] = {}
        self._touches: dict[ChunkId, int] = {}
        self._removed: set[ChunkId] = set()

    def load(self) -> list[CacheRow]:
        """Every row (pending writes included)."""
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT chunk_id, size, last_access_ns, priority FROM cache_chunks"
            ).fetchall()
        found: dict[ChunkId, CacheRow] = {}
        for c, size, last, priority in rows:
            cid = ChunkId(bytes(c))
            found[cid] = (cid, size, last, priority)
        with self._lock:
            for cid in self._removed:
                found.pop(cid, None)
            found.update(self._upserts)
        return list(found.values())

    def record(self, cid: ChunkId, size: int, last_access_ns: int, priority: int) -> None:
        with self._lock:
            self._removed.discard(cid)
            self._upserts[cid] = (cid, size, last_access_ns, int(priority))

    def touch(self, cid: ChunkId, now_ns: int) -> None:
        with self._lock:
            self._touches[cid] = now_ns

    def forget(self, ids: Iterable[ChunkId]) -> None:
        with self._lock:
            for cid in ids:
                self._upserts.pop(cid, None)
                self._touches.pop(cid, None)
                self._removed.add(cid)

    def set_priorities(self, priorities: Mapping[ChunkId, int]) -> None:
        """Write new priorities at once (ids without a row are ignored)."""
        self.flush()
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE cache_chunks SET priority = ? WHERE chunk_id = ?",
                ((int(p), bytes(cid)) for cid, p in priorities.items()),
            )

    def flush(self) -> None:
        """Write buffered inserts, accesses and removals in one transaction."""
        with self._lock:
            upserts, self._upserts = self._upserts, {}
            touches, self._touches = self._touches, {}
            removed, self._removed = self._removed, set()
        if not (upserts or touches or removed):
            return
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM cache_chunks WHERE chunk_id = ?", ((bytes(c),) for c in removed))
            conn.executemany(
                "INSERT OR REPLACE INTO cache_chunks (chunk_id, size, last_access_ns, priority)"
                " VALUES (?,?,?,?)",
                ((bytes(c), size, last, prio) for c, size, last, prio in upserts.values()),
            )
            conn.executemany(
                "UPDATE cache_chunks SET last_access_ns = max(last_access_ns, ?) WHERE chunk_id = ?",
                ((t, bytes(c)) for c, t in touches.items()),
            )


def referenced_chunks(db: DeviceDB) -> dict[ChunkId, Priority]:
    """Every chunk a current file of any arena on this device references, with its priority:
    PINNED when at least one pinned file holds it, UNPINNED otherwise."""
    found: dict[ChunkId, Priority] = {}
    for manifest, residency in _live_manifests(db):
        priority = Priority.PINNED if residency == "pinned" else Priority.UNPINNED
        for ref in manifest.chunks:
            if found.get(ref.id, Priority.UNREFERENCED) < priority:
                found[ref.id] = priority
    return found


def _live_manifests(db: DeviceDB) -> Iterator[tuple[Manifest, str]]:
    after: tuple[str, str] = ("", "")
    while True:
        with db.reading() as conn:
            rows = conn.execute(
                "SELECT arena_id, path, manifest, residency FROM entries"
                " WHERE deleted = 0 AND kind = 'file' AND manifest IS NOT NULL AND (arena_id, path) > (?, ?)"
                " ORDER BY arena_id, path LIMIT 2000",
                after,
            ).fetchall()
        for _arena, _path, blob, residency in rows:
            try:
                yield Manifest.decode(bytes(blob)), residency
            except FormatError:
                continue  # a damaged row references nothing we can name; fsck reports it
        if len(rows) < 2000:
            return
        after = (rows[-1][0], rows[-1][1])
