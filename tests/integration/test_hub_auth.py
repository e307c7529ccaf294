"""Logging devices in to a real hub process (device code, /activate, token file), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import re
import selectors
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shoal.crypto.keys import DeviceKeys
from shoal.net.auth import AuthClient, DeviceLoginPending
from shoal.net.http import HubSession, TokenSet
from shoal.testing.hubproc import TEST_PASSWORD, HubFactory, HubProcess, free_port, run_shoal, shoal_env

# Each test drives a hub process and several CLI processes: seconds, not milliseconds.
pytestmark = pytest.mark.slow

FAST_POLL = ["--device-poll-interval", "1"]
USER_CODE = re.compile(r"\b([B-DF-HJ-NP-TV-XZ]{4}-[B-DF-HJ-NP-TV-XZ]{4})\b")

# Generous: a loaded CI machine can take seconds to answer, and that is not what these tests check.
http_get = functools.partial(httpx.get, timeout=60.0)
http_post = functools.partial(httpx.post, timeout=60.0)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _wait_for_code(proc: subprocess.Popen[str], timeout: float = 30.0) -> tuple[str, str]:
    """Read the login's stderr until it shows the user code; return the code and what was read."""
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
            match = USER_CODE.search(line)
            if match:
                return match.group(1), seen
    proc.kill()
    raise AssertionError(f"`shoal login` never showed a code:\n{seen}")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cli_login(hub: HubProcess, home: Path, name: str, user: str) -> tuple[str, str]:
    """Run `shoal login` as a user would, approve with `shoal hub approve`; return stdout and code."""
    argv = [
        sys.executable,
        "-m",
        "shoal",
        "login",
        "--hub",
        hub.base_url,
        "--home",
        str(home),
        "--name",
        name,
    ]
    login = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=shoal_env())
    try:
        code, shown = _wait_for_code(login)
        assert f"{hub.base_url}/activate" in shown
        approved = hub.approve(code, user)
        assert name in approved.stdout
        stdout, stderr = login.communicate(timeout=60)
    finally:
        login.kill()
    assert login.returncode == 0, stderr
    return stdout, code


def test_cli_device_login_approved_by_admin_command(hub_factory: HubFactory, tmp_path: Path) -> None:
    hub = hub_factory(extra_args=FAST_POLL)
    assert "shoal hub user add NAME --data" in hub.log()  # first start says how to begin
    hub.add_user("alice")
    home = tmp_path / "laptop-home"
    stdout, code = _cli_login(hub, home, "laptop", "alice")
    assert "logged in" in stdout
    assert "alice" in stdout

    # The login is kept privately: directory 0700, key and token files 0600.
    assert _mode(home) == 0o700
    assert _mode(home / "credentials.json") == 0o600
    assert _mode(home / "device.key") == 0o600
    creds = json.loads((home / "credentials.json").read_text())
    assert creds["access_token"].startswith("sha_")
    assert creds["refresh_token"].startswith("shr_")

    me = run_shoal("whoami", "--home", str(home), "--json")
    who = json.loads(me.stdout)
    assert (who["user"], who["tenant"], who["device_name"]) == ("alice", "alice", "laptop")
    assert "admin" not in who["scopes"]
    assert "sync:write" in who["scopes"]

    # The device is registered with the public keys it holds.
    keys = DeviceKeys.from_bytes((home / "device.key").read_bytes())
    listed = http_get(hub.base_url + "/api/v1/devices", headers=_bearer(creds["access_token"])).json()
    assert [(d["name"], d["user"]) for d in listed["devices"]] == [("laptop", "alice")]
    device = listed["devices"][0]
    assert device["id"] == who["device_id"]
    assert device["signing_public"] == base64.b64encode(keys.signing_public).decode()
    assert device["exchange_public"] == base64.b64encode(keys.exchange_public).decode()
    assert "laptop" in hub.admin("device", "list", "--tenant", "alice").stdout

    # A code works once.
    again = hub.admin("approve", code, "--user", "alice", check=False)
    assert again.returncode == 3
    assert "no pending login" in again.stderr

    # Logging in again from the same device: still one device (renamed), and the old login is ended.
    _cli_login(hub, home, "laptop-2", "alice")
    assert (
        http_get(hub.base_url + "/api/v1/whoami", headers=_bearer(creds["access_token"])).status_code == 401
    )
    fresh = json.loads((home / "credentials.json").read_text())
    listed = http_get(hub.base_url + "/api/v1/devices", headers=_bearer(fresh["access_token"])).json()[
        "devices"
    ]
    assert [(d["id"], d["name"]) for d in listed] == [(who["device_id"], "laptop-2")]


async def _start_login(hub: HubProcess, tenant: str | None = None) -> tuple[DeviceKeys, str, str]:
    keys = DeviceKeys.generate()
    async with HubSession(hub.base_url) as session:
        code = await AuthClient(session).start_device_login(
            "phone", keys.signing_public, keys.exchange_public, tenant
        )
    assert code.verification_uri == f"{hub.base_url}/activate"
    assert code.verification_uri_complete.endswith(code.user_code)
    assert USER_CODE.fullmatch(code.user_code)
    assert code.interval == 1
    return keys, code.device_code, code.user_code


async def _poll_until_done(hub: HubProcess, device_code: str) -> TokenSet:
    async with HubSession(hub.base_url) as session:
        client = AuthClient(session)
        for _ in range(30):
            try:
                return await client.poll_device_token(device_code)
            except DeviceLoginPending:
                await asyncio.sleep(1.0)
    raise AssertionError("the login was never approved")


def _activate(
    hub: HubProcess, code: str, user: str, password: str, action: str = "approve"
) -> httpx.Response:
    form = {"code": code, "user": user, "password": password, "action": action}
    return http_post(hub.base_url + "/activate", data=form)


def test_activate_page_approves_with_password_and_refuses_wrong_ones(hub_factory: HubFactory) -> None:
    hub = hub_factory(extra_args=FAST_POLL)
    hub.add_user("alice")
    hub.add_user("bob")
    hub.admin("team", "add", "family")
    hub.admin("team", "add-member", "family", "alice")

    page = http_get(hub.base_url + "/activate", params={"code": "BCDF-GHJK"})
    assert page.status_code == 200
    assert 'name="password"' in page.text
    assert 'value="BCDF-GHJK"' in page.text
    assert '<label for="code">' in page.text

    # A login asking for the team: a wrong password is refused, and so is a non-member.
    _keys, device_code, user_code = asyncio.run(_start_login(hub, tenant="family"))
    wrong = _activate(hub, user_code, "alice", "not the password")
    assert wrong.status_code == 401
    assert "Wrong user name or password" in wrong.text
    outsider = _activate(hub, user_code, "bob", TEST_PASSWORD)
    assert outsider.status_code == 403
    assert "not a member" in outsider.text
    with pytest.raises(DeviceLoginPending):
        asyncio.run(_poll_once(hub, device_code))

    ok = _activate(hub, user_code.lower().replace("-", ""), "alice", TEST_PASSWORD)
    assert ok.status_code == 200, ok.text
    assert "phone" in ok.text
    tokens = asyncio.run(_poll_until_done(hub, device_code))
    me = http_get(hub.base_url + "/api/v1/whoami", headers=_bearer(tokens.access_token)).json()
    assert (me["user"], me["tenant"], me["tenant_kind"]) == ("alice", "family", "team")

    # Devices are listed per tenant: the team's phone is not in alice's own tenant.
    assert "phone" in hub.admin("device", "list", "--tenant", "family").stdout
    assert "phone" not in hub.admin("device", "list", "--tenant", "alice", check=False).stdout


async def _poll_once(hub: HubProcess, device_code: str) -> TokenSet:
    async with HubSession(hub.base_url) as session:
        return await AuthClient(session).poll_device_token(device_code)


def test_login_with_token_file_registers_the_device(hub: HubProcess, tmp_path: Path) -> None:
    hub.add_user("alice")
    token = hub.create_token("alice", "sync:read,sync:write")
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    home = tmp_path / "server-home"
    result = run_shoal(
        "login", "--hub", hub.base_url, "--token-file", str(token_file), "--home", str(home), "--name", "nas"
    )
    assert "logged in" in result.stdout
    assert _mode(home / "credentials.json") == 0o600
    who = json.loads(run_shoal("whoami", "--home", str(home), "--json").stdout)
    assert (who["user"], who["token_kind"], who["device_name"]) == ("alice", "pat", "nas")
    assert who["scopes"] == ["sync:read", "sync:write"]
    devices = http_get(hub.base_url + "/api/v1/devices", headers=_bearer(token)).json()["devices"]
    assert [d["name"] for d in devices] == ["nas"]

    # Logging out revokes the token on the hub and forgets it here.
    run_shoal("logout", "--home", str(home))
    assert not (home / "credentials.json").exists()
    refused = http_get(hub.base_url + "/api/v1/whoami", headers=_bearer(token))
    assert refused.status_code == 401
    not_logged_in = run_shoal("whoami", "--home", str(home), check=False)
    assert not_logged_in.returncode == 2
    assert "not logged in" in not_logged_in.stderr


def test_serve_refuses_a_reachable_address_without_public(tmp_path: Path) -> None:
    refused = run_shoal(
        "hub", "serve", "--data", str(tmp_path / "hub"), "--bind", "0.0.0.0:8787", check=False
    )
    assert refused.returncode == 2
    assert "--public" in refused.stderr
    assert "reverse proxy" in refused.stderr


def test_user_add_prompts_twice_and_refuses_weak_or_mismatched_passwords(tmp_path: Path) -> None:
    data = ["--data", str(tmp_path / "hub")]
    mismatch = run_shoal(
        "hub", "user", "add", "carol", *data, input="first-password\nsecond-password\n" * 3, check=False
    )
    assert mismatch.returncode != 0
    short = run_shoal("hub", "user", "add", "carol", *data, input="short\nshort\n", check=False)
    assert short.returncode == 2
    assert "too short" in short.stderr
    run_shoal("hub", "user", "add", "carol", *data, input="long enough password\nlong enough password\n")
    taken = run_shoal(
        "hub", "user", "add", "carol", *data, input="another password!\nanother password!\n", check=False
    )
    assert taken.returncode == 7
    assert "already taken" in taken.stderr


def test_login_to_an_unreachable_hub_names_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    failed = run_shoal("login", "--hub", url, "--home", str(tmp_path / "h"), check=False)
    assert failed.returncode == 6
    assert url in failed.stderr
