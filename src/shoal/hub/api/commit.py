"""``POST /api/v1/arenas/{id}/commit``: a batch of changes in one transaction, idempotent by key.

The hottest endpoint of the hub, so it has a fast path (``CommitFastPath``)
that skips FastAPI's route matching and dependency solving and runs the very
same steps with the same functions: the context, the bearer token (read
fresh), the tenant's rate, the ``sync:write`` scope, the bounded body, the
group commit; a refusal goes to the app's own handler for ``ShoalError``, so
its body is the same. The FastAPI route stays: it is what the OpenAPI
document describes, and it serves whatever the fast path lets through.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from shoal.errors import ShoalError
from shoal.hub.api.common import Writer, commit_group, now, parse_body
from shoal.hub.auth.principal import Principal
from shoal.hub.auth.scopes import SYNC_WRITE
from shoal.hub.context import HubContext, get_context, hub_context
from shoal.hub.deps import scoped_principal
from shoal.hub.sync.commit import commit
from shoal.hub.sync.commit_postgres import PendingCommit, commit_all_postgres
from shoal.hub.sync.commit_sqlite import commit_sqlite
from shoal.hub.sync.group import PostgresBatch
from shoal.net.schemas_sync import CommitRequest, CommitResult

router = APIRouter(tags=["sync"])
Ctx = Annotated[HubContext, Depends(get_context)]
ErrorHandler = Callable[[Request, Any], Response | Awaitable[Response]]  # as Starlette keeps them


async def _commit(ctx: HubContext, principal: Principal, arena_id: str, request: Request) -> Response:
    req = await parse_body(request, CommitRequest)
    tenant_id, at = principal.tenant_id, now()
    arena, result = await commit_group(ctx).run(
        lambda conn: commit(conn, tenant_id, arena_id, req, at),
        on_sqlite=lambda raw: commit_sqlite(raw, tenant_id, arena_id, req, at),
        on_postgres=PostgresBatch(commit_all_postgres, PendingCommit(tenant_id, arena_id, req, at)),
    )
    # Announced only after the transaction committed: a watcher never sees a cursor it cannot read.
    if not result.replayed:
        await ctx.notifier.publish(arena.id, result.last)
    # Serialized once here: handing FastAPI the model would have it dump, validate again and re-encode.
    return Response(result.model_dump_json(), media_type="application/json")


@router.post("/arenas/{arena_id}/commit", response_model=CommitResult)
async def commit_changes(arena_id: str, request: Request, ctx: Ctx, principal: Writer) -> Response:
    return await _commit(ctx, principal, arena_id, request)


COMMIT_ROUTE = next(r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is commit_changes)
# What the route matches once mounted under /api/v1 (a path parameter is one non-empty segment).
_FAST_PATH = re.compile(r"/api/v1/arenas/([^/]+)/commit")


class CommitFastPath:
    """ASGI middleware: the commit endpoint's requests served directly, every other request passed on.

    It sits inside the hub's own middleware (request ids, access log, metrics, size guard), which
    see it as the route above (``scope["route"]``), and takes the app's ``ShoalError`` handler.
    Any other exception travels on as it would from the route.
    """

    def __init__(self, app: ASGIApp, on_error: ErrorHandler) -> None:
        self.app = app
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            found = _FAST_PATH.fullmatch(scope["path"])
        if found is None:
            await self.app(scope, receive, send)
            return
        arena_id = found.group(1)
        scope["route"] = COMMIT_ROUTE
        scope["path_params"] = {"arena_id": arena_id}
        request = Request(scope, receive)
        try:
            ctx = hub_context(request)
            principal = await scoped_principal(request, SYNC_WRITE)
            response = await _commit(ctx, principal, arena_id, request)
        except ShoalError as exc:
            answer = self.on_error(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)
