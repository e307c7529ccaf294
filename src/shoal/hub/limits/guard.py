"""The guard middleware: per-address limits on auth endpoints, body size while streaming, audit of refusals.

It sits inside ``RequestContextMiddleware`` (which refuses a declared
Content-Length over the limit before anything is read). Here a body sent
without a length is counted as it arrives and cut off at the limit, auth
endpoints are rate limited per client address, and every 401, 413 and 429
becomes an audit event (queued, so refusals cost no database write each).
The per-tenant API bucket is checked where the tenant becomes known, right
after the bearer token (``hub.deps``).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal.errors import RateLimitedError
from shoal.hub.audit.log import AuditQueue
from shoal.hub.errors import PayloadTooLargeError, error_response
from shoal.hub.limits.buckets import TokenBuckets

AUTH_PREFIX = "/api/v1/auth/"
_AUDITED = {401: "auth_failed", 413: "too_large", 429: "rate_limited", 507: "quota_refused"}


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class GuardMiddleware:
    def __init__(self, app: ASGIApp, state: Any, max_request_bytes: int, auth_buckets: TokenBuckets) -> None:
        self.app = app
        self.state = state  # the FastAPI app's state: ``ctx`` appears there once the lifespan ran
        self.max_request_bytes = max_request_bytes
        self.auth_buckets = auth_buckets

    def _audit(self) -> AuditQueue | None:
        ctx = getattr(self.state, "ctx", None)
        queue = ctx.extras.get("audit") if ctx is not None else None
        return queue if isinstance(queue, AuditQueue) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        ip = client_ip(scope)
        if path.startswith(AUTH_PREFIX):
            wait = self.auth_buckets.take(ip)
            if wait > 0:
                self._note(scope, 429, ip, path)
                exc = RateLimitedError(
                    "too many login attempts from this address", retry_after=wait, hint="wait and try again"
                )
                await error_response(exc)(scope, receive, send)
                return
        limit = self.max_request_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            # Refused from the headers alone: not one byte of the body is read.
            self._note(scope, 413, ip, path)
            too_large = PayloadTooLargeError(f"the request is larger than {limit} bytes")
            await error_response(too_large)(scope, receive, send)
            return
        seen = {"bytes": 0, "status": 0}

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > limit:
                    raise PayloadTooLargeError(f"the request body is over the limit of {limit} bytes")
            return message

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        finally:
            if seen["status"] in _AUDITED:
                self._note(scope, seen["status"], ip, path)

    def _note(self, scope: Scope, status: int, ip: str, path: str) -> None:
        queue = self._audit()
        if queue is None:
            return
        principal = (scope.get("state") or {}).get("principal")
        tenant = getattr(principal, "tenant_id", None)
        actor = getattr(principal, "device_id", None) or (
            f"token-{principal.family_id or principal.token_id}" if principal is not None else None
        )
        queue.emit(
            _AUDITED[status],
            tenant_id=tenant,
            actor=actor,
            ip=ip,
            method=scope.get("method"),
            path=path,
            status=status,
        )
