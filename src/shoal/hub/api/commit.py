"""``POST /api/v1/arenas/{id}/commit``: a batch of changes in one transaction, idempotent by key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from shoal.hub.api.common import Writer, commit_group, now, parse_body
from shoal.hub.context import HubContext, get_context
from shoal.hub.sync.commit import commit
from shoal.hub.sync.commit_sqlite import commit_sqlite
from shoal.net.schemas_sync import CommitRequest, CommitResult

router = APIRouter(tags=["sync"])
Ctx = Annotated[HubContext, Depends(get_context)]


@router.post("/arenas/{arena_id}/commit", response_model=CommitResult)
async def commit_changes(arena_id: str, request: Request, ctx: Ctx, principal: Writer) -> Response:
    req = await parse_body(request, CommitRequest)
    tenant_id, at = principal.tenant_id, now()
    arena, result = await commit_group(ctx).run(
        lambda conn: commit(conn, tenant_id, arena_id, req, at),
        on_sqlite=lambda raw: commit_sqlite(raw, tenant_id, arena_id, req, at),
    )
    # Announced only after the transaction committed: a watcher never sees a cursor it cannot read.
    if not result.replayed:
        await ctx.notifier.publish(arena.id, result.last)
    # Serialized once here: handing FastAPI the model would have it dump, validate again and re-encode.
    return Response(result.model_dump_json(), media_type="application/json")
