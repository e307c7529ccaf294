"""What the sync routers share: scoped principals, bounded bodies, JSON bodies parsed into wire models."""

from __future__ import annotations

import time
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from shoal.errors import FormatError
from shoal.hub.auth.principal import Principal
from shoal.hub.auth.scopes import ARENAS_ADMIN, SYNC_READ, SYNC_WRITE
from shoal.hub.context import HubContext
from shoal.hub.deps import require_scope
from shoal.hub.errors import PayloadTooLargeError
from shoal.hub.sync.group import CommitGroup

M = TypeVar("M", bound=BaseModel)

Reader = Annotated[Principal, Depends(require_scope(SYNC_READ))]
Writer = Annotated[Principal, Depends(require_scope(SYNC_WRITE))]
ArenaAdmin = Annotated[Principal, Depends(require_scope(ARENAS_ADMIN))]

MAX_JSON_BODY = 64 * 1024 * 1024


def commit_group(ctx: HubContext) -> CommitGroup:
    """The hub process's group-commit queue (made on first use, kept in the context)."""
    group = ctx.extras.get("commit_group")
    if not isinstance(group, CommitGroup):
        group = CommitGroup(ctx.db)
        ctx.extras["commit_group"] = group
    return group


def now() -> float:
    return time.time()


def device_key(principal: Principal) -> str:
    """Who acknowledges a cursor: the device, or for a personal token its token family."""
    return principal.device_id or f"token-{principal.family_id or principal.token_id}"


async def read_bounded(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything longer than ``limit`` before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the request body is {declared} bytes; the limit is {limit}")
    parts: list[bytes] = []
    total = 0
    async for piece in request.stream():
        total += len(piece)
        if total > limit:
            raise PayloadTooLargeError(f"the request body is over the limit of {limit} bytes")
        parts.append(piece)
    return b"".join(parts)


async def parse_body(request: Request, model: type[M], limit: int = MAX_JSON_BODY) -> M:
    body = await read_bounded(request, limit)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = []
        for item in exc.errors()[:10]:
            where = ".".join(str(p) for p in item.get("loc", ()))
            problems.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg")))
        raise FormatError("; ".join(problems) or "the request body is invalid") from exc
