"""A group's commits on PostgreSQL, together: one round of reads, one round of writes.

Same checks, rows and answers as running ``hub.sync.commit.commit`` on each
request in turn (which other writers, and groups mixing other work, still
use). The group runs on the database's writer thread (``hub.db.pg_writer``);
the reads of every commit in it (the arenas, locked; earlier commits of their
keys; their chunks, share-locked; the heads they move) go out pipelined, the
commits are then decided in order in memory, each seeing the ones before it
(the arena's head, the heads it moved, the key it used), and all their rows
go out pipelined. So a group costs the same few round trips whatever its
size, instead of a couple per commit, each waiting for its thread's turn.

PostgreSQL runs a pipeline's statements in order, each with a fresh snapshot
(READ COMMITTED): the key lookups run after the arena locks are held and see
commits of the same keys that another hub process finished meanwhile. Every
query is scoped to the caller's tenant through the arena row or the tenant
column, as in the async path. If the database refuses a statement, the group
is rolled back and each commit runs again alone, so the failure stays with
the commit that caused it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa

from shoal.hub.sync import commit_sqlite as plain
from shoal.hub.sync.arenas import ArenaRow, arena_from_mapping, arena_not_found
from shoal.hub.sync.commit import (
    Head,
    check_all_present,
    check_change,
    commit_row,
    head_from,
    plan_append,
    replayed,
    request_hash,
)
from shoal.net.schemas_sync import CommitRequest, CommitResult

Outcome = tuple[Any, BaseException | None]


@dataclass(frozen=True, slots=True)
class PendingCommit:
    """One commit request waiting in a group."""

    tenant_id: int
    arena_public_id: str
    request: CommitRequest
    now: float


def _pyformat(sql: str) -> str:
    """The SQLite statements' ``:name`` parameters as psycopg's ``%(name)s``."""
    return re.sub(r":([a-z_]+)", r"%(\1)s", sql)


# The (public id, tenant) pairs the group names, as a relation to join the arenas with.
_WANTED = "unnest(%(public_ids)s::text[], %(tenants)s::int[]) AS wanted(public_id, tenant_id)"
_WANTED_KEYS = (
    "unnest(%(public_ids)s::text[], %(tenants)s::int[], %(keys)s::text[]) AS wanted(public_id, tenant_id, k)"
)
_OF_WANTED = "arenas.public_id = wanted.public_id AND arenas.tenant_id = wanted.tenant_id"
_LOCK_ARENAS = (
    f"SELECT {', '.join(f'arenas.{c}' for c in plain.ARENA_COLUMNS)} FROM arenas"  # noqa: S608
    f" JOIN {_WANTED} ON {_OF_WANTED} WHERE arenas.deleted_at IS NULL ORDER BY arenas.id FOR UPDATE OF arenas"
)
_EARLIER = (
    "SELECT commits.arena_id, commits.idempotency_key, commits.request_hash, commits.result"  # noqa: S608
    f" FROM commits JOIN arenas ON commits.arena_id = arenas.id JOIN {_WANTED_KEYS}"
    f" ON {_OF_WANTED} AND commits.idempotency_key = wanted.k WHERE arenas.deleted_at IS NULL"
)
_PRESENT = (
    "SELECT chunks.tenant_id, chunks.chunk_id FROM chunks"
    " JOIN unnest(%(tenants)s::int[], %(ids)s::text[]) AS wanted(tenant_id, chunk_id)"
    " ON chunks.tenant_id = wanted.tenant_id AND chunks.chunk_id = wanted.chunk_id FOR SHARE OF chunks"
)
_HEADS = (
    "SELECT heads.arena_id, heads.path_key, heads.seq, heads.vv, heads.deleted, heads.op"  # noqa: S608
    f" FROM heads JOIN arenas ON heads.arena_id = arenas.id JOIN {_WANTED_KEYS}"
    f" ON {_OF_WANTED} AND heads.path_key = wanted.k WHERE arenas.deleted_at IS NULL"
)
_INSERT_CHANGES = _pyformat(plain.INSERT_CHANGES)
_INSERT_CHANGE_CHUNKS = _pyformat(plain.INSERT_CHANGE_CHUNKS)
_UPSERT_HEADS = _pyformat(plain.UPSERT_HEADS)
_SET_HEAD_SEQ = _pyformat(plain.SET_HEAD_SEQ)
_INSERT_COMMIT = _pyformat(plain.INSERT_COMMIT)


def commit_all_postgres(raw: psycopg.Connection[Any], pending: Sequence[PendingCommit]) -> list[Outcome]:
    """Run ``pending`` in order in the caller's transaction: per commit, (arena, result) or its refusal."""
    if len(pending) > 1:
        try:
            with raw.pipeline(), raw.transaction():
                return _together(raw, pending)
        except psycopg.Error:
            pass  # the database refused a statement: find whose, one commit at a time
    outcomes: list[Outcome] = []
    for one in pending:
        try:
            with raw.pipeline(), raw.transaction():
                (outcome,) = _together(raw, [one])
        except psycopg.Error as exc:  # raised as the block ends, when the pipeline is synced
            outcome = (None, sa.exc.DBAPIError.instance(None, None, exc, psycopg.Error))
        outcomes.append(outcome)
    return outcomes


@dataclass(slots=True)
class _Reads:
    arenas: dict[tuple[str, int], ArenaRow]
    earlier: dict[tuple[int, str], tuple[str, str]]
    present: set[tuple[int, str]]
    heads: dict[int, dict[str, Head]]


def _read(raw: psycopg.Connection[Any], pending: Sequence[PendingCommit]) -> _Reads:
    pairs = sorted({(p.arena_public_id, p.tenant_id) for p in pending})
    by_key = sorted({(p.arena_public_id, p.tenant_id, p.request.idempotency_key) for p in pending})
    touched = sorted(
        {
            (p.arena_public_id, p.tenant_id, key)
            for p in pending
            for ch in p.request.changes
            for key in (ch.path_key, ch.to_path_key)
            if key
        }
    )
    chunk_refs = sorted(
        {(p.tenant_id, cid) for p in pending for ch in p.request.changes for cid in ch.chunks}
    )
    locked = raw.execute(
        _LOCK_ARENAS, {"public_ids": [a for a, _ in pairs], "tenants": [t for _, t in pairs]}
    )
    earlier = raw.execute(_EARLIER, _columns(by_key))
    present = raw.execute(
        _PRESENT, {"tenants": [t for t, _ in chunk_refs], "ids": [c for _, c in chunk_refs]}
    )
    heads = raw.execute(_HEADS, _columns(touched))
    arenas = {}
    for row in locked.fetchall():
        arena = arena_from_mapping(dict(zip(plain.ARENA_COLUMNS, row, strict=True)))  # type: ignore[arg-type]
        arenas[(arena.public_id, arena.tenant_id)] = arena
    reads = _Reads(
        arenas=arenas,
        earlier={(int(r[0]), str(r[1])): (str(r[2]), str(r[3])) for r in earlier.fetchall()},
        present={(int(r[0]), str(r[1])) for r in present.fetchall()},
        heads={arena.id: {} for arena in arenas.values()},
    )
    for arena_id, key, seq, vv, deleted, op in heads.fetchall():
        reads.heads[int(arena_id)][str(key)] = head_from(seq, vv, deleted, op)
    return reads


def _columns(rows: Sequence[tuple[str, int, str]]) -> dict[str, list[Any]]:
    return {"public_ids": [r[0] for r in rows], "tenants": [r[1] for r in rows], "keys": [r[2] for r in rows]}


def _together(raw: psycopg.Connection[Any], pending: Sequence[PendingCommit]) -> list[Outcome]:
    reads = _read(raw, pending)
    outcomes: list[Outcome] = []
    changes: list[dict[str, object]] = []
    refs: list[dict[str, object]] = []
    heads: dict[tuple[object, object], dict[str, object]] = {}
    moved: dict[int, int] = {}
    records: list[dict[str, object]] = []
    for one in pending:
        try:
            outcome = _decide(one, reads)
        except Exception as exc:  # noqa: BLE001 - a refusal, handed to the request that caused it
            outcomes.append((None, exc))
            continue
        arena, result, plan, record = outcome
        outcomes.append(((arena, result), None))
        if plan is None:  # a replay: nothing to write
            continue
        changes.extend(plan.change_rows)
        refs.extend(plan.ref_rows)
        heads.update(((row["arena_id"], row["path_key"]), row) for row in plan.head_rows)
        moved[arena.id] = plan.last
        records.append(record)
    if records:
        with raw.cursor() as cur:
            cur.executemany(_INSERT_CHANGES, changes)
            if refs:
                cur.executemany(_INSERT_CHANGE_CHUNKS, refs)
            cur.executemany(_UPSERT_HEADS, list(heads.values()))
            cur.executemany(_SET_HEAD_SEQ, [{"arena_pk": a, "head_seq": seq} for a, seq in moved.items()])
            cur.executemany(_INSERT_COMMIT, records)
    return outcomes


def _decide(one: PendingCommit, reads: _Reads) -> tuple[ArenaRow, CommitResult, Any, dict[str, object]]:
    """One commit against the state the group has reached: (arena, answer, plan or None, record)."""
    request = one.request
    arena = reads.arenas.get((one.arena_public_id, one.tenant_id))
    if arena is None:
        raise arena_not_found(one.arena_public_id)
    digest = request_hash(request)
    earlier = reads.earlier.get((arena.id, request.idempotency_key))
    if earlier is not None:
        return arena, replayed(request, digest, earlier), None, {}
    checked = [check_change(ch, encrypted=arena.encrypted) for ch in request.changes]
    wanted = {cid for ch in request.changes for cid in ch.chunks}
    if wanted:
        check_all_present(wanted, {cid for cid in wanted if (one.tenant_id, cid) in reads.present})
    plan = plan_append(arena, checked, reads.heads[arena.id], one.now)  # moves the group's heads
    result = CommitResult(first=plan.first, last=plan.last, cursor=plan.last, conflicts=plan.conflicts)
    record = commit_row(arena, request, digest, result, one.now)
    reads.arenas[(arena.public_id, arena.tenant_id)] = dataclasses.replace(arena, head_seq=plan.last)
    reads.earlier[(arena.id, request.idempotency_key)] = (str(record["request_hash"]), str(record["result"]))
    return arena, result, plan, record
