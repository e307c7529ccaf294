"""Devices: an installation's name and public keys, registered in one tenant at login."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import NotFoundError, UsageError
from shoal.hub.audit import log as audit
from shoal.hub.db.schema import devices, token_families, users

PUBLIC_KEY_BYTES = 32
MAX_DEVICE_NAME = 128


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    id: int
    public_id: str
    name: str
    user_name: str
    signing_public: bytes
    exchange_public: bytes
    created_at: float
    last_seen_at: float | None
    revoked_at: float | None


def check_device(name: str, signing_public: bytes, exchange_public: bytes) -> None:
    if not name.strip() or len(name) > MAX_DEVICE_NAME or any(ord(c) < 32 for c in name):
        raise UsageError(f"invalid device name {name[:80]!r}", hint="use 1-128 printable characters")
    if len(signing_public) != PUBLIC_KEY_BYTES or len(exchange_public) != PUBLIC_KEY_BYTES:
        raise UsageError("device public keys are 32 bytes each (Ed25519 signing, X25519 exchange)")


async def register_device(
    conn: AsyncConnection,
    *,
    tenant_id: int,
    user_id: int,
    name: str,
    signing_public: bytes,
    exchange_public: bytes,
) -> tuple[int, str]:
    """Register a device; return its internal id and public id.

    A device is its signing key: logging in again with the same keys (same
    tenant, same user, not revoked) finds the device it already is and only
    refreshes its name, so re-logins do not pile up entries.
    """
    check_device(name, signing_public, exchange_public)
    known = (
        await conn.execute(
            sa.select(devices.c.id, devices.c.public_id, devices.c.exchange_public).where(
                devices.c.tenant_id == tenant_id,
                devices.c.user_id == user_id,
                devices.c.signing_public == signing_public,
                devices.c.revoked_at.is_(None),
            )
        )
    ).first()
    if known is not None and bytes(known.exchange_public) == exchange_public:
        await conn.execute(devices.update().where(devices.c.id == known.id).values(name=name))
        return int(known.id), str(known.public_id)
    # The letter prefix keeps an id from starting with '-', which a command line would read as an option.
    public_id = "d" + secrets.token_urlsafe(12)
    device_id = await conn.scalar(
        devices.insert()
        .values(
            public_id=public_id,
            tenant_id=tenant_id,
            user_id=user_id,
            name=name,
            signing_public=signing_public,
            exchange_public=exchange_public,
            created_at=time.time(),
        )
        .returning(devices.c.id)
    )
    assert device_id is not None
    return int(device_id), public_id


async def list_devices(
    conn: AsyncConnection, tenant_id: int, *, public_id: str | None = None
) -> list[DeviceRecord]:
    """The tenant's devices (or the one with ``public_id``), oldest first."""
    query = (
        sa.select(devices, users.c.name.label("user_name"))
        .join(users, users.c.id == devices.c.user_id)
        .where(devices.c.tenant_id == tenant_id)
        .order_by(devices.c.id)
    )
    if public_id is not None:
        query = query.where(devices.c.public_id == public_id)
    rows = await conn.execute(query)
    return [
        DeviceRecord(
            r.id,
            r.public_id,
            r.name,
            r.user_name,
            bytes(r.signing_public),
            bytes(r.exchange_public),
            r.created_at,
            r.last_seen_at,
            r.revoked_at,
        )
        for r in rows
    ]


async def device_by_public_id(conn: AsyncConnection, tenant_id: int, public_id: str) -> DeviceRecord | None:
    found = await list_devices(conn, tenant_id, public_id=public_id)
    return found[0] if found else None


async def revoke_device(conn: AsyncConnection, tenant_id: int, public_id: str) -> DeviceRecord:
    """Mark a device revoked and end every login bound to it; its tokens stop working at once."""
    record = await device_by_public_id(conn, tenant_id, public_id)
    if record is None:
        raise NotFoundError(f"no device {public_id!r} in this tenant", hint="see `shoal hub device list`")
    now = time.time()
    await conn.execute(
        devices.update()
        .where(devices.c.id == record.id, devices.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await conn.execute(
        token_families.update()
        .where(token_families.c.device_id == record.id, token_families.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason="device_revoked")
    )
    await audit.record(conn, "device_removed", tenant_id=tenant_id, device=public_id)
    return record
