"""Opaque bearer tokens, stored only as SHA-256 hashes.

A *family* is one login (an access token plus a rotating refresh token) or
one personal access token (PAT). Refreshing marks the presented refresh token
used and issues a new pair in the same family; presenting a used refresh
token again means it was stolen or replayed, so the whole family (the newest
access token included) is revoked. Logout revokes the family too.

Prefixes say what a leaked string is: ``sha_`` access, ``shr_`` refresh,
``shp_`` personal access token.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import AuthError, NotFoundError
from shoal.hub.auth.principal import Principal
from shoal.hub.auth.scopes import format_scopes
from shoal.hub.db.engine import HubDatabase
from shoal.hub.db.schema import devices, token_families, tokens

ACCESS_PREFIX = "sha_"
REFRESH_PREFIX = "shr_"
PAT_PREFIX = "shp_"
_MAX_TOKEN_LENGTH = 200


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str | None
    scopes: frozenset[str]
    family_id: int


async def start_family(
    conn: AsyncConnection,
    *,
    kind: str,
    tenant_id: int,
    user_id: int,
    device_id: int | None,
    scopes: frozenset[str],
    name: str | None = None,
    expires_at: float | None = None,
) -> int:
    family_id = await conn.scalar(
        token_families.insert()
        .values(
            kind=kind,
            name=name,
            tenant_id=tenant_id,
            user_id=user_id,
            device_id=device_id,
            scopes=format_scopes(scopes),
            created_at=time.time(),
            expires_at=expires_at,
        )
        .returning(token_families.c.id)
    )
    assert family_id is not None
    return int(family_id)


async def _insert_token(
    conn: AsyncConnection, family_id: int, kind: str, secret: str, expires_at: float | None
) -> None:
    await conn.execute(
        tokens.insert().values(
            family_id=family_id,
            kind=kind,
            token_hash=hash_secret(secret),
            created_at=time.time(),
            expires_at=expires_at,
        )
    )


async def issue_pair(
    conn: AsyncConnection, family_id: int, scopes: frozenset[str], *, access_ttl: float, refresh_ttl: float
) -> IssuedTokens:
    now = time.time()
    access = new_secret(ACCESS_PREFIX)
    refresh = new_secret(REFRESH_PREFIX)
    await _insert_token(conn, family_id, "access", access, now + access_ttl)
    await _insert_token(conn, family_id, "refresh", refresh, now + refresh_ttl)
    return IssuedTokens(access, max(1, round(access_ttl)), refresh, scopes, family_id)


async def create_pat(
    conn: AsyncConnection,
    *,
    tenant_id: int,
    user_id: int,
    scopes: frozenset[str],
    name: str | None,
    expires_at: float | None,
) -> tuple[str, int]:
    """A new personal access token (shown once) and its id."""
    family_id = await start_family(
        conn,
        kind="pat",
        tenant_id=tenant_id,
        user_id=user_id,
        device_id=None,
        scopes=scopes,
        name=name,
        expires_at=expires_at,
    )
    secret = new_secret(PAT_PREFIX)
    await _insert_token(conn, family_id, "pat", secret, expires_at)
    return secret, family_id


async def revoke_family(conn: AsyncConnection, family_id: int, reason: str) -> None:
    await conn.execute(
        token_families.update()
        .where(token_families.c.id == family_id, token_families.c.revoked_at.is_(None))
        .values(revoked_at=time.time(), revoked_reason=reason)
    )


_REUSED = "reused"


async def refresh_tokens(
    db: HubDatabase, refresh_token: str, *, access_ttl: float, refresh_ttl: float
) -> IssuedTokens:
    """Rotate: a new pair for a valid, unused refresh token; family revoked on reuse."""
    outcome: IssuedTokens | str
    async with db.write() as conn:
        outcome = await _rotate(conn, refresh_token, access_ttl, refresh_ttl)
    # Raised after the transaction committed, so a reuse's revocation sticks.
    if outcome == _REUSED:
        raise AuthError(
            "this refresh token was already used; the whole login has been revoked",
            hint="log in again with `shoal login`",
        )
    assert isinstance(outcome, IssuedTokens)
    return outcome


async def _rotate(
    conn: AsyncConnection, refresh_token: str, access_ttl: float, refresh_ttl: float
) -> IssuedTokens | str:
    invalid = AuthError(
        "the refresh token is invalid, expired or revoked", hint="log in again with `shoal login`"
    )
    if not refresh_token.startswith(REFRESH_PREFIX) or len(refresh_token) > _MAX_TOKEN_LENGTH:
        raise invalid
    row = (
        await conn.execute(
            sa.select(
                tokens.c.id,
                tokens.c.family_id,
                tokens.c.expires_at,
                tokens.c.used_at,
                token_families.c.revoked_at,
                token_families.c.scopes,
                token_families.c.device_id,
            )
            .join(token_families, token_families.c.id == tokens.c.family_id)
            .where(tokens.c.token_hash == hash_secret(refresh_token), tokens.c.kind == "refresh")
            .with_for_update()
        )
    ).first()
    if row is None or row.revoked_at is not None:
        raise invalid
    if row.used_at is not None:
        await revoke_family(conn, row.family_id, "refresh_reuse")
        return _REUSED
    now = time.time()
    if row.expires_at is not None and row.expires_at < now:
        raise invalid
    await conn.execute(tokens.update().where(tokens.c.id == row.id).values(used_at=now))
    if row.device_id is not None:  # a refresh is a cheap, rare moment to note the device is alive
        await conn.execute(devices.update().where(devices.c.id == row.device_id).values(last_seen_at=now))
    scopes = frozenset(row.scopes.split())
    return await issue_pair(conn, row.family_id, scopes, access_ttl=access_ttl, refresh_ttl=refresh_ttl)


# Built once: every request runs it, and a prepared construct skips most of SQLAlchemy's per-call work.
_BEARER_QUERY = (
    sa.select(
        tokens.c.id,
        tokens.c.kind,
        tokens.c.expires_at,
        token_families.c.id.label("family_id"),
        token_families.c.tenant_id,
        token_families.c.user_id,
        token_families.c.scopes,
        token_families.c.revoked_at,
        devices.c.public_id.label("device_public_id"),
        devices.c.revoked_at.label("device_revoked_at"),
    )
    .join(token_families, token_families.c.id == tokens.c.family_id)
    .outerjoin(devices, devices.c.id == token_families.c.device_id)
    .where(tokens.c.token_hash == sa.bindparam("token_hash"), tokens.c.kind != "refresh")
)


async def verify_bearer(db: HubDatabase, token: str) -> Principal:
    """The principal of a live access token or PAT; AuthError for anything else."""
    if not token.startswith((ACCESS_PREFIX, PAT_PREFIX)) or len(token) > _MAX_TOKEN_LENGTH:
        raise AuthError("the access token is not valid", hint="log in again with `shoal login`")
    # One indexed select, read fresh on every request: a token revoked by any process (the admin CLI
    # included) is refused at once.
    row = await db.read_one(_BEARER_QUERY, {"token_hash": hash_secret(token)})
    if row is None:
        raise AuthError("the access token is not valid", hint="log in again with `shoal login`")
    if row["revoked_at"] is not None or row["device_revoked_at"] is not None:
        raise AuthError("the access token has been revoked", hint="log in again with `shoal login`")
    if row["expires_at"] is not None and row["expires_at"] < time.time():
        raise AuthError("the access token has expired", hint="refresh it, or log in again with `shoal login`")
    return Principal(
        tenant_id=row["tenant_id"],
        user_id=row["user_id"],
        device_id=row["device_public_id"],
        scopes=frozenset(row["scopes"].split()),
        token_id=row["id"],
        family_id=row["family_id"],
        token_kind=row["kind"],
    )


async def family_of_refresh(conn: AsyncConnection, refresh_token: str) -> int | None:
    return await conn.scalar(
        sa.select(tokens.c.family_id).where(
            tokens.c.token_hash == hash_secret(refresh_token), tokens.c.kind == "refresh"
        )
    )


@dataclass(frozen=True, slots=True)
class PatInfo:
    id: int
    name: str | None
    scopes: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None


async def list_pats(conn: AsyncConnection, user_id: int) -> list[PatInfo]:
    rows = await conn.execute(
        sa.select(token_families)
        .where(token_families.c.user_id == user_id, token_families.c.kind == "pat")
        .order_by(token_families.c.id)
    )
    return [PatInfo(r.id, r.name, r.scopes, r.created_at, r.expires_at, r.revoked_at) for r in rows]


async def revoke_pat(conn: AsyncConnection, user_id: int, pat_id: int) -> None:
    found = await conn.scalar(
        sa.select(token_families.c.id).where(
            token_families.c.id == pat_id, token_families.c.user_id == user_id, token_families.c.kind == "pat"
        )
    )
    if found is None:
        raise NotFoundError(f"no personal access token {pat_id} for this user")
    await revoke_family(conn, pat_id, "revoked")
