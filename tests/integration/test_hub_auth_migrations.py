"""A hub database made at schema version 1 is upgraded in place and keeps its accounts."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from shoal.crypto.keys import DeviceKeys
from shoal.hub.config import build_settings
from shoal.hub.db.engine import open_database
from shoal.hub.db.migrate import discover
from shoal.net.auth import AuthClient
from shoal.net.http import HubSession
from shoal.testing.hubproc import HubProcess, run_shoal

pytestmark = pytest.mark.slow
PASSWORD = "kept across upgrades"

# Generous: a loaded CI machine can take seconds to answer, and that is not what these tests check.
http_get = functools.partial(httpx.get, timeout=60.0)
http_post = functools.partial(httpx.post, timeout=60.0)


async def _add_user_as_version_1_did(db_url: str) -> None:
    """Write alice the way a version-1 hub wrote rows (plain SQL: no code from today's schema)."""
    db = await open_database(db_url)
    try:
        async with db.write() as conn:
            now = time.time()
            await conn.execute(
                sa.text("INSERT INTO tenants (kind, name, created_at) VALUES ('user', 'alice', :now)"),
                {"now": now},
            )
            tenant_id = await conn.scalar(sa.text("SELECT id FROM tenants WHERE name = 'alice'"))
            await conn.execute(
                sa.text(
                    "INSERT INTO users (name, tenant_id, password_hash, created_at) "
                    "VALUES ('alice', :tenant, :hash, :now)"
                ),
                {"tenant": tenant_id, "hash": PasswordHasher().hash(PASSWORD), "now": now},
            )
    finally:
        await db.close()


async def _versions(db_url: str) -> list[int]:
    db = await open_database(db_url)
    try:
        async with db.read() as conn:
            return [
                int(v)
                for v in await conn.scalars(sa.text("SELECT version FROM schema_migrations ORDER BY 1"))
            ]
    finally:
        await db.close()


def test_database_at_version_1_is_upgraded_and_keeps_its_users(
    tmp_path: Path, hub_db_url: str | None
) -> None:
    data = tmp_path / "hub"
    location = ["--data", str(data)] + (["--db", hub_db_url] if hub_db_url else [])
    at_one = run_shoal("hub", "migrate", *location, "--to", "1")
    assert "schema version 1" in at_one.stdout
    url = build_settings(data, hub_db_url).db_url
    asyncio.run(_add_user_as_version_1_did(url))
    assert asyncio.run(_versions(url)) == [1]

    hub = HubProcess(data, db_url=hub_db_url, extra_args=["--device-poll-interval", "1"])
    hub.start()
    try:
        newest = discover()[-1].version
        assert asyncio.run(_versions(url)) == list(range(1, newest + 1))
        # alice is still there, with her password.
        token = hub.create_token("alice", "sync:read")
        me = http_get(hub.base_url + "/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["user"] == "alice"
        keys = DeviceKeys.generate()

        async def start() -> str:
            async with HubSession(hub.base_url) as session:
                code = await AuthClient(session).start_device_login(
                    "pc", keys.signing_public, keys.exchange_public
                )
            return code.user_code

        user_code = asyncio.run(start())
        page = http_post(
            hub.base_url + "/activate", data={"code": user_code, "user": "alice", "password": PASSWORD}
        )
        assert page.status_code == 200, page.text
    finally:
        hub.stop()

    again = run_shoal("hub", "migrate", *location)
    assert "applied nothing" in again.stdout
