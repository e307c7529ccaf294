"""The sync API routers, mounted by ``create_app`` under ``/api/v1``."""

from __future__ import annotations

from fastapi import APIRouter

from shoal.hub.api import arenas, audit, changes, chunks, commit, files, stream, versions

sync_router = APIRouter(prefix="/api/v1")
for _module in (arenas, chunks, commit, changes, versions, stream, files, audit):
    sync_router.include_router(_module.router)

__all__ = ["sync_router"]
