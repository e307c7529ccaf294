"""The sync half of the hub's tables: arenas, the per-tenant chunk index, the change log and its heads.

All tables hang off the one ``MetaData`` of ``shoal.hub.db.schema``. Times
are Unix seconds (float). Chunk ids and path keys are 64 lowercase hex
characters. Version vectors are stored as compact JSON objects.
"""

from __future__ import annotations

import sqlalchemy as sa

from shoal.hub.db.schema import metadata

arenas = sa.Table(
    "arenas",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("public_id", sa.String(32), nullable=False, unique=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("encrypted", sa.Boolean, nullable=False, default=False),
    sa.Column("conflict_policy", sa.String(16), nullable=False, default="keep-both"),
    sa.Column("keep_days", sa.Integer, nullable=False, default=30),
    sa.Column("keep_versions", sa.Integer, nullable=False, default=10),
    # The last cursor handed out in this arena; bumped inside the commit transaction.
    sa.Column("head_seq", sa.BigInteger, nullable=False, default=0),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float, nullable=True),
)
# Names are unique per tenant among live arenas only, so a deleted name can be reused.
sa.Index(
    "ux_arenas_live_name",
    arenas.c.tenant_id,
    arenas.c.name,
    unique=True,
    sqlite_where=arenas.c.deleted_at.is_(None),
    postgresql_where=arenas.c.deleted_at.is_(None),
)

chunks = sa.Table(
    "chunks",
    metadata,
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("chunk_id", sa.String(64), primary_key=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

changes = sa.Table(
    "changes",
    metadata,
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("op", sa.String(8), nullable=False),
    sa.Column("path_key", sa.String(64), nullable=False),
    sa.Column("path", sa.Text, nullable=True),
    sa.Column("to_path_key", sa.String(64), nullable=True),
    sa.Column("to_path", sa.Text, nullable=True),
    sa.Column("record", sa.LargeBinary, nullable=False),
    # Referenced chunk ids, space-separated hex (also indexed row by row in change_chunks).
    sa.Column("chunk_ids", sa.Text, nullable=False, default=""),
    sa.Column("base_vv", sa.Text, nullable=False),
    sa.Column("vv", sa.Text, nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("conflict_with", sa.BigInteger, nullable=True),
    sa.Column("restored_from", sa.BigInteger, nullable=True),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Index("ix_changes_path", changes.c.arena_id, changes.c.path_key, changes.c.seq)
sa.Index("ix_changes_to_path", changes.c.arena_id, changes.c.to_path_key, changes.c.seq)

# Which chunks each change references: the garbage collector's roots, and the restore check.
change_chunks = sa.Table(
    "change_chunks",
    metadata,
    sa.Column("arena_id", sa.Integer, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("chunk_id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.Integer, nullable=False),
    sa.ForeignKeyConstraint(["arena_id", "seq"], ["changes.arena_id", "changes.seq"]),
)
sa.Index("ix_change_chunks_chunk", change_chunks.c.tenant_id, change_chunks.c.chunk_id)

# The current state of every path key: the newest change and the merged version vector.
heads = sa.Table(
    "heads",
    metadata,
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), primary_key=True),
    sa.Column("path_key", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("vv", sa.Text, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("op", sa.String(8), nullable=False),
)

# Idempotency: a retried commit finds its first result here instead of committing twice.
commits = sa.Table(
    "commits",
    metadata,
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), primary_key=True),
    sa.Column("idempotency_key", sa.String(128), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Each device's acknowledged cursor per arena (log compaction reads these later).
device_cursors = sa.Table(
    "device_cursors",
    metadata,
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), primary_key=True),
    sa.Column("device", sa.String(64), primary_key=True),
    sa.Column("cursor", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

SYNC_TABLES = (arenas, chunks, changes, change_chunks, heads, commits, device_cursors)
