"""The commit transaction: validate a batch of changes, give each the next cursor, record conflicts.

The caller opens ONE write transaction (SQLite: under the hub's writer lock;
PostgreSQL: the arena row is locked here with ``SELECT … FOR UPDATE``) and
passes its connection; either every change of the batch lands with
gap-free cursors, or none does.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import msgpack
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import ChunkMissingError, ConflictError, FormatError, UnsafePathError
from shoal.hub.db.sync_schema import arenas, change_chunks, changes, chunks, commits, heads
from shoal.hub.sync.arenas import ArenaRow, arena_from_mapping, arena_not_found
from shoal.model.paths import normalize_path
from shoal.model.vv import Order, VersionVector
from shoal.net.schemas_sync import (
    MAX_RECORD_BYTES,
    ChangeIn,
    CommitConflict,
    CommitRequest,
    CommitResult,
    plain_path_key,
)

_IN_BATCH = 500  # ids per IN (...) clause: well under SQLite's variable limit

# Statements every commit runs, built once: building a construct (and its cache key) on every call
# cost more CPU than running it. Values come in as bound parameters.
_ARENA_FIELDS = tuple(f.name for f in fields(ArenaRow))

_LIVE_ARENA = sa.and_(
    arenas.c.public_id == sa.bindparam("public_id"),
    arenas.c.tenant_id == sa.bindparam("tenant_id"),
    arenas.c.deleted_at.is_(None),
)
_EARLIER_COLUMNS = (commits.c.request_hash.label("earlier_hash"), commits.c.result.label("earlier_result"))
# SQLite: the live arena and this key's earlier commit (if any) in one statement. Its snapshot starts
# after the writer lock is held (BEGIN IMMEDIATE), so it sees every commit made before this one.
_ARENA_AND_EARLIER = (
    sa.select(*(arenas.c[name] for name in _ARENA_FIELDS), *_EARLIER_COLUMNS)
    .select_from(
        arenas.outerjoin(
            commits,
            sa.and_(
                commits.c.arena_id == arenas.c.id,
                commits.c.idempotency_key == sa.bindparam("idempotency_key"),
            ),
        )
    )
    .where(_LIVE_ARENA)
)
# PostgreSQL: lock the arena row first, then look the key up in a fresh snapshot, so a commit of the
# same key that another hub process finished while this one waited for the lock is seen (a joined
# lookup would keep the snapshot from before the wait).
_LOCK_ARENA = sa.select(*(arenas.c[name] for name in _ARENA_FIELDS)).where(_LIVE_ARENA).with_for_update()
_EARLIER = sa.select(*_EARLIER_COLUMNS).where(
    commits.c.arena_id == sa.bindparam("arena_pk"),
    commits.c.idempotency_key == sa.bindparam("idempotency_key"),
)
_LOAD_HEADS = sa.select(heads).where(
    heads.c.arena_id == sa.bindparam("arena_id"), heads.c.path_key.in_(sa.bindparam("keys", expanding=True))
)
_CHANGE_COLUMNS = tuple(c.name for c in changes.c)
_HEAD_COLUMNS = tuple(c.name for c in heads.c)
_COMMIT_COLUMNS = tuple(c.name for c in commits.c)
_REF_COLUMNS = tuple(c.name for c in change_chunks.c)
_INSERT_CHANGES = changes.insert()
_INSERT_CHANGE_CHUNKS = change_chunks.insert()
_INSERT_COMMIT = commits.insert()
_SET_HEAD_SEQ = (
    arenas.update().where(arenas.c.id == sa.bindparam("arena_pk")).values(head_seq=sa.bindparam("head_seq"))
)


def _upsert_heads_statement(ins: Any) -> sa.Executable:
    stmt: sa.Executable = ins.on_conflict_do_update(
        index_elements=[heads.c.arena_id, heads.c.path_key],
        set_={
            "seq": ins.excluded.seq,
            "vv": ins.excluded.vv,
            "deleted": ins.excluded.deleted,
            "op": ins.excluded.op,
        },
    )
    return stmt


_UPSERT_HEADS = {
    "postgresql": _upsert_heads_statement(postgresql.insert(heads)),
    "sqlite": _upsert_heads_statement(sqlite.insert(heads)),
}


@dataclass(slots=True)
class Head:
    seq: int
    vv: VersionVector
    deleted: bool
    op: str


@dataclass(frozen=True, slots=True)
class CheckedChange:
    """A change whose paths, keys and record passed validation (paths in NFC, or None when encrypted)."""

    change: ChangeIn
    path: str | None
    to_path: str | None
    size: int | None


def dump_vv(vv: dict[str, int] | VersionVector) -> str:
    return _dump_items(tuple(sorted(dict(vv).items())))


@functools.lru_cache(maxsize=4096)
def _dump_items(items: tuple[tuple[str, int], ...]) -> str:
    # A commit writes three vectors per change and most are alike (a device's first versions
    # are all {device: 1}): json.dumps for each was a tenth of the hub's GIL time on a push.
    return json.dumps(dict(items), separators=(",", ":"))


def load_vv(text: str) -> VersionVector:
    return VersionVector(json.loads(text))


def check_change(change: ChangeIn, *, encrypted: bool) -> CheckedChange:
    """Refuse malformed changes with the reason; in plain arenas recompute each path key."""
    where = f"change {change.op} {change.path_key[:12]}…"
    if len(change.record) > MAX_RECORD_BYTES:
        raise FormatError(f"{where}: record is {len(change.record)} bytes; the limit is {MAX_RECORD_BYTES}")
    if (change.op == "rename") != (change.to_path_key is not None):
        raise FormatError(f"{where}: to_path_key is required for rename and only for rename")
    if VersionVector(change.vv).compare(change.base_vv) is not Order.AFTER:
        raise FormatError(f"{where}: vv must be newer than base_vv (bump the device's counter)")
    if change.op in ("delete", "mkdir") and change.chunks:
        raise FormatError(f"{where}: a {change.op} references no chunks")
    if encrypted:
        if change.path is not None or change.to_path is not None:
            raise FormatError(
                f"{where}: encrypted arenas never send paths in clear",
                hint="send only path keys; names travel inside the sealed record",
            )
        return CheckedChange(change, None, None, None)
    path = _checked_path(change.path, change.path_key, where)
    to_path = None
    if change.to_path_key is not None:
        to_path = _checked_path(change.to_path, change.to_path_key, where)
    elif change.to_path is not None:
        raise FormatError(f"{where}: to_path is only for rename")
    return CheckedChange(change, path, to_path, record_size(change.record))


def _checked_path(path: str | None, key: str, where: str) -> str:
    if path is None:
        raise FormatError(f"{where}: plain arenas send the path with its path key")
    clean = normalize_path(path)
    if plain_path_key(clean) != key:
        raise UnsafePathError(
            f"{where}: path key does not match the path {clean!r}",
            hint="in plain arenas the path key is the unkeyed BLAKE3 of the NFC path",
        )
    return clean


def record_size(record: bytes) -> int | None:
    """Best effort: the ``size`` a plain record carries (top level or in a versioned body)."""
    try:
        decoded = msgpack.unpackb(record, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 - records are opaque; a size is a courtesy for listings
        return None
    if not isinstance(decoded, dict):
        return None
    inner = decoded.get("b")
    body: dict[object, object] = inner if isinstance(inner, dict) else decoded
    size = body.get("size")
    return size if isinstance(size, int) and size >= 0 else None


def request_hash(request: CommitRequest) -> str:
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


async def present_chunks(
    conn: AsyncConnection, tenant_id: int, ids: Iterable[str], *, share_lock: bool = False
) -> set[str]:
    """The subset of ``ids`` recorded in this tenant's chunk table.

    With ``share_lock`` (PostgreSQL), the rows stay locked until the transaction ends, so the
    garbage collector cannot take them out of the index under a commit that references them.
    """
    wanted = sorted(set(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), _IN_BATCH):
        part = wanted[start : start + _IN_BATCH]
        query = sa.select(chunks.c.chunk_id).where(
            chunks.c.tenant_id == tenant_id, chunks.c.chunk_id.in_(part)
        )
        if share_lock and conn.dialect.name == "postgresql":
            query = query.with_for_update(read=True)
        found.update(r[0] for r in (await conn.execute(query)).all())
    return found


async def require_chunks(conn: AsyncConnection, tenant_id: int, ids: Iterable[str]) -> None:
    wanted = set(ids)
    check_all_present(wanted, await present_chunks(conn, tenant_id, wanted, share_lock=True))


def check_all_present(wanted: set[str], present: set[str]) -> None:
    """Refuse (ChunkMissingError, naming a few) if any wanted chunk is not present."""
    missing = sorted(wanted - present)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ChunkMissingError(
            f"{len(missing)} referenced chunk(s) are not on the hub: {shown}",
            hint="upload the chunks (POST /api/v1/chunks) before committing changes that reference them",
        )


async def load_heads(conn: AsyncConnection, arena_id: int, keys: Iterable[str]) -> dict[str, Head]:
    wanted = sorted(set(keys))
    out: dict[str, Head] = {}
    for start in range(0, len(wanted), _IN_BATCH):
        part = wanted[start : start + _IN_BATCH]
        for r in (await conn.execute(_LOAD_HEADS, {"arena_id": arena_id, "keys": part})).all():
            m = r._mapping
            out[m["path_key"]] = head_from(m["seq"], m["vv"], m["deleted"], m["op"])
    return out


def head_from(seq: Any, vv: Any, deleted: Any, op: Any) -> Head:
    """A head from its stored columns."""
    return Head(int(seq), load_vv(str(vv)), bool(deleted), str(op))


def _raced(head: Head | None, base: VersionVector, op: str) -> int | None:
    """The seq this change races, if the head is not an ancestor of what the device based it on."""
    if head is None or head.vv.compare(base) in (Order.BEFORE, Order.EQUAL):
        return None
    if op == "mkdir" and head.op == "mkdir" and not head.deleted:
        return None  # two devices making the same folder agree
    return head.seq


async def append_changes(
    conn: AsyncConnection,
    arena: ArenaRow,
    checked: Sequence[CheckedChange],
    now: float,
    *,
    restored_from: int | None = None,
) -> tuple[int, int, list[CommitConflict]]:
    """Insert checked changes after the arena head (row already locked); return (first, last, conflicts)."""
    known = await load_heads(conn, arena.id, touched_keys(checked))
    plan = plan_append(arena, checked, known, now, restored_from=restored_from)
    await _write_rows(conn, arena, plan)
    return plan.first, plan.last, plan.conflicts


async def _write_rows(conn: AsyncConnection, arena: ArenaRow, plan: AppendPlan) -> None:
    await conn.execute(_INSERT_CHANGES, plan.change_rows)
    if plan.ref_rows:
        await conn.execute(_INSERT_CHANGE_CHUNKS, plan.ref_rows)
    await conn.execute(_UPSERT_HEADS[conn.dialect.name], plan.head_rows)
    await conn.execute(_SET_HEAD_SEQ, {"arena_pk": arena.id, "head_seq": plan.last})


def touched_keys(checked: Sequence[CheckedChange]) -> list[str]:
    """The path keys whose heads a batch reads and moves."""
    return [c.change.path_key for c in checked] + [
        c.change.to_path_key for c in checked if c.change.to_path_key
    ]


@dataclass(slots=True)
class AppendPlan:
    """The rows a batch adds after the arena head, and what the commit answers."""

    first: int
    last: int
    conflicts: list[CommitConflict]
    change_rows: list[dict[str, object]]
    ref_rows: list[dict[str, object]]
    head_rows: list[dict[str, object]]


def plan_append(
    arena: ArenaRow,
    checked: Sequence[CheckedChange],
    known: dict[str, Head],
    now: float,
    *,
    restored_from: int | None = None,
) -> AppendPlan:
    """Give each change the next cursor, note races with the known heads (updated in place)."""
    seq = arena.head_seq
    change_rows: list[dict[str, object]] = []
    ref_rows: list[dict[str, object]] = []
    new_heads: dict[str, dict[str, object]] = {}
    conflicts: list[CommitConflict] = []
    for item in checked:
        ch = item.change
        seq += 1
        vv = VersionVector(ch.vv)
        raced = _raced(known.get(ch.path_key), VersionVector(ch.base_vv), ch.op)
        if raced is None and ch.to_path_key is not None:
            dest = known.get(ch.to_path_key)
            if dest is not None and not dest.deleted:
                raced = _raced(dest, VersionVector(ch.base_vv), ch.op)
        if raced is not None:
            conflicts.append(CommitConflict(seq=seq, path_key=ch.path_key, conflict_with=raced))
        change_rows.append(
            {
                "arena_id": arena.id,
                "seq": seq,
                "op": ch.op,
                "path_key": ch.path_key,
                "path": item.path,
                "to_path_key": ch.to_path_key,
                "to_path": item.to_path,
                "record": ch.record,
                "chunk_ids": " ".join(ch.chunks),
                "base_vv": dump_vv(ch.base_vv),
                "vv": dump_vv(vv),
                "device": ch.device,
                "conflict_with": raced,
                "restored_from": restored_from,
                "size": item.size,
                "created_at": now,
            }
        )
        ref_rows.extend(
            {"arena_id": arena.id, "seq": seq, "chunk_id": cid, "tenant_id": arena.tenant_id}
            for cid in sorted(set(ch.chunks))
        )
        targets = [(ch.path_key, ch.op in {"delete", "rename"})]
        if ch.to_path_key is not None:
            targets.append((ch.to_path_key, False))
        for key, deleted in targets:
            prior = known.get(key)
            merged = vv.merge(prior.vv) if prior is not None else vv
            head = Head(seq, merged, deleted, "delete" if deleted else ch.op)
            known[key] = head
            new_heads[key] = {
                "arena_id": arena.id,
                "path_key": key,
                "seq": seq,
                "vv": dump_vv(merged),
                "deleted": deleted,
                "op": head.op,
            }
    return AppendPlan(arena.head_seq + 1, seq, conflicts, change_rows, ref_rows, list(new_heads.values()))


async def _arena_and_earlier(
    conn: AsyncConnection, tenant_id: int, public_id: str, key: str
) -> tuple[ArenaRow, tuple[str, str] | None]:
    """The live arena (locked for this transaction) and the (hash, result) of an earlier commit of ``key``."""
    params = {"public_id": public_id, "tenant_id": tenant_id, "idempotency_key": key}
    joined = conn.dialect.name == "sqlite"
    row = (await conn.execute(_ARENA_AND_EARLIER if joined else _LOCK_ARENA, params)).first()
    if row is None:
        raise arena_not_found(public_id)
    found = row._mapping
    arena = arena_from_mapping(found)
    earlier = (found["earlier_hash"], found["earlier_result"]) if joined else None
    if not joined:
        params["arena_pk"] = arena.id
        earlier = (await conn.execute(_EARLIER, params)).first()
    if earlier is None or earlier[0] is None:
        return arena, None
    return arena, (str(earlier[0]), str(earlier[1]))


async def commit(
    conn: AsyncConnection, tenant_id: int, arena_public_id: str, request: CommitRequest, now: float
) -> tuple[ArenaRow, CommitResult]:
    """Run one commit inside the caller's write transaction; a replayed idempotency key changes nothing."""
    arena, earlier = await _arena_and_earlier(conn, tenant_id, arena_public_id, request.idempotency_key)
    digest = request_hash(request)
    if earlier is not None:
        return arena, replayed(request, digest, earlier)
    checked = [check_change(ch, encrypted=arena.encrypted) for ch in request.changes]
    await require_chunks(conn, tenant_id, (cid for ch in request.changes for cid in ch.chunks))
    if conn.dialect.name == "postgresql":
        return arena, await _append_and_record(conn, arena, checked, request, digest, now)
    first, last, conflicts = await append_changes(conn, arena, checked, now)
    result = CommitResult(first=first, last=last, cursor=last, conflicts=conflicts)
    await conn.execute(_INSERT_COMMIT, commit_row(arena, request, digest, result, now))
    return arena, result


# Batches up to this many changes (and chunk references) go in as one statement on PostgreSQL, one
# compiled shape per size; larger ones as separate statements, whose round trips are a small share.
_ONE_STATEMENT_MAX = 8
_ONE_STATEMENT_REFS = 32


def _bound_rows(table: sa.Table, prefix: str, columns: Sequence[str], n: int) -> list[dict[str, Any]]:
    return [{c: sa.bindparam(f"{prefix}{i}_{c}", type_=table.c[c].type) for c in columns} for i in range(n)]


def _writes_in_one_statement(plan: AppendPlan) -> bool:
    """Whether ``_one_statement`` takes this batch (PostgreSQL)."""
    return len(plan.change_rows) <= _ONE_STATEMENT_MAX and len(plan.ref_rows) <= _ONE_STATEMENT_REFS


@functools.lru_cache(maxsize=256)
def _one_statement(dialect: Dialect, n_changes: int, n_refs: int, n_heads: int) -> str:
    """The commit's writes as data-modifying CTEs of one INSERT, for this many rows of each kind.

    Each statement is a round trip that costs the hub more CPU than the work it asks for, so the
    changes, their chunk references, the heads, the arena's head and the commit record go in
    together: none reads what another writes, and the foreign keys are checked when the
    statement ends, as they are for separate statements. Compiled here once per shape:
    SQLAlchemy does not cache statements with multi-row VALUES, and compiling this one on every
    commit cost more than the round trips it saves. Its parameters come from ``_flat_params``.
    """
    heads_in = postgresql.insert(heads).values(_bound_rows(heads, "h", _HEAD_COLUMNS, n_heads))
    statement = (
        commits.insert()
        .values(_bound_rows(commits, "k", _COMMIT_COLUMNS, 1))
        .add_cte(
            changes.insert().values(_bound_rows(changes, "c", _CHANGE_COLUMNS, n_changes)).cte("new_changes")
        )
        .add_cte(_upsert_heads_statement(heads_in).cte("new_heads"))  # type: ignore[attr-defined]
        .add_cte(
            arenas.update()
            .where(arenas.c.id == sa.bindparam("arena_pk"))
            .values(head_seq=sa.bindparam("head_seq"))
            .cte("new_head")
        )
    )
    if n_refs:
        refs = change_chunks.insert().values(_bound_rows(change_chunks, "r", _REF_COLUMNS, n_refs))
        statement = statement.add_cte(refs.cte("new_refs"))
    return str(statement.compile(dialect=dialect))


def _flat(prefix: str, rows: Sequence[dict[str, object]]) -> dict[str, object]:
    return {f"{prefix}{i}_{k}": v for i, row in enumerate(rows) for k, v in row.items()}


def _flat_params(arena: ArenaRow, plan: AppendPlan, record: dict[str, object]) -> dict[str, object]:
    """The parameters of ``_one_statement`` for this batch and its commit record."""
    return {
        **_flat("k", [record]),
        **_flat("c", plan.change_rows),
        **_flat("h", plan.head_rows),
        **_flat("r", plan.ref_rows),
        "arena_pk": arena.id,
        "head_seq": plan.last,
    }


async def _append_and_record(
    conn: AsyncConnection,
    arena: ArenaRow,
    checked: Sequence[CheckedChange],
    request: CommitRequest,
    digest: str,
    now: float,
) -> CommitResult:
    """PostgreSQL: the rows of ``append_changes`` and the idempotency record, in one statement if small."""
    known = await load_heads(conn, arena.id, touched_keys(checked))
    plan = plan_append(arena, checked, known, now)
    result = CommitResult(first=plan.first, last=plan.last, cursor=plan.last, conflicts=plan.conflicts)
    record = commit_row(arena, request, digest, result, now)
    if _writes_in_one_statement(plan):
        statement = _one_statement(
            conn.dialect, len(plan.change_rows), len(plan.ref_rows), len(plan.head_rows)
        )
        await conn.exec_driver_sql(statement, _flat_params(arena, plan, record))
    else:
        await _write_rows(conn, arena, plan)
        await conn.execute(_INSERT_COMMIT, record)
    return result


def replayed(request: CommitRequest, digest: str, earlier: tuple[str, str]) -> CommitResult:
    """The answer to a retried key: the first answer again, or 409 if the key came with another batch."""
    earlier_hash, earlier_result = earlier
    if earlier_hash != digest:
        raise ConflictError(
            f"idempotency key {request.idempotency_key!r} was already used for a different commit",
            hint="use a fresh idempotency key for every new batch",
        )
    replay = CommitResult.model_validate_json(earlier_result)
    return replay.model_copy(update={"replayed": True})


def commit_row(
    arena: ArenaRow, request: CommitRequest, digest: str, result: CommitResult, now: float
) -> dict[str, object]:
    """The idempotency record of a commit: its key, the batch's hash and the answer given."""
    return {
        "arena_id": arena.id,
        "idempotency_key": request.idempotency_key,
        "request_hash": digest,
        "first_seq": result.first,
        "last_seq": result.last,
        "result": result.model_dump_json(),
        "created_at": now,
    }
