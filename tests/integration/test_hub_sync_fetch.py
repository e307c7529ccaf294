"""Batched chunk download (``POST /chunks/fetch``) against a real hub, and batched pulls built on it."""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shoal.chunking.envelope import encode_plain
from shoal.chunking.hashing import chunk_id
from shoal.errors import CorruptChunkError
from shoal.model.ids import ChunkId
from shoal.net.http import HubSession, TokenSet
from shoal.net.schemas_sync import CHUNK_BATCH_MAGIC, FETCH_DEFERRED, FETCH_MISSING, MAX_FETCH_IDS
from shoal.net.sync import SyncClient
from shoal.testing.devices import Household, fsck_device, snapshot
from shoal.testing.filestore import flip_last_byte
from shoal.testing.hubproc import HubProcess, running_hub, shoal_env
from shoal.worktree.entries import TEMP_PREFIX

_users = itertools.count(1)
_arenas = (f"fetch{n}" for n in itertools.count())


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with running_hub(tmp_path_factory.mktemp("fetch") / "hub") as proc:
        yield proc


def user(hub: HubProcess) -> tuple[str, str]:
    name = f"f{next(_users)}"
    hub.add_user(name)
    return name, hub.create_token(name)


async def raw_fetch(hub: HubProcess, token: str, ids: list[str]) -> tuple[int, bytes]:
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=60) as http:
        resp = await http.post(
            "/api/v1/chunks/fetch", json={"ids": ids}, headers={"Authorization": f"Bearer {token}"}
        )
    return resp.status_code, resp.content


def records(body: bytes) -> list[tuple[str, int, bytes]]:
    """(id hex, length field, envelope) per record of a fetch answer."""
    assert body.startswith(CHUNK_BATCH_MAGIC)
    pos, out = len(CHUNK_BATCH_MAGIC), []
    while pos < len(body):
        raw_id, length = struct.unpack_from(">32sI", body, pos)
        pos += 36
        size = 0 if length in (FETCH_MISSING, FETCH_DEFERRED) else length
        out.append((raw_id.hex(), length, body[pos : pos + size]))
        pos += size
    return out


async def with_client(hub: HubProcess, token: str) -> tuple[HubSession, SyncClient]:
    session = HubSession(hub.base_url, TokenSet(token))
    return session, SyncClient(session)


def test_fetch_round_trip_skips_absent_ids_and_defers_past_the_byte_budget(hub: HubProcess) -> None:
    _, token = user(hub)
    small = {chunk_id(d): encode_plain(d) for d in (f"chunk {n}\n".encode() * 40 for n in range(1500))}
    big = {chunk_id(d): encode_plain(d) for d in (os.urandom(4 * 1024 * 1024) for _ in range(9))}
    absent = chunk_id(b"never uploaded")

    async def scenario() -> None:
        session, client = await with_client(hub, token)
        try:
            await client.upload_chunks(list(small.items()) + list(big.items()))
            wanted = [absent, *small, *big]  # more ids than one request takes, and > 32 MiB
            got = {cid: blob async for cid, blob in client.download_chunks(wanted)}
            assert got == {**small, **big}  # every envelope byte-equal; the absent id left out

            status, body = await raw_fetch(hub, token, [c.hex() for c in big])
            assert status == 200
            answer = records(body)
            assert [cid for cid, _, _ in answer] == [c.hex() for c in big]
            sent = [(cid, blob) for cid, length, blob in answer if length not in (FETCH_DEFERRED,)]
            assert 1 <= len(sent) < len(big)  # the budget holds, and the first always goes
            assert all(big[ChunkId(bytes.fromhex(cid))] == blob for cid, blob in sent)
            assert any(length == FETCH_DEFERRED for _, length, _ in answer)
        finally:
            await session.close()

    asyncio.run(scenario())


def test_fetch_bounds_and_bad_ids_are_refused(hub: HubProcess) -> None:
    _, token = user(hub)

    async def scenario() -> None:
        too_many = [chunk_id(str(n).encode()).hex() for n in range(MAX_FETCH_IDS + 1)]
        status, _ = await raw_fetch(hub, token, too_many)
        assert status in (400, 413, 422)
        status, body = await raw_fetch(hub, token, ["../../etc/passwd"])
        assert status == 400
        assert b"invalid chunk id" in body
        status, _ = await raw_fetch(hub, token, [])
        assert status in (400, 422)

    asyncio.run(scenario())


def test_another_tenants_chunk_is_answered_like_an_absent_one(hub: HubProcess) -> None:
    _, alice_token = user(hub)
    _, bob_token = user(hub)
    secret = b"alice's secret chunk"
    cid = chunk_id(secret)
    nothing = chunk_id(b"no one has this")

    async def scenario() -> None:
        session, alice = await with_client(hub, alice_token)
        bob_session, bob = await with_client(hub, bob_token)
        try:
            await alice.upload_chunks([(cid, encode_plain(secret))])
            assert [c async for c, _ in bob.download_chunks([cid, nothing])] == []
            status, body = await raw_fetch(hub, bob_token, [cid.hex(), nothing.hex()])
            assert status == 200
            assert [(length, blob) for _, length, blob in records(body)] == [(FETCH_MISSING, b"")] * 2
            assert secret not in body
            assert [c async for c, _ in alice.download_chunks([cid])] == [cid]
        finally:
            await session.close()
            await bob_session.close()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def base_household(hub: HubProcess, tmp_path_factory: pytest.TempPathFactory) -> Household:
    return Household.create(hub, tmp_path_factory.mktemp("house"), ["laptop", "desktop"], arena="seed")


@pytest.fixture
def pair(base_household: Household, tmp_path: Path) -> Household:
    return base_household.with_arena(next(_arenas), tmp_path)


def test_a_corrupt_chunk_in_a_batch_is_refused_and_nothing_of_its_file_is_written(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    for n in range(40):
        (laptop.root / f"note{n:02}.txt").write_text(f"note {n}\n" * 30)
    victim = b"the file whose chunk is damaged on the hub\n" * 20
    (laptop.root / "victim.txt").write_bytes(victim)
    asyncio.run(laptop.sync())
    flip_last_byte(pair.hub.data_dir / "chunks", chunk_id(victim))  # its own file or its pack

    with pytest.raises(CorruptChunkError, match=r"victim\.txt"):
        asyncio.run(desktop.sync())
    assert not (desktop.root / "victim.txt").exists()
    assert list(desktop.root.rglob(f"{TEMP_PREFIX}*")) == []
    for path in desktop.root.glob("note*.txt"):  # what was written is whole
        n = int(path.stem.removeprefix("note"))
        assert path.read_text() == f"note {n}\n" * 30


@pytest.mark.slow
def test_a_batched_pull_killed_mid_way_leaves_no_partial_file_and_converges(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    expected = {f"d{n // 100}/f{n:04}.txt": os.urandom(10_000) for n in range(1500)}
    for rel, data in expected.items():
        (laptop.root / rel).parent.mkdir(exist_ok=True)
        (laptop.root / rel).write_bytes(data)
    asyncio.run(laptop.sync())

    args = [sys.executable, "-m", "shoal", "sync", "--once", "--quiet", desktop.arena]
    proc = subprocess.Popen(
        args, env=shoal_env(desktop.env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if sum(1 for _ in desktop.root.rglob("f*.txt")) >= 100:
            break
        time.sleep(0.01)
    killed = proc.poll() is None
    proc.kill()
    proc.wait(10)
    assert killed, "the pull ended before the kill"
    for path in desktop.root.rglob("f*.txt"):  # every file at a real path is whole
        assert path.read_bytes() == expected[path.relative_to(desktop.root).as_posix()]

    asyncio.run(pair.converge())
    assert snapshot(desktop.root) == snapshot(laptop.root)
    assert list(desktop.root.rglob(f"{TEMP_PREFIX}*")) == []
    assert asyncio.run(fsck_device(desktop)) == []
