"""The local directory store: the contract, its layout on disk, temp files and bad input."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shoal.errors import ChunkMissingError, StorageError
from shoal.store.file import TEMP_PREFIX, FileBlobStore
from shoal.testing.store_contract import BlobStoreContract, StoreOpener, blob, collect, random_blobs, run


class TestFileStoreContract(BlobStoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> StoreOpener:
        root = tmp_path / "blobs"
        root.mkdir()
        return lambda: FileBlobStore(root)


class TestFileStoreWithoutBatchSyncContract(BlobStoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> StoreOpener:
        root = tmp_path / "blobs"
        root.mkdir()
        return lambda: FileBlobStore(root, sync_batches=False, max_parallel=2)


class TestFileStoreWithoutPacksContract(BlobStoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> StoreOpener:
        root = tmp_path / "blobs"
        root.mkdir()
        return lambda: FileBlobStore(root, packs=False)


def test_blob_layout_is_sharded_by_id_prefix(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path, packs=False)
    cid, content = blob(b"hello shard")
    run(store.put_many([(cid, content)]))
    path = tmp_path / cid.hex()[:2] / cid.hex()
    assert path.read_bytes() == content
    scoped = store.scoped("tenant-1/arena-2")
    run(scoped.put_many([(cid, content)]))
    assert (
        tmp_path / "ns" / "tenant-1" / "ns" / "arena-2" / cid.hex()[:2] / cid.hex()
    ).read_bytes() == content


def test_temp_files_and_strays_are_not_listed_and_old_temps_are_swept(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    cid, content = blob(b"real blob")
    run(store.put_many([(cid, content)]))
    shard = tmp_path / cid.hex()[:2]
    partial_id, _ = blob(b"a write that was killed")
    old_temp = shard / f"{TEMP_PREFIX}{partial_id.hex()[:16]}-1-abc"
    old_temp.write_bytes(b"half")
    hour_ago = time.time() - 3600
    os.utime(old_temp, (hour_ago, hour_ago))
    fresh_temp = shard / f"{TEMP_PREFIX}{partial_id.hex()[:16]}-2-def"
    fresh_temp.write_bytes(b"in progress")
    (shard / "notes.txt").write_text("stray")
    wrong_shard = tmp_path / "ff" / ("00" * 32)
    wrong_shard.parent.mkdir(exist_ok=True)
    wrong_shard.write_bytes(b"misplaced")
    scoped_temp = tmp_path / "ns" / "t1" / "ab" / f"{TEMP_PREFIX}x"
    scoped_temp.parent.mkdir(parents=True)
    scoped_temp.write_bytes(b"")
    os.utime(scoped_temp, (hour_ago, hour_ago))

    assert run(collect(store)) == [cid]
    assert run(store.has_many([cid, partial_id])) == {cid}

    assert run(store.sweep_temp(older_than=600)) == 2
    assert not old_temp.exists()
    assert not scoped_temp.exists()
    assert fresh_temp.exists()
    assert run(store.get(cid)) == content


def test_missing_store_directory_is_a_storage_error_not_a_missing_chunk(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "unmounted-disk")
    cid, _ = blob(b"x")
    with pytest.raises(StorageError, match="does not exist") as info:
        run(store.get(cid))
    assert not isinstance(info.value, ChunkMissingError)
    assert run(store.has_many([cid])) == set()
    assert run(collect(store)) == []


def test_a_scoped_namespace_never_written_reports_missing_chunks(tmp_path: Path) -> None:
    cid, _ = blob(b"x")
    with pytest.raises(ChunkMissingError, match=cid.hex()):
        run(FileBlobStore(tmp_path).scoped("new-tenant").get(cid))


def test_put_creates_the_store_directory(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "new" / "store")
    blobs = random_blobs(3)
    run(store.put_many(blobs))
    assert run(store.has_many(cid for cid, _ in blobs)) == {cid for cid, _ in blobs}


def test_relative_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="absolute"):
        FileBlobStore(Path("relative/dir"))


def test_unreadable_blob_is_a_storage_error(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    cid, content = blob(b"soon a directory")
    run(store.put_many([(cid, content)]))
    path = tmp_path / cid.hex()[:2] / cid.hex()
    path.unlink()
    path.mkdir()  # reading a directory fails with EISDIR, the kind of error a bad disk gives
    with pytest.raises(StorageError, match="could not read") as info:
        run(store.get(cid))
    assert not isinstance(info.value, ChunkMissingError)


def test_url_round_trips_through_the_path(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "with space")
    assert store.url == "file://" + str(tmp_path / "with%20space")
    assert store.scoped("t1").url.endswith("/with%20space/ns/t1")
