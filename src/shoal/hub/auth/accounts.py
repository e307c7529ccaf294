"""Users, teams and the tenants they act in. A user is a tenant; a team is a tenant with members."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import AuthError, ConflictError, NotFoundError, UsageError
from shoal.hub.auth.passwords import verify_password
from shoal.hub.db.engine import HubDatabase
from shoal.hub.db.schema import team_members, tenants, users
from shoal.hub.errors import ForbiddenError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    tenant_id: int


@dataclass(frozen=True, slots=True)
class Tenant:
    id: int
    name: str
    kind: str


def check_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid {what} name {name[:80]!r}",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


async def _tenant_name_free(conn: AsyncConnection, name: str) -> None:
    found = await conn.scalar(sa.select(tenants.c.id).where(tenants.c.name == name))
    if found is not None:
        raise ConflictError(f"the name {name!r} is already taken by a user or team")


async def add_user(conn: AsyncConnection, name: str, password_hash: str) -> User:
    check_name(name, "user")
    await _tenant_name_free(conn, name)
    now = time.time()
    tenant_id = await conn.scalar(
        tenants.insert().values(kind="user", name=name, created_at=now).returning(tenants.c.id)
    )
    assert tenant_id is not None
    user_id = await conn.scalar(
        users.insert()
        .values(name=name, tenant_id=tenant_id, password_hash=password_hash, created_at=now)
        .returning(users.c.id)
    )
    assert user_id is not None
    return User(user_id, name, tenant_id)


async def add_team(conn: AsyncConnection, name: str) -> Tenant:
    check_name(name, "team")
    await _tenant_name_free(conn, name)
    tenant_id = await conn.scalar(
        tenants.insert().values(kind="team", name=name, created_at=time.time()).returning(tenants.c.id)
    )
    assert tenant_id is not None
    return Tenant(tenant_id, name, "team")


async def add_member(conn: AsyncConnection, team: str, user_name: str, role: str = "member") -> None:
    tenant = await find_tenant(conn, team)
    if tenant.kind != "team":
        raise UsageError(f"{team!r} is a user, not a team", hint="create a team with `shoal hub team add`")
    user = await find_user(conn, user_name)
    exists = await conn.scalar(
        sa.select(team_members.c.user_id).where(
            team_members.c.tenant_id == tenant.id, team_members.c.user_id == user.id
        )
    )
    if exists is None:
        await conn.execute(
            team_members.insert().values(
                tenant_id=tenant.id, user_id=user.id, role=role, created_at=time.time()
            )
        )


async def find_user(conn: AsyncConnection, name: str) -> User:
    row = (
        await conn.execute(
            sa.select(users.c.id, users.c.name, users.c.tenant_id).where(
                users.c.name == name, users.c.disabled_at.is_(None)
            )
        )
    ).first()
    if row is None:
        raise NotFoundError(f"no user named {name!r}", hint="create one with `shoal hub user add NAME`")
    return User(row.id, row.name, row.tenant_id)


async def find_tenant(conn: AsyncConnection, name: str) -> Tenant:
    row = (await conn.execute(sa.select(tenants).where(tenants.c.name == name))).first()
    if row is None:
        raise NotFoundError(f"no user or team named {name!r}")
    return Tenant(row.id, row.name, row.kind)


async def tenant_by_id(conn: AsyncConnection, tenant_id: int) -> Tenant:
    row = (await conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id))).first()
    if row is None:
        raise NotFoundError("the tenant no longer exists")
    return Tenant(row.id, row.name, row.kind)


async def user_by_id(conn: AsyncConnection, user_id: int) -> User:
    row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
    if row is None:
        raise NotFoundError("the user no longer exists")
    return User(row.id, row.name, row.tenant_id)


async def resolve_tenant(conn: AsyncConnection, user: User, tenant_name: str | None) -> Tenant:
    """The tenant ``user`` acts in: their own by default, or a team they belong to."""
    if tenant_name is None or tenant_name == user.name:
        return await tenant_by_id(conn, user.tenant_id)
    tenant = await find_tenant(conn, tenant_name)
    member = await conn.scalar(
        sa.select(team_members.c.user_id).where(
            team_members.c.tenant_id == tenant.id, team_members.c.user_id == user.id
        )
    )
    if tenant.kind != "team" or member is None:
        raise ForbiddenError(f"{user.name!r} is not a member of {tenant_name!r}")
    return tenant


async def authenticate(db: HubDatabase, name: str, password: str) -> User:
    """The user if ``password`` is theirs; the same error (and the same time) for a wrong name or password."""
    async with db.read() as conn:
        row = (
            await conn.execute(
                sa.select(users.c.id, users.c.name, users.c.tenant_id, users.c.password_hash).where(
                    users.c.name == name, users.c.disabled_at.is_(None)
                )
            )
        ).first()
    ok = await verify_password(row.password_hash if row is not None else None, password)
    if row is None or not ok:
        raise AuthError("wrong user name or password")
    return User(row.id, row.name, row.tenant_id)
