"""Audit events: recorded in the caller's transaction, or queued and written in batches.

Requests that are refused (401, 413, 429) are exactly what an attacker can
send in bulk, so their events go through :class:`AuditQueue`: an in-memory
queue (bounded; overflow is counted, not stored) that one task writes every
half second in one transaction. Events that belong to a change (a device
revoked from the CLI) are written with :func:`record` in that change's
transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.hub.db.engine import HubDatabase
from shoal.hub.db.ops_schema import audit_events

log = logging.getLogger("shoal.hub.audit")

KINDS = frozenset(
    {
        "login",
        "auth_failed",
        "token_rotated",
        "token_reuse",
        "device_added",
        "device_removed",
        "restore",
        "delete",
        "quota_refused",
        "rate_limited",
        "too_large",
        "gc",
    }
)
MAX_PENDING = 10_000


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    tenant_id: int | None
    at: float
    kind: str
    actor: str | None
    ip: str | None
    detail: dict[str, Any] = field(default_factory=dict)


def _row(
    kind: str, tenant_id: int | None, actor: str | None, ip: str | None, detail: dict[str, Any]
) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown audit event kind {kind!r}")
    return {
        "tenant_id": tenant_id,
        "at": time.time(),
        "kind": kind,
        "actor": actor[:128] if actor else None,
        "ip": ip[:64] if ip else None,
        "detail": json.dumps(detail, separators=(",", ":"), default=str)[:4000],
    }


async def record(
    conn: AsyncConnection,
    kind: str,
    *,
    tenant_id: int | None = None,
    actor: str | None = None,
    ip: str | None = None,
    **detail: Any,
) -> None:
    """Write one event in the caller's transaction."""
    await conn.execute(audit_events.insert().values(**_row(kind, tenant_id, actor, ip, detail)))


class AuditQueue:
    """Events emitted without awaiting, written in batches by :meth:`run`."""

    def __init__(self, db: HubDatabase, max_pending: int = MAX_PENDING) -> None:
        self._db = db
        self._max = max_pending
        self._pending: list[dict[str, Any]] = []
        self.dropped = 0

    def emit(
        self,
        kind: str,
        *,
        tenant_id: int | None = None,
        actor: str | None = None,
        ip: str | None = None,
        **detail: Any,
    ) -> None:
        if len(self._pending) >= self._max:
            self.dropped += 1
            return
        self._pending.append(_row(kind, tenant_id, actor, ip, detail))

    async def flush(self) -> int:
        rows, self._pending = self._pending, []
        if self.dropped:
            rows.append(_row("rate_limited", None, None, None, {"audit_events_dropped": self.dropped}))
            self.dropped = 0
        if rows:
            async with self._db.write() as conn:
                await conn.execute(audit_events.insert(), rows)
        return len(rows)

    async def run(self, interval: float = 0.5) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:
                log.exception("could not write audit events")


async def recent(conn: AsyncConnection, tenant_id: int | None, limit: int = 100) -> list[AuditEvent]:
    """The newest events, newest first: of one tenant, or of every tenant and none when None."""
    query = sa.select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
    if tenant_id is not None:
        query = query.where(audit_events.c.tenant_id == tenant_id)
    out = []
    for row in (await conn.execute(query)).all():
        m = row._mapping
        out.append(
            AuditEvent(
                id=int(m["id"]),
                tenant_id=m["tenant_id"],
                at=float(m["at"]),
                kind=str(m["kind"]),
                actor=m["actor"],
                ip=m["ip"],
                detail=json.loads(m["detail"] or "{}"),
            )
        )
    return out


def emit(ctx_extras: dict[str, object], kind: str, **fields: Any) -> None:
    """Queue an event on the hub process's audit queue (``HubContext.extras["audit"]``), if it runs."""
    queue = ctx_extras.get("audit")
    if isinstance(queue, AuditQueue):
        queue.emit(kind, **fields)
