"""The operations half of the hub's tables: file API uploads, tenant quotas and the audit log.

All tables hang off the one ``MetaData`` of ``shoal.hub.db.schema``; migration
3 created them. Times are Unix seconds (float).
"""

from __future__ import annotations

import sqlalchemy as sa

from shoal.hub.db.schema import metadata

# A file API upload in progress. Its parts live as files under the hub's data
# directory until commit; nothing of an upload is visible before its commit.
uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("mode", sa.Integer, nullable=False, default=0o644),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False, default=0),
    # The head seq the client based the upload on; -1 means "whatever is there".
    sa.Column("base_seq", sa.BigInteger, nullable=False, default=-1),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

# Per-tenant storage quota on unique chunk bytes; no row (or a NULL limit) means unlimited.
tenant_quotas = sa.Table(
    "tenant_quotas",
    metadata,
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("limit_bytes", sa.BigInteger, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.Integer, nullable=True, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(128), nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("detail", sa.Text, nullable=False, default="{}"),
)

# Chunks the garbage collector took out of the index: "pending" until the blob is deleted, then
# "deleted" for a day, so an upload that stored the same blob meanwhile knows to store it again.
chunk_deletions = sa.Table(
    "chunk_deletions",
    metadata,
    sa.Column("tenant_id", sa.Integer, primary_key=True),
    sa.Column("chunk_id", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float, nullable=True),
)

# The newest seq log compaction removed from an arena: a device whose cursor is below it re-bootstraps.
arena_floors = sa.Table(
    "arena_floors",
    metadata,
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), primary_key=True),
    sa.Column("floor_seq", sa.BigInteger, nullable=False),
    sa.Column("compacted_at", sa.Float, nullable=False),
)

OPS_TABLES = (uploads, tenant_quotas, audit_events, chunk_deletions, arena_floors)
