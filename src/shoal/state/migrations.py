"""Numbered migrations of the device database; ``PRAGMA user_version`` holds the schema version.

Append only: a released migration is never edited, a new one is added with
the next number and a comment saying why. Each runs in its own transaction
together with the version bump.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    comment: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "Arena registrations, the per-arena index with its cursor, the push journal and open conflicts.",
        """
        -- One row per arena joined on this device. The cursor lives here and is
        -- only ever written in the same transaction as the entries it describes.
        CREATE TABLE arenas (
            arena_id      TEXT PRIMARY KEY,
            name          TEXT NOT NULL,
            root          TEXT NOT NULL UNIQUE,
            hub_url       TEXT NOT NULL,
            settings      TEXT NOT NULL DEFAULT '{}',  -- JSON object, arena settings as the device knows them
            cursor        INTEGER NOT NULL DEFAULT 0,   -- hub log sequence applied up to
            paused_reason TEXT,                         -- set when deletion safety paused the arena
            created_ns    INTEGER NOT NULL
        );
        CREATE UNIQUE INDEX arenas_by_name ON arenas(name);

        -- The index: what each path looked like when this device last synced it.
        -- size/mtime_ns/inode/mode/target are the stat that decides "changed?";
        -- vv is the msgpack'd version vector of the synced version (the base of
        -- the next three-way decision); dirty marks local changes not yet pushed;
        -- deleted rows are tombstones that keep the vv of a delete.
        CREATE TABLE entries (
            arena_id  TEXT NOT NULL REFERENCES arenas(arena_id) ON DELETE CASCADE,
            path      TEXT NOT NULL,
            kind      TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink')),
            size      INTEGER NOT NULL DEFAULT 0,
            mtime_ns  INTEGER NOT NULL DEFAULT 0,
            inode     INTEGER NOT NULL DEFAULT 0,
            mode      INTEGER NOT NULL DEFAULT 0,
            target    TEXT,
            manifest  BLOB,
            vv        BLOB NOT NULL,
            residency TEXT NOT NULL DEFAULT 'pinned' CHECK (residency IN ('pinned', 'cached', 'online-only')),
            dirty     INTEGER NOT NULL DEFAULT 0,
            deleted   INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (arena_id, path)
        ) WITHOUT ROWID;
        CREATE INDEX entries_dirty ON entries(arena_id, path) WHERE dirty = 1;

        -- Pushes in flight: written before the first chunk goes up, removed in
        -- the transaction that records the hub's commit, so a killed upload is
        -- resumed (the hub skips chunks it already holds) instead of forgotten.
        CREATE TABLE push_journal (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            arena_id   TEXT NOT NULL REFERENCES arenas(arena_id) ON DELETE CASCADE,
            path       TEXT NOT NULL,
            op         TEXT NOT NULL,                  -- put, delete, mkdir, rename, symlink
            payload    BLOB NOT NULL,                  -- the change as the engine encoded it
            state      TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'uploaded')),
            created_ns INTEGER NOT NULL
        );
        CREATE INDEX push_journal_by_arena ON push_journal(arena_id, id);

        -- Conflicts kept as copies, listed by `shoal conflicts` until resolved.
        CREATE TABLE conflicts (
            arena_id    TEXT NOT NULL REFERENCES arenas(arena_id) ON DELETE CASCADE,
            path        TEXT NOT NULL,
            copy_path   TEXT NOT NULL,
            detected_ns INTEGER NOT NULL,
            PRIMARY KEY (arena_id, copy_path)
        ) WITHOUT ROWID;
        """,
    ),
    Migration(
        2,
        "The device that wrote each synced version, so every device breaks conflict ties the same way.",
        """
        -- origin: the device id of the version the entry describes (the change's
        -- author). Conflict resolution orders versions by (mtime, device, ...);
        -- without it two devices could pick different winners on a tie.
        ALTER TABLE entries ADD COLUMN origin TEXT NOT NULL DEFAULT '';
        """,
    ),
    Migration(
        3,
        "The chunk cache's metadata, so eviction can pick by priority and last access without a disk walk.",
        """
        -- One row per chunk in the device's content-addressed cache (plaintext files
        -- named by id). priority: 0 no current file references it, 1 only unpinned
        -- files do, 2 a pinned file does (never evicted). last_access_ns orders
        -- eviction within a priority (least recently used first).
        CREATE TABLE cache_chunks (
            chunk_id       BLOB PRIMARY KEY,
            size           INTEGER NOT NULL,
            last_access_ns INTEGER NOT NULL,
            priority       INTEGER NOT NULL DEFAULT 0 CHECK (priority IN (0, 1, 2))
        ) WITHOUT ROWID;
        CREATE INDEX cache_chunks_eviction ON cache_chunks(priority, last_access_ns);
        """,
    ),
    Migration(
        4,
        "The version vector of the version at a path, apart from the merge of every vector seen there.",
        """
        -- own_vv: the msgpack'd vector of the version the entry describes (NULL: same as vv).
        -- vv stays the merge of every vector seen at the path (the base of the next push); a
        -- change that supersedes the current version without having seen a concurrent loser
        -- is recognised by comparing with own_vv.
        ALTER TABLE entries ADD COLUMN own_vv BLOB;
        """,
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version
