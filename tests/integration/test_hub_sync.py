"""The sync API of a real hub process on 127.0.0.1, driven over HTTP, WebSocket and SSE."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.chunking.envelope import encode_plain
from shoal.chunking.hashing import chunk_id
from shoal.errors import AuthError, ConflictError, NetworkError, NotFoundError
from shoal.model.codec import pack_record
from shoal.model.ids import ChunkId
from shoal.net.http import HubSession, TokenSet
from shoal.net.schemas_sync import ChangeEntry, ChangeIn, StreamMessage, plain_path_key
from shoal.net.sync import SyncClient, encode_chunk_batch
from shoal.testing.hubproc import HubProcess, running_hub


@pytest.fixture(
    scope="module",
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("sqlite+s3", marks=pytest.mark.s3),
    ],
)
def hub_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HubProcess]:
    """One hub per backend for the module; each test makes its own users, so its own tenants."""
    db_url = store_url = None
    if request.param == "postgres":
        db_url = request.getfixturevalue("pg_cluster").create_database()
    if request.param == "sqlite+s3":
        server = request.getfixturevalue("s3_server")
        store_url = server.url(server.create_bucket())
    with running_hub(tmp_path_factory.mktemp("hub") / "hub", db_url=db_url, store_url=store_url) as hub:
        yield hub


class LossySession(HubSession):
    """A session whose first answer is lost on the way back, after the hub acted on the request."""

    dropped = False

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        response = await super().request(method, path, **kw)
        if not self.dropped:
            self.dropped = True
            raise NetworkError("the connection dropped before the answer arrived")
        return response


_OPEN: list[HubSession] = []


def client_for(hub: HubProcess, token: str, *, lossy: bool = False) -> SyncClient:
    session = (LossySession if lossy else HubSession)(hub.base_url, TokenSet(token))
    _OPEN.append(session)
    return SyncClient(session)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run one test's async body, then close every session it opened, on the same loop."""

    async def main() -> None:
        try:
            await scenario()
        finally:
            while _OPEN:
                await _OPEN.pop().close()

    asyncio.run(main())


class RawHub:
    """Requests the typed client would refuse to build, to see the hub refuse them too."""

    def __init__(self, base_url: str, client: SyncClient) -> None:
        self.base_url = base_url
        self.client = client

    async def _headers(self) -> dict[str, str]:
        return self.client.session.auth_headers()

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            resp = await http.post(path, json=body, headers=await self._headers())
        return resp.status_code, resp.json()

    async def post_bytes(self, path: str, body: bytes) -> tuple[int, Any]:
        headers = {**await self._headers(), "Content-Type": "application/octet-stream"}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            resp = await http.post(path, content=body, headers=headers)
        return resp.status_code, resp.json()

    async def get(self, path: str) -> tuple[int, Any]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            resp = await http.get(path, headers=await self._headers())
        return resp.status_code, resp.json() if resp.content else None


def put(
    path: str, data_ids: list[ChunkId], vv: dict[str, int], base: dict[str, int] | None = None
) -> ChangeIn:
    record = pack_record("entry", 1, {"size": 11 * len(data_ids), "chunks": [bytes(c) for c in data_ids]})
    return ChangeIn(
        op="put",
        path_key=plain_path_key(path),
        path=path,
        record=record,
        chunks=[c.hex() for c in data_ids],
        base_vv=base or {},
        vv=vv,
        device="laptop",
    )


def new_user(hub: HubProcess) -> tuple[str, SyncClient]:
    """A fresh user (so a tenant of its own) on the shared hub, with a full-scope token."""
    name = f"u{next(_USERS)}"
    hub.add_user(name)
    return name, client_for(hub, hub.create_token(name))


_USERS = itertools.count(1)


@pytest.fixture(scope="module")
def alice_token(hub_backend: HubProcess) -> str:
    """One user per hub for the module (CLI calls are slow); tests use distinct arena names."""
    hub_backend.add_user("alice")
    return hub_backend.create_token("alice")


@pytest.fixture
def alice(hub_backend: HubProcess, alice_token: str) -> SyncClient:
    return client_for(hub_backend, alice_token)


def test_round_trip_missing_upload_commit_changes_download(
    hub_backend: HubProcess, alice: SyncClient
) -> None:
    async def scenario() -> None:
        arena = await alice.create_arena("docs")
        blobs = {chunk_id(data): encode_plain(data) for data in (b"hello world", b"second chunk" * 1000)}
        ids = list(blobs)
        assert await alice.missing_chunks(ids) == [c.hex() for c in ids]
        uploaded = await alice.upload_chunks(list(blobs.items()))
        assert sorted(uploaded.stored) == sorted(c.hex() for c in ids)
        assert await alice.missing_chunks(ids) == []
        again = await alice.upload_chunks(list(blobs.items()))
        assert again.stored == []

        result = await alice.commit(arena.id, [put("notes/a.txt", ids, {"laptop": 1})])
        assert (result.first, result.last, result.conflicts) == (1, 1, [])
        page = await alice.changes(arena.id, since=0)
        assert [e.path for e in page.entries] == ["notes/a.txt"]
        assert page.head == 1
        for cid in page.entries[0].chunks:
            assert await alice.download_chunk(cid) == blobs[ChunkId(bytes.fromhex(cid))]

        second = await alice.commit(arena.id, [put("notes/a.txt", ids[:1], {"laptop": 2}, {"laptop": 1})])
        versions = await alice.versions(arena.id, plain_path_key("notes/a.txt"))
        assert [v.seq for v in versions] == [second.last, 1]
        restored = await alice.restore(arena.id, plain_path_key("notes/a.txt"), 1)
        latest = (await alice.changes(arena.id, since=second.last)).entries[0]
        assert latest.seq == restored.last
        assert latest.restored_from == 1
        assert latest.chunks == [c.hex() for c in ids]
        cursor, tree = await alice.tree(arena.id)
        assert cursor == restored.last
        assert [(t.path_key, t.change.seq) for t in tree] == [(plain_path_key("notes/a.txt"), restored.last)]
        assert await alice.ack(arena.id, restored.last) == restored.last

    run(scenario)


def test_watchers_replay_exactly_the_log_then_announce_new_cursors(
    hub_backend: HubProcess, alice: SyncClient
) -> None:
    async def scenario() -> None:
        arena = await alice.create_arena("photos")
        for n in range(5):
            await alice.commit(arena.id, [put(f"p{n}.jpg", [], {"laptop": 1})])
        expected = (await alice.changes(arena.id, since=2)).entries

        got: list[StreamMessage] = []

        async def watch() -> None:
            async for msg in alice.watch(arena.id, since=2):
                got.append(msg)
                if msg.type == "cursor":
                    return

        watcher = asyncio.create_task(watch())
        for _ in range(200):  # bounded: until the backlog arrived
            if got:
                break
            await asyncio.sleep(0.02)
        new = await alice.commit(arena.id, [put("late.jpg", [], {"laptop": 1})])
        await asyncio.wait_for(watcher, 10)
        backlog = [e for m in got if m.type == "changes" for e in m.entries]
        assert backlog == expected
        assert got[-1].type == "cursor"
        assert got[-1].cursor == new.last

        sse = await sse_backlog(hub_backend, alice, arena.id, since=2)
        assert sse == (await alice.changes(arena.id, since=2)).entries

    run(scenario)


def test_paged_pull_reads_the_whole_log_in_order_while_fetching_ahead(
    hub_backend: HubProcess, alice: SyncClient
) -> None:
    async def scenario() -> None:
        arena = await alice.create_arena("paged")
        for start in range(0, 45, 15):
            await alice.commit(arena.id, [put(f"d/{start + n}.txt", [], {"laptop": 1}) for n in range(15)])
        seen = [e.seq async for e in alice.iter_changes(arena.id, since=3, page=10)]
        assert seen == list(range(4, 46))
        status, page = await RawHub(hub_backend.base_url, alice).get(
            f"/api/v1/arenas/{arena.id}/changes?since=40&limit=10"
        )
        assert (status, page["cursor"], page["more"]) == (200, 45, False)
        async with httpx.AsyncClient(base_url=hub_backend.base_url, timeout=30) as http:
            resp = await http.get(
                f"/api/v1/arenas/{arena.id}/changes?since=0&limit=10", headers=alice.session.auth_headers()
            )
        assert (resp.headers["x-shoal-cursor"], resp.headers["x-shoal-more"]) == ("10", "1")
        assert resp.json()["cursor"] == 10

        pages = alice.iter_changes(arena.id, page=10)
        assert isinstance(pages, AsyncGenerator)
        early = [await anext(pages) for _ in range(12)]
        await pages.aclose()  # leaving early cancels the page fetched ahead
        assert [e.seq for e in early] == list(range(1, 13))

    run(scenario)


async def sse_backlog(hub: HubProcess, client: SyncClient, arena_id: str, since: int) -> list[ChangeEntry]:
    headers = client.session.auth_headers()
    entries: list[ChangeEntry] = []
    url = f"{hub.base_url}/api/v1/arenas/{arena_id}/events"
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", url, params={"since": since}, headers=headers) as resp,
    ):
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                msg = StreamMessage.model_validate_json(line[6:])
                entries.extend(msg.entries)
                if not msg.more:
                    break
    return entries


def test_another_tenant_gets_404_and_no_existence_oracle(hub_backend: HubProcess, alice: SyncClient) -> None:
    _, bob = new_user(hub_backend)  # a second tenant

    async def scenario() -> None:
        arena = await alice.create_arena("private")
        secret = b"alice's secret"
        cid = chunk_id(secret)
        await alice.upload_chunks([(cid, encode_plain(secret))])
        await alice.commit(arena.id, [put("s.txt", [cid], {"laptop": 1})])

        assert await bob.missing_chunks([cid]) == [cid.hex()]
        for call in (
            bob.get_arena(arena.id),
            bob.changes(arena.id),
            bob.versions(arena.id, plain_path_key("s.txt")),
            bob.download_chunk(cid),
            bob.commit(arena.id, [put("x.txt", [], {"b": 1})]),
            bob.delete_arena(arena.id),
        ):
            with pytest.raises(NotFoundError):
                await call
        assert await bob.list_arenas() == []
        bob_arena = await bob.create_arena("private")  # same name, other tenant: fine
        with pytest.raises(NotFoundError, match="chunk"):
            await bob.commit(bob_arena.id, [put("steal.txt", [cid], {"b": 1})])
        with pytest.raises(NotFoundError):
            async for _ in bob.watch(arena.id):
                pass

    run(scenario)


def test_unsafe_paths_odd_names_and_bad_chunk_ids_are_refused(
    hub_backend: HubProcess, alice: SyncClient
) -> None:
    raw = RawHub(hub_backend.base_url, alice)

    async def scenario() -> None:
        arena = await alice.create_arena("inbox")
        for path, reason in (
            ("../../etc/passwd", "'..'"),
            ("/etc/passwd", "absolute"),
            ("a//b", "empty"),
            ("nul\x00byte", "NUL"),
            ("x" * 300, "longer than 255"),
        ):
            change = put("ok.txt", [], {"laptop": 1}).model_dump(mode="json")
            change.update(path=path, path_key=plain_path_key(path))
            status, body = await raw.post(
                f"/api/v1/arenas/{arena.id}/commit", {"idempotency_key": "k" * 10, "changes": [change]}
            )
            assert status == 400, (path, body)
            assert reason in body["error"]["message"]
        status, body = await raw.post("/api/v1/chunks/missing", {"ids": ["../../etc/passwd"]})
        assert status == 400
        assert "invalid chunk id" in body["error"]["message"]
        for evil in ("..%2F..%2Fetc%2Fpasswd", "ABCDEF" * 10 + "0000", "g" * 64):
            status, body = await raw.get(f"/api/v1/chunks/{evil}")
            assert status in (400, 404), evil
        assert (await alice.changes(arena.id)).entries == []

    run(scenario)


def test_chunk_not_matching_its_id_is_rejected_and_not_stored(
    hub_backend: HubProcess, alice: SyncClient
) -> None:
    raw = RawHub(hub_backend.base_url, alice)

    async def scenario() -> None:
        good = b"genuine content"
        claimed = chunk_id(b"something else entirely")
        body = encode_chunk_batch([(chunk_id(good), encode_plain(good)), (claimed, encode_plain(good))])
        status, answer = await raw.post_bytes("/api/v1/chunks", body)
        assert status == 422
        assert claimed.hex() in answer["error"]["message"]
        assert await alice.missing_chunks([claimed, chunk_id(good)]) == [claimed.hex(), chunk_id(good).hex()]

    run(scenario)
    if hub_backend.store_url is None:
        names = [p.name for p in (hub_backend.data_dir / "chunks").rglob("*") if p.is_file()]
        assert not [n for n in names if chunk_id(b"genuine content").hex() in n]


def test_retried_commit_after_dropped_response_creates_one_version(
    hub_backend: HubProcess, alice: SyncClient
) -> None:
    async def scenario() -> None:
        arena = await alice.create_arena("retry")
        change = put("once.txt", [], {"laptop": 1})
        token = alice.session.auth_headers()["Authorization"].removeprefix("Bearer ")
        lossy = client_for(hub_backend, token, lossy=True)
        result = await lossy.commit(arena.id, [change], idempotency_key="retry-key-1")
        assert result.replayed  # the first attempt landed; its answer was lost
        assert result.last == 1
        versions = await alice.versions(arena.id, plain_path_key("once.txt"))
        assert [v.seq for v in versions] == [1]
        assert (await alice.changes(arena.id)).head == 1

    run(scenario)


@pytest.mark.slow
def test_websocket_closes_when_its_token_is_revoked(hub_backend: HubProcess, alice: SyncClient) -> None:
    name = "alice"
    token = hub_backend.create_token(name, "sync:read", expires="1h")
    listing = hub_backend.admin("token", "list", "--user", name).stdout.strip().splitlines()
    token_id = max(int(line.split()[0]) for line in listing)
    watcher = client_for(hub_backend, token)

    async def scenario() -> None:
        arena = await alice.create_arena("watched")
        seen: list[StreamMessage] = []

        async def watch() -> None:
            async for msg in watcher.watch(arena.id):
                seen.append(msg)

        task = asyncio.create_task(watch())
        for _ in range(200):  # bounded: until the backlog arrived
            if seen:
                break
            await asyncio.sleep(0.02)
        assert seen
        await asyncio.to_thread(hub_backend.admin, "token", "revoke", str(token_id), "--user", name)
        # The announcement of this commit makes the hub recheck the watcher's token at once.
        await alice.commit(arena.id, [put("wake.txt", [], {"laptop": 1})])
        with pytest.raises(AuthError, match="revoked"):
            await asyncio.wait_for(task, 15)

    run(scenario)


def test_arena_lifecycle_rename_delete_undelete(hub_backend: HubProcess, alice: SyncClient) -> None:
    async def scenario() -> None:
        arena = await alice.create_arena("music", conflict_policy="lww", keep_days=7, keep_versions=3)
        assert (arena.conflict_policy, arena.keep_days, arena.keep_versions) == ("lww", 7, 3)
        renamed = await alice.rename_arena(arena.id, "tunes")
        assert renamed.name == "tunes"
        gone = await alice.delete_arena(arena.id)
        assert gone.purge_after is not None
        assert arena.id not in [a.id for a in await alice.list_arenas()]
        with pytest.raises(NotFoundError):
            await alice.changes(arena.id)
        assert [a.id for a in await alice.list_arenas(deleted=True)] == [arena.id]
        await alice.create_arena("tunes")  # the name is free while the arena is deleted
        with pytest.raises(ConflictError, match="tunes"):
            await alice.undelete_arena(arena.id)
        await alice.delete_arena((await alice.find_arena("tunes")).id)
        back = await alice.undelete_arena(arena.id)
        assert back.name == "tunes"
        assert back.deleted_at is None

    run(scenario)


def test_network_error_names_the_hub(tmp_path: Path) -> None:
    dead = HubProcess(tmp_path / "nohub")
    client = client_for(dead, "pat-nothing")

    async def scenario() -> None:
        with pytest.raises(NetworkError, match=r"127\.0\.0\.1"):
            await client.list_arenas()

    run(scenario)
