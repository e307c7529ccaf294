"""The hub's key rules, on a real SQLite hub database: epochs in order, envelopes only for active devices."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from shoal.errors import ConflictError, LockedError, NotFoundError, UsageError
from shoal.hub.auth.devices import register_device, revoke_device
from shoal.hub.db.engine import HubDatabase, open_database
from shoal.hub.db.migrate import migrate
from shoal.hub.db.schema import tenants, users
from shoal.hub.keys import store as q
from shoal.hub.sync import arenas as arena_q
from shoal.net.schemas_sync import ArenaCreate

T = TypeVar("T")
ESCROW = "escrow"


def run(scenario: Callable[[HubDatabase, list[str]], Awaitable[T]], tmp_path: Path) -> T:
    async def main() -> T:
        db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
        try:
            await migrate(db)
            async with db.write() as conn:
                tenant = await conn.scalar(
                    tenants.insert().values(kind="user", name="alice", created_at=0.0).returning(tenants.c.id)
                )
                user = await conn.scalar(
                    users.insert()
                    .values(name="alice", tenant_id=tenant, password_hash="not-a-hash", created_at=0.0)
                    .returning(users.c.id)
                )
                assert tenant is not None
                assert user is not None
                ids = []
                for n in range(3):
                    _, public = await register_device(
                        conn,
                        tenant_id=tenant,
                        user_id=user,
                        name=f"d{n}",
                        signing_public=bytes([n]) * 32,
                        exchange_public=bytes([n + 10]) * 32,
                    )
                    ids.append(public)
            return await scenario(db, ids)
        finally:
            await db.close()

    return asyncio.run(main())


async def _arena(db: HubDatabase, *, encrypted: bool = True) -> arena_q.ArenaRow:
    async with db.write() as conn:
        return await arena_q.create_arena(conn, 1, ArenaCreate(name="vault", encrypted=encrypted), 1.0)


def test_epochs_advance_one_at_a_time_and_always_include_escrow(tmp_path: Path) -> None:
    async def scenario(db: HubDatabase, devices: list[str]) -> None:
        arena = await _arena(db)
        a, b, _c = devices
        async with db.write() as conn:
            with pytest.raises(UsageError, match="escrow"):
                await q.init_keys(conn, 1, arena, b"kit", {a: b"env-a"}, a, 1.0)
            await q.init_keys(conn, 1, arena, b"kit", {a: b"env-a0", ESCROW: b"env-e0"}, a, 1.0)
            with pytest.raises(ConflictError, match="already has keys"):
                await q.init_keys(conn, 1, arena, b"kit", {a: b"x", ESCROW: b"y"}, a, 1.0)
            await q.add_envelopes(conn, 1, arena, 0, {b: b"env-b0"}, a, 2.0)
            with pytest.raises(ConflictError, match="not 2"):
                await q.start_epoch(conn, 1, arena, 2, {a: b"x", ESCROW: b"y"}, a, 3.0)
            with pytest.raises(UsageError, match="escrow"):
                await q.start_epoch(conn, 1, arena, 1, {a: b"x"}, a, 3.0)
            await q.start_epoch(conn, 1, arena, 1, {a: b"env-a1", ESCROW: b"env-e1"}, a, 3.0)
            with pytest.raises(ConflictError, match="epoch 1, not 0"):
                await q.add_envelopes(conn, 1, arena, 0, {b: b"late"}, a, 4.0)
        async with db.read() as conn:
            mine = await q.envelope_for(conn, arena, a)
            assert (mine.epoch, mine.current_epoch, mine.envelope) == (1, 1, b"env-a1")
            left_behind = await q.envelope_for(conn, arena, b)
            assert (left_behind.epoch, left_behind.current_epoch) == (0, 1)
            with pytest.raises(LockedError, match="holds no key"):
                await q.envelope_for(conn, arena, devices[2])
            assert [d.public_id for d in await q.recipients(conn, 1, arena)] == [a]

    run(scenario, tmp_path)


def test_revoked_devices_never_receive_envelopes(tmp_path: Path) -> None:
    async def scenario(db: HubDatabase, devices: list[str]) -> None:
        arena = await _arena(db)
        a, b, _c = devices
        async with db.write() as conn:
            await q.init_keys(conn, 1, arena, b"kit", {a: b"env-a0", b: b"env-b0", ESCROW: b"e"}, a, 1.0)
            await revoke_device(conn, 1, b)
            with pytest.raises(UsageError, match="not an active device"):
                await q.start_epoch(conn, 1, arena, 1, {a: b"x", b: b"x", ESCROW: b"y"}, a, 2.0)
            with pytest.raises(UsageError, match="not an active device"):
                await q.add_envelopes(conn, 1, arena, 0, {"someone-else": b"x"}, a, 2.0)
        async with db.read() as conn:
            holders = {d.public_id: d.revoked_at is not None for d in await q.recipients(conn, 1, arena)}
            assert holders == {a: False, b: True}

    run(scenario, tmp_path)


def test_plain_arenas_have_no_keys_and_codes_name_only_active_devices(tmp_path: Path) -> None:
    async def scenario(db: HubDatabase, devices: list[str]) -> None:
        plain = await _arena(db, encrypted=False)
        async with db.write() as conn:
            with pytest.raises(UsageError, match="plain"):
                await q.encrypted_arena(conn, 1, plain.public_id)
            code, expires = await q.create_enrollment(conn, 1, devices[1], 100.0)
            assert len(code) == 8
            assert (await q.find_enrollment(conn, 1, code.lower(), 101.0)).public_id == devices[1]
            with pytest.raises(NotFoundError):
                await q.find_enrollment(conn, 2, code, 101.0)  # another tenant
            with pytest.raises(NotFoundError, match="expire"):
                await q.find_enrollment(conn, 1, code, expires + 1)
            await revoke_device(conn, 1, devices[1])
            with pytest.raises(NotFoundError):
                await q.find_enrollment(conn, 1, code, 101.0)

    run(scenario, tmp_path)
