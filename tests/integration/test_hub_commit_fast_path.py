"""The commit endpoint's fast path refuses and answers exactly as a FastAPI route would (real hub process)."""

from __future__ import annotations

import functools
import secrets
from typing import Any

import httpx
import pytest

from shoal.net.schemas_sync import ChangeIn, CommitRequest, plain_path_key
from shoal.testing.hubproc import HubProcess

pytestmark = pytest.mark.slow

http_get = functools.partial(httpx.get, timeout=60.0)
http_post = functools.partial(httpx.post, timeout=60.0)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _batch(key: str, path: str = "a.txt") -> dict[str, Any]:
    change = ChangeIn(
        op="put", path_key=plain_path_key(path), path=path, record=b"\x80", vv={"d": 1}, device="d"
    )
    return CommitRequest(idempotency_key=key, changes=[change]).model_dump(mode="json")


def test_commit_refusals_answers_and_metrics_match_the_other_routes(hub: HubProcess) -> None:
    hub.add_user("alice")
    hub.add_user("bob")
    writer = hub.create_token("alice")
    reader = hub.create_token("alice", "sync:read")
    bobs = hub.create_token("bob")
    arena = http_post(hub.base_url + "/api/v1/arenas", json={"name": "docs"}, headers=_bearer(writer)).json()
    url = f"{hub.base_url}/api/v1/arenas/{arena['id']}/commit"

    # No token, a forged one: 401 with the same body and header as any other route gives.
    listing = http_get(hub.base_url + "/api/v1/arenas")
    missing = http_post(url, json=_batch("key-0001"))
    assert missing.status_code == 401
    assert missing.json() == listing.json()
    assert missing.headers["www-authenticate"] == listing.headers["www-authenticate"]
    forged = "sha_" + secrets.token_urlsafe(32)
    refused = http_post(url, json=_batch("key-0001"), headers=_bearer(forged))
    assert refused.status_code == 401
    assert refused.json() == http_get(hub.base_url + "/api/v1/arenas", headers=_bearer(forged)).json()

    # A token without sync:write, another tenant, a malformed body.
    scoped = http_post(url, json=_batch("key-0001"), headers=_bearer(reader))
    assert scoped.status_code == 403
    assert scoped.json()["error"]["code"] == "forbidden"
    assert "sync:write" in scoped.json()["error"]["message"]
    other = http_post(url, json=_batch("key-0001"), headers=_bearer(bobs))
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"
    bad = http_post(url, content=b"{", headers=_bearer(writer))
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "format"

    # Accepted: the answer, a request id, and the change in the log; a retry is the same answer.
    done = http_post(url, json=_batch("key-0001"), headers={**_bearer(writer), "X-Request-Id": "abc123"})
    assert done.status_code == 200
    assert done.headers["x-request-id"] == "abc123"
    assert done.json() == {"first": 1, "last": 1, "cursor": 1, "conflicts": [], "replayed": False}
    again = http_post(url, json=_batch("key-0001"), headers=_bearer(writer))
    assert again.json() == {**done.json(), "replayed": True}
    log = http_get(url.removesuffix("/commit") + "/changes", headers=_bearer(writer)).json()
    assert [e["path"] for e in log["entries"]] == ["a.txt"]

    # A token revoked by the admin CLI is refused at once.
    listed = hub.admin("token", "list", "--user", "alice").stdout
    writer_id = listed.strip().splitlines()[0].split("\t")[0]  # the first token made
    hub.admin("token", "revoke", writer_id, "--user", "alice")
    assert http_post(url, json=_batch("key-0002", "b.txt"), headers=_bearer(writer)).status_code == 401

    # Other methods and paths still go through FastAPI's routing.
    assert http_get(url, headers=_bearer(reader)).status_code == 405
    assert http_post(url + "/", json=_batch("key-0003"), headers=_bearer(reader)).status_code in (307, 404)

    metrics = http_get(hub.base_url + "/metrics").text
    for status in (200, 400, 401, 403, 404):
        assert (
            f'shoal_hub_requests_total{{method="POST",route="/arenas/{{arena_id}}/commit",status="{status}"}}'
            in metrics
        )
