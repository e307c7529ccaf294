"""The S3 store against moto on 127.0.0.1: the contract, layout, errors and hidden secrets."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from obstore.store import S3Store

import shoal.store.s3 as s3_module
from shoal.errors import ChunkMissingError, StorageError
from shoal.model.ids import ChunkId
from shoal.store.file import FileBlobStore
from shoal.store.s3 import S3BlobStore
from shoal.store.url import open_blob_store, parse_s3_url
from shoal.testing.s3server import TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY, S3TestServer
from shoal.testing.store_contract import BlobStoreContract, StoreOpener, blob, collect, random_blobs, run

pytestmark = pytest.mark.s3


class TestS3StoreContract(BlobStoreContract):
    @pytest.fixture
    def open_store(self, s3_url: str) -> StoreOpener:
        return lambda: open_blob_store(s3_url)


class TestS3StoreUnderAPrefixContract(BlobStoreContract):
    @pytest.fixture
    def open_store(self, s3_server: S3TestServer) -> StoreOpener:
        url = s3_server.url(s3_server.create_bucket(), prefix="deep/prefix")
        return lambda: open_blob_store(url)


def test_a_file_store_copied_into_a_bucket_opens_as_the_same_store(
    s3_server: S3TestServer, tmp_path: Path
) -> None:
    # Only a store written without packs: the S3 backend does not read pack files.
    local = FileBlobStore(tmp_path, packs=False)
    blobs = random_blobs(5)
    scoped_blob = blob(b"tenant data")
    run(local.put_many(blobs))
    run(local.scoped("tenant-1").put_many([scoped_blob]))
    bucket = s3_server.create_bucket()

    raw = S3Store(
        bucket,
        endpoint=s3_server.endpoint,
        region=TEST_REGION,
        access_key_id=TEST_ACCESS_KEY,
        secret_access_key=TEST_SECRET_KEY,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    for path in tmp_path.rglob("*"):
        if path.is_file():
            raw.put(path.relative_to(tmp_path).as_posix(), path.read_bytes())

    remote = open_blob_store(s3_server.url(bucket))
    assert sorted(run(collect(remote))) == sorted(cid for cid, _ in blobs)
    assert run(remote.scoped("tenant-1").get(scoped_blob[0])) == scoped_blob[1]


def test_url_never_shows_the_secret(s3_url: str) -> None:
    store = open_blob_store(s3_url)
    assert TEST_SECRET_KEY in s3_url
    assert TEST_SECRET_KEY not in store.url
    assert "access_key_id" not in store.url
    assert store.url.startswith("s3://")
    assert "endpoint=" in store.url


def test_missing_bucket_is_a_storage_error_naming_it(s3_server: S3TestServer) -> None:
    store = open_blob_store(s3_server.url("no-such-bucket-here"))
    cid, content = blob(b"x")
    with pytest.raises(StorageError, match="no-such-bucket-here") as info:
        run(store.get(cid))
    assert not isinstance(info.value, ChunkMissingError)
    with pytest.raises(StorageError, match="no-such-bucket-here"):
        run(store.put_many([(cid, content)]))
    with pytest.raises(StorageError, match="no-such-bucket-here"):
        run(store.has_many([cid]))
    with pytest.raises(StorageError, match="no-such-bucket-here"):
        run(collect(store))


def test_unreachable_endpoint_is_a_storage_error_naming_it() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    store = open_blob_store(
        f"s3://some-bucket?endpoint={endpoint}&max_retries=0&access_key_id=k&secret_access_key=s"
    )
    cid, content = blob(b"x")
    for attempt in (store.get(cid), store.put_many([(cid, content)]), store.has_many([cid])):
        with pytest.raises(StorageError, match=f"127.0.0.1:{port}") as info:
            run(attempt)
        assert "secret_access_key" not in str(info.value)
    with pytest.raises(StorageError, match=f"127.0.0.1:{port}"):
        run(collect(store))


@pytest.mark.parametrize(
    ("page", "heads_per_page"),
    [(1000, 4), (7, 4), (7, 60)],
    ids=["one-page", "many-pages", "page-budget-spent-then-heads"],
)
def test_has_many_by_listing_agrees_with_heads(
    s3_url: str, monkeypatch: pytest.MonkeyPatch, page: int, heads_per_page: int
) -> None:
    monkeypatch.setattr(s3_module, "_LIST_PAGE", page)
    monkeypatch.setattr(s3_module, "_HEADS_PER_PAGE", heads_per_page)
    in_shard = [ChunkId(b"\xab" + os.urandom(31)) for _ in range(120)]
    stored = in_shard[:60]
    edges = [
        ChunkId(b"\xab" + b"\x00" * 31),
        ChunkId(b"\xab" + b"\xff" * 31),
        ChunkId(b"\xac" + b"\x00" * 31),
    ]
    elsewhere = random_blobs(5)
    location = parse_s3_url(s3_url)
    listing = S3BlobStore(location, list_threshold=1)
    heads = S3BlobStore(location, list_threshold=10**6)
    run(heads.put_many([(cid, b"blob") for cid in stored] + elsewhere))

    asked = in_shard + edges + [cid for cid, _ in elsewhere]
    expected = set(stored) | {cid for cid, _ in elsewhere}
    head_calls: list[str] = []
    real_head = s3_module.obstore.head_async

    async def counting_head(store: Any, path: str) -> Any:
        head_calls.append(path)
        return await real_head(store, path)

    monkeypatch.setattr(s3_module.obstore, "head_async", counting_head)
    assert run(listing.has_many(asked)) == expected
    # Listing settles everything within its page budget; past the budget, HEADs finish the job.
    assert (len(head_calls) > 0) == (heads_per_page == 60)
    assert run(heads.has_many(asked)) == expected
    assert run(listing.has_many(in_shard[60:] + edges)) == set()


def test_url_endpoint_wins_over_aws_environment(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    store = open_blob_store(s3_url)
    cid, content = blob(b"reaches the endpoint the URL names")
    run(store.put_many([(cid, content)]))
    assert run(store.get(cid)) == content


def test_credentials_from_the_aws_environment(
    s3_server: S3TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)
    url = s3_server.url(s3_server.create_bucket(), credentials=False)
    assert TEST_SECRET_KEY not in url
    store = open_blob_store(url)
    cid, content = blob(b"signed with the environment's keys")
    run(store.put_many([(cid, content)]))
    assert run(store.get(cid)) == content


def test_has_many_by_listing_under_a_prefix_and_a_scope(s3_server: S3TestServer) -> None:
    location = parse_s3_url(s3_server.url(s3_server.create_bucket(), prefix="deep/er"))
    store = S3BlobStore(location, list_threshold=1).scoped("tenant-1")
    ids = [ChunkId(b"\xab" + os.urandom(31)) for _ in range(40)]
    run(store.put_many([(cid, b"x") for cid in ids[:20]]))
    run(S3BlobStore(location).put_many([(cid, b"parent") for cid in ids[20:]]))
    assert run(store.has_many(ids)) == set(ids[:20])
