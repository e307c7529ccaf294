"""Migration 4: keys. Escrow kits and key envelopes of encrypted arenas, and device enrollment codes.

A frozen copy of the tables as they were at version 4 (``shoal.hub.keys.tables``
shows the newest shape). The hub stores only wrapped keys and public keys.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 4

_md = sa.MetaData()

# Only the referenced keys of earlier migrations' tables, so foreign keys resolve; not created here.
_tenants = sa.Table("tenants", _md, sa.Column("id", sa.Integer, primary_key=True))
_arenas = sa.Table("arenas", _md, sa.Column("id", sa.Integer, primary_key=True))

sa.Table(
    "arena_escrow",
    _md,
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), primary_key=True),
    sa.Column("kit", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# One keychain envelope per arena, key epoch and recipient (a device's public id, or "escrow").
sa.Table(
    "arena_envelopes",
    _md,
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("recipient", sa.String(32), primary_key=True),
    sa.Column("envelope", sa.LargeBinary, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# A new device's enrollment code: it names the device, and carries no secret.
sa.Table(
    "enrollments",
    _md,
    sa.Column("code", sa.String(16), primary_key=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("device", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


def upgrade(conn: sa.Connection) -> None:
    _md.create_all(conn, tables=[t for t in _md.sorted_tables if t not in (_tenants, _arenas)])
