"""Watching an arena: WebSocket (``/ws``) and Server-Sent Events (``/events``).

Both replay the backlog after ``since`` in pages (``type: changes``), then
announce each new cursor (``type: cursor``) as commits land. The watcher
subscribes before reading the backlog, so no commit falls between the two.
The token is checked again every few seconds and on announcements (at most
once a second per token, however many watchers share it); a revoked or
expired one ends a WebSocket with close code 4401 and an SSE stream with an
``error`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from starlette.requests import HTTPConnection

from shoal.errors import AuthError, NotFoundError, ShoalError
from shoal.hub.api.common import Reader
from shoal.hub.auth.recheck import TokenRecheck
from shoal.hub.auth.scopes import SYNC_READ
from shoal.hub.auth.tokens import verify_bearer
from shoal.hub.context import HubContext, get_context, hub_context
from shoal.hub.deps import principal_from_websocket
from shoal.hub.errors import ForbiddenError
from shoal.hub.sync.arenas import ArenaRow, get_arena
from shoal.hub.sync.log import changes_page, page_json

router = APIRouter(tags=["sync"])
Ctx = Annotated[HubContext, Depends(get_context)]

RECHECK_SECONDS = 5.0
RECHECK_MIN_SECONDS = 1.0  # many watchers of one token share one check per second


def _recheck(ctx: HubContext, token: str) -> Awaitable[None]:
    """Raise AuthError if the token stopped being valid (one shared check per token and second)."""
    recheck = ctx.extras.get("token_recheck")
    if not isinstance(recheck, TokenRecheck):
        recheck = TokenRecheck(functools.partial(verify_bearer, ctx.db), RECHECK_MIN_SECONDS)
        ctx.extras["token_recheck"] = recheck
    return recheck(token)


BACKLOG_PAGE = 1000
WS_UNAUTHORIZED = 4401
WS_FORBIDDEN = 4403
WS_NOT_FOUND = 4404


def bearer_token(conn: HTTPConnection) -> str:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    token = conn.query_params.get("access_token")
    if token:
        return token
    raise AuthError("no access token", hint="send `Authorization: Bearer TOKEN` or `?access_token=TOKEN`")


async def backlog_pages(ctx: HubContext, arena: ArenaRow, since: int) -> AsyncIterator[tuple[int, str]]:
    """Every entry after ``since`` as (cursor, ``changes`` message JSON), up to BACKLOG_PAGE entries each.

    There is always at least one message, maybe with no entries: the watcher learns the backlog is over.
    """
    cursor = since
    while True:
        async with ctx.db.read() as conn:
            fresh = await get_arena(conn, arena.tenant_id, arena.public_id)
            page = await changes_page(conn, fresh, cursor, BACKLOG_PAGE)
        cursor = page["cursor"]
        fields = {"type": "changes", "cursor": cursor, "more": page["more"]}
        yield cursor, page_json(fields, "entries", page["entries"]).decode()
        if not page["more"]:
            return


@router.websocket("/arenas/{arena_id}/ws")
async def watch_ws(websocket: WebSocket, arena_id: str, since: int = 0) -> None:
    ctx = hub_context(websocket)
    # Accept first, so a refusal reaches the client as a close code (4401/4403/4404), not a bare 403.
    await websocket.accept()
    try:
        principal = await principal_from_websocket(websocket, SYNC_READ)
        token = bearer_token(websocket)
        async with ctx.db.read() as conn:
            arena = await get_arena(conn, principal.tenant_id, arena_id)
    except ShoalError as exc:
        code = WS_UNAUTHORIZED
        if isinstance(exc, ForbiddenError):
            code = WS_FORBIDDEN
        elif isinstance(exc, NotFoundError):
            code = WS_NOT_FOUND
        elif not isinstance(exc, AuthError):
            code = 1011
        await websocket.close(code=code, reason=exc.message[:120])
        return

    reader = asyncio.create_task(_drain(websocket))
    try:
        async with ctx.notifier.subscribe(arena.id) as sub:
            cursor = max(0, since)
            async for reached, message in backlog_pages(ctx, arena, max(0, since)):
                await websocket.send_text(message)
                cursor = reached
            while not reader.done():
                waiter = asyncio.create_task(sub.next_cursor(RECHECK_SECONDS))
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if reader.done():
                    waiter.cancel()
                    break
                announced = waiter.result()
                try:
                    await _recheck(ctx, token)
                except AuthError as exc:
                    await websocket.close(code=WS_UNAUTHORIZED, reason=exc.message[:120])
                    return
                if announced is not None and announced > cursor:
                    cursor = announced
                    await websocket.send_text(json.dumps({"type": "cursor", "cursor": cursor}))
    except (WebSocketDisconnect, ConnectionError):
        return
    except ShoalError as exc:
        with contextlib.suppress(Exception):
            await websocket.close(code=1011, reason=exc.message[:120])
    finally:
        reader.cancel()


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, so a disconnect is noticed while idle."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()


@router.get("/arenas/{arena_id}/events", response_class=StreamingResponse)
async def watch_sse(
    arena_id: str,
    request: Request,
    ctx: Ctx,
    principal: Reader,
    since: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    last_event = request.headers.get("last-event-id", "")
    start = int(last_event) if last_event.isdigit() else since
    token = bearer_token(request)
    async with ctx.db.read() as conn:
        arena = await get_arena(conn, principal.tenant_id, arena_id)
    return StreamingResponse(
        _sse_events(ctx, request, arena, token, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _sse(event: str, data: dict[str, Any] | str, cursor: int | None = None) -> bytes:
    head = f"id: {cursor}\n" if cursor is not None else ""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}event: {event}\ndata: {text}\n\n".encode()


async def _sse_events(
    ctx: HubContext, request: Request, arena: ArenaRow, token: str, since: int
) -> AsyncIterator[bytes]:
    async with ctx.notifier.subscribe(arena.id) as sub:
        cursor = since
        async for reached, message in backlog_pages(ctx, arena, since):
            yield _sse("changes", message, reached)
            cursor = reached
        while not await request.is_disconnected():
            announced = await sub.next_cursor(RECHECK_SECONDS)
            try:
                await _recheck(ctx, token)
            except AuthError as exc:
                yield _sse("error", {"type": "error", "code": "auth", "message": exc.message})
                return
            if announced is not None and announced > cursor:
                cursor = announced
                yield _sse("cursor", {"type": "cursor", "cursor": cursor}, cursor)
            else:
                yield b": keep-alive\n\n"
