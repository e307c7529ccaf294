"""Key routes: ``/api/v1/arenas/{id}/keys/*`` and ``/api/v1/keys/*``. Blobs in and out, never opened.

Escrow kits and envelopes are ciphertext made on devices; the hub orders key
epochs, refuses envelopes for revoked devices, and hands each device only
its own envelope. Enrollment codes name a device and carry no secret.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from shoal.errors import UsageError
from shoal.hub.api.common import ArenaAdmin, Reader, Writer, now, parse_body
from shoal.hub.auth import devices as device_q
from shoal.hub.auth.principal import Principal
from shoal.hub.context import HubContext, get_context
from shoal.hub.keys import store as q
from shoal.hub.keys.tables import ESCROW_RECIPIENT

router = APIRouter(tags=["keys"])
Ctx = Annotated[HubContext, Depends(get_context)]
_BODY_LIMIT = 16 * 1024 * 1024


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, val_json_bytes="base64", ser_json_bytes="base64")


class KeysInit(_Model):
    kit: bytes
    envelopes: dict[str, bytes]


class EnvelopesIn(_Model):
    epoch: int = Field(ge=0)
    envelopes: dict[str, bytes]
    mode: Literal["add", "rotate"] = "add"


class EpochOut(_Model):
    epoch: int


class KitOut(_Model):
    kit: bytes
    epoch: int


class EnvelopeOut(_Model):
    epoch: int
    current_epoch: int
    recipient: str
    envelope: bytes


class Recipient(_Model):
    id: str
    name: str
    exchange_public: bytes
    revoked: bool


class RecipientList(_Model):
    epoch: int | None
    devices: list[Recipient]


class EnrollmentOut(_Model):
    code: str
    device: str
    expires_at: float


class EnrollmentDevice(_Model):
    device: str
    name: str
    exchange_public: bytes


def _device(principal: Principal) -> str:
    if principal.device_id is None:
        raise UsageError("only a logged-in device holds keys", hint="log in with `shoal login` on the device")
    return principal.device_id


@router.put("/arenas/{arena_id}/keys", response_model=EpochOut, status_code=201)
async def init_keys(arena_id: str, request: Request, ctx: Ctx, principal: ArenaAdmin) -> EpochOut:
    body = await parse_body(request, KeysInit, _BODY_LIMIT)
    async with ctx.db.write() as conn:
        arena = await q.encrypted_arena(conn, principal.tenant_id, arena_id)
        epoch = await q.init_keys(
            conn, principal.tenant_id, arena, body.kit, body.envelopes, _device(principal), now()
        )
    return EpochOut(epoch=epoch)


@router.post("/arenas/{arena_id}/keys/envelopes", response_model=EpochOut)
async def post_envelopes(arena_id: str, request: Request, ctx: Ctx, principal: Writer) -> EpochOut:
    body = await parse_body(request, EnvelopesIn, _BODY_LIMIT)
    by = _device(principal)
    async with ctx.db.write() as conn:
        arena = await q.encrypted_arena(conn, principal.tenant_id, arena_id)
        action = q.start_epoch if body.mode == "rotate" else q.add_envelopes
        epoch = await action(conn, principal.tenant_id, arena, body.epoch, body.envelopes, by, now())
    return EpochOut(epoch=epoch)


@router.get("/arenas/{arena_id}/keys/escrow", response_model=KitOut)
async def get_escrow(arena_id: str, ctx: Ctx, principal: Reader) -> KitOut:
    async with ctx.db.read() as conn:
        arena = await q.encrypted_arena(conn, principal.tenant_id, arena_id)
        kit = await q.get_kit(conn, arena)
        epoch = await q.current_epoch(conn, arena.id)
    return KitOut(kit=kit, epoch=epoch or 0)


@router.get("/arenas/{arena_id}/keys/envelope", response_model=EnvelopeOut)
async def get_envelope(arena_id: str, ctx: Ctx, principal: Reader, escrow: bool = False) -> EnvelopeOut:
    """The caller's own newest envelope, or (``escrow=true``) the escrow key's, for passphrase unlocks."""
    recipient = ESCROW_RECIPIENT if escrow else _device(principal)
    async with ctx.db.read() as conn:
        arena = await q.encrypted_arena(conn, principal.tenant_id, arena_id)
        found = await q.envelope_for(conn, arena, recipient)
    return EnvelopeOut(
        epoch=found.epoch,
        current_epoch=found.current_epoch,
        recipient=found.recipient,
        envelope=found.envelope,
    )


@router.get("/arenas/{arena_id}/keys/recipients", response_model=RecipientList)
async def get_recipients(arena_id: str, ctx: Ctx, principal: Reader) -> RecipientList:
    async with ctx.db.read() as conn:
        arena = await q.encrypted_arena(conn, principal.tenant_id, arena_id)
        holders = await q.recipients(conn, principal.tenant_id, arena)
        epoch = await q.current_epoch(conn, arena.id)
    return RecipientList(
        epoch=epoch,
        devices=[
            Recipient(
                id=d.public_id,
                name=d.name,
                exchange_public=d.exchange_public,
                revoked=d.revoked_at is not None,
            )
            for d in holders
        ],
    )


@router.post("/keys/enrollments", response_model=EnrollmentOut, status_code=201)
async def create_enrollment(ctx: Ctx, principal: Writer) -> EnrollmentOut:
    device = _device(principal)
    async with ctx.db.write() as conn:
        code, expires = await q.create_enrollment(conn, principal.tenant_id, device, now())
    return EnrollmentOut(code=code, device=device, expires_at=expires)


@router.get("/keys/enrollments/{code}", response_model=EnrollmentDevice)
async def find_enrollment(code: str, ctx: Ctx, principal: Writer) -> EnrollmentDevice:
    async with ctx.db.read() as conn:
        device = await q.find_enrollment(conn, principal.tenant_id, code, now())
    return EnrollmentDevice(device=device.public_id, name=device.name, exchange_public=device.exchange_public)


@router.post("/keys/devices/{device_id}/revoke", response_model=Recipient)
async def revoke_device(device_id: str, ctx: Ctx, principal: ArenaAdmin) -> Recipient:
    """End every login of a device at once (its next request gets 401); key rotation follows from a device."""
    async with ctx.db.write() as conn:
        record = await device_q.revoke_device(conn, principal.tenant_id, device_id)
    return Recipient(
        id=record.public_id, name=record.name, exchange_public=record.exchange_public, revoked=True
    )
