"""The S3 store against moto on 127.0.0.1: the contract, layout, errors and hidden secrets."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from obstore.store import S3Store

from shoal.errors import ChunkMissingError, StorageError
from shoal.store.file import FileBlobStore
from shoal.store.url import open_blob_store
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
    local = FileBlobStore(tmp_path)
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
