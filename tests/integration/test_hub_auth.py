"""Accounts and tokens against a real hub process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import httpx

from shoal.testing.hubproc import HubProcess


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_personal_token_identifies_its_user(hub: HubProcess) -> None:
    hub.add_user("alice")
    token = hub.create_token("alice", "sync:read")
    health = httpx.get(hub.base_url + "/health")
    assert health.json()["status"] == "ok"
    me = httpx.get(hub.base_url + "/api/v1/whoami", headers=_bearer(token))
    assert me.status_code == 200
    assert me.json()["user"] == "alice"
    assert me.json()["tenant"] == "alice"
    assert me.json()["scopes"] == ["sync:read"]
