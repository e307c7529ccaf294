"""Garbage collection: retention and compaction first, then unreferenced chunks, index row before blob.

See docs/dev/gc.md for why each step is safe against uploads and commits
running at the same time and against a GC killed at any point. In short:

1. *Mark*: an index row (``chunks``) that no change references and that is
   older than the grace period is deleted, and a ``chunk_deletions`` row
   ("pending") is written in the same transaction. A commit checks its
   chunks under a share lock (PostgreSQL) or the single writer (SQLite), so
   it either sees the row and its reference lands first, or fails with
   "chunk missing" and nothing is lost.
2. *Sweep*: under the lock of its pending row, the blob is deleted and the
   row becomes "deleted". An upload that recorded the same chunk meanwhile
   cancelled the pending row (then the blob stays), or sees "deleted" after
   its own store write began and stores the blob again.

A killed GC leaves only index-less blobs or pending rows the next run
finishes: never an index row naming a missing blob.

A file store also loses, at each round, the temp files and unnamed pack files
that writers killed mid-write left behind, once they are older than the grace
period (no write takes that long).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.hub.context import HubContext
from shoal.hub.db.ops_schema import chunk_deletions
from shoal.hub.db.sync_schema import arenas, change_chunks, chunks
from shoal.hub.files.uploads import sweep_expired
from shoal.hub.maintenance.compact import IDLE_LIMIT, compact
from shoal.hub.sync.arenas import get_arena
from shoal.model.ids import parse_chunk_id
from shoal.store.file import FileBlobStore

GRACE = 3600.0
FORGET_DELETED = 86400.0
_BATCH = 200


@dataclass(slots=True)
class GcReport:
    uploads_expired: int = 0
    changes_dropped: int = 0
    chunks_unreferenced: int = 0
    bytes_unreferenced: int = 0
    blobs_deleted: int = 0
    temp_files_removed: int = 0
    dry_run: bool = False
    arenas: dict[str, int] = field(default_factory=dict)


def _unreferenced(tenant_id: int, cutoff: float) -> sa.Select[Any]:
    referenced = sa.exists().where(
        change_chunks.c.tenant_id == chunks.c.tenant_id, change_chunks.c.chunk_id == chunks.c.chunk_id
    )
    return sa.select(chunks.c.chunk_id, chunks.c.size).where(
        chunks.c.tenant_id == tenant_id, chunks.c.created_at < cutoff, sa.not_(referenced)
    )


async def _mark_batch(conn: AsyncConnection, tenant_id: int, cutoff: float, now: float) -> tuple[int, int]:
    """Take up to one batch of unreferenced, old chunks out of the index; returns (count, bytes)."""
    found = (await conn.execute(_unreferenced(tenant_id, cutoff).limit(_BATCH))).all()
    if not found:
        return 0, 0
    ids = [str(r[0]) for r in found]
    if conn.dialect.name == "postgresql":
        # Wait for commits holding these rows (FOR SHARE) to finish; the DELETE below then runs on a
        # fresh snapshot that sees their references.
        await conn.execute(
            sa.select(chunks.c.chunk_id)
            .where(chunks.c.tenant_id == tenant_id, chunks.c.chunk_id.in_(ids))
            .with_for_update()
        )
    referenced = sa.exists().where(
        change_chunks.c.tenant_id == chunks.c.tenant_id, change_chunks.c.chunk_id == chunks.c.chunk_id
    )
    gone = (
        await conn.execute(
            chunks.delete()
            .where(
                chunks.c.tenant_id == tenant_id,
                chunks.c.chunk_id.in_(ids),
                chunks.c.created_at < cutoff,
                sa.not_(referenced),
            )
            .returning(chunks.c.chunk_id, chunks.c.size)
        )
    ).all()
    if gone:
        ins = (
            postgresql.insert(chunk_deletions)
            if conn.dialect.name == "postgresql"
            else sqlite.insert(chunk_deletions)
        )
        rows = [
            {
                "tenant_id": tenant_id,
                "chunk_id": str(r[0]),
                "state": "pending",
                "created_at": now,
                "deleted_at": None,
            }
            for r in gone
        ]
        await conn.execute(
            ins.on_conflict_do_update(
                index_elements=[chunk_deletions.c.tenant_id, chunk_deletions.c.chunk_id],
                set_={"state": "pending", "created_at": ins.excluded.created_at, "deleted_at": None},
            ),
            rows,
        )
    return len(gone), sum(int(r[1]) for r in gone)


async def _sweep_batch(ctx: HubContext, conn: AsyncConnection) -> int:
    """Delete the blobs of up to one batch of pending deletions, under their rows' locks."""
    query = (
        sa.select(chunk_deletions.c.tenant_id, chunk_deletions.c.chunk_id)
        .where(chunk_deletions.c.state == "pending")
        .limit(_BATCH)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = (await conn.execute(query)).all()
    for tenant_id, cid in rows:
        # ``delete`` of an absent blob is a no-op: a sweep killed after the delete simply repeats it.
        await ctx.tenant_blobs(int(tenant_id)).delete(parse_chunk_id(str(cid)))
    done_at = time.time()  # after the deletes: an upload that began its store write before this re-stores
    for tenant_id, cid in rows:
        await conn.execute(
            chunk_deletions.update()
            .where(
                chunk_deletions.c.tenant_id == tenant_id,
                chunk_deletions.c.chunk_id == cid,
                chunk_deletions.c.state == "pending",
            )
            .values(state="deleted", deleted_at=done_at)
        )
    return len(rows)


async def collect(
    ctx: HubContext,
    now: float | None = None,
    *,
    dry_run: bool = False,
    grace: float = GRACE,
    idle_limit: float = IDLE_LIMIT,
) -> GcReport:
    """One full GC round: expired uploads, retention and compaction per arena, then chunks."""
    at = time.time() if now is None else now
    report = GcReport(dry_run=dry_run)
    if not dry_run:
        report.uploads_expired = await sweep_expired(ctx, at)
    async with ctx.db.read() as conn:
        live = (
            await conn.execute(
                sa.select(arenas.c.tenant_id, arenas.c.public_id).where(arenas.c.deleted_at.is_(None))
            )
        ).all()
        tenants = [int(r[0]) for r in (await conn.execute(sa.select(chunks.c.tenant_id).distinct())).all()]
    for tenant_id, public_id in live:
        async with ctx.db.write() as conn:
            arena = await get_arena(conn, int(tenant_id), str(public_id), for_update=True)
            done = await compact(conn, arena, at, idle_limit=idle_limit, dry_run=dry_run)
        report.changes_dropped += done.dropped
        if done.dropped:
            report.arenas[str(public_id)] = done.dropped
    cutoff = at - grace
    for tenant_id in tenants:
        if dry_run:
            async with ctx.db.read() as conn:
                candidates = (await conn.execute(_unreferenced(tenant_id, cutoff))).all()
            report.chunks_unreferenced += len(candidates)
            report.bytes_unreferenced += sum(int(size) for _cid, size in candidates)
            continue
        while True:
            async with ctx.db.write() as conn:
                count, size = await _mark_batch(conn, tenant_id, cutoff, at)
            report.chunks_unreferenced += count
            report.bytes_unreferenced += size
            if count < _BATCH:
                break
    if not dry_run:
        while True:
            async with ctx.db.write() as conn:
                swept = await _sweep_batch(ctx, conn)
            report.blobs_deleted += swept
            if swept < _BATCH:
                break
        async with ctx.db.write() as conn:
            await conn.execute(
                chunk_deletions.delete().where(
                    chunk_deletions.c.state == "deleted", chunk_deletions.c.deleted_at < at - FORGET_DELETED
                )
            )
        if isinstance(ctx.blobs, FileBlobStore):
            report.temp_files_removed = await ctx.blobs.sweep_temp(older_than=grace)
    return report


__all__ = ["GRACE", "GcReport", "collect"]
