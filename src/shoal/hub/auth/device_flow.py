"""The device authorisation grant (RFC 8628) on the hub's side.

A device asks for a code, shows the user code, and polls the token endpoint.
The user approves the user code on ``/activate`` (name + password) or an
operator runs ``shoal hub approve``. Approval registers the device with its
public keys in the chosen tenant; the next poll receives the first token pair.
Guessing is bounded: codes come from a 20-letter alphabet (20^8 ~ 2.6e10),
live minutes, and a code is denied after a few wrong passwords.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import AuthError, NotFoundError, RateLimitedError
from shoal.hub.auth import accounts, devices, tokens
from shoal.hub.auth.scopes import DEVICE_SCOPES
from shoal.hub.config import HubSettings
from shoal.hub.db.engine import HubDatabase
from shoal.hub.db.schema import device_codes

# RFC 8628 section 6.1: consonants only, no vowels (no words), no lookalikes.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
SLOW_DOWN_STEP = 5
# Bounds the table an anonymous caller can fill; real logins need a handful at a time.
MAX_PENDING_CODES = 1000


class DeviceFlowError(AuthError):
    """An RFC 8628 token-endpoint error; ``oauth_error`` is the RFC's code."""

    title = "device login"

    def __init__(self, oauth_error: str, message: str) -> None:
        super().__init__(message)
        self.oauth_error = oauth_error


@dataclass(frozen=True, slots=True)
class NewDeviceCode:
    device_code: str
    user_code: str
    expires_in: int
    interval: int


def format_user_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def normalise_user_code(text: str) -> str | None:
    """``abcd-efgh``, ``ABCDEFGH`` or ``ABCD EFGH`` into the stored form; None if it cannot be a code."""
    code = "".join(ch for ch in text.upper() if ch not in "- ")
    if len(code) != USER_CODE_LENGTH or not set(code) <= set(USER_CODE_ALPHABET):
        return None
    return code


def _new_user_code() -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


async def create_code(
    db: HubDatabase,
    settings: HubSettings,
    *,
    device_name: str,
    signing_public: bytes,
    exchange_public: bytes,
    tenant_name: str | None,
) -> NewDeviceCode:
    devices.check_device(device_name, signing_public, exchange_public)
    if tenant_name is not None:
        accounts.check_name(tenant_name, "tenant")
    device_code = secrets.token_urlsafe(32)
    now = time.time()
    async with db.write() as conn:
        # Drop long-expired requests so the table stays small.
        await conn.execute(
            device_codes.delete().where(
                device_codes.c.expires_at < now - 86400, device_codes.c.status != "approved"
            )
        )
        pending = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(device_codes)
            .where(device_codes.c.status == "pending", device_codes.c.expires_at >= now)
        )
        if (pending or 0) >= MAX_PENDING_CODES:
            raise RateLimitedError("too many logins are waiting for approval", retry_after=60.0)
        for _ in range(10):
            user_code = _new_user_code()
            taken = await conn.scalar(
                sa.select(device_codes.c.id).where(device_codes.c.user_code == user_code)
            )
            if taken is None:
                break
        await conn.execute(
            device_codes.insert().values(
                device_code_hash=tokens.hash_secret(device_code),
                user_code=user_code,
                tenant_name=tenant_name,
                device_name=device_name,
                signing_public=signing_public,
                exchange_public=exchange_public,
                status="pending",
                interval=settings.device_poll_interval,
                failed_attempts=0,
                created_at=now,
                expires_at=now + settings.device_code_ttl,
            )
        )
    return NewDeviceCode(
        device_code,
        format_user_code(user_code),
        round(settings.device_code_ttl),
        settings.device_poll_interval,
    )


async def poll(db: HubDatabase, settings: HubSettings, device_code: str) -> tokens.IssuedTokens:
    """One poll of the token endpoint: tokens once approved, else a DeviceFlowError."""
    async with db.write() as conn:
        outcome = await _poll(conn, settings, device_code)
    if isinstance(outcome, DeviceFlowError):
        raise outcome  # after commit: the poll time and interval are recorded
    return outcome


async def _poll(
    conn: AsyncConnection, settings: HubSettings, device_code: str
) -> tokens.IssuedTokens | DeviceFlowError:
    row = (
        await conn.execute(
            sa.select(device_codes)
            .where(device_codes.c.device_code_hash == tokens.hash_secret(device_code))
            .with_for_update()
        )
    ).first()
    if row is None or row.status == "consumed":
        return DeviceFlowError("invalid_grant", "unknown or already used device code")
    now = time.time()
    if row.status == "denied":
        return DeviceFlowError("access_denied", "the login request was denied")
    if row.expires_at < now:
        return DeviceFlowError("expired_token", "the login request expired; start again")
    if row.status == "pending":
        interval = row.interval
        error = DeviceFlowError("authorization_pending", "waiting for the user to approve the code")
        # Polling faster than the interval earns slow_down and a longer interval (RFC 8628 3.5).
        if row.last_poll_at is not None and now - row.last_poll_at < 0.8 * row.interval:
            interval += SLOW_DOWN_STEP
            error = DeviceFlowError("slow_down", f"poll at most every {interval} seconds")
        await conn.execute(
            device_codes.update()
            .where(device_codes.c.id == row.id)
            .values(last_poll_at=now, interval=interval)
        )
        return error
    # Approved: hand out the first pair exactly once.
    await conn.execute(device_codes.update().where(device_codes.c.id == row.id).values(status="consumed"))
    family_id = await tokens.start_family(
        conn,
        kind="login",
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        device_id=row.device_id,
        scopes=DEVICE_SCOPES,
    )
    return await tokens.issue_pair(
        conn, family_id, DEVICE_SCOPES, access_ttl=settings.access_ttl, refresh_ttl=settings.refresh_ttl
    )


@dataclass(frozen=True, slots=True)
class Approval:
    device_name: str
    device_public_id: str
    tenant_name: str
    user_name: str


async def _pending(conn: AsyncConnection, user_code: str) -> sa.Row[tuple[object, ...]]:
    code = normalise_user_code(user_code)
    now = time.time()
    row = None
    if code is not None:
        row = (
            await conn.execute(
                sa.select(device_codes).where(device_codes.c.user_code == code).with_for_update()
            )
        ).first()
    if row is None or row.status != "pending" or row.expires_at < now:
        raise NotFoundError(
            f"no pending login with code {user_code[:20]!r}",
            hint="check the code shown by `shoal login`; codes expire after a few minutes",
        )
    return row


async def pending_request(db: HubDatabase, user_code: str) -> tuple[str, str | None]:
    """The device name and requested tenant of a pending code (for the approval page)."""
    async with db.read() as conn:
        row = await _pending(conn, user_code)
    return str(row.device_name), row.tenant_name if row.tenant_name is None else str(row.tenant_name)


async def approve(db: HubDatabase, user_code: str, user_name: str) -> Approval:
    """Approve a pending code as ``user_name``: register the device in the requested tenant."""
    async with db.write() as conn:
        row = await _pending(conn, user_code)
        user = await accounts.find_user(conn, user_name)
        tenant = await accounts.resolve_tenant(conn, user, row.tenant_name)
        device_id, public_id = await devices.register_device(
            conn,
            tenant_id=tenant.id,
            user_id=user.id,
            name=row.device_name,
            signing_public=bytes(row.signing_public),
            exchange_public=bytes(row.exchange_public),
        )
        await conn.execute(
            device_codes.update()
            .where(device_codes.c.id == row.id)
            .values(status="approved", user_id=user.id, tenant_id=tenant.id, device_id=device_id)
        )
    return Approval(row.device_name, public_id, tenant.name, user.name)


async def record_failed_attempt(db: HubDatabase, settings: HubSettings, user_code: str) -> bool:
    """Count a wrong password against a pending code; True when the code is now denied."""
    code = normalise_user_code(user_code)
    if code is None:
        return False
    async with db.write() as conn:
        row = (
            await conn.execute(
                sa.select(device_codes.c.id, device_codes.c.failed_attempts, device_codes.c.status)
                .where(device_codes.c.user_code == code)
                .with_for_update()
            )
        ).first()
        if row is None or row.status != "pending":
            return False
        attempts = row.failed_attempts + 1
        denied = attempts >= settings.user_code_max_attempts
        await conn.execute(
            device_codes.update()
            .where(device_codes.c.id == row.id)
            .values(failed_attempts=attempts, status="denied" if denied else "pending")
        )
    return bool(denied)


async def deny(db: HubDatabase, user_code: str) -> None:
    async with db.write() as conn:
        row = await _pending(conn, user_code)
        await conn.execute(device_codes.update().where(device_codes.c.id == row.id).values(status="denied"))
