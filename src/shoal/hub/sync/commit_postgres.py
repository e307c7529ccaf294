"""The commit on PostgreSQL as pipelined psycopg calls: two round trips instead of six.

Same checks, rows and answers as ``hub.sync.commit.commit`` (which other
writers, and PostgreSQL outside a group of commits, still use). The reads a
commit needs (the arena, locked; an earlier commit of its key; its chunks,
share-locked; the heads it moves) go out together, and the writes go out
together once the batch is planned. PostgreSQL runs a pipeline's statements
one after the other, each with a fresh snapshot (READ COMMITTED), so the key
lookup still runs after the arena lock is held and sees a commit of the same
key that another hub process finished meanwhile. Every query is scoped to
the caller's tenant through the arena row or the tenant column, as in the
async path.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy.engine import Dialect

from shoal.hub.sync import commit_sqlite as plain
from shoal.hub.sync.arenas import ArenaRow, arena_from_mapping, arena_not_found
from shoal.hub.sync.commit import (
    AppendPlan,
    check_all_present,
    check_change,
    commit_row,
    flat_params,
    head_from,
    one_statement,
    plan_append,
    replayed,
    request_hash,
    writes_in_one_statement,
)
from shoal.net.schemas_sync import CommitRequest, CommitResult


def _pyformat(sql: str) -> str:
    """The SQLite statements' ``:name`` parameters as psycopg's ``%(name)s``."""
    return re.sub(r":([a-z_]+)", r"%(\1)s", sql)


_LIVE_ARENA = (
    "arenas.public_id = %(public_id)s AND arenas.tenant_id = %(tenant_id)s AND arenas.deleted_at IS NULL"
)
_LOCK_ARENA = f"SELECT {', '.join(plain.ARENA_COLUMNS)} FROM arenas WHERE {_LIVE_ARENA} FOR UPDATE"  # noqa: S608
_EARLIER = (
    "SELECT commits.request_hash, commits.result FROM commits JOIN arenas ON commits.arena_id = arenas.id"  # noqa: S608
    f" WHERE {_LIVE_ARENA} AND commits.idempotency_key = %(idempotency_key)s"
)
_PRESENT = "SELECT chunk_id FROM chunks WHERE tenant_id = %(tenant_id)s AND chunk_id = ANY(%(ids)s) FOR SHARE"
_HEADS = (
    "SELECT heads.path_key, heads.seq, heads.vv, heads.deleted, heads.op"  # noqa: S608
    " FROM heads JOIN arenas ON heads.arena_id = arenas.id"
    f" WHERE {_LIVE_ARENA} AND heads.path_key = ANY(%(keys)s)"
)
_INSERT_CHANGES = _pyformat(plain.INSERT_CHANGES)
_INSERT_CHANGE_CHUNKS = _pyformat(plain.INSERT_CHANGE_CHUNKS)
_UPSERT_HEADS = _pyformat(plain.UPSERT_HEADS)
_SET_HEAD_SEQ = _pyformat(plain.SET_HEAD_SEQ)
_INSERT_COMMIT = _pyformat(plain.INSERT_COMMIT)


async def commit_postgres(
    raw: AsyncConnection[Any],
    dialect: Dialect,
    tenant_id: int,
    arena_public_id: str,
    request: CommitRequest,
    now: float,
) -> tuple[ArenaRow, CommitResult]:
    """Run one commit inside the caller's transaction (best inside a pipeline: see the module)."""
    params: dict[str, Any] = {
        "public_id": arena_public_id,
        "tenant_id": tenant_id,
        "idempotency_key": request.idempotency_key,
    }
    wanted = sorted({cid for ch in request.changes for cid in ch.chunks})
    keys = sorted(
        {ch.path_key for ch in request.changes} | {ch.to_path_key for ch in request.changes if ch.to_path_key}
    )
    arena_rows = await raw.execute(_LOCK_ARENA, params)
    earlier_rows = await raw.execute(_EARLIER, params)
    present_rows = await raw.execute(_PRESENT, {"tenant_id": tenant_id, "ids": wanted}) if wanted else None
    head_rows = await raw.execute(_HEADS, {**params, "keys": keys})

    found = await arena_rows.fetchone()
    if found is None:
        raise arena_not_found(arena_public_id)
    arena = arena_from_mapping(dict(zip(plain.ARENA_COLUMNS, found, strict=True)))  # type: ignore[arg-type]
    digest = request_hash(request)
    earlier = await earlier_rows.fetchone()
    if earlier is not None:
        return arena, replayed(request, digest, (str(earlier[0]), str(earlier[1])))
    checked = [check_change(ch, encrypted=arena.encrypted) for ch in request.changes]
    if present_rows is not None:
        check_all_present(set(wanted), {str(r[0]) for r in await present_rows.fetchall()})
    known = {str(r[0]): head_from(*r[1:]) for r in await head_rows.fetchall()}
    plan = plan_append(arena, checked, known, now)
    result = CommitResult(first=plan.first, last=plan.last, cursor=plan.last, conflicts=plan.conflicts)
    await _write(raw, dialect, arena, plan, commit_row(arena, request, digest, result, now))
    return arena, result


async def _write(
    raw: AsyncConnection[Any], dialect: Dialect, arena: ArenaRow, plan: AppendPlan, record: dict[str, object]
) -> None:
    """The batch's rows: one statement when it is small, else one statement per table (pipelined)."""
    if writes_in_one_statement(plan):
        statement = one_statement(dialect, len(plan.change_rows), len(plan.ref_rows), len(plan.head_rows))
        await raw.execute(statement, flat_params(arena, plan, record))
        return
    async with raw.cursor() as cur:
        await cur.executemany(_INSERT_CHANGES, plan.change_rows)
        if plan.ref_rows:
            await cur.executemany(_INSERT_CHANGE_CHUNKS, plan.ref_rows)
        await cur.executemany(_UPSERT_HEADS, plan.head_rows)
        await cur.execute(_SET_HEAD_SEQ, {"arena_pk": arena.id, "head_seq": plan.last})
        await cur.execute(_INSERT_COMMIT, record)
