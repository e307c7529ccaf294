"""The file API of a real hub process, driven over HTTP as curl or a script would."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from blake3 import blake3

from shoal.chunking.envelope import encode_plain
from shoal.chunking.hashing import chunk_id
from shoal.model.manifest import ChunkRef, Manifest
from shoal.model.records import EntryBody, decode_entry, encode_entry
from shoal.net.schemas_sync import plain_path_key
from shoal.net.sync import encode_chunk_batch
from shoal.testing.hubproc import HubFactory, HubProcess, running_hub

MIB = 1024 * 1024


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def files_hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HubProcess]:
    db_url = None
    if request.param == "postgres":
        db_url = request.getfixturevalue("pg_cluster").create_database()
    with running_hub(tmp_path_factory.mktemp("hub") / "hub", db_url=db_url) as hub:
        yield hub


@dataclass
class Api:
    client: httpx.Client
    arena: str

    def fs(self, what: str) -> str:
        return f"/api/v1/arenas/{self.arena}/fs/{what}"

    def upload(self, path: str, data: bytes, part_size: int = 4 * MIB, **extra: object) -> dict[str, object]:
        r = self.client.post(self.fs("uploads"), json={"path": path, **extra})
        assert r.status_code == 201, r.text
        up = r.json()["id"]
        for n, start in enumerate(range(0, len(data), part_size), start=1):
            r = self.client.put(self.fs(f"uploads/{up}/parts/{n}"), content=data[start : start + part_size])
            assert r.status_code == 200, r.text
        r = self.client.post(self.fs(f"uploads/{up}/commit"))
        assert r.status_code == 200, r.text
        result: dict[str, object] = r.json()
        return result

    def get(self, path: str, **headers: str) -> httpx.Response:
        return self.client.get(self.fs("content"), params={"path": path}, headers=headers)


_counter = iter(range(10**6))


def make_api(hub: HubProcess, scopes: str | None = None) -> Api:
    name = f"user{next(_counter)}"
    hub.add_user(name)
    token = hub.create_token(name) if scopes is None else hub.create_token(name, scopes)
    client = httpx.Client(base_url=hub.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    r = client.post("/api/v1/arenas", json={"name": "docs"})
    assert r.status_code == 201, r.text
    return Api(client, r.json()["id"])


@pytest.fixture
def api(files_hub: HubProcess) -> Iterator[Api]:
    made = make_api(files_hub)
    yield made
    made.client.close()


def test_upload_in_parts_then_download_whole_and_ranges(api: Api) -> None:
    data = os.urandom(9 * MIB + 12345)
    committed = api.upload("reports/big.bin", data, part_size=2 * MIB)
    meta = committed["file"]
    assert isinstance(meta, dict)
    assert meta["size"] == len(data)
    assert meta["hash"] == blake3(data).hexdigest()
    r = api.get("reports/big.bin")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["accept-ranges"] == "bytes"
    for start, end in [(0, 0), (5, 3 * MIB + 17), (len(data) - 10, len(data) - 1), (MIB, 8 * MIB)]:
        r = api.get("reports/big.bin", range=f"bytes={start}-{end}")
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
        assert r.content == data[start : end + 1]
    r = api.get("reports/big.bin", range="bytes=-100")
    assert r.status_code == 206
    assert r.content == data[-100:]
    r = api.get("reports/big.bin", range=f"bytes={len(data)}-")
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(data)}"


def test_a_resent_part_replaces_the_first_and_an_uncommitted_upload_is_invisible(api: Api) -> None:
    r = api.client.post(api.fs("uploads"), json={"path": "draft.txt"})
    up = r.json()["id"]
    assert api.client.put(api.fs(f"uploads/{up}/parts/1"), content=b"garbled").status_code == 200
    assert api.client.put(api.fs(f"uploads/{up}/parts/2"), content=b" world").status_code == 200
    assert api.get("draft.txt").status_code == 404
    listing = api.client.get(api.fs("list")).json()
    assert [i["name"] for i in listing["items"]] == []
    status = api.client.get(api.fs(f"uploads/{up}")).json()
    assert status["parts"] == {"1": 7, "2": 6}
    assert api.client.put(api.fs(f"uploads/{up}/parts/1"), content=b"hello").status_code == 200
    assert api.client.post(api.fs(f"uploads/{up}/commit")).status_code == 200
    assert api.get("draft.txt").content == b"hello world"
    # A committed upload is finished: it cannot be committed or extended again.
    assert api.client.post(api.fs(f"uploads/{up}/commit")).status_code == 404


def test_a_commit_with_a_missing_part_is_refused_and_an_oversized_part_is_413(api: Api) -> None:
    up = api.client.post(api.fs("uploads"), json={"path": "gap.bin"}).json()["id"]
    api.client.put(api.fs(f"uploads/{up}/parts/1"), content=b"a")
    api.client.put(api.fs(f"uploads/{up}/parts/3"), content=b"c")
    r = api.client.post(api.fs(f"uploads/{up}/commit"))
    assert r.status_code == 400
    assert "lacks part(s) 2" in r.json()["error"]["message"]
    r = api.client.put(api.fs(f"uploads/{up}/parts/2"), content=b"x" * (16 * MIB + 1))
    assert r.status_code == 413
    assert api.get("gap.bin").status_code == 404


def test_listing_pages_folders_and_meta(api: Api) -> None:
    for i in range(7):
        api.upload(f"dir/f{i}.txt", f"file {i}".encode())
    api.upload("dir/sub/deep.txt", b"deep")
    api.upload("dir-x.txt", b"sibling that sorts between dir and dir/")
    assert api.client.post(api.fs("mkdir"), json={"path": "empty"}).status_code == 200
    names: list[str] = []
    after = ""
    pages = 0
    while True:
        page = api.client.get(api.fs("list"), params={"path": "dir", "limit": 3, "after": after}).json()
        names += [i["name"] for i in page["items"]]
        pages += 1
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert names == [f"f{i}.txt" for i in range(7)] + ["sub"]
    assert pages == 3
    root = api.client.get(api.fs("list")).json()["items"]
    assert [(i["name"], i["kind"]) for i in root] == [("dir", "dir"), ("dir-x.txt", "file"), ("empty", "dir")]
    meta = api.client.get(api.fs("meta"), params={"path": "dir/f3.txt"}).json()
    assert meta["kind"] == "file"
    assert meta["size"] == 6
    assert meta["hash"] == blake3(b"file 3").hexdigest()
    assert meta["residency"]["on_hub"] is True
    assert api.client.get(api.fs("meta"), params={"path": "nope"}).status_code == 404


def test_rename_delete_versions_and_restore(api: Api) -> None:
    api.upload("a.txt", b"one")
    api.upload("a.txt", b"two")
    r = api.client.post(api.fs("rename"), json={"from": "a.txt", "to": "moved/b.txt"})
    assert r.status_code == 200, r.text
    assert api.get("a.txt").status_code == 404
    assert api.get("moved/b.txt").content == b"two"
    api.upload("folder/x/1.txt", b"1")
    api.upload("folder/2.txt", b"2")
    assert api.client.post(api.fs("rename"), json={"from": "folder", "to": "renamed"}).status_code == 200
    assert api.get("renamed/x/1.txt").content == b"1"
    assert api.get("folder/2.txt").status_code == 404
    assert api.client.delete(api.fs("content"), params={"path": "renamed"}).status_code == 200
    assert api.get("renamed/2.txt").status_code == 404
    assert [i["name"] for i in api.client.get(api.fs("list")).json()["items"]] == ["moved"]
    history = api.client.get(api.fs("versions"), params={"path": "a.txt"}).json()["versions"]
    ops = [(v["op"], v["deleted"]) for v in history]
    assert ops == [("rename", True), ("put", False), ("put", False)]
    first = history[-1]["seq"]
    assert api.get("a.txt").status_code == 404
    r = api.client.post(api.fs("restore"), json={"path": "a.txt", "seq": first})
    assert r.status_code == 200, r.text
    assert api.get("a.txt").content == b"one"
    old = api.client.get(api.fs("content"), params={"path": "moved/b.txt", "version": history[0]["seq"]})
    assert old.content == b"two"


def test_a_stale_base_seq_is_a_409(api: Api) -> None:
    first = api.upload("doc.txt", b"v1")["file"]
    assert isinstance(first, dict)
    api.upload("doc.txt", b"v2", base_seq=first["seq"])
    up = api.client.post(api.fs("uploads"), json={"path": "doc.txt", "base_seq": first["seq"]}).json()["id"]
    api.client.put(api.fs(f"uploads/{up}/parts/1"), content=b"v3 from a stale view")
    assert api.client.post(api.fs(f"uploads/{up}/commit")).status_code == 409
    assert api.get("doc.txt").content == b"v2"


def test_api_writes_show_up_in_changes_and_device_commits_in_the_file_api(api: Api) -> None:
    api.upload("from-api.txt", b"written through the file API")
    changes = api.client.get(f"/api/v1/arenas/{api.arena}/changes", params={"since": 0}).json()["entries"]
    entry = changes[-1]
    assert entry["op"] == "put"
    assert entry["path"] == "from-api.txt"
    record = decode_entry(base64.b64decode(entry["record"]))
    manifest = Manifest.decode(record.manifest or b"")
    assert manifest.size == len(b"written through the file API")
    # A device-style commit: chunk upload, then a put with the same record format.
    data = b"written by a device"
    cid = chunk_id(data)
    r = api.client.post(
        "/api/v1/chunks",
        content=encode_chunk_batch([(cid, encode_plain(data))]),
        headers={"content-type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    manifest = Manifest(len(data), (ChunkRef(cid, len(data)),), blake3(data).digest())
    body = EntryBody(
        "file", "from-device.txt", "dev1", size=len(data), mode=0o644, manifest=manifest.encode()
    )
    change = {
        "op": "put",
        "path_key": plain_path_key("from-device.txt"),
        "path": "from-device.txt",
        "record": base64.b64encode(encode_entry(body)).decode(),
        "chunks": [cid.hex()],
        "base_vv": {},
        "vv": {"dev1": 1},
        "device": "dev1",
    }
    r = api.client.post(
        f"/api/v1/arenas/{api.arena}/commit", json={"idempotency_key": "device-commit-1", "changes": [change]}
    )
    assert r.status_code == 200, r.text
    assert api.get("from-device.txt").content == data
    # The same bytes uploaded through the API dedup against the device's chunk.
    again = api.upload("copy.txt", data)["file"]
    assert isinstance(again, dict)
    assert again["hash"] == blake3(data).hexdigest()


def test_another_tenant_sees_nothing(files_hub: HubProcess, api: Api, tmp_path: Path) -> None:
    api.upload("secret.txt", b"mine")
    other = make_api(files_hub)
    try:
        r = other.client.get(f"/api/v1/arenas/{api.arena}/fs/content", params={"path": "secret.txt"})
        assert r.status_code == 404
        r = other.client.get(f"/api/v1/arenas/{api.arena}/fs/list")
        assert r.status_code == 404
        up = api.client.post(api.fs("uploads"), json={"path": "x"}).json()["id"]
        r = other.client.put(f"/api/v1/arenas/{other.arena}/fs/uploads/{up}/parts/1", content=b"evil")
        assert r.status_code == 404
    finally:
        other.client.close()


def test_a_read_only_token_cannot_write(files_hub: HubProcess, api: Api) -> None:
    reader = make_api(files_hub, "files:read,arenas:admin")
    try:
        r = reader.client.post(reader.fs("uploads"), json={"path": "x"})
        assert r.status_code == 403
        assert reader.client.get(reader.fs("list")).status_code == 200
    finally:
        reader.client.close()


# -- parts cut as they arrive ------------------------------------------------------------------


def _send(api: Api, path: str, parts: list[tuple[int, bytes]]) -> str:
    up = api.client.post(api.fs("uploads"), json={"path": path}).json()["id"]
    for number, body in parts:
        r = api.client.put(api.fs(f"uploads/{up}/parts/{number}"), content=body)
        assert r.status_code == 200, r.text
    return str(up)


def _commit(api: Api, up: str) -> dict[str, object]:
    r = api.client.post(api.fs(f"uploads/{up}/commit"))
    assert r.status_code == 200, r.text
    meta: dict[str, object] = r.json()["file"]
    return meta


def _manifest(api: Api, path: str) -> tuple[object, ...]:
    meta = api.client.get(api.fs("meta"), params={"path": path}).json()
    return meta["size"], meta["hash"], meta["chunks"]


def test_parts_out_of_order_or_sent_again_give_the_in_order_file(api: Api) -> None:
    # Parts that do not end on chunk boundaries, so every order carries a chunk across parts.
    data = os.urandom(3 * MIB) + bytes(2 * MIB) + os.urandom(4 * MIB + 777)
    size = 3 * MIB + 12345
    parts = [(n, data[start : start + size]) for n, start in enumerate(range(0, len(data), size), start=1)]
    assert len(parts) == 3
    _commit(api, _send(api, "in-order.bin", parts))
    expected = _manifest(api, "in-order.bin")
    assert expected[0] == len(data)
    assert expected[1] == blake3(data).hexdigest()

    ways = {
        "reversed.bin": list(reversed(parts)),
        "middle-last.bin": [parts[0], parts[2], parts[1]],
        # Part 2 first sent wrong, then again right after part 3 (and so after it may have been cut).
        "resent.bin": [parts[0], (2, os.urandom(len(parts[1][1]))), parts[2], parts[1]],
        # Every part sent twice, the same bytes.
        "twice.bin": parts + parts,
        # The wrong part 1 replaced at the very end.
        "first-last.bin": [(1, b"short and wrong"), parts[1], parts[2], parts[0]],
    }
    for path, order in ways.items():
        _commit(api, _send(api, path, order))
        assert _manifest(api, path) == expected, path
        assert api.get(path).content == data, path


def test_a_hub_crash_between_parts_then_commit_gives_the_right_bytes(hub_factory: HubFactory) -> None:
    hub = hub_factory()
    api = make_api(hub)
    data = os.urandom(7 * MIB + 4321)
    size = 2 * MIB + 99
    parts = [(n, data[start : start + size]) for n, start in enumerate(range(0, len(data), size), start=1)]
    try:
        reference = _send(api, "reference.bin", parts)
        _commit(api, reference)
        expected = _manifest(api, "reference.bin")
        before = _send(api, "crash-between.bin", parts[:2])
        whole = _send(api, "crash-before-commit.bin", parts)
        hub.kill9()
        hub.start()
        # Acknowledged parts survived; the upload goes on where it stopped.
        status = api.client.get(api.fs(f"uploads/{before}")).json()
        assert status["parts"] == {"1": size, "2": size}
        for number, body in parts[2:]:
            r = api.client.put(api.fs(f"uploads/{before}/parts/{number}"), content=body)
            assert r.status_code == 200, r.text
        for path, up in (("crash-between.bin", before), ("crash-before-commit.bin", whole)):
            _commit(api, up)
            assert _manifest(api, path) == expected, path
            assert api.get(path).content == data, path
    finally:
        api.client.close()


def test_chunks_cut_early_and_collected_before_the_commit_are_stored_again(hub_factory: HubFactory) -> None:
    hub = hub_factory()
    api = make_api(hub)
    data = os.urandom(9 * MIB)
    parts = [
        (n, data[start : start + 3 * MIB]) for n, start in enumerate(range(0, len(data), 3 * MIB), start=1)
    ]
    try:
        up = _send(api, "slow.bin", parts[:2])
        # The first parts' chunks are stored as they arrive, referenced by nothing yet: a GC
        # round with a grace period shorter than the upload collects them.
        time.sleep(1.5)
        collected = hub.admin("gc", "--grace", "1s").stdout
        assert "; 0 unreferenced chunk(s)" not in collected, collected
        _send_more = api.client.put(api.fs(f"uploads/{up}/parts/3"), content=parts[2][1])
        assert _send_more.status_code == 200, _send_more.text
        meta = _commit(api, up)
        assert meta["hash"] == blake3(data).hexdigest()
        assert api.get("slow.bin").content == data
    finally:
        api.client.close()
