"""The hub's FastAPI application: lifespan (database, migrations, store), middleware and routers."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal import __version__
from shoal.errors import ShoalError
from shoal.hub import activate
from shoal.hub.api import keys as keys_routes
from shoal.hub.api import sync_router
from shoal.hub.api.commit import CommitFastPath
from shoal.hub.audit.log import AuditQueue
from shoal.hub.auth import routes as auth_routes
from shoal.hub.config import HubSettings, redact_url
from shoal.hub.context import HubContext, hub_context
from shoal.hub.db.engine import open_database
from shoal.hub.db.migrate import migrate
from shoal.hub.errors import install_error_handlers
from shoal.hub.limits.buckets import TokenBuckets
from shoal.hub.limits.guard import GuardMiddleware
from shoal.hub.logging import request_id_var
from shoal.hub.maintenance.loop import maintenance_loop
from shoal.hub.metrics import HubMetrics
from shoal.hub.notify import InProcessNotifier
from shoal.store.url import open_blob_store

log = logging.getLogger("shoal.hub")
API_PREFIX = "/api/v1"
# Request ids only tell log lines apart; they guard nothing, so no system call per request for them.
_request_ids = random.Random()  # noqa: S311 - not a secret


def new_request_id() -> str:
    return f"{_request_ids.getrandbits(64):016x}"


class RequestContextMiddleware:
    """Request ids, one access-log line per request, metrics (size limits: ``hub.limits.guard``)."""

    def __init__(self, app: ASGIApp, metrics: HubMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = {"code": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope.get("method", "WS")
            self.metrics.requests.labels(template, method, str(status["code"])).inc()
            self.metrics.latency.labels(template).observe(elapsed)
            # The path, never the query string: a WebSocket may carry its token there.
            log.info(
                "request",
                extra={
                    "method": method,
                    "path": scope.get("path", ""),
                    "status": status["code"],
                    "ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(token)


def create_app(settings: HubSettings) -> FastAPI:
    """The hub application; its lifespan opens the database and store and runs migrations."""
    metrics = HubMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = await open_database(settings.db_url)
        try:
            applied = await migrate(db)
            if applied:
                log.info("database migrated", extra={"applied": applied})
            blobs = open_blob_store(settings.store_url)
            notifier = InProcessNotifier()
            app.state.ctx = HubContext(
                settings=settings, db=db, blobs=blobs, notifier=notifier, started_at=time.time()
            )
            audit = AuditQueue(db)
            app.state.ctx.extras["audit"] = audit
            background = [
                asyncio.create_task(audit.run()),
                asyncio.create_task(maintenance_loop(app.state.ctx)),
            ]
            log.info(
                "hub ready",
                extra={"db": redact_url(settings.db_url), "store": blobs.url, "version": __version__},
            )
            try:
                yield
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await audit.flush()
                await notifier.close()
                await blobs.close()
        finally:
            await db.close()

    app = FastAPI(
        title="shoal hub",
        version=__version__,
        description="Stores chunks and orders changes for shoal devices. API version 1.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(CommitFastPath, on_error=app.exception_handlers[ShoalError])
    app.add_middleware(
        GuardMiddleware,
        state=app.state,
        max_request_bytes=settings.limits.max_request_bytes,
        auth_buckets=TokenBuckets(settings.limits.auth_rate, settings.limits.auth_burst),
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)

    @app.get("/health", tags=["ops"])
    async def health(request: Request) -> dict[str, object]:
        ctx = hub_context(request)
        async with ctx.db.read() as conn:
            await conn.exec_driver_sql("SELECT 1")
        return {"status": "ok", "version": __version__, "uptime": round(time.time() - ctx.started_at, 1)}

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(auth_routes.router, prefix=API_PREFIX)
    app.include_router(sync_router)  # carries its own /api/v1 prefix
    app.include_router(keys_routes.router, prefix=API_PREFIX)
    app.include_router(activate.router)
    return app
