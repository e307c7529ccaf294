"""Every way a credential must be refused, against a real hub process on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from shoal import errors
from shoal.cli.home import Credentials, DeviceHome
from shoal.crypto.keys import DeviceKeys
from shoal.net.auth import AuthClient, DeviceLoginPending
from shoal.net.http import HubSession, TokenSet
from shoal.testing.hubproc import TEST_PASSWORD, HubFactory, HubProcess

pytestmark = pytest.mark.slow

WS_UNAUTHORIZED = 4401

# Generous: a loaded CI machine can take seconds to answer, and that is not what these tests check.
http_get = functools.partial(httpx.get, timeout=60.0)
http_post = functools.partial(httpx.post, timeout=60.0)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _whoami(hub: HubProcess, token: str) -> httpx.Response:
    return http_get(hub.base_url + "/api/v1/whoami", headers=_bearer(token))


def _refresh(hub: HubProcess, refresh_token: str) -> httpx.Response:
    return http_post(hub.base_url + "/api/v1/auth/refresh", json={"refresh_token": refresh_token})


def _device_login(hub: HubProcess, user: str) -> TokenSet:
    """A full device-code login: request, approval by the admin CLI, first poll."""

    async def start() -> tuple[str, str]:
        keys = DeviceKeys.generate()
        async with HubSession(hub.base_url) as session:
            code = await AuthClient(session).start_device_login(
                "dev", keys.signing_public, keys.exchange_public
            )
        return code.device_code, code.user_code

    device_code, user_code = asyncio.run(start())
    hub.approve(user_code, user)
    return asyncio.run(_poll(hub, device_code))


async def _poll(hub: HubProcess, device_code: str) -> TokenSet:
    async with HubSession(hub.base_url) as session:
        return await AuthClient(session).poll_device_token(device_code)


def _error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def test_missing_forged_revoked_and_out_of_scope_tokens_are_refused(hub: HubProcess) -> None:
    hub.add_user("alice")
    missing = http_get(hub.base_url + "/api/v1/whoami")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert _error_code(missing) == "auth"
    for forged in (
        "sha_" + secrets.token_urlsafe(32),
        "shp_" + secrets.token_urlsafe(32),
        "x",
        "sha_" + "a" * 500,
    ):
        refused = _whoami(hub, forged)
        assert refused.status_code == 401, forged
        assert "not valid" in refused.json()["error"]["message"]

    read_only = hub.create_token("alice", "files:read")
    assert _whoami(hub, read_only).status_code == 200
    listing = http_get(hub.base_url + "/api/v1/arenas", headers=_bearer(read_only))
    assert listing.status_code == 403
    assert _error_code(listing) == "forbidden"
    assert "sync:read" in listing.json()["error"]["message"]
    reader = hub.create_token("alice", "sync:read")
    assert http_get(hub.base_url + "/api/v1/arenas", headers=_bearer(reader)).status_code == 200
    create = http_post(hub.base_url + "/api/v1/arenas", json={"name": "docs"}, headers=_bearer(reader))
    assert create.status_code == 403

    # A revoked token stops working at once, while the hub runs.
    listed = hub.admin("token", "list", "--user", "alice").stdout
    reader_id = listed.strip().splitlines()[-1].split("\t")[0]
    hub.admin("token", "revoke", reader_id, "--user", "alice")
    assert _whoami(hub, reader).status_code == 401
    assert _whoami(hub, read_only).status_code == 200

    # A refresh token is not an access token.
    login = _device_login(hub, "alice")
    assert login.refresh_token is not None
    assert _whoami(hub, login.refresh_token).status_code == 401

    # Revoking a device (lost laptop) ends its login at once: access and refresh.
    device_id = _whoami(hub, login.access_token).json()["device_id"]
    hub.admin("device", "revoke", device_id, "--tenant", "alice")
    assert _whoami(hub, login.access_token).status_code == 401
    assert _refresh(hub, login.refresh_token).status_code == 400
    assert "revoked" in hub.admin("device", "list", "--tenant", "alice").stdout


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(hub: HubProcess) -> None:
    hub.add_user("alice")
    first = _device_login(hub, "alice")
    other = _device_login(hub, "alice")  # a second device's login must not suffer
    assert first.refresh_token is not None

    rotated = _refresh(hub, first.refresh_token)
    assert rotated.status_code == 200
    second = TokenSet.from_response(rotated.json())
    assert second.refresh_token not in (None, first.refresh_token)
    assert _whoami(hub, second.access_token).status_code == 200

    # The old refresh token comes back (stolen, or replayed): the family dies, newest tokens included.
    replay = _refresh(hub, first.refresh_token)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert "already used" in replay.json()["error_description"]
    assert _whoami(hub, second.access_token).status_code == 401
    assert _whoami(hub, first.access_token).status_code == 401
    assert second.refresh_token is not None
    assert _refresh(hub, second.refresh_token).status_code == 400
    assert _whoami(hub, other.access_token).status_code == 200

    # A client holding the dead login is told to log in again, and forgets it.
    seen: list[TokenSet | None] = []

    async def use_dead_login() -> None:
        async with HubSession(hub.base_url, second, on_tokens=seen.append) as session:
            await AuthClient(session).whoami()

    with pytest.raises(errors.AuthError, match="log"):
        asyncio.run(use_dead_login())
    assert seen == [None]


def test_logout_revokes_tokens_and_websockets(hub: HubProcess) -> None:
    hub.add_user("alice")
    login = _device_login(hub, "alice")
    created = http_post(
        hub.base_url + "/api/v1/arenas", json={"name": "docs"}, headers=_bearer(login.access_token)
    )
    assert created.status_code == 201, created.text
    arena = created.json()["id"]
    ws_url = hub.base_url.replace("http://", "ws://") + f"/api/v1/arenas/{arena}/ws"

    async def first_message(token: str) -> str:
        async with ws_connect(ws_url, additional_headers=_bearer(token), open_timeout=30) as ws:
            return str(await asyncio.wait_for(ws.recv(), 30))

    async def refused_code(url: str, headers: dict[str, str]) -> int | None:
        async with ws_connect(url, additional_headers=headers, open_timeout=30) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 30)
        return closed.value.rcvd.code if closed.value.rcvd else None

    assert '"changes"' in asyncio.run(first_message(login.access_token))

    async def log_out() -> None:
        async with HubSession(hub.base_url, login) as session:
            await AuthClient(session).logout()

    asyncio.run(log_out())
    assert _whoami(hub, login.access_token).status_code == 401
    assert login.refresh_token is not None
    assert _refresh(hub, login.refresh_token).status_code == 400
    assert asyncio.run(refused_code(ws_url, _bearer(login.access_token))) == WS_UNAUTHORIZED
    query_url = f"{ws_url}?access_token={login.access_token}"
    assert asyncio.run(refused_code(query_url, {})) == WS_UNAUTHORIZED
    # Tokens never reach the log, not even from a query string.
    log = hub.log()
    assert "/ws" in log
    assert login.access_token not in log
    assert login.refresh_token not in log


def test_access_tokens_expire_and_the_session_refreshes(hub_factory: HubFactory) -> None:
    hub = hub_factory(extra_args=["--access-ttl", "1"])
    hub.add_user("alice")
    login = _device_login(hub, "alice")
    assert login.expires_at is not None
    # Bounded wait for the one-second lifetime to pass (no assertion on timing).
    deadline = time.monotonic() + 10
    while _whoami(hub, login.access_token).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    expired = _whoami(hub, login.access_token)
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]

    saved: list[TokenSet | None] = []

    async def whoami_with_refresh() -> list[str]:
        stale = TokenSet(login.access_token, login.refresh_token, expires_at=None)
        async with HubSession(hub.base_url, stale, on_tokens=saved.append) as session:
            client = AuthClient(session)
            # Many requests meet the expired token at once; one refresh serves them all.
            answers = await asyncio.gather(*(client.whoami() for _ in range(5)))
            return [me.user for me in answers]

    assert asyncio.run(whoami_with_refresh()) == ["alice"] * 5
    assert len(saved) == 1
    fresh = saved[0]
    assert fresh is not None
    assert fresh.refresh_token not in (None, login.refresh_token)
    devices = http_get(hub.base_url + "/api/v1/devices", headers=_bearer(fresh.access_token)).json()[
        "devices"
    ]
    assert devices[0]["last_seen_at"] is not None  # the refresh marked the device as seen


def test_processes_of_one_device_share_rotations_instead_of_replaying(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    """The daemon and a command both hold the pair; the second to refresh must not replay a used token."""
    hub = hub_factory(extra_args=["--access-ttl", "1"])
    hub.add_user("alice")
    login = _device_login(hub, "alice")
    home = DeviceHome(tmp_path / "device")
    home.save_credentials(
        Credentials(
            hub.base_url,
            login.access_token,
            login.refresh_token,
            None,
            "device",
            "alice",
            "alice",
            None,
            None,
        )
    )

    async def scenario() -> tuple[list[str], TokenSet | None]:
        async with home.session() as daemon, home.session() as command:
            await daemon.refresh()  # rotates and saves; `command` still holds the old pair in memory
            deadline = time.monotonic() + 10
            while _whoami(hub, login.access_token).status_code == 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            # Expired -> refresh -> the saved pair is newer: continue from it, never replay the old one.
            users = [(await AuthClient(command).whoami()).user]
            # And back: the daemon now holds a pair the command rotated away.
            assert command.tokens is not None
            while (
                _whoami(hub, command.tokens.access_token).status_code == 200
                and time.monotonic() < deadline + 10
            ):
                await asyncio.sleep(0.2)
            users.append((await AuthClient(daemon).whoami()).user)
            return users, daemon.tokens

    users, final = asyncio.run(scenario())
    assert users == ["alice", "alice"]
    assert final is not None
    assert _whoami(hub, final.access_token).status_code == 200  # the login survived both
    stored = home.load_credentials()
    assert stored is not None
    assert stored.refresh_token == final.refresh_token


def test_guessing_user_codes_is_bounded(hub_factory: HubFactory) -> None:
    hub = hub_factory(extra_args=["--device-poll-interval", "5"])
    hub.add_user("alice")
    keys = DeviceKeys.generate()

    async def start() -> tuple[str, str]:
        async with HubSession(hub.base_url) as session:
            code = await AuthClient(session).start_device_login(
                "dev", keys.signing_public, keys.exchange_public
            )
        return code.device_code, code.user_code

    device_code, user_code = asyncio.run(start())

    # Polling faster than the interval is told to slow down (RFC 8628 3.5).
    with pytest.raises(DeviceLoginPending) as first:
        asyncio.run(_poll(hub, device_code))
    assert first.value.oauth_error == "authorization_pending"
    with pytest.raises(DeviceLoginPending) as second:
        asyncio.run(_poll(hub, device_code))
    assert second.value.oauth_error == "slow_down"

    form = {"code": user_code, "user": "alice", "password": "guess", "action": "approve"}
    pages = [http_post(hub.base_url + "/activate", data=form) for _ in range(5)]
    assert [p.status_code for p in pages] == [401] * 5
    assert "now blocked" in pages[-1].text
    # Even the right password cannot approve a blocked code, and the device hears it was denied.
    right = http_post(hub.base_url + "/activate", data={**form, "password": TEST_PASSWORD})
    assert right.status_code == 404
    with pytest.raises(errors.AuthError, match="denied"):
        asyncio.run(_poll(hub, device_code))

    # One client address may fail only so often, whatever the codes.
    statuses = [
        http_post(hub.base_url + "/activate", data={**form, "code": f"BCDF-{i:04d}"}).status_code
        for i in range(20)
    ]
    assert statuses[-1] == 429
    assert set(statuses) <= {404, 429}
