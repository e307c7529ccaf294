"""The hub's tables as they are now: one ``MetaData`` for accounts (here) and sync (``sync_schema``).

Migrations under ``migrations/`` create and alter these; queries use these
definitions. Times are Unix seconds (float). Secrets are never stored: tokens
and device codes as SHA-256 hex, passwords as Argon2id hashes. Internal ids
are integers; the ids of devices the API shows are random strings.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)

# A tenant owns arenas, chunks and devices: either one user ("user") or a team ("team").
tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("disabled_at", sa.Float, nullable=True),
)

team_members = sa.Table(
    "team_members",
    metadata,
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("public_id", sa.String(32), nullable=False, unique=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("signing_public", sa.LargeBinary, nullable=False),
    sa.Column("exchange_public", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

# RFC 8628 device authorisation requests, pending until approved, denied or expired.
device_codes = sa.Table(
    "device_codes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device_code_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_code", sa.String(8), nullable=False, unique=True),
    sa.Column("tenant_name", sa.String(64), nullable=True),
    sa.Column("device_name", sa.String(128), nullable=False),
    sa.Column("signing_public", sa.LargeBinary, nullable=False),
    sa.Column("exchange_public", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("interval", sa.Integer, nullable=False),
    sa.Column("failed_attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("last_poll_at", sa.Float, nullable=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=True),
    sa.Column("device_id", sa.Integer, sa.ForeignKey("devices.id"), nullable=True),
)

# A family is one login (its access and refresh tokens, rotated) or one personal access token.
token_families = sa.Table(
    "token_families",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("name", sa.String(128), nullable=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("device_id", sa.Integer, sa.ForeignKey("devices.id"), nullable=True),
    sa.Column("scopes", sa.String(255), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("revoked_reason", sa.String(32), nullable=True),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("family_id", sa.Integer, sa.ForeignKey("token_families.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    # For refresh tokens: when it was exchanged for a new pair; presenting it again revokes the family.
    sa.Column("used_at", sa.Float, nullable=True),
    sa.Column("last_used_at", sa.Float, nullable=True),
)
