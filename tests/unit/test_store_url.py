"""Opening stores by URL: the forms we accept, and clear refusals of the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.errors import UsageError
from shoal.store.file import FileBlobStore
from shoal.store.s3 import S3BlobStore
from shoal.store.url import open_blob_store, parse_s3_url
from shoal.testing.store_contract import blob, run


def test_file_url_and_bare_path_open_the_same_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_url = open_blob_store(f"file://{tmp_path}/chunks")
    assert isinstance(by_url, FileBlobStore)
    cid, content = blob(b"one store, three spellings")
    run(by_url.put_many([(cid, content)]))
    assert run(open_blob_store(str(tmp_path / "chunks")).get(cid)) == content
    monkeypatch.chdir(tmp_path)
    relative = open_blob_store("chunks")
    assert isinstance(relative, FileBlobStore)
    assert relative.root == tmp_path / "chunks"
    assert run(relative.get(cid)) == content


def test_file_url_decodes_percent_escapes(tmp_path: Path) -> None:
    store = open_blob_store(f"file://{tmp_path}/with%20space")
    assert isinstance(store, FileBlobStore)
    assert store.root == tmp_path / "with space"
    assert open_blob_store("file://localhost/srv/x").url == "file:///srv/x"


def test_home_is_expanded_in_bare_paths() -> None:
    store = open_blob_store("~/chunks")
    assert isinstance(store, FileBlobStore)
    assert store.root == Path.home() / "chunks"


def test_s3_url_parts() -> None:
    location = parse_s3_url(
        "s3://my-bucket/some/prefix?endpoint=http://127.0.0.1:9000/&region=eu-west-1"
        "&access_key_id=AKIA&secret_access_key=s3cr3t&max_retries=2"
    )
    assert location.bucket == "my-bucket"
    assert location.prefix == "some/prefix"
    assert location.endpoint == "http://127.0.0.1:9000"
    assert location.region == "eu-west-1"
    assert location.access_key_id == "AKIA"
    assert location.secret_access_key == "s3cr3t"
    assert location.max_retries == 2
    assert (
        location.url == "s3://my-bucket/some/prefix?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1"
    )
    assert "s3cr3t" not in location.url
    assert "AKIA" not in location.url


def test_s3_url_opens_without_touching_the_network() -> None:
    store = open_blob_store("s3://bucket-name")
    assert isinstance(store, S3BlobStore)
    assert store.url == "s3://bucket-name"
    assert store.scoped("t-1").url == "s3://bucket-name/ns/t-1"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "no store URL"),
        ("   ", "no store URL"),
        ("ftp://host/dir", "unsupported store URL scheme 'ftp://'"),
        ("memory://", "unsupported store URL scheme"),
        ("s3:/bucket", "malformed store URL"),
        ("c:relative", "malformed store URL"),
        ("file://otherhost/dir", "absolute local path"),
        ("file://relative", "absolute local path"),
        ("file:///dir?x=1", "unknown parameter 'x'"),
        ("file:///dir?packs=maybe", "packs=on or packs=off"),
        ("file:///dir?packs=on&packs=off", "packs=on or packs=off"),
        ("file:///dir?packs", "malformed query"),
        ("file:///dir?packs=", "packs=on or packs=off"),
        ("file:///dir#frag", "absolute local path"),
        ("s3://", "invalid bucket name"),
        ("s3://ab", "invalid bucket name"),
        ("s3://Upper-Case", "invalid bucket name"),
        ("s3://bucket..dots", "invalid bucket name"),
        ("s3://user:pw@bucket", "names only a bucket"),
        ("s3://bucket:9000", "names only a bucket"),
        ("s3://bucket/../escape", "invalid prefix"),
        ("s3://bucket/a//b", "invalid prefix"),
        ("s3://bucket/a?endpont=http://x", "unknown parameter 'endpont'"),
        ("s3://bucket?endpoint=ftp://x", "invalid S3 endpoint"),
        ("s3://bucket?endpoint=http://x/path", "invalid S3 endpoint"),
        ("s3://bucket?region=a&region=b", "exactly once"),
        ("s3://bucket?region=", "exactly once"),
        ("s3://bucket?max_retries=lots", "invalid max_retries"),
        ("s3://bucket?garbage", "malformed query"),
    ],
)
def test_bad_urls_are_refused_with_an_example(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        open_blob_store(url)
    assert (
        "e.g." in str(info.value) or "for example" in str(info.value) or "known parameters" in str(info.value)
    )


def test_error_messages_never_echo_url_secrets() -> None:
    with pytest.raises(UsageError) as info:
        open_blob_store("s3://user:topsecret@bucket?secret_access_key=topsecret")
    assert "topsecret" not in str(info.value)
    with pytest.raises(UsageError) as info:
        open_blob_store("gs://bucket?secret_access_key=topsecret")
    assert "topsecret" not in str(info.value)


def test_file_url_can_switch_packs_off(tmp_path: Path) -> None:
    store = open_blob_store(f"file://{tmp_path}/plain?packs=off")
    assert isinstance(store, FileBlobStore)
    assert store.url == f"file://{tmp_path}/plain?packs=off"
    blobs = [blob(bytes([i]) * 100) for i in range(10)]
    run(store.put_many(blobs))
    assert not (tmp_path / "plain" / "packs").exists()
    assert open_blob_store(store.url).url == store.url
    on = open_blob_store(f"file://{tmp_path}/packed?packs=on")
    assert on.url == f"file://{tmp_path}/packed"
    run(on.put_many(blobs))
    assert (tmp_path / "packed" / "packs").is_dir()
