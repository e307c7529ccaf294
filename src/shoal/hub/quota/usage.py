"""Storing new chunks for a tenant within its quota.

The quota counts unique stored (envelope) bytes in the tenant's chunk index.
Recording new chunks is the only thing that grows it, so the check sits
there, in the same write transaction as the insert, under a per-tenant lock
(PostgreSQL: the tenant row ``FOR UPDATE``; SQLite: the hub's single writer).
Two parallel uploads that each fit but together do not are therefore
serialized, and the second is refused: the quota is never overshot. An
upload that cannot fit is refused before its blobs are written; only one
refused by that final check (a race with another upload) leaves blobs in the
store without an index row, orphans that cost space but no correctness.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import QuotaExceededError, StorageError
from shoal.hub.context import HubContext
from shoal.hub.db.ops_schema import chunk_deletions, tenant_quotas
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


async def _limit(conn: AsyncConnection, tenant_id: int) -> int | None:
    limit = (
        await conn.execute(
            sa.select(tenant_quotas.c.limit_bytes).where(tenant_quotas.c.tenant_id == tenant_id)
        )
    ).scalar_one_or_none()
    return None if limit is None else int(limit)


async def _used(conn: AsyncConnection, tenant_id: int) -> int:
    used = (
        await conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(chunks.c.size), 0)).where(chunks.c.tenant_id == tenant_id)
        )
    ).scalar_one()
    return int(used)


async def usage(conn: AsyncConnection, tenant_id: int) -> Usage:
    return Usage(await _used(conn, tenant_id), await _limit(conn, tenant_id))


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


class BlobsGoneError(Exception):
    """The garbage collector deleted some of these blobs after our store write began: store them again."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"{len(ids)} blob(s) were collected during the upload")
        self.ids = ids


async def _settle_deletions(
    conn: AsyncConnection, tenant_id: int, ids: list[str], put_started: float
) -> None:
    """Cancel the GC's pending deletions of these chunks; refuse if it deleted one during our write."""
    query = sa.select(
        chunk_deletions.c.chunk_id, chunk_deletions.c.state, chunk_deletions.c.deleted_at
    ).where(chunk_deletions.c.tenant_id == tenant_id, chunk_deletions.c.chunk_id.in_(ids))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    rows = (await conn.execute(query)).all()
    if not rows:
        return
    gone = [str(r[0]) for r in rows if r[1] == "deleted" and r[2] is not None and float(r[2]) >= put_started]
    if gone:
        raise BlobsGoneError(gone)
    await conn.execute(
        chunk_deletions.delete().where(
            chunk_deletions.c.tenant_id == tenant_id,
            chunk_deletions.c.chunk_id.in_([str(r[0]) for r in rows]),
        )
    )


async def _refuse_over_quota(
    conn: AsyncConnection, tenant_id: int, blobs: Sequence[tuple[ChunkId, int]]
) -> None:
    """Raise QuotaExceededError when recording the blobs the tenant lacks would pass its limit."""
    limit = await _limit(conn, tenant_id)
    if limit is None:
        return  # no quota: skip summing the tenant's whole index
    have = await present_chunks(conn, tenant_id, [cid.hex() for cid, _ in blobs])
    needed = sum(size for cid, size in blobs if cid.hex() not in have)
    if not needed:
        return
    used = await _used(conn, tenant_id)
    if used + needed > limit:
        raise QuotaExceededError(
            f"storage quota exceeded: {format_bytes(used)} used of "
            f"{format_bytes(limit)}, this upload needs {format_bytes(needed)} more "
            f"(used={used} limit={limit} needed={needed} bytes)",
            hint="delete files and let garbage collection run, or ask the hub admin for more quota",
        )


async def record_within_quota(
    conn: AsyncConnection,
    tenant_id: int,
    blobs: Sequence[tuple[ChunkId, int]],
    now: float,
    *,
    put_started: float | None = None,
) -> None:
    """Record chunks in the index (inside the caller's write transaction), refusing to pass the quota."""
    if not blobs:
        return
    if put_started is not None:
        await _settle_deletions(conn, tenant_id, [cid.hex() for cid, _ in blobs], put_started)
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id).with_for_update())
    await _refuse_over_quota(conn, tenant_id, blobs)
    await record_chunks(conn, tenant_id, blobs, now)


async def store_new_chunks(
    ctx: HubContext, tenant_id: int, blobs: Sequence[tuple[ChunkId, bytes]], now: float
) -> list[ChunkId]:
    """Store (durably) and then record the blobs the tenant lacks; return the ids that were new."""
    unique = list(dict(blobs).items())
    async with ctx.db.read() as conn:
        have = await present_chunks(conn, tenant_id, [cid.hex() for cid, _ in unique])
        fresh = [(cid, blob) for cid, blob in unique if cid.hex() not in have]
        # Refused before anything is written, so a tenant at its quota cannot fill the disk with
        # blobs no index row counts. The check under the lock below stays the authoritative one.
        await _refuse_over_quota(conn, tenant_id, [(cid, len(blob)) for cid, blob in fresh])
    to_put = fresh
    for _attempt in range(3):
        if not fresh:
            break
        # Durable in the store first; only then may the index (and so a commit) name them.
        put_started = time.time()
        await ctx.tenant_blobs(tenant_id).put_many(to_put)
        try:
            async with ctx.db.write() as conn:
                await record_within_quota(
                    conn, tenant_id, [(cid, len(blob)) for cid, blob in fresh], now, put_started=put_started
                )
            break
        except BlobsGoneError as gone:
            lost = set(gone.ids)
            to_put = [(cid, blob) for cid, blob in fresh if cid.hex() in lost]
    else:
        raise StorageError("chunks kept being collected while they were uploaded", hint="retry the upload")
    return [cid for cid, _ in fresh]
