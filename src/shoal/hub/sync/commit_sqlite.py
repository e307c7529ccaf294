"""The commit on SQLite as plain ``sqlite3`` calls, run on the connection's own thread.

Same statements, checks and answers as ``hub.sync.commit.commit`` (which
PostgreSQL, and SQLite outside a group of commits, still use); the group
commit (``hub.sync.group``) runs a whole group of these in one trip to the
connection's thread, each in its own savepoint, inside the one ``BEGIN
IMMEDIATE`` transaction the hub's writer lock guards. Every query is scoped
to the caller's tenant through the arena row, exactly as in the async path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

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
    touched_keys,
)
from shoal.net.schemas_sync import CommitRequest, CommitResult

_IN_BATCH = 500  # ids per IN (...) clause: well under SQLite's variable limit
# The statements below are shared with ``hub.sync.commit_postgres`` (there with psycopg's placeholders).
ARENA_COLUMNS = (
    "id",
    "public_id",
    "tenant_id",
    "name",
    "encrypted",
    "conflict_policy",
    "keep_days",
    "keep_versions",
    "head_seq",
    "created_at",
    "deleted_at",
)
# The live arena of this tenant and this key's earlier commit (if any), in one statement. It runs
# after BEGIN IMMEDIATE took the write lock, so it sees every commit made before this one.
_ARENA_AND_EARLIER = (
    "SELECT arenas.id, arenas.public_id, arenas.tenant_id, arenas.name, arenas.encrypted,"
    " arenas.conflict_policy, arenas.keep_days, arenas.keep_versions, arenas.head_seq, arenas.created_at,"
    " arenas.deleted_at, commits.request_hash, commits.result"
    " FROM arenas LEFT OUTER JOIN commits"
    " ON commits.arena_id = arenas.id AND commits.idempotency_key = :idempotency_key"
    " WHERE arenas.public_id = :public_id AND arenas.tenant_id = :tenant_id AND arenas.deleted_at IS NULL"
)
INSERT_CHANGES = (
    "INSERT INTO changes (arena_id, seq, op, path_key, path, to_path_key, to_path, record, chunk_ids,"
    " base_vv, vv, device, conflict_with, restored_from, size, created_at)"
    " VALUES (:arena_id, :seq, :op, :path_key, :path, :to_path_key, :to_path, :record, :chunk_ids,"
    " :base_vv, :vv, :device, :conflict_with, :restored_from, :size, :created_at)"
)
INSERT_CHANGE_CHUNKS = (
    "INSERT INTO change_chunks (arena_id, seq, chunk_id, tenant_id)"
    " VALUES (:arena_id, :seq, :chunk_id, :tenant_id)"
)
UPSERT_HEADS = (
    "INSERT INTO heads (arena_id, path_key, seq, vv, deleted, op)"
    " VALUES (:arena_id, :path_key, :seq, :vv, :deleted, :op)"
    " ON CONFLICT (arena_id, path_key) DO UPDATE SET seq = excluded.seq, vv = excluded.vv,"
    " deleted = excluded.deleted, op = excluded.op"
)
SET_HEAD_SEQ = "UPDATE arenas SET head_seq = :head_seq WHERE arenas.id = :arena_pk"
INSERT_COMMIT = (
    "INSERT INTO commits (arena_id, idempotency_key, request_hash, first_seq, last_seq, result, created_at)"
    " VALUES (:arena_id, :idempotency_key, :request_hash, :first_seq, :last_seq, :result, :created_at)"
)


def _placeholders(n: int) -> str:
    """``?, ?, …``: the IN lists below append only these to constant text (hence the S608 waivers)."""
    return ", ".join("?" * n)


def _present_chunks(raw: sqlite3.Connection, tenant_id: int, wanted: set[str]) -> set[str]:
    ordered = sorted(wanted)
    found: set[str] = set()
    for start in range(0, len(ordered), _IN_BATCH):
        part = ordered[start : start + _IN_BATCH]
        marks = _placeholders(len(part))
        query = f"SELECT chunk_id FROM chunks WHERE tenant_id = ? AND chunk_id IN ({marks})"  # noqa: S608
        found.update(str(r[0]) for r in raw.execute(query, (tenant_id, *part)).fetchall())
    return found


def _load_heads(raw: sqlite3.Connection, arena_id: int, keys: Iterable[str]) -> dict[str, Head]:
    ordered = sorted(set(keys))
    out: dict[str, Head] = {}
    for start in range(0, len(ordered), _IN_BATCH):
        part = ordered[start : start + _IN_BATCH]
        marks = _placeholders(len(part))
        query = (
            f"SELECT path_key, seq, vv, deleted, op FROM heads WHERE arena_id = ? AND path_key IN ({marks})"  # noqa: S608
        )
        for key, seq, vv, deleted, op in raw.execute(query, (arena_id, *part)).fetchall():
            out[str(key)] = head_from(seq, vv, deleted, op)
    return out


def _arena_and_earlier(
    raw: sqlite3.Connection, tenant_id: int, public_id: str, key: str
) -> tuple[ArenaRow, tuple[str, str] | None]:
    params = {"public_id": public_id, "tenant_id": tenant_id, "idempotency_key": key}
    row = raw.execute(_ARENA_AND_EARLIER, params).fetchone()
    if row is None:
        raise arena_not_found(public_id)
    arena = arena_from_mapping(dict(zip(ARENA_COLUMNS, row, strict=False)))  # type: ignore[arg-type]
    earlier_hash, earlier_result = row[len(ARENA_COLUMNS) :]
    if earlier_hash is None:
        return arena, None
    return arena, (str(earlier_hash), str(earlier_result))


def commit_sqlite(
    raw: sqlite3.Connection, tenant_id: int, arena_public_id: str, request: CommitRequest, now: float
) -> tuple[ArenaRow, CommitResult]:
    """Run one commit inside the caller's write transaction; a replayed idempotency key changes nothing."""
    arena, earlier = _arena_and_earlier(raw, tenant_id, arena_public_id, request.idempotency_key)
    digest = request_hash(request)
    if earlier is not None:
        return arena, replayed(request, digest, earlier)
    checked = [check_change(ch, encrypted=arena.encrypted) for ch in request.changes]
    wanted = {cid for ch in request.changes for cid in ch.chunks}
    if wanted:
        check_all_present(wanted, _present_chunks(raw, tenant_id, wanted))
    known = _load_heads(raw, arena.id, touched_keys(checked))
    plan = plan_append(arena, checked, known, now)
    raw.executemany(INSERT_CHANGES, plan.change_rows)
    if plan.ref_rows:
        raw.executemany(INSERT_CHANGE_CHUNKS, plan.ref_rows)
    raw.executemany(UPSERT_HEADS, plan.head_rows)
    raw.execute(SET_HEAD_SEQ, {"arena_pk": arena.id, "head_seq": plan.last})
    result = CommitResult(first=plan.first, last=plan.last, cursor=plan.last, conflicts=plan.conflicts)
    raw.execute(INSERT_COMMIT, commit_row(arena, request, digest, result, now))
    return arena, result
