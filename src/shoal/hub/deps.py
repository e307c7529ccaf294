"""FastAPI dependencies for who is calling.

``get_principal`` checks the bearer token on every request (so a revoked
token stops working at once); ``require_scope("sync:write")`` also checks a
scope. ``principal_from_websocket`` does the same for WebSockets, where the
token comes in the ``Authorization`` header or an ``access_token`` query
parameter; call it again before long-lived sends to recheck revocation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request, WebSocket
from starlette.requests import HTTPConnection

from shoal.errors import AuthError, RateLimitedError
from shoal.hub.auth.principal import Principal
from shoal.hub.auth.tokens import verify_bearer
from shoal.hub.context import HubContext, hub_context
from shoal.hub.errors import ForbiddenError
from shoal.hub.limits.buckets import TokenBuckets

__all__ = ["Principal", "get_principal", "principal_from_websocket", "require_scope", "scoped_principal"]


def _bearer(conn: HTTPConnection, *, allow_query: bool) -> str:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if allow_query:
        token = conn.query_params.get("access_token")
        if token:
            return token
    raise AuthError("no access token given", hint="log in with `shoal login --hub URL`")


async def _principal(conn: HTTPConnection, *, allow_query: bool) -> Principal:
    ctx = hub_context(conn)
    principal = await verify_bearer(ctx.db, _bearer(conn, allow_query=allow_query))
    conn.state.principal = principal
    check_tenant_rate(ctx, principal.tenant_id)
    return principal


def check_tenant_rate(ctx: HubContext, tenant_id: int) -> None:
    """Take one token from the tenant's API bucket; 429 with Retry-After when it is empty."""
    buckets = ctx.extras.get("tenant_buckets")
    if not isinstance(buckets, TokenBuckets):
        limits = ctx.settings.limits
        buckets = TokenBuckets(limits.api_rate, limits.api_burst)
        ctx.extras["tenant_buckets"] = buckets
    wait = buckets.take(tenant_id)
    if wait > 0:
        raise RateLimitedError(
            "this account is making too many requests", retry_after=wait, hint="slow down and retry later"
        )


async def get_principal(request: Request) -> Principal:
    return await _principal(request, allow_query=False)


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that returns the principal if its token carries ``scope``, else 403."""

    async def dependency(principal: Principal = Depends(get_principal)) -> Principal:  # noqa: B008
        return check_scope(principal, scope)

    return dependency


def check_scope(principal: Principal, scope: str) -> Principal:
    if scope not in principal.scopes:
        raise ForbiddenError(
            f"this token does not allow {scope!r}",
            hint="create a token with that scope, or log in as a device",
        )
    return principal


async def scoped_principal(request: Request, scope: str) -> Principal:
    """What ``require_scope(scope)`` gives a route, for code that runs outside FastAPI's dependencies."""
    return check_scope(await get_principal(request), scope)


async def principal_from_websocket(ws: WebSocket, scope: str | None = None) -> Principal:
    """Authenticate a WebSocket (header or ``?access_token=``); raises AuthError/ForbiddenError."""
    principal = await _principal(ws, allow_query=True)
    if scope is not None and scope not in principal.scopes:
        raise ForbiddenError(f"this token does not allow {scope!r}")
    return principal
