"""Storing new chunks for a tenant within its quota.

The quota counts unique stored (envelope) bytes in the tenant's chunk index.
Recording new chunks is the only thing that grows it, so the check sits
there, in the same write transaction as the insert, under a per-tenant lock
(PostgreSQL: the tenant row ``FOR UPDATE``; SQLite: the hub's single writer).
Two parallel uploads that each fit but together do not are therefore
serialized, and the second is refused: the quota is never overshot. A
refused upload's blobs are already in the store but not in the index; they
are orphans the garbage collector removes after its grace period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import QuotaExceededError
from shoal.hub.context import HubContext
from shoal.hub.db.ops_schema import tenant_quotas
from shoal.hub.db.schema import tenants
from shoal.hub.db.sync_schema import chunks
from shoal.hub.sync.chunks import record_chunks
from shoal.hub.sync.commit import present_chunks
from shoal.model.ids import ChunkId


@dataclass(frozen=True, slots=True)
class Usage:
    used: int
    limit: int | None


def format_bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


async def usage(conn: AsyncConnection, tenant_id: int) -> Usage:
    used = (
        await conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(chunks.c.size), 0)).where(chunks.c.tenant_id == tenant_id)
        )
    ).scalar_one()
    limit = (
        await conn.execute(
            sa.select(tenant_quotas.c.limit_bytes).where(tenant_quotas.c.tenant_id == tenant_id)
        )
    ).scalar_one_or_none()
    return Usage(int(used), None if limit is None else int(limit))


async def set_quota(conn: AsyncConnection, tenant_id: int, limit: int | None, now: float) -> None:
    ins = (
        postgresql.insert(tenant_quotas)
        if conn.dialect.name == "postgresql"
        else sqlite.insert(tenant_quotas)
    )
    stmt = ins.values(tenant_id=tenant_id, limit_bytes=limit, updated_at=now).on_conflict_do_update(
        index_elements=[tenant_quotas.c.tenant_id],
        set_={"limit_bytes": ins.excluded.limit_bytes, "updated_at": ins.excluded.updated_at},
    )
    await conn.execute(stmt)


async def record_within_quota(
    conn: AsyncConnection, tenant_id: int, blobs: Sequence[tuple[ChunkId, int]], now: float
) -> None:
    """Record chunks in the index (inside the caller's write transaction), refusing to pass the quota."""
    if not blobs:
        return
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id).with_for_update())
    current = await usage(conn, tenant_id)
    if current.limit is not None:
        have = await present_chunks(conn, tenant_id, [cid.hex() for cid, _ in blobs])
        needed = sum(size for cid, size in blobs if cid.hex() not in have)
        if needed and current.used + needed > current.limit:
            raise QuotaExceededError(
                f"storage quota exceeded: {format_bytes(current.used)} used of "
                f"{format_bytes(current.limit)}, this upload needs {format_bytes(needed)} more "
                f"(used={current.used} limit={current.limit} needed={needed} bytes)",
                hint="delete files and let garbage collection run, or ask the hub admin for more quota",
            )
    await record_chunks(conn, tenant_id, blobs, now)


async def store_new_chunks(
    ctx: HubContext, tenant_id: int, blobs: Sequence[tuple[ChunkId, bytes]], now: float
) -> list[ChunkId]:
    """Store (durably) and then record the blobs the tenant lacks; return the ids that were new."""
    unique = list(dict(blobs).items())
    async with ctx.db.read() as conn:
        have = await present_chunks(conn, tenant_id, [cid.hex() for cid, _ in unique])
    fresh = [(cid, blob) for cid, blob in unique if cid.hex() not in have]
    if fresh:
        # Durable in the store first; only then may the index (and so a commit) name them.
        await ctx.tenant_blobs(tenant_id).put_many(fresh)
        async with ctx.db.write() as conn:
            await record_within_quota(conn, tenant_id, [(cid, len(blob)) for cid, blob in fresh], now)
    return [cid for cid, _ in fresh]
