"""``GET /api/v1/audit/recent``: the newest audit events of the caller's tenant (admin scope)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from shoal.hub.audit.log import recent
from shoal.hub.auth.principal import Principal
from shoal.hub.auth.scopes import ADMIN
from shoal.hub.context import HubContext, get_context
from shoal.hub.deps import require_scope

router = APIRouter(tags=["audit"])
Ctx = Annotated[HubContext, Depends(get_context)]
Admin = Annotated[Principal, Depends(require_scope(ADMIN))]


class AuditItem(BaseModel):
    id: int
    at: float
    kind: str
    actor: str | None
    ip: str | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    events: list[AuditItem]


@router.get("/audit/recent", response_model=AuditPage)
async def audit_recent(
    ctx: Ctx, principal: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> AuditPage:
    """Newest first; only this tenant's events (failed logins of unknown callers are hub-wide only)."""
    queue = ctx.extras.get("audit")
    flush = getattr(queue, "flush", None)
    if flush is not None:
        await flush()  # what was refused a moment ago shows up now
    async with ctx.db.read() as conn:
        events = await recent(conn, principal.tenant_id, limit)
    return AuditPage(
        events=[
            AuditItem(id=e.id, at=e.at, kind=e.kind, actor=e.actor, ip=e.ip, detail=e.detail) for e in events
        ]
    )
