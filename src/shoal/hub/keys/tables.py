"""The key tables as they are now (migration 4 creates them). Every blob here is ciphertext or public.

``arena_escrow`` holds an arena's escrow kit (the escrow public key and its
private key wrapped by passphrase and recovery key). ``arena_envelopes``
holds one keychain envelope per (arena, key epoch, recipient), where the
recipient is a device's public id or ``escrow``. ``enrollments`` are the
short-lived codes a new device shows so another device can approve it; a
code only names the device, it carries no secret.
"""

from __future__ import annotations

import sqlalchemy as sa

from shoal.hub.db.schema import metadata

ESCROW_RECIPIENT = "escrow"

arena_escrow = sa.Table(
    "arena_escrow",
    metadata,
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), primary_key=True),
    sa.Column("kit", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

arena_envelopes = sa.Table(
    "arena_envelopes",
    metadata,
    sa.Column("arena_id", sa.Integer, sa.ForeignKey("arenas.id"), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("recipient", sa.String(32), primary_key=True),
    sa.Column("envelope", sa.LargeBinary, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

enrollments = sa.Table(
    "enrollments",
    metadata,
    sa.Column("code", sa.String(16), primary_key=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("device", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
