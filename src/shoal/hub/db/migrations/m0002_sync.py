"""Migration 2: sync. Creates arenas, the per-tenant chunk index, the change log, heads, commits and acks.

A frozen copy of the tables as they were at version 2: later migrations alter
them, and ``sync_schema`` always shows the newest shape.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 2

_md = sa.MetaData()

# Only the referenced key of migration 1's table, so foreign keys resolve; it is not created here.
_tenants = sa.Table("tenants", _md, sa.Column("id", sa.Integer, primary_key=True))

_arenas = sa.Table(
    "arenas",
    _md,
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
    _arenas.c.tenant_id,
    _arenas.c.name,
    unique=True,
    sqlite_where=_arenas.c.deleted_at.is_(None),
    postgresql_where=_arenas.c.deleted_at.is_(None),
)

sa.Table(
    "chunks",
    _md,
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("chunk_id", sa.String(64), primary_key=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

_changes = sa.Table(
    "changes",
    _md,
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
sa.Index("ix_changes_path", _changes.c.arena_id, _changes.c.path_key, _changes.c.seq)
sa.Index("ix_changes_to_path", _changes.c.arena_id, _changes.c.to_path_key, _changes.c.seq)

# Which chunks each change references: the garbage collector's roots, and the restore check.
_change_chunks = sa.Table(
    "change_chunks",
    _md,
    sa.Column("arena_id", sa.Integer, primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("chunk_id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.Integer, nullable=False),
    sa.ForeignKeyConstraint(["arena_id", "seq"], ["changes.arena_id", "changes.seq"]),
)
sa.Index("ix_change_chunks_chunk", _change_chunks.c.tenant_id, _change_chunks.c.chunk_id)

# The current state of every path key: the newest change and the merged version vector.
sa.Table(
    "heads",
    _md,
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), primary_key=True),
    sa.Column("path_key", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("vv", sa.Text, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("op", sa.String(8), nullable=False),
)

# Idempotency: a retried commit finds its first result here instead of committing twice.
sa.Table(
    "commits",
    _md,
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), primary_key=True),
    sa.Column("idempotency_key", sa.String(128), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Each device's acknowledged cursor per arena (log compaction reads these later).
sa.Table(
    "device_cursors",
    _md,
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), primary_key=True),
    sa.Column("device", sa.String(64), primary_key=True),
    sa.Column("cursor", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


def upgrade(conn: sa.Connection) -> None:
    _md.create_all(conn, tables=[t for t in _md.sorted_tables if t is not _tenants])
