"""Key queries: escrow kits, envelopes by epoch, enrollment codes. Every one scoped to a tenant.

Epoch rules the hub enforces (it cannot read envelopes, only order them):
epoch 0 is set once, with the escrow kit; more envelopes of the current
epoch may be added (approvals); a new epoch is exactly the current one plus
one and always includes an escrow envelope. Envelopes are only accepted for
active devices of the tenant, so a revoked device never receives one.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import ConflictError, LockedError, NotFoundError, UsageError
from shoal.hub.auth.devices import DeviceRecord, device_by_public_id, list_devices
from shoal.hub.keys.tables import ESCROW_RECIPIENT, arena_envelopes, arena_escrow, enrollments
from shoal.hub.sync import arenas as arena_q

MAX_ENVELOPE_BYTES = 1024 * 1024
MAX_KIT_BYTES = 64 * 1024
ENROLLMENT_SECONDS = 15 * 60
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud, typed by hand


@dataclass(frozen=True, slots=True)
class Envelope:
    epoch: int
    current_epoch: int
    recipient: str
    envelope: bytes


async def encrypted_arena(conn: AsyncConnection, tenant_id: int, public_id: str) -> arena_q.ArenaRow:
    arena = await arena_q.get_arena(conn, tenant_id, public_id)
    if not arena.encrypted:
        raise UsageError(f"arena {arena.name!r} is plain; it has no keys")
    return arena


async def current_epoch(conn: AsyncConnection, arena_id: int) -> int | None:
    value = await conn.scalar(
        sa.select(sa.func.max(arena_envelopes.c.epoch)).where(arena_envelopes.c.arena_id == arena_id)
    )
    return None if value is None else int(value)


async def get_kit(conn: AsyncConnection, arena: arena_q.ArenaRow) -> bytes:
    kit = await conn.scalar(sa.select(arena_escrow.c.kit).where(arena_escrow.c.arena_id == arena.id))
    if kit is None:
        raise LockedError(
            f"arena {arena.name!r} has no keys yet",
            hint="the device that created it has not finished; create the arena again",
        )
    return bytes(kit)


async def init_keys(
    conn: AsyncConnection,
    tenant_id: int,
    arena: arena_q.ArenaRow,
    kit: bytes,
    envelopes: Mapping[str, bytes],
    by: str,
    now: float,
) -> int:
    """Store the escrow kit and the epoch-0 envelopes of a new encrypted arena (once)."""
    if len(kit) > MAX_KIT_BYTES:
        raise UsageError(f"an escrow kit is at most {MAX_KIT_BYTES} bytes")
    if await current_epoch(conn, arena.id) is not None:
        raise ConflictError(f"arena {arena.name!r} already has keys", hint="enroll this device instead")
    await _check_recipients(conn, tenant_id, envelopes, need_escrow=True)
    await conn.execute(arena_escrow.insert().values(arena_id=arena.id, kit=kit, created_at=now))
    await _insert(conn, arena.id, 0, envelopes, by, now)
    return 0


async def add_envelopes(
    conn: AsyncConnection,
    tenant_id: int,
    arena: arena_q.ArenaRow,
    epoch: int,
    envelopes: Mapping[str, bytes],
    by: str,
    now: float,
) -> int:
    """Envelopes of the current epoch for more devices (an approval, or a device unlocking itself)."""
    current = await current_epoch(conn, arena.id)
    if current is None or epoch != current:
        raise ConflictError(
            f"arena {arena.name!r} is at key epoch {current}, not {epoch}",
            hint="another device rotated the keys; unlock again and retry",
        )
    if ESCROW_RECIPIENT in envelopes:
        raise UsageError("the escrow envelope is only written with a new epoch")
    await _check_recipients(conn, tenant_id, envelopes, need_escrow=False)
    await conn.execute(
        arena_envelopes.delete().where(
            arena_envelopes.c.arena_id == arena.id,
            arena_envelopes.c.epoch == epoch,
            arena_envelopes.c.recipient.in_(list(envelopes)),
        )
    )
    await _insert(conn, arena.id, epoch, envelopes, by, now)
    return epoch


async def start_epoch(
    conn: AsyncConnection,
    tenant_id: int,
    arena: arena_q.ArenaRow,
    epoch: int,
    envelopes: Mapping[str, bytes],
    by: str,
    now: float,
) -> int:
    """Begin key epoch ``epoch`` (the current one plus one) for the given recipients only."""
    current = await current_epoch(conn, arena.id)
    if current is None or epoch != current + 1:
        raise ConflictError(
            f"arena {arena.name!r} is at key epoch {current}, so the next one is not {epoch}",
            hint="another device rotated the keys at the same time; unlock again and retry",
        )
    await _check_recipients(conn, tenant_id, envelopes, need_escrow=True)
    await _insert(conn, arena.id, epoch, envelopes, by, now)
    return epoch


async def envelope_for(conn: AsyncConnection, arena: arena_q.ArenaRow, recipient: str) -> Envelope:
    """The newest envelope of ``recipient``, with the arena's current epoch (it may be newer)."""
    current = await current_epoch(conn, arena.id)
    row = (
        await conn.execute(
            sa.select(arena_envelopes.c.epoch, arena_envelopes.c.envelope)
            .where(arena_envelopes.c.arena_id == arena.id, arena_envelopes.c.recipient == recipient)
            .order_by(arena_envelopes.c.epoch.desc())
            .limit(1)
        )
    ).first()
    if row is None or current is None:
        raise LockedError(
            f"this device holds no key for arena {arena.name!r}",
            hint="run `shoal device enroll` here, with the passphrase, the recovery words or an approval",
        )
    return Envelope(int(row.epoch), current, recipient, bytes(row.envelope))


async def recipients(conn: AsyncConnection, tenant_id: int, arena: arena_q.ArenaRow) -> list[DeviceRecord]:
    """The devices holding an envelope of the current epoch (revoked ones included, flagged)."""
    current = await current_epoch(conn, arena.id)
    if current is None:
        return []
    rows = await conn.execute(
        sa.select(arena_envelopes.c.recipient).where(
            arena_envelopes.c.arena_id == arena.id, arena_envelopes.c.epoch == current
        )
    )
    holders = {str(r.recipient) for r in rows}
    return [d for d in await list_devices(conn, tenant_id) if d.public_id in holders]


async def create_enrollment(
    conn: AsyncConnection, tenant_id: int, device: str, now: float
) -> tuple[str, float]:
    code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))
    expires = now + ENROLLMENT_SECONDS
    await conn.execute(
        enrollments.insert().values(
            code=code, tenant_id=tenant_id, device=device, created_at=now, expires_at=expires
        )
    )
    return code, expires


async def find_enrollment(conn: AsyncConnection, tenant_id: int, code: str, now: float) -> DeviceRecord:
    """The active device that showed ``code``; NotFoundError for an unknown, expired or foreign code."""
    wanted = code.strip().upper().replace("-", "")
    row = (
        await conn.execute(
            sa.select(enrollments.c.device).where(
                enrollments.c.code == wanted,
                enrollments.c.tenant_id == tenant_id,
                enrollments.c.expires_at > now,
            )
        )
    ).first()
    device = None if row is None else await device_by_public_id(conn, tenant_id, str(row.device))
    if device is None or device.revoked_at is not None:
        raise NotFoundError(
            f"no pending enrollment with code {code!r}",
            hint="codes expire after 15 minutes; run `shoal device enroll` on the new device again",
        )
    return device


async def _check_recipients(
    conn: AsyncConnection, tenant_id: int, envelopes: Mapping[str, bytes], *, need_escrow: bool
) -> None:
    if need_escrow and ESCROW_RECIPIENT not in envelopes:
        raise UsageError("a new key epoch must include an envelope for the arena's escrow key")
    if not envelopes or len(envelopes) > 10_000:
        raise UsageError("give between 1 and 10000 envelopes")
    for recipient, blob in envelopes.items():
        if len(blob) > MAX_ENVELOPE_BYTES:
            raise UsageError(f"the envelope for {recipient!r} is over {MAX_ENVELOPE_BYTES} bytes")
        if recipient == ESCROW_RECIPIENT:
            continue
        device = await device_by_public_id(conn, tenant_id, recipient)
        if device is None or device.revoked_at is not None:
            raise UsageError(
                f"device {recipient!r} is not an active device of this household",
                hint="revoked devices never receive keys",
            )


async def _insert(
    conn: AsyncConnection, arena_id: int, epoch: int, envelopes: Mapping[str, bytes], by: str, now: float
) -> None:
    await conn.execute(
        arena_envelopes.insert(),
        [
            {
                "arena_id": arena_id,
                "epoch": epoch,
                "recipient": r,
                "envelope": b,
                "created_by": by,
                "created_at": now,
            }
            for r, b in envelopes.items()
        ],
    )
