"""Arena CRUD: ``/api/v1/arenas``. Deletion is soft: hidden, restorable for a grace period."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from shoal.hub.api.common import ArenaAdmin, Reader, now, parse_body
from shoal.hub.context import HubContext, get_context
from shoal.hub.sync import arenas as q
from shoal.net.schemas_sync import Arena, ArenaCreate, ArenaList, ArenaUpdate

router = APIRouter(tags=["arenas"])
Ctx = Annotated[HubContext, Depends(get_context)]


@router.post("/arenas", status_code=201, response_model=Arena)
async def create_arena(request: Request, ctx: Ctx, principal: ArenaAdmin) -> Arena:
    spec = await parse_body(request, ArenaCreate, 64 * 1024)
    async with ctx.db.write() as conn:
        row = await q.create_arena(conn, principal.tenant_id, spec, now())
    return row.to_wire()


@router.get("/arenas", response_model=ArenaList)
async def list_arenas(
    ctx: Ctx, principal: Reader, deleted: Annotated[bool, Query(description="list deleted arenas")] = False
) -> ArenaList:
    async with ctx.db.read() as conn:
        rows = await q.list_arenas(conn, principal.tenant_id, deleted=deleted, now=now())
    return ArenaList(arenas=[r.to_wire() for r in rows])


@router.get("/arenas/{arena_id}", response_model=Arena)
async def get_arena(arena_id: str, ctx: Ctx, principal: Reader) -> Arena:
    async with ctx.db.read() as conn:
        row = await q.get_arena(conn, principal.tenant_id, arena_id)
    return row.to_wire()


@router.patch("/arenas/{arena_id}", response_model=Arena)
async def update_arena(arena_id: str, request: Request, ctx: Ctx, principal: ArenaAdmin) -> Arena:
    spec = await parse_body(request, ArenaUpdate, 64 * 1024)
    async with ctx.db.write() as conn:
        row = await q.update_arena(conn, principal.tenant_id, arena_id, spec)
    return row.to_wire()


@router.delete("/arenas/{arena_id}", response_model=Arena)
async def delete_arena(arena_id: str, ctx: Ctx, principal: ArenaAdmin) -> Arena:
    async with ctx.db.write() as conn:
        row = await q.delete_arena(conn, principal.tenant_id, arena_id, now())
    return row.to_wire()


@router.post("/arenas/{arena_id}/undelete", response_model=Arena)
async def undelete_arena(arena_id: str, ctx: Ctx, principal: ArenaAdmin) -> Arena:
    async with ctx.db.write() as conn:
        row = await q.undelete_arena(conn, principal.tenant_id, arena_id, now())
    return row.to_wire()
