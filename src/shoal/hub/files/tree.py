"""Reading a plain arena by path: the current entry of a path, its metadata, and folder listings.

Paths come from the change log: a head's path is the ``path`` of the change
that made it, or its ``to_path`` when that change was a rename onto it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import NotFoundError, UsageError
from shoal.hub.db.sync_schema import changes, device_cursors, heads
from shoal.hub.sync.arenas import ArenaRow
from shoal.hub.sync.commit import load_vv
from shoal.model.manifest import Manifest
from shoal.model.paths import normalize_path
from shoal.model.records import EntryBody, decode_entry
from shoal.model.vv import VersionVector
from shoal.net.schemas_sync import plain_path_key

MAX_LIST_PAGE = 1000
_LAST_CHAR = "\U0010ffff"
_SEP = "\x01"


@dataclass(frozen=True, slots=True)
class Entry:
    """The version of one path a change made: its seq, version vector and decoded record."""

    seq: int
    path: str
    vv: VersionVector
    body: EntryBody
    chunk_ids: list[str]
    created_at: float
    device: str

    @property
    def is_file(self) -> bool:
        return self.body.kind == "file"

    def manifest(self) -> Manifest:
        if self.body.manifest is None:
            raise UsageError(f"{self.path!r} is a {self.body.kind}, not a file")
        return Manifest.decode(self.body.manifest)


def require_plain(arena: ArenaRow) -> None:
    if arena.encrypted:
        raise UsageError(
            f"arena {arena.name!r} is encrypted; the file API serves plain arenas only",
            hint="read encrypted arenas through a device (`shoal mount` or a synced folder)",
        )


def clean_path(path: str) -> str:
    return normalize_path(path.strip("/"))


def _entry(row: Any, path: str) -> Entry:
    m = row._mapping
    body = decode_entry(bytes(m["record"]))
    ids = m["chunk_ids"].split() if m["chunk_ids"] else []
    return Entry(int(m["seq"]), path, load_vv(m["vv"]), body, ids, float(m["created_at"]), str(m["device"]))


async def head_entry(conn: AsyncConnection, arena: ArenaRow, path: str) -> tuple[Entry | None, VersionVector]:
    """The live entry at ``path`` (None when absent or deleted) and the path's merged version vector."""
    key = plain_path_key(path)
    head = (
        await conn.execute(sa.select(heads).where(heads.c.arena_id == arena.id, heads.c.path_key == key))
    ).first()
    if head is None:
        return None, VersionVector()
    vv = load_vv(head._mapping["vv"])
    if head._mapping["deleted"]:
        return None, vv
    row = (
        await conn.execute(
            sa.select(changes).where(changes.c.arena_id == arena.id, changes.c.seq == head._mapping["seq"])
        )
    ).one()
    return _entry(row, path), vv


async def entry_at(conn: AsyncConnection, arena: ArenaRow, path: str, seq: int | None) -> Entry:
    """The live entry at ``path``, or the version change ``seq`` made of it; NotFoundError otherwise."""
    if seq is None:
        entry, _ = await head_entry(conn, arena, path)
        if entry is None:
            raise NotFoundError(f"{path!r} does not exist in arena {arena.name!r}")
        return entry
    key = plain_path_key(path)
    row = (
        await conn.execute(
            sa.select(changes).where(
                changes.c.arena_id == arena.id,
                changes.c.seq == seq,
                sa.or_(
                    sa.and_(changes.c.path_key == key, changes.c.op.in_(("put", "mkdir", "symlink"))),
                    changes.c.to_path_key == key,
                ),
            )
        )
    ).first()
    if row is None:
        raise NotFoundError(f"version {seq} of {path!r} does not exist", hint="list versions first")
    return _entry(row, path)


async def acked_by(conn: AsyncConnection, arena: ArenaRow, seq: int) -> list[str]:
    """Devices whose acknowledged cursor is at or past ``seq`` (they have seen this version)."""
    query = sa.select(device_cursors.c.device).where(
        device_cursors.c.arena_id == arena.id, device_cursors.c.cursor >= seq
    )
    return sorted(str(r[0]) for r in (await conn.execute(query)).all())


def _path_expr() -> sa.ColumnElement[str]:
    return sa.case((changes.c.to_path_key == heads.c.path_key, changes.c.to_path), else_=changes.c.path)


def _order_key(path: str) -> str:
    # "/" sorts first, so a folder's contents follow the folder's own name directly.
    return path.replace("/", _SEP)


async def list_folder(
    conn: AsyncConnection, arena: ArenaRow, folder: str, after: str, limit: int
) -> tuple[list[tuple[str, Entry | None]], str | None]:
    """Direct children of ``folder`` ("" for the root) after the name ``after``, in name order.

    Returns (name, entry) pairs (entry None for a folder known only from paths below it)
    and the cursor of the next page (None when this page is the last).
    """
    if not 1 <= limit <= MAX_LIST_PAGE:
        raise UsageError(f"limit is between 1 and {MAX_LIST_PAGE}")
    prefix = f"{folder}/" if folder else ""
    path = _path_expr()
    key: sa.ColumnElement[str] = sa.func.replace(path, "/", _SEP)
    if conn.dialect.name == "postgresql":
        key = key.collate("C")  # code point order, like SQLite and Python
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    out: list[tuple[str, Entry | None]] = []
    position = _order_key(prefix + after) + _SEP + _LAST_CHAR if after else _order_key(prefix)
    while len(out) <= limit:
        wanted = limit + 1 - len(out)
        query = (
            sa.select(path.label("p"), changes)
            .select_from(
                heads.join(
                    changes, sa.and_(changes.c.arena_id == heads.c.arena_id, changes.c.seq == heads.c.seq)
                )
            )
            .where(
                heads.c.arena_id == arena.id,
                sa.not_(heads.c.deleted),
                path.like(escaped + "%", escape="\\"),
                key > position,
            )
            .order_by(key)
            .limit(wanted)
        )
        rows = (await conn.execute(query)).all()
        jumped = False
        for row in rows:
            full = str(row[0])
            name, sep, _ = full[len(prefix) :].partition("/")
            if sep or (out and out[-1][0] == name):
                if not out or out[-1][0] != name:
                    out.append((name, None))  # a folder known only from what is inside it
                # Skip the rest of this folder's contents in one step.
                position = _order_key(prefix + name) + _SEP + _LAST_CHAR
                jumped = True
                break
            out.append((name, _entry(row, full)))
            position = _order_key(full)
            if len(out) > limit:
                break
        if not jumped and len(rows) < wanted:
            break
    more = len(out) > limit
    page = out[:limit]
    return page, (page[-1][0] if more and page else None)
