"""The hub keeps answering when PostgreSQL ends its pooled connections (restart, admin, idle timeout)."""

from __future__ import annotations

import functools
import time

import httpx
import psycopg
import pytest

from shoal.net.schemas_sync import ChangeIn, CommitRequest, plain_path_key
from shoal.testing.hubproc import HubProcess

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

http_get = functools.partial(httpx.get, timeout=60.0)
http_post = functools.partial(httpx.post, timeout=60.0)


def _terminate_hub_connections(database_url: str) -> int:
    """End every session on the hub's database as an administrator would; returns how many."""
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    database = dsn.rsplit("/", 1)[1]
    with psycopg.connect(dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()) AS t",
            (database,),
        ).fetchone()
        for _ in range(100):  # the backends exit a moment after they are signalled
            left = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,))
            if left.fetchone() == (0,):
                break
            time.sleep(0.05)
    return int(ended[0]) if ended else 0


def _commit(hub: HubProcess, token: str, arena: str, key: str, path: str) -> httpx.Response:
    change = ChangeIn(
        op="put", path_key=plain_path_key(path), path=path, record=b"\x80", vv={"d": 1}, device="d"
    )
    body = CommitRequest(idempotency_key=key, changes=[change]).model_dump(mode="json")
    return http_post(
        f"{hub.base_url}/api/v1/arenas/{arena}/commit",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )


def test_requests_after_postgres_ended_the_pooled_connections_succeed(hub_postgres: HubProcess) -> None:
    hub = hub_postgres
    assert hub.db_url is not None
    hub.add_user("alice")
    token = hub.create_token("alice")
    auth = {"Authorization": f"Bearer {token}"}
    arena = http_post(hub.base_url + "/api/v1/arenas", json={"name": "docs"}, headers=auth).json()["id"]
    for n in range(8):  # several pooled connections in use and returned
        assert _commit(hub, token, arena, f"key-{n:04}", f"before-{n}.txt").status_code == 200

    assert _terminate_hub_connections(hub.db_url) >= 1

    # Every request after it is answered: the pool notices the ended sessions when it hands them out.
    for n in range(8):
        answer = _commit(hub, token, arena, f"key-after-{n:04}", f"after-{n}.txt")
        assert answer.status_code == 200, answer.text
    listing = http_get(f"{hub.base_url}/api/v1/arenas/{arena}/changes?since=0", headers=auth)
    assert listing.status_code == 200
    paths = {entry["path"] for entry in listing.json()["entries"]}
    assert paths == {f"before-{n}.txt" for n in range(8)} | {f"after-{n}.txt" for n in range(8)}
