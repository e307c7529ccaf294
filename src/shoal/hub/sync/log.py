"""Reading the change log: pages since a cursor, versions of a path, the current tree; acks and restore."""

from __future__ import annotations

import base64
import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import CursorExpiredError, NotFoundError, UsageError
from shoal.hub.db.ops_schema import arena_floors
from shoal.hub.db.sync_schema import changes, device_cursors, heads
from shoal.hub.sync.arenas import ArenaRow, get_arena
from shoal.hub.sync.commit import CheckedChange, append_changes, load_heads, load_vv, require_chunks
from shoal.model.vv import VersionVector
from shoal.net.schemas_sync import (
    ChangeIn,
    CommitResult,
    Op,
    RestoreRequest,
    VersionEntry,
    VersionList,
)

_ENTRY_COLUMNS = (
    changes.c.seq,
    changes.c.op,
    changes.c.path_key,
    changes.c.path,
    changes.c.to_path_key,
    changes.c.to_path,
    changes.c.record,
    changes.c.chunk_ids,
    changes.c.base_vv,
    changes.c.vv,
    changes.c.device,
    changes.c.conflict_with,
    changes.c.restored_from,
    changes.c.size,
    changes.c.created_at,
)


_str = json.encoder.encode_basestring_ascii  # C-accelerated, quotes and escapes one string


def entry_json(row: Any) -> str:
    """One change as its wire JSON (the ``ChangeEntry`` shape), written directly for speed.

    Version vectors are stored as compact JSON written by the hub itself, so they are spliced in
    as they are; every string that came from a client goes through the JSON string encoder.
    """
    (
        seq,
        op,
        key,
        path,
        to_key,
        to_path,
        record,
        chunk_ids,
        base_vv,
        vv,
        device,
        raced,
        restored,
        size,
        at,
    ) = row
    chunks = ",".join(f'"{c}"' for c in chunk_ids.split()) if chunk_ids else ""
    parts = [
        f'{{"seq":{int(seq)},"op":"{op}","path_key":"{key}",',
        f'"record":"{base64.b64encode(record).decode("ascii")}","chunks":[{chunks}],',
        f'"base_vv":{base_vv},"vv":{vv},"device":{_str(device)},"time":{float(at)!r}',
    ]
    if path is not None:
        parts.append(f',"path":{_str(path)}')
    if to_key is not None:
        parts.append(f',"to_path_key":"{to_key}"')
    if to_path is not None:
        parts.append(f',"to_path":{_str(to_path)}')
    for name, value in (("conflict_with", raced), ("restored_from", restored), ("size", size)):
        if value is not None:
            parts.append(f',"{name}":{int(value)}')
    parts.append("}")
    return "".join(parts)


def page_json(fields: dict[str, Any], name: str, items: list[str]) -> bytes:
    """``fields`` plus a list of pre-encoded JSON items under ``name``, as one JSON object."""
    head = json.dumps(fields, separators=(",", ":"))[:-1]
    sep = "," if fields else ""
    return f'{head}{sep}"{name}":[{",".join(items)}]}}'.encode()


async def changes_page(conn: AsyncConnection, arena: ArenaRow, since: int, limit: int) -> dict[str, Any]:
    """Entries (JSON text) with ``seq > since``, at most ``limit``; ``cursor`` starts the next page."""
    if since < 0:
        raise UsageError("the cursor `since` is never negative")
    if since > 0:
        floor = (
            await conn.execute(sa.select(arena_floors.c.floor_seq).where(arena_floors.c.arena_id == arena.id))
        ).scalar_one_or_none()
        if floor is not None and since < int(floor):
            raise CursorExpiredError(
                f"cursor {since} is older than this arena's compacted log (it starts after {floor})",
                hint="this device was inactive too long: bootstrap again from the arena's tree",
            )
    query = (
        sa.select(*_ENTRY_COLUMNS)
        .where(changes.c.arena_id == arena.id, changes.c.seq > since)
        .order_by(changes.c.seq)
        .limit(limit + 1)
    )
    rows = (await conn.execute(query)).all()
    more = len(rows) > limit
    entries = [entry_json(r) for r in rows[:limit]]
    cursor = int(rows[limit - 1 if more else -1][0]) if rows else max(since, 0)
    if not entries and since > arena.head_seq:
        cursor = arena.head_seq  # a device ahead of the hub (restored from an old backup) is told the truth
    return {"entries": entries, "cursor": cursor, "more": more, "head": arena.head_seq}


async def versions(conn: AsyncConnection, arena: ArenaRow, path_key: str, limit: int = 1000) -> VersionList:
    """Every change that wrote or removed this path key, newest first."""
    query = (
        sa.select(
            changes.c.seq,
            changes.c.op,
            changes.c.created_at,
            changes.c.device,
            changes.c.size,
            changes.c.path_key,
            changes.c.conflict_with,
            changes.c.restored_from,
        )
        .where(
            changes.c.arena_id == arena.id,
            sa.or_(changes.c.path_key == path_key, changes.c.to_path_key == path_key),
        )
        .order_by(changes.c.seq.desc())
        .limit(limit)
    )
    out = []
    for seq, op, at, device, size, key, raced, restored in (await conn.execute(query)).all():
        removed = op == "delete" or (op == "rename" and key == path_key)
        out.append(
            VersionEntry(
                seq=seq,
                op=op,
                time=at,
                device=device,
                size=size,
                deleted=removed,
                conflict_with=raced,
                restored_from=restored,
            )
        )
    return VersionList(path_key=path_key, versions=out)


async def tree_page(conn: AsyncConnection, arena: ArenaRow, after: str, limit: int) -> dict[str, Any]:
    """Live heads ordered by path key, after ``after``; ``cursor`` is the arena head this snapshot matches.

    Each item pairs the path key with the change that made it (for a path reached by rename, the
    rename, whose ``to_path_key`` is that key).
    """
    query = (
        sa.select(heads.c.path_key.label("head_key"), *_ENTRY_COLUMNS)
        .select_from(
            heads.join(changes, sa.and_(changes.c.arena_id == heads.c.arena_id, changes.c.seq == heads.c.seq))
        )
        .where(heads.c.arena_id == arena.id, sa.not_(heads.c.deleted), heads.c.path_key > after)
        .order_by(heads.c.path_key)
        .limit(limit + 1)
    )
    rows = (await conn.execute(query)).all()
    items = [f'{{"path_key":"{r[0]}","change":{entry_json(r[1:])}}}' for r in rows[:limit]]
    next_after = rows[limit - 1][0] if len(rows) > limit else None
    return {"items": items, "cursor": arena.head_seq, "next_after": next_after}


async def ack(conn: AsyncConnection, arena: ArenaRow, device: str, cursor: int, now: float) -> int:
    """Store the device's acknowledged cursor (never moving it back); returns the stored value."""
    if cursor > arena.head_seq:
        raise UsageError(f"cursor {cursor} is past the arena's head {arena.head_seq}")
    ins = (
        postgresql.insert(device_cursors)
        if conn.dialect.name == "postgresql"
        else sqlite.insert(device_cursors)
    )
    stmt = ins.values(arena_id=arena.id, device=device, cursor=cursor, updated_at=now).on_conflict_do_update(
        index_elements=[device_cursors.c.arena_id, device_cursors.c.device],
        set_={
            "cursor": sa.func.max(device_cursors.c.cursor, ins.excluded.cursor)
            if conn.dialect.name == "sqlite"
            else sa.func.greatest(device_cursors.c.cursor, ins.excluded.cursor),
            "updated_at": ins.excluded.updated_at,
        },
    )
    await conn.execute(stmt)
    row = (
        await conn.execute(
            sa.select(device_cursors.c.cursor).where(
                device_cursors.c.arena_id == arena.id, device_cursors.c.device == device
            )
        )
    ).one()
    return int(row[0])


async def restore(
    conn: AsyncConnection,
    tenant_id: int,
    arena_public_id: str,
    req: RestoreRequest,
    *,
    device: str,
    now: float,
) -> tuple[ArenaRow, CommitResult]:
    """Append a change putting the path back to what change ``seq`` made of it (in a write transaction)."""
    arena = await get_arena(conn, tenant_id, arena_public_id, for_update=True)
    row = (
        await conn.execute(
            sa.select(changes).where(
                changes.c.arena_id == arena.id,
                changes.c.seq == req.seq,
                sa.or_(changes.c.path_key == req.path_key, changes.c.to_path_key == req.path_key),
            )
        )
    ).first()
    if row is None:
        raise NotFoundError(
            f"no version {req.seq} of that path in this arena", hint="list them with `versions`"
        )
    old = row._mapping
    chunk_ids = old["chunk_ids"].split() if old["chunk_ids"] else []
    await require_chunks(conn, tenant_id, chunk_ids)
    head = (await load_heads(conn, arena.id, [req.path_key])).get(req.path_key)
    base = head.vv if head is not None else VersionVector()
    vv = base.merge(load_vv(old["vv"])).bump(device)
    removed = old["op"] == "delete" or (old["op"] == "rename" and old["path_key"] == req.path_key)
    op: Op
    if removed:
        op, path = "delete", old["path"]
    elif old["op"] == "rename":
        op, path = "put", old["to_path"]
    else:
        op, path = old["op"], old["path"]
    change = ChangeIn(
        op=op,
        path_key=req.path_key,
        path=path,
        record=old["record"],
        chunks=[] if op == "delete" else chunk_ids,
        base_vv=base.to_dict(),
        vv=vv.to_dict(),
        device=device,
    )
    checked = CheckedChange(change, path, None, None if removed else old["size"])
    first, last, conflicts = await append_changes(conn, arena, [checked], now, restored_from=req.seq)
    return arena, CommitResult(first=first, last=last, cursor=last, conflicts=conflicts)
