"""Arena queries: every one scoped to a tenant, so another tenant's arena is simply not found."""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import ConflictError, NotFoundError, UsageError
from shoal.hub.db.sync_schema import arenas
from shoal.net.schemas_sync import Arena, ArenaCreate, ArenaUpdate

DELETE_GRACE_SECONDS = 30 * 86400


@dataclass(frozen=True, slots=True)
class ArenaRow:
    id: int
    public_id: str
    tenant_id: int
    name: str
    encrypted: bool
    conflict_policy: str
    keep_days: int
    keep_versions: int
    head_seq: int
    created_at: float
    deleted_at: float | None

    def to_wire(self, grace_seconds: float = DELETE_GRACE_SECONDS) -> Arena:
        purge = self.deleted_at + grace_seconds if self.deleted_at is not None else None
        return Arena(
            id=self.public_id,
            name=self.name,
            encrypted=self.encrypted,
            conflict_policy="lww" if self.conflict_policy == "lww" else "keep-both",
            keep_days=self.keep_days,
            keep_versions=self.keep_versions,
            head=self.head_seq,
            created_at=self.created_at,
            deleted_at=self.deleted_at,
            purge_after=purge,
        )


def _row(r: sa.Row[tuple[object, ...]]) -> ArenaRow:
    return arena_from_mapping(r._mapping)


def arena_from_mapping(m: sa.RowMapping) -> ArenaRow:
    """An arena row from a result mapping holding (at least) the arena table's columns."""
    return ArenaRow(
        id=int(m["id"]),
        public_id=str(m["public_id"]),
        tenant_id=int(m["tenant_id"]),
        name=str(m["name"]),
        encrypted=bool(m["encrypted"]),
        conflict_policy=str(m["conflict_policy"]),
        keep_days=int(m["keep_days"]),
        keep_versions=int(m["keep_versions"]),
        head_seq=int(m["head_seq"]),
        created_at=float(m["created_at"]),
        deleted_at=None if m["deleted_at"] is None else float(m["deleted_at"]),
    )


def check_arena_name(name: str) -> str:
    """NFC form of a valid arena name: one non-blank name without '/', NUL or control characters."""
    clean = unicodedata.normalize("NFC", name)
    if not clean.strip() or clean != clean.strip():
        raise UsageError(f"arena name {name!r} is blank or has leading/trailing spaces")
    if "/" in clean or any(unicodedata.category(ch) == "Cc" for ch in clean):
        raise UsageError(f"arena name {name!r} contains '/' or a control character")
    return clean


async def get_arena(
    conn: AsyncConnection,
    tenant_id: int,
    public_id: str,
    *,
    for_update: bool = False,
    include_deleted: bool = False,
) -> ArenaRow:
    query = sa.select(arenas).where(arenas.c.public_id == public_id, arenas.c.tenant_id == tenant_id)
    if not include_deleted:
        query = query.where(arenas.c.deleted_at.is_(None))
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise arena_not_found(public_id)
    return _row(row)


def arena_not_found(public_id: str) -> NotFoundError:
    return NotFoundError(f"arena {public_id!r} does not exist", hint="`shoal arena list` shows your arenas")


async def list_arenas(
    conn: AsyncConnection, tenant_id: int, *, deleted: bool = False, now: float = 0.0
) -> list[ArenaRow]:
    query = sa.select(arenas).where(arenas.c.tenant_id == tenant_id)
    if deleted:
        query = query.where(
            arenas.c.deleted_at.is_not(None), arenas.c.deleted_at > now - DELETE_GRACE_SECONDS
        )
    else:
        query = query.where(arenas.c.deleted_at.is_(None))
    rows = (await conn.execute(query.order_by(arenas.c.name, arenas.c.id))).all()
    return [_row(r) for r in rows]


async def _name_taken(conn: AsyncConnection, tenant_id: int, name: str, *, except_id: int = 0) -> bool:
    query = sa.select(arenas.c.id).where(
        arenas.c.tenant_id == tenant_id,
        arenas.c.name == name,
        arenas.c.deleted_at.is_(None),
        arenas.c.id != except_id,
    )
    return (await conn.execute(query)).first() is not None


def _name_conflict(name: str) -> ConflictError:
    return ConflictError(
        f"an arena named {name!r} already exists", hint="pick another name or rename the existing arena"
    )


async def create_arena(conn: AsyncConnection, tenant_id: int, spec: ArenaCreate, now: float) -> ArenaRow:
    name = check_arena_name(spec.name)
    if await _name_taken(conn, tenant_id, name):
        raise _name_conflict(name)
    public_id = "a" + secrets.token_urlsafe(15)
    await conn.execute(
        arenas.insert().values(
            public_id=public_id,
            tenant_id=tenant_id,
            name=name,
            encrypted=spec.encrypted,
            conflict_policy=spec.conflict_policy,
            keep_days=spec.keep_days,
            keep_versions=spec.keep_versions,
            head_seq=0,
            created_at=now,
        )
    )
    return await get_arena(conn, tenant_id, public_id)


async def update_arena(conn: AsyncConnection, tenant_id: int, public_id: str, spec: ArenaUpdate) -> ArenaRow:
    arena = await get_arena(conn, tenant_id, public_id, for_update=True)
    values: dict[str, object] = {}
    if spec.name is not None:
        name = check_arena_name(spec.name)
        if await _name_taken(conn, tenant_id, name, except_id=arena.id):
            raise _name_conflict(name)
        values["name"] = name
    if spec.conflict_policy is not None:
        values["conflict_policy"] = spec.conflict_policy
    if spec.keep_days is not None:
        values["keep_days"] = spec.keep_days
    if spec.keep_versions is not None:
        values["keep_versions"] = spec.keep_versions
    if values:
        await conn.execute(arenas.update().where(arenas.c.id == arena.id).values(**values))
    return await get_arena(conn, tenant_id, public_id)


async def delete_arena(conn: AsyncConnection, tenant_id: int, public_id: str, now: float) -> ArenaRow:
    arena = await get_arena(conn, tenant_id, public_id, for_update=True)
    await conn.execute(arenas.update().where(arenas.c.id == arena.id).values(deleted_at=now))
    return await get_arena(conn, tenant_id, public_id, include_deleted=True)


async def undelete_arena(conn: AsyncConnection, tenant_id: int, public_id: str, now: float) -> ArenaRow:
    arena = await get_arena(conn, tenant_id, public_id, for_update=True, include_deleted=True)
    if arena.deleted_at is None:
        return arena
    if arena.deleted_at + DELETE_GRACE_SECONDS < now:
        raise NotFoundError(f"arena {public_id!r} was deleted more than 30 days ago and cannot be restored")
    if await _name_taken(conn, tenant_id, arena.name):
        raise ConflictError(
            f"another live arena is named {arena.name!r}",
            hint="rename that arena first, then undelete this one",
        )
    await conn.execute(arenas.update().where(arenas.c.id == arena.id).values(deleted_at=None))
    return await get_arena(conn, tenant_id, public_id)
