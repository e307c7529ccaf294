"""Quotas, rate and size limits, audit, retention, GC and compaction of a real hub process."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from shoal.crypto.keys import DeviceKeys
from shoal.net.auth import AuthClient
from shoal.net.http import HubSession, TokenSet
from shoal.testing.hubproc import HubFactory, HubProcess, shoal_env

MIB = 1024 * 1024
FULL = "sync:read,sync:write,arenas:admin,files:read,files:write,admin"


_OPEN: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def client_for(hub: HubProcess, user: str, *, quota: str | None = None) -> httpx.Client:
    path = hub.data_dir.parent / f".{user}-pw"
    path.write_text("correct horse battery\n")
    args = ["user", "add", user, "--password-file", str(path)]
    if quota:
        args += ["--quota", quota]
    hub.admin(*args)
    token = hub.create_token(user, FULL)
    client = httpx.Client(base_url=hub.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    _OPEN.append(client)
    return client


def new_arena(c: httpx.Client, name: str = "docs") -> str:
    r = c.post("/api/v1/arenas", json={"name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def upload(c: httpx.Client, arena: str, path: str, data: bytes) -> httpx.Response:
    fs = f"/api/v1/arenas/{arena}/fs"
    up = c.post(f"{fs}/uploads", json={"path": path}).json()["id"]
    assert c.put(f"{fs}/uploads/{up}/parts/1", content=data).status_code == 200
    return c.post(f"{fs}/uploads/{up}/commit")


def download(c: httpx.Client, arena: str, path: str) -> httpx.Response:
    return c.get(f"/api/v1/arenas/{arena}/fs/content", params={"path": path})


def _stored_blobs(hub: HubProcess) -> set[str]:
    """Names of the chunk blobs in the hub's file store (64 hex digits each)."""
    return {p.name for p in hub.data_dir.rglob("*") if len(p.name) == 64 and p.is_file()}


def audit_kinds(c: httpx.Client) -> list[str]:
    r = c.get("/api/v1/audit/recent", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return [e["kind"] for e in r.json()["events"]]


def test_parallel_uploads_never_overshoot_the_quota(hub: HubProcess) -> None:
    c = client_for(hub, "quotauser", quota="3M")
    arena = new_arena(c)
    blobs = [os.urandom(MIB) for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: upload(c, arena, f"f{i}.bin", blobs[i]), range(6)))
    codes = sorted(r.status_code for r in answers)
    assert 200 in codes
    assert 507 in codes
    refused = next(r for r in answers if r.status_code == 507).json()["error"]
    assert refused["code"] == "quota_exceeded"
    assert "limit=3145728" in refused["message"]
    shown = hub.admin("quota", "show", "quotauser").stdout
    used = int(shown.split("used ")[1].split(" bytes")[0])
    assert used <= 3 * MIB
    # Everything that was answered 200 is whole; nothing refused is visible.
    for i, r in enumerate(answers):
        got = download(c, arena, f"f{i}.bin")
        if r.status_code == 200:
            assert got.content == blobs[i]
        else:
            assert got.status_code == 404
    assert "quota_refused" in audit_kinds(c)
    # An upload that cannot fit is refused before its chunks are written: no disk to fill.
    stored = _stored_blobs(hub)
    assert stored
    assert upload(c, arena, "too-big.bin", os.urandom(4 * MIB)).status_code == 507
    assert _stored_blobs(hub) == stored
    # Deleting frees quota once GC has run.
    for i, r in enumerate(answers):
        if r.status_code == 200:
            assert (
                c.delete(f"/api/v1/arenas/{arena}/fs/content", params={"path": f"f{i}.bin"}).status_code
                == 200
            )
    assert c.patch(f"/api/v1/arenas/{arena}", json={"keep_days": 0, "keep_versions": 1}).status_code == 200
    time.sleep(1.1)
    hub.admin("gc", "--grace", "1s")
    assert upload(c, arena, "after-gc.bin", blobs[0]).status_code == 200
    assert "delete" in audit_kinds(c)


def test_rate_limits_answer_429_with_retry_after_and_are_audited(hub_factory: HubFactory) -> None:
    hub = hub_factory(extra_args=["--api-rate", "2", "--auth-rate", "1"])
    c = client_for(hub, "busy")
    codes = [c.get("/api/v1/arenas").status_code for _ in range(40)]
    assert 429 in codes
    limited = next(r for r in (c.get("/api/v1/arenas") for _ in range(5)) if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"
    bad = [
        httpx.post(hub.base_url + "/api/v1/auth/refresh", json={"refresh_token": "shr_nope"}).status_code
        for _ in range(15)
    ]
    assert 429 in bad
    time.sleep(3)
    kinds = audit_kinds(c)
    assert "rate_limited" in kinds
    out = hub.admin("audit", "--limit", "500").stdout
    assert "auth_failed" in out
    assert "rate_limited" in out


def test_oversized_bodies_are_refused_before_reading_and_audited(hub: HubProcess) -> None:
    c = client_for(hub, "bigbody")
    arena = new_arena(c)
    token = c.headers["authorization"]
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as raw:
        raw.sendall(
            f"POST /api/v1/arenas/{arena}/commit HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {200 * MIB}\r\n\r\n{{".encode()
        )
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")

    def endless() -> object:
        for _ in range(100):
            yield b"x" * MIB

    r = c.post(f"/api/v1/arenas/{arena}/fs/mkdir", content=endless())
    assert r.status_code == 413
    deep = b"[" * 5000 + b"]" * 5000
    r = c.post(f"/api/v1/arenas/{arena}/commit", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "too_large" in audit_kinds(c)
    assert c.get("/health").status_code == 200


def test_retention_compacts_the_log_and_a_stale_cursor_gets_410(hub: HubProcess) -> None:
    c = client_for(hub, "keeper")
    arena = new_arena(c)
    for v in range(4):
        assert upload(c, arena, "doc.txt", f"version {v}".encode()).status_code == 200
    assert upload(c, arena, "other.txt", b"other").status_code == 200
    fs = f"/api/v1/arenas/{arena}/fs"
    before = c.get(f"{fs}/versions", params={"path": "doc.txt"}).json()["versions"]
    assert len(before) == 4
    dry = hub.admin("gc", "--dry-run").stdout
    assert "would drop 0 old version(s)" in dry  # retention keeps 30 days by default
    assert c.patch(f"/api/v1/arenas/{arena}", json={"keep_days": 0, "keep_versions": 2}).status_code == 200
    hub.admin("gc", "--grace", "1s")
    after = c.get(f"{fs}/versions", params={"path": "doc.txt"}).json()["versions"]
    assert [v["seq"] for v in after] == [before[0]["seq"], before[1]["seq"]]
    assert download(c, arena, "doc.txt").content == b"version 3"
    assert download(c, arena, "other.txt").content == b"other"
    gone = c.get(f"/api/v1/arenas/{arena}/changes", params={"since": 1})
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "cursor_expired"
    fresh = c.get(f"/api/v1/arenas/{arena}/changes", params={"since": 0}).json()["entries"]
    assert {e["path"] for e in fresh} == {"doc.txt", "other.txt"}


def _all_readable(c: httpx.Client, arena: str, expected: dict[str, bytes]) -> None:
    for path, data in expected.items():
        got = download(c, arena, path)
        assert got.status_code == 200, (path, got.text)
        assert got.content == data, path


@pytest.mark.slow
def test_gc_racing_uploads_and_commits_loses_no_referenced_chunk(hub: HubProcess) -> None:
    c = client_for(hub, "racer")
    arena = new_arena(c)
    assert c.patch(f"/api/v1/arenas/{arena}", json={"keep_days": 0, "keep_versions": 1}).status_code == 200
    rng = random.Random(7)
    pool_of_contents = [os.urandom(rng.randint(1, 300_000)) for _ in range(6)]
    expected: dict[str, bytes] = {}
    env = shoal_env()
    for _round in range(6):
        gc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "hub", "gc", "--grace", "1s", *hub.location_args()],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(8):
            path = f"f{rng.randint(0, 5)}.bin"
            if rng.random() < 0.3 and path in expected:
                assert (
                    c.delete(f"/api/v1/arenas/{arena}/fs/content", params={"path": path}).status_code == 200
                )
                del expected[path]
                continue
            data = rng.choice(pool_of_contents)  # the same contents again: dedup against collected chunks
            r = upload(c, arena, path, data)
            if r.status_code == 200:
                expected[path] = data
            else:
                assert r.status_code == 404, r.text  # a chunk collected under the commit: refused, not lost
            if i == 4:
                time.sleep(1.1)
        assert gc.wait(60) == 0
        _all_readable(c, arena, expected)
    hub.admin("gc", "--grace", "1s")
    _all_readable(c, arena, expected)


@pytest.mark.slow
def test_a_killed_gc_leaves_only_orphans(hub: HubProcess) -> None:
    c = client_for(hub, "killer")
    arena = new_arena(c)
    assert c.patch(f"/api/v1/arenas/{arena}", json={"keep_days": 0, "keep_versions": 1}).status_code == 200
    keep = {f"keep{i}.bin": os.urandom(200_000 + i) for i in range(4)}
    for path, data in keep.items():
        assert upload(c, arena, path, data).status_code == 200
    for i in range(30):
        assert upload(c, arena, f"junk{i}.bin", os.urandom(50_000)).status_code == 200
        assert (
            c.delete(f"/api/v1/arenas/{arena}/fs/content", params={"path": f"junk{i}.bin"}).status_code == 200
        )
    time.sleep(1.1)
    for delay in (0.3, 0.6, 0.9, 1.2):
        gc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "hub", "gc", "--grace", "1s", *hub.location_args()],
            env=shoal_env(),
        )
        time.sleep(delay)
        gc.send_signal(signal.SIGKILL)
        gc.wait(10)
        _all_readable(c, arena, keep)
    report = hub.admin("gc", "--grace", "1s").stdout
    assert "blob(s) deleted" in report
    _all_readable(c, arena, keep)
    chunks = list((hub.data_dir / "chunks").rglob("*"))
    assert chunks  # the kept files' blobs are still there


def test_logins_rotations_reuse_and_device_removal_are_audited(hub: HubProcess) -> None:
    admin = client_for(hub, "watched")

    async def start() -> tuple[str, str]:
        keys = DeviceKeys.generate()
        async with HubSession(hub.base_url) as session:
            code = await AuthClient(session).start_device_login(
                "laptop", keys.signing_public, keys.exchange_public
            )
        return code.device_code, code.user_code

    async def poll(device_code: str) -> TokenSet:
        async with HubSession(hub.base_url) as session:
            return await AuthClient(session).poll_device_token(device_code)

    device_code, user_code = asyncio.run(start())
    hub.approve(user_code, "watched")
    login = asyncio.run(poll(device_code))
    assert login.refresh_token is not None
    url = hub.base_url + "/api/v1/auth/refresh"
    assert httpx.post(url, json={"refresh_token": login.refresh_token}).status_code == 200
    assert httpx.post(url, json={"refresh_token": login.refresh_token}).status_code == 400  # reuse
    devices = admin.get("/api/v1/devices").json()["devices"]
    hub.admin("device", "revoke", devices[0]["id"], "--tenant", "watched")
    time.sleep(1.0)
    kinds = audit_kinds(admin)
    assert "login" in kinds
    assert "token_rotated" in kinds
    assert "device_removed" in kinds
    everything = hub.admin("audit", "--limit", "200").stdout
    assert "token_reuse" in everything


def test_gc_removes_temp_files_that_killed_writers_left(hub: HubProcess) -> None:
    c = client_for(hub, "leftovers")
    arena = new_arena(c)
    data = os.urandom(300_000)
    assert upload(c, arena, "kept.bin", data).status_code == 200
    blob = next(p for p in (hub.data_dir / "chunks").rglob("*") if len(p.name) == 64 and p.is_file())
    stale, fresh = blob.parent / ".tmp-killed-writer", blob.parent / ".tmp-writing-now"
    stale.write_bytes(b"half a chunk")
    fresh.write_bytes(b"a chunk being written")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    report = hub.admin("gc").stdout

    assert "1 stale temp file(s) removed" in report
    assert not stale.exists()
    assert fresh.exists(), "a temp file younger than the grace period may still be written"
    assert download(c, arena, "kept.bin").content == data
