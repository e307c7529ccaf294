"""Versions of a path, restoring one, and the current tree for bootstrapping devices."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from shoal.hub.api.common import Reader, Writer, commit_group, device_key, now, parse_body
from shoal.hub.audit import log as audit
from shoal.hub.context import HubContext, get_context
from shoal.hub.sync.arenas import get_arena
from shoal.hub.sync.log import page_json, restore, tree_page, versions
from shoal.net.schemas_sync import MAX_TREE_PAGE, CommitResult, RestoreRequest, TreePage, VersionList

router = APIRouter(tags=["sync"])
Ctx = Annotated[HubContext, Depends(get_context)]
HexKey = Annotated[str, Query(pattern=r"^[0-9a-f]{64}$", description="the path key (64 hex)")]


@router.get("/arenas/{arena_id}/versions", response_model=VersionList)
async def list_versions(arena_id: str, path_key: HexKey, ctx: Ctx, principal: Reader) -> VersionList:
    async with ctx.db.read() as conn:
        arena = await get_arena(conn, principal.tenant_id, arena_id)
        return await versions(conn, arena, path_key)


@router.post("/arenas/{arena_id}/restore", response_model=CommitResult)
async def restore_version(arena_id: str, request: Request, ctx: Ctx, principal: Writer) -> CommitResult:
    req = await parse_body(request, RestoreRequest, 4096)
    device = req.device or device_key(principal)
    arena, result = await commit_group(ctx).run(
        lambda conn: restore(conn, principal.tenant_id, arena_id, req, device=device, now=now())
    )
    audit.emit(
        ctx.extras, "restore", tenant_id=principal.tenant_id, actor=device, arena=arena_id, seq=req.seq
    )
    await ctx.notifier.publish(arena.id, result.last)
    return result


@router.get("/arenas/{arena_id}/tree", response_model=TreePage)
async def list_tree(
    arena_id: str,
    ctx: Ctx,
    principal: Reader,
    after: Annotated[str, Query(pattern=r"^([0-9a-f]{64})?$")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_TREE_PAGE)] = 1000,
) -> Response:
    async with ctx.db.read() as conn:
        arena = await get_arena(conn, principal.tenant_id, arena_id)
        page = await tree_page(conn, arena, after, limit)
    fields = {"cursor": page["cursor"], "next_after": page["next_after"]}
    return Response(page_json(fields, "items", page["items"]), media_type="application/json")
