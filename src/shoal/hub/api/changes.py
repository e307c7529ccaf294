"""The change log: ``changes`` since a cursor, and each device's acknowledged cursor."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from shoal.hub.api.common import Reader, device_key, now, parse_body
from shoal.hub.context import HubContext, get_context
from shoal.hub.sync.arenas import get_arena
from shoal.hub.sync.log import ack, changes_page, page_json
from shoal.net.schemas_sync import MAX_CHANGES_PAGE, AckRequest, AckResult, ChangesPage

router = APIRouter(tags=["sync"])
Ctx = Annotated[HubContext, Depends(get_context)]


@router.get("/arenas/{arena_id}/changes", response_model=ChangesPage)
async def list_changes(
    arena_id: str,
    ctx: Ctx,
    principal: Reader,
    since: Annotated[int, Query(ge=0, description="the last cursor the device has")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_CHANGES_PAGE)] = 1000,
) -> Response:
    async with ctx.db.read() as conn:
        arena = await get_arena(conn, principal.tenant_id, arena_id)
        page = await changes_page(conn, arena, since, limit)
    fields = {"cursor": page["cursor"], "more": page["more"], "head": page["head"]}
    # The next page's cursor in the headers too: a client can ask for it before parsing this one.
    headers = {"X-Shoal-Cursor": str(page["cursor"]), "X-Shoal-More": "1" if page["more"] else "0"}
    return Response(
        page_json(fields, "entries", page["entries"]), media_type="application/json", headers=headers
    )


@router.post("/arenas/{arena_id}/ack", response_model=AckResult)
async def acknowledge(arena_id: str, request: Request, ctx: Ctx, principal: Reader) -> AckResult:
    req = await parse_body(request, AckRequest, 4096)
    async with ctx.db.write() as conn:
        arena = await get_arena(conn, principal.tenant_id, arena_id)
        stored = await ack(conn, arena, device_key(principal), req.cursor, now())
    return AckResult(cursor=stored)
