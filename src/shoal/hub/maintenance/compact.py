"""Retention and log compaction of one arena.

A change is dropped from the log (with its chunk references) only when all of
these hold: it is no path's head; every active device has acknowledged it;
it is older than the arena's ``keep_days``; at least ``keep_versions`` newer
changes touched each of its paths; and it is not the base of a conflict that
is still open (a head that raced it). Heads, tombstones included, are always
kept, so a device reading the log from 0 still rebuilds the whole tree.

A device whose acknowledgement is older than ``idle_limit`` is inactive: it
no longer holds compaction back, and if it comes back with a cursor below the
arena's floor (the newest dropped seq) it is told to re-bootstrap (410,
``cursor_expired``, docs/protocol.md).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.hub.db.ops_schema import arena_floors
from shoal.hub.db.sync_schema import change_chunks, changes, device_cursors, heads
from shoal.hub.sync.arenas import ArenaRow

IDLE_LIMIT = 90 * 86400.0
_BATCH = 500


@dataclass(frozen=True, slots=True)
class Compacted:
    arena_id: int
    dropped: int
    floor: int


async def ack_floor(conn: AsyncConnection, arena: ArenaRow, now: float, idle_limit: float) -> int:
    """The lowest cursor among active devices (the head when no device is active)."""
    query = sa.select(sa.func.min(device_cursors.c.cursor)).where(
        device_cursors.c.arena_id == arena.id, device_cursors.c.updated_at >= now - idle_limit
    )
    lowest = (await conn.execute(query)).scalar_one_or_none()
    return arena.head_seq if lowest is None else int(lowest)


async def floor_of(conn: AsyncConnection, arena_id: int) -> int:
    query = sa.select(arena_floors.c.floor_seq).where(arena_floors.c.arena_id == arena_id)
    value = (await conn.execute(query)).scalar_one_or_none()
    return 0 if value is None else int(value)


async def prunable(conn: AsyncConnection, arena: ArenaRow, now: float, idle_limit: float) -> list[int]:
    """The seqs retention and compaction may drop (see the module doc)."""
    acked = await ack_floor(conn, arena, now, idle_limit)
    head_seqs = {
        int(r[0]) for r in (await conn.execute(sa.select(heads.c.seq).where(heads.c.arena_id == arena.id)))
    }
    rows = (
        await conn.execute(
            sa.select(
                changes.c.seq,
                changes.c.path_key,
                changes.c.to_path_key,
                changes.c.conflict_with,
                changes.c.created_at,
            )
            .where(changes.c.arena_id == arena.id)
            .order_by(changes.c.seq.desc())
        )
    ).all()
    open_bases = {int(r[3]) for r in rows if r[3] is not None and int(r[0]) in head_seqs}
    newer: dict[str, int] = defaultdict(int)  # changes seen so far (newer) per path key
    cutoff = now - arena.keep_days * 86400.0
    out: list[int] = []
    for seq, key, to_key, _raced, created in rows:
        keys = [key] + ([to_key] if to_key else [])
        enough_newer = all(newer[k] >= arena.keep_versions for k in keys)
        for k in keys:
            newer[k] += 1
        if (
            int(seq) not in head_seqs
            and int(seq) <= acked
            and float(created) < cutoff
            and enough_newer
            and int(seq) not in open_bases
        ):
            out.append(int(seq))
    return sorted(out)


async def compact(
    conn: AsyncConnection,
    arena: ArenaRow,
    now: float,
    *,
    idle_limit: float = IDLE_LIMIT,
    dry_run: bool = False,
) -> Compacted:
    """Drop what :func:`prunable` allows (inside the caller's write transaction, arena row locked)."""
    seqs = await prunable(conn, arena, now, idle_limit)
    if dry_run or not seqs:
        return Compacted(arena.id, len(seqs), await floor_of(conn, arena.id))
    for start in range(0, len(seqs), _BATCH):
        part = seqs[start : start + _BATCH]
        await conn.execute(
            change_chunks.delete().where(change_chunks.c.arena_id == arena.id, change_chunks.c.seq.in_(part))
        )
        await conn.execute(changes.delete().where(changes.c.arena_id == arena.id, changes.c.seq.in_(part)))
    floor = max(seqs[-1], await floor_of(conn, arena.id))
    ins = (
        postgresql.insert(arena_floors) if conn.dialect.name == "postgresql" else sqlite.insert(arena_floors)
    )
    await conn.execute(
        ins.values(arena_id=arena.id, floor_seq=floor, compacted_at=now).on_conflict_do_update(
            index_elements=[arena_floors.c.arena_id],
            set_={"floor_seq": ins.excluded.floor_seq, "compacted_at": ins.excluded.compacted_at},
        )
    )
    return Compacted(arena.id, len(seqs), floor)
