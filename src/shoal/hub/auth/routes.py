"""HTTP endpoints of accounts and devices: device login, refresh, logout, whoami, devices."""

from __future__ import annotations

import json
import logging
from typing import Annotated
from urllib.parse import parse_qsl, quote

import pydantic
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from shoal.errors import AuthError, ConflictError
from shoal.hub.audit import log as audit
from shoal.hub.auth import accounts, device_flow, devices
from shoal.hub.auth import tokens as token_store
from shoal.hub.auth.principal import Principal
from shoal.hub.auth.scopes import format_scopes
from shoal.hub.context import HubContext, get_context
from shoal.hub.db.schema import token_families
from shoal.hub.deps import get_principal
from shoal.hub.limits.guard import client_ip
from shoal.net.schemas_auth import (
    DEVICE_CODE_GRANT,
    DeviceCodeRequest,
    DeviceCodeResponse,
    DeviceInfo,
    DeviceList,
    DeviceTokenRequest,
    LogoutRequest,
    OAuthErrorBody,
    RefreshRequest,
    RegisterDeviceRequest,
    TokenResponse,
    WhoAmI,
)

log = logging.getLogger("shoal.hub.auth")
router = APIRouter(tags=["auth"])
Ctx = Annotated[HubContext, Depends(get_context)]
Caller = Annotated[Principal, Depends(get_principal)]
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_MAX_FORM_BYTES = 16 * 1024


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    body = OAuthErrorBody(error=error, error_description=description).model_dump()
    return JSONResponse(body, status_code=status, headers=_NO_STORE)


def _token_response(issued: token_store.IssuedTokens) -> JSONResponse:
    body = TokenResponse(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
        scope=format_scopes(issued.scopes),
    )
    return JSONResponse(body.model_dump(), headers=_NO_STORE)


async def _form_or_json(request: Request) -> dict[str, object]:
    """Token endpoints accept RFC 6749 form bodies and JSON alike."""
    raw = await request.body()
    if len(raw) > _MAX_FORM_BYTES:
        return {}
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(raw.decode("utf-8", "replace")))
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def _family_tenant(ctx: HubContext, family_id: int) -> int | None:
    """The tenant a login acts in, for its audit event."""
    async with ctx.db.read() as conn:
        query = sa.select(token_families.c.tenant_id).where(token_families.c.id == family_id)
        value = (await conn.execute(query)).scalar_one_or_none()
    return None if value is None else int(value)


@router.post("/auth/device/code", response_model=DeviceCodeResponse)
async def device_code(body: DeviceCodeRequest, request: Request, ctx: Ctx) -> DeviceCodeResponse:
    """Start a device login (RFC 8628 3.1): show ``user_code`` and ``verification_uri`` to the user."""
    issued = await device_flow.create_code(
        ctx.db,
        ctx.settings,
        device_name=body.device_name,
        signing_public=body.signing_public,
        exchange_public=body.exchange_public,
        tenant_name=body.tenant,
    )
    base = str(request.base_url).rstrip("/")
    return DeviceCodeResponse(
        device_code=issued.device_code,
        user_code=issued.user_code,
        verification_uri=f"{base}/activate",
        verification_uri_complete=f"{base}/activate?code={quote(issued.user_code)}",
        expires_in=issued.expires_in,
        interval=issued.interval,
    )


@router.post("/auth/device/token", response_model=TokenResponse, responses={400: {"model": OAuthErrorBody}})
async def device_token(request: Request, ctx: Ctx) -> JSONResponse:
    """Poll for the tokens of a device login (RFC 8628 3.4/3.5)."""
    try:
        body = DeviceTokenRequest.model_validate(await _form_or_json(request))
    except pydantic.ValidationError:
        return _oauth_error("invalid_request", "send grant_type and device_code")
    if body.grant_type != DEVICE_CODE_GRANT:
        return _oauth_error("unsupported_grant_type", f"use grant_type={DEVICE_CODE_GRANT}")
    try:
        issued = await device_flow.poll(ctx.db, ctx.settings, body.device_code)
    except device_flow.DeviceFlowError as exc:
        return _oauth_error(exc.oauth_error, exc.message)
    request.app.state.metrics.logins.labels("device").inc()
    tenant = await _family_tenant(ctx, issued.family_id)
    audit.emit(
        ctx.extras,
        "login",
        tenant_id=tenant,
        ip=client_ip(request.scope),
        family=issued.family_id,
        how="device",
    )
    return _token_response(issued)


@router.post("/auth/refresh", response_model=TokenResponse, responses={400: {"model": OAuthErrorBody}})
async def refresh(request: Request, ctx: Ctx) -> JSONResponse:
    """Exchange a refresh token for a new pair; the old refresh token stops working (rotation)."""
    try:
        body = RefreshRequest.model_validate(await _form_or_json(request))
    except pydantic.ValidationError:
        return _oauth_error("invalid_request", "send refresh_token")
    try:
        issued = await token_store.refresh_tokens(
            ctx.db,
            body.refresh_token,
            access_ttl=ctx.settings.access_ttl,
            refresh_ttl=ctx.settings.refresh_ttl,
        )
    except AuthError as exc:
        request.app.state.metrics.auth_failures.labels("refresh").inc()
        log.warning("refresh refused: %s", exc.message)
        reused = "already used" in exc.message
        audit.emit(
            ctx.extras, "token_reuse" if reused else "auth_failed", ip=client_ip(request.scope), how="refresh"
        )
        return _oauth_error("invalid_grant", exc.message)
    request.app.state.metrics.logins.labels("refresh").inc()
    tenant = await _family_tenant(ctx, issued.family_id)
    audit.emit(
        ctx.extras, "token_rotated", tenant_id=tenant, ip=client_ip(request.scope), family=issued.family_id
    )
    return _token_response(issued)


@router.post("/auth/logout", status_code=204)
async def logout(caller: Caller, ctx: Ctx, body: LogoutRequest | None = None) -> Response:
    """Revoke this login: its access and refresh tokens (a personal access token revokes itself)."""
    async with ctx.db.write() as conn:
        await token_store.revoke_family(conn, caller.family_id, "logout")
        if body is not None and body.refresh_token:
            family = await token_store.family_of_refresh(conn, body.refresh_token)
            if family is not None:
                owner = await conn.scalar(
                    sa.select(token_families.c.user_id).where(token_families.c.id == family)
                )
                if owner == caller.user_id:
                    await token_store.revoke_family(conn, family, "logout")
    return Response(status_code=204)


@router.get("/whoami", response_model=WhoAmI)
async def whoami(caller: Caller, ctx: Ctx) -> WhoAmI:
    async with ctx.db.read() as conn:
        user = await accounts.user_by_id(conn, caller.user_id)
        tenant = await accounts.tenant_by_id(conn, caller.tenant_id)
        device = (
            await devices.device_by_public_id(conn, caller.tenant_id, caller.device_id)
            if caller.device_id
            else None
        )
    return WhoAmI(
        user=user.name,
        tenant=tenant.name,
        tenant_kind="team" if tenant.kind == "team" else "user",
        device_id=caller.device_id,
        device_name=device.name if device else None,
        token_kind="pat" if caller.token_kind == "pat" else "access",  # noqa: S105
        scopes=sorted(caller.scopes),
    )


def _device_info(record: devices.DeviceRecord) -> DeviceInfo:
    return DeviceInfo(
        id=record.public_id,
        name=record.name,
        user=record.user_name,
        signing_public=record.signing_public,
        exchange_public=record.exchange_public,
        created_at=record.created_at,
        last_seen_at=record.last_seen_at,
        revoked=record.revoked_at is not None,
    )


@router.get("/devices", response_model=DeviceList)
async def list_devices(caller: Caller, ctx: Ctx) -> DeviceList:
    """The devices registered in the caller's tenant."""
    async with ctx.db.read() as conn:
        records = await devices.list_devices(conn, caller.tenant_id)
    return DeviceList(devices=[_device_info(r) for r in records])


@router.post("/devices", response_model=DeviceInfo, status_code=201)
async def register_device(body: RegisterDeviceRequest, caller: Caller, ctx: Ctx) -> DeviceInfo:
    """Register the calling device (for logins by personal access token); binds the token to it."""
    if caller.device_id is not None:
        raise ConflictError(
            "this login already belongs to a device",
            hint="a device registers once; log in again to register another",
        )
    async with ctx.db.write() as conn:
        device_id, _ = await devices.register_device(
            conn,
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            name=body.device_name,
            signing_public=body.signing_public,
            exchange_public=body.exchange_public,
        )
        await conn.execute(
            token_families.update()
            .where(token_families.c.id == caller.family_id, token_families.c.device_id.is_(None))
            .values(device_id=device_id)
        )
        records = await devices.list_devices(conn, caller.tenant_id)
        await audit.record(
            conn,
            "device_added",
            tenant_id=caller.tenant_id,
            actor=f"user-{caller.user_id}",
            device=body.device_name,
        )
    return _device_info(next(r for r in records if r.id == device_id))
