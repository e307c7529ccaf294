"""Migration 3: operations. Creates file API uploads, tenant quotas, the audit log, GC and compaction state.

A frozen copy of the tables as they were at version 3; ``ops_schema`` always
shows the newest shape.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 3

_md = sa.MetaData()

# Only the referenced keys of earlier migrations' tables, so foreign keys resolve; not created here.
sa.Table("tenants", _md, sa.Column("id", sa.Integer, primary_key=True))
sa.Table("arenas", _md, sa.Column("id", sa.Integer, primary_key=True))

_uploads = sa.Table(
    "uploads",
    _md,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("mode", sa.Integer, nullable=False, default=0o644),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False, default=0),
    sa.Column("base_seq", sa.BigInteger, nullable=False, default=-1),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

_quotas = sa.Table(
    "tenant_quotas",
    _md,
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("limit_bytes", sa.BigInteger, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)

_audit = sa.Table(
    "audit_events",
    _md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.Integer, nullable=True, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(128), nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("detail", sa.Text, nullable=False, default="{}"),
)

_deletions = sa.Table(
    "chunk_deletions",
    _md,
    sa.Column("tenant_id", sa.Integer, primary_key=True),
    sa.Column("chunk_id", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float, nullable=True),
)

_floors = sa.Table(
    "arena_floors",
    _md,
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), primary_key=True),
    sa.Column("floor_seq", sa.BigInteger, nullable=False),
    sa.Column("compacted_at", sa.Float, nullable=False),
)


def upgrade(conn: sa.Connection) -> None:
    for table in (_uploads, _quotas, _audit, _deletions, _floors):
        table.create(conn)
