"""What every request handler of one hub process shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from starlette.requests import HTTPConnection

from shoal.hub.config import HubSettings
from shoal.hub.db.engine import HubDatabase
from shoal.hub.notify import Notifier
from shoal.store.base import BlobStore


@dataclass
class HubContext:
    """The open database, the blob store (one scope per tenant: ``tenant_blobs(id)``), settings."""

    settings: HubSettings
    db: HubDatabase
    blobs: BlobStore
    notifier: Notifier
    started_at: float = 0.0
    extras: dict[str, object] = field(default_factory=dict)

    def tenant_blobs(self, tenant_id: int) -> BlobStore:
        return self.blobs.scoped(f"t-{tenant_id}")


def hub_context(conn: HTTPConnection) -> HubContext:
    """The context of the app serving this request or WebSocket."""
    ctx = conn.app.state.ctx
    assert isinstance(ctx, HubContext)
    return ctx


async def get_context(request: Request) -> HubContext:
    """FastAPI dependency: ``ctx: HubContext = Depends(get_context)`` (async: FastAPI would run a
    plain function in its thread pool, a thread hop on every request)."""
    return hub_context(request)
