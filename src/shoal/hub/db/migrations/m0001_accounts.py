"""Migration 1: accounts. Creates tenants, users, team members, devices, device codes and tokens."""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 1

_md = sa.MetaData()

sa.Table(
    "tenants",
    _md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Table(
    "users",
    _md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("disabled_at", sa.Float, nullable=True),
)
sa.Table(
    "team_members",
    _md,
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Table(
    "devices",
    _md,
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
sa.Table(
    "device_codes",
    _md,
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
sa.Table(
    "token_families",
    _md,
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
sa.Table(
    "tokens",
    _md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("family_id", sa.Integer, sa.ForeignKey("token_families.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("used_at", sa.Float, nullable=True),
    sa.Column("last_used_at", sa.Float, nullable=True),
)


def upgrade(conn: sa.Connection) -> None:
    _md.create_all(conn)
