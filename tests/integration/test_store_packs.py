"""Pack files in the file store, as a user would check them: bytes equal, nothing lost, errors shown."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest
from test_pack import shoal

from shoal.errors import ChunkMissingError, StorageError
from shoal.model.ids import ChunkId
from shoal.store.file import FileBlobStore
from shoal.store.packs import PACKS_DIR, PackSet
from shoal.testing.store_contract import blob, collect, random_blobs, run

READER = """
import asyncio, sys
from pathlib import Path
import blake3
from shoal.store.file import FileBlobStore

async def main(root, ids):
    store = FileBlobStore(Path(root))
    good = 0
    for text in ids:
        data = await store.get(bytes.fromhex(text))
        good += blake3.blake3(data).digest().hex() == text
    print(good)

asyncio.run(main(sys.argv[1], sys.argv[2:]))
"""


def packs_of(root: Path) -> list[Path]:
    return sorted((root / PACKS_DIR).glob("*.pack"))


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def read_all(store: FileBlobStore, blobs: list[tuple[ChunkId, bytes]]) -> None:
    for cid, content in blobs:
        assert run(store.get(cid)) == content


def test_small_blobs_land_in_one_pack_and_read_back_in_another_process(tmp_path: Path) -> None:
    blobs = random_blobs(500, size=2000)
    run(FileBlobStore(tmp_path).put_many(blobs))
    assert len(packs_of(tmp_path)) == 1
    # One pack plus its index (and SQLite's WAL files), not a file per blob.
    assert len(files_under(tmp_path)) <= 4
    ids = [cid.hex() for cid, _ in blobs]
    command = [sys.executable, "-c", READER, str(tmp_path), *ids]
    out = subprocess.run(command, check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(blobs)


def test_large_blobs_and_tiny_batches_keep_a_file_each(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    big = blob(os.urandom(600_000))
    small = random_blobs(2, size=100)
    run(store.put_many([big, *random_blobs(5, size=100)]))
    run(store.put_many(small))
    assert (tmp_path / big[0].hex()[:2] / big[0].hex()).is_file()
    for cid, _ in small:
        assert (tmp_path / cid.hex()[:2] / cid.hex()).is_file()
    assert len(packs_of(tmp_path)) == 1


def test_a_lost_index_is_rebuilt_from_the_packs(tmp_path: Path) -> None:
    blobs = random_blobs(300, size=1500)
    more = random_blobs(50, size=700)
    store = FileBlobStore(tmp_path)
    run(store.put_many(blobs))
    run(store.put_many(more))
    run(store.close())
    for index in (tmp_path / PACKS_DIR).glob("index.sqlite*"):
        index.unlink()

    reopened = FileBlobStore(tmp_path)
    assert sorted(run(collect(reopened))) == sorted(cid for cid, _ in blobs + more)
    read_all(reopened, blobs + more)
    assert run(reopened.size(more[0][0])) == 700
    run(reopened.close())


def test_a_pack_with_a_damaged_trailer_is_set_aside_when_rebuilding(tmp_path: Path) -> None:
    first, second = random_blobs(20, size=500), random_blobs(20, size=500)
    store = FileBlobStore(tmp_path)
    run(store.put_many(first))
    (damaged,) = packs_of(tmp_path)
    run(store.put_many(second))
    run(store.close())
    data = bytearray(damaged.read_bytes())
    data[-20] ^= 0xFF  # inside the trailer's entry table: its checksum no longer matches
    damaged.write_bytes(bytes(data))
    for index in (tmp_path / PACKS_DIR).glob("index.sqlite*"):
        index.unlink()

    reopened = FileBlobStore(tmp_path)
    read_all(reopened, second)
    assert run(reopened.has_many(cid for cid, _ in first)) == set()
    assert Path(f"{damaged}.damaged").exists()  # kept for whoever wants to salvage it
    run(reopened.close())


def test_deleting_most_of_a_pack_rewrites_it_and_deleting_all_removes_it(tmp_path: Path) -> None:
    blobs = random_blobs(100, size=1000)
    store = FileBlobStore(tmp_path)
    run(store.put_many(blobs))
    (original,) = packs_of(tmp_path)
    original_size = original.stat().st_size
    for cid, _ in blobs[:60]:
        run(store.delete(cid))
    (rewritten,) = packs_of(tmp_path)
    assert not original.exists()
    assert rewritten.stat().st_size < original_size * 0.6
    read_all(FileBlobStore(tmp_path), blobs[60:])
    asked = [cid for cid, _ in blobs[55:]]
    assert run(store.get_many(asked)) == dict(blobs[60:])
    assert run(store.has_many(cid for cid, _ in blobs)) == {cid for cid, _ in blobs[60:]}
    for cid, _ in blobs[60:]:
        run(store.delete(cid))
    assert packs_of(tmp_path) == []
    assert run(collect(store)) == []


def test_a_blob_both_packed_and_in_its_own_file_is_listed_once_and_deleted_everywhere(tmp_path: Path) -> None:
    blobs = random_blobs(6, size=800)
    run(FileBlobStore(tmp_path, packs=False).put_many(blobs[:1]))
    store = FileBlobStore(tmp_path)
    run(store.put_many(blobs))
    assert sorted(run(collect(store))) == sorted(cid for cid, _ in blobs)
    run(store.delete(blobs[0][0]))
    with pytest.raises(ChunkMissingError):
        run(store.get(blobs[0][0]))
    assert not (tmp_path / blobs[0][0].hex()[:2] / blobs[0][0].hex()).exists()


def test_a_store_written_without_packs_reads_the_same_with_them(tmp_path: Path) -> None:
    old = random_blobs(30, size=400)
    run(FileBlobStore(tmp_path, packs=False).put_many(old))
    assert not (tmp_path / PACKS_DIR).exists()
    store = FileBlobStore(tmp_path)
    read_all(store, old)
    new = random_blobs(30, size=400)
    run(store.put_many(new))
    assert sorted(run(collect(store))) == sorted(cid for cid, _ in old + new)


def test_a_pack_a_crashed_writer_left_unindexed_is_swept_once_old(tmp_path: Path) -> None:
    blobs = random_blobs(20, size=300)
    store = FileBlobStore(tmp_path)
    run(store.put_many(blobs))
    (indexed,) = packs_of(tmp_path)
    orphan = indexed.with_name("0" * 32 + ".pack")  # as if killed between rename and index commit
    orphan.write_bytes(indexed.read_bytes())
    fresh_orphan = indexed.with_name("1" * 32 + ".pack")
    fresh_orphan.write_bytes(indexed.read_bytes())
    temp = indexed.with_name(".tmp-" + "2" * 32 + ".pack")
    temp.write_bytes(b"half a pack")
    hour_ago = time.time() - 3600
    for path in (indexed, orphan, temp):
        os.utime(path, (hour_ago, hour_ago))

    assert run(store.sweep_temp(older_than=600)) == 2
    assert not orphan.exists()
    assert not temp.exists()
    assert fresh_orphan.exists()  # a writer may be between its rename and its commit
    assert indexed.exists()
    read_all(store, blobs)


def test_scoped_namespaces_have_their_own_packs(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    mine, theirs = random_blobs(10, size=500), random_blobs(10, size=500)
    run(store.scoped("t-1").put_many(mine))
    run(store.scoped("t-2").put_many(theirs))
    assert len(packs_of(tmp_path / "ns" / "t-1")) == 1
    assert len(packs_of(tmp_path / "ns" / "t-2")) == 1
    assert run(collect(store)) == []
    assert run(store.scoped("t-2").has_many(cid for cid, _ in mine)) == set()
    with pytest.raises(ChunkMissingError):
        run(store.scoped("t-2").get(mine[0][0]))


def test_a_vanished_pack_is_an_error_naming_it_never_wrong_bytes(tmp_path: Path) -> None:
    blobs = random_blobs(10, size=500)
    store = FileBlobStore(tmp_path)
    run(store.put_many(blobs))
    (pack,) = packs_of(tmp_path)
    pack.unlink()
    with pytest.raises(StorageError, match=pack.name) as info:
        run(store.get(blobs[0][0]))
    assert not isinstance(info.value, ChunkMissingError)
    with pytest.raises(StorageError, match=pack.name) as info:
        run(store.get_many([cid for cid, _ in blobs]))
    assert not isinstance(info.value, ChunkMissingError)
    pack.write_bytes(b"")  # truncated: still an error, never short bytes
    with pytest.raises(StorageError, match="truncated"):
        run(store.get(blobs[3][0]))
    with pytest.raises(StorageError, match="truncated"):
        run(store.get_many([blobs[3][0]]))


def test_a_blocked_packs_directory_fails_the_write_and_keeps_nothing(tmp_path: Path) -> None:
    (tmp_path / PACKS_DIR).write_bytes(b"in the way")
    store = FileBlobStore(tmp_path)
    blobs = random_blobs(10, size=500)
    with pytest.raises(StorageError):
        run(store.put_many(blobs))
    assert run(store.has_many(cid for cid, _ in blobs)) == set()
    assert run(collect(store)) == []


def test_a_corrupt_byte_in_a_pack_is_reported_for_exactly_that_chunk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02}.txt").write_bytes(os.urandom(3000 + i))
    image, store_dir = tmp_path / "img.flist", tmp_path / "store"
    code, _, err = shoal(capsys, "pack", str(src), "-o", str(image), "--store", str(store_dir))
    assert code == 0, err
    assert len(packs_of(store_dir)) >= 1
    assert not any(p.is_dir() and len(p.name) == 2 for p in store_dir.iterdir())  # no blob files
    victim = blake3.blake3((src / "f07.txt").read_bytes()).digest()
    with sqlite3.connect(store_dir / PACKS_DIR / "index.sqlite") as db:
        pack, offset, length = db.execute(
            "SELECT name, offset, length FROM blobs JOIN packs ON pid = pack WHERE id = ?", (victim,)
        ).fetchone()
    path = store_dir / PACKS_DIR / f"{pack}.pack"
    data = bytearray(path.read_bytes())
    data[offset + length // 2] ^= 0x01
    path.write_bytes(bytes(data))

    code, _, err = shoal(capsys, "store", "check", str(store_dir), "--image", str(image))
    assert code == 4
    assert victim.hex() in err
    damaged = [line.split()[1].rstrip(":") for line in err.splitlines() if line.startswith("damaged: ")]
    assert damaged == [victim.hex()]
    assert "1 damaged and 0 missing" in err

    dest = tmp_path / "out"
    code, _, err = shoal(capsys, "unpack", str(image), str(dest), "--store", str(store_dir))
    assert code == 10
    assert "f07.txt" in err
    assert not (dest / "f07.txt").exists()
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"f{i:02}.txt" for i in range(40) if i != 7)
    for i in range(40):
        if i != 7:
            assert (dest / f"f{i:02}.txt").read_bytes() == (src / f"f{i:02}.txt").read_bytes()


def test_an_empty_blob_keeps_its_pack_alive(tmp_path: Path) -> None:
    empty = blob(b"")
    others = random_blobs(5, size=400)
    store = FileBlobStore(tmp_path)
    run(store.put_many([empty, *others]))
    for cid, _ in others:
        run(store.delete(cid))
    assert run(store.get(empty[0])) == b""
    assert run(collect(store)) == [empty[0]]
    assert len(packs_of(tmp_path)) == 1
    run(store.delete(empty[0]))
    assert packs_of(tmp_path) == []


# Writes a batch, then deletes most of it (so packs are rewritten and removed), in a loop,
# printing what returned; usage: CHURN ROOT
CHURN = """
import asyncio, sys
from pathlib import Path
from shoal.store.file import FileBlobStore
from shoal.testing.store_contract import blob

def content(i):
    return i.to_bytes(8, "big") * (50 + i % 300)

async def main(root):
    store = FileBlobStore(Path(root))
    print("started", flush=True)
    for start in range(0, 10**6, 40):
        await store.put_many([blob(content(i)) for i in range(start, start + 40)])
        print("put", start, flush=True)
        for i in range(start, start + 40):
            if i % 4:
                await store.delete(blob(content(i))[0])
                print("deleted", i, flush=True)

asyncio.run(main(sys.argv[1]))
"""


def churn_content(i: int) -> bytes:
    return i.to_bytes(8, "big") * (50 + i % 300)


@pytest.mark.slow
def test_kill_while_writing_and_compacting_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(20261204)
    for round_no in range(6):
        root = tmp_path / f"store-{round_no}"
        proc = subprocess.Popen(
            [sys.executable, "-c", CHURN, str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        time.sleep(rng.uniform(0.1, 1.5))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, "the writer finished before the kill"
        put = {int(line.split()[1]) for line in out.splitlines() if line.startswith("put ")}
        deleted = {int(line.split()[1]) for line in out.splitlines() if line.startswith("deleted ")}
        assert put, "no batch returned before the kill: give the writer longer"

        store = FileBlobStore(root)
        listed = run(collect(store))
        assert len(listed) == len(set(listed))
        for cid in listed:  # nothing half-visible
            assert blake3.blake3(run(store.get(cid))).digest() == cid
        kept = {blob(churn_content(i))[0]: churn_content(i) for s in put for i in range(s, s + 40)}
        # The delete running at the kill may have happened or not: the first one not printed.
        in_flight = next(i for i in range(max(deleted | put), 10**7) if i % 4 and i not in deleted)
        for i in deleted | {in_flight}:
            kept.pop(blob(churn_content(i))[0], None)
        for cid, data in kept.items():  # everything acknowledged and not deleted
            assert run(store.get(cid)) == data
        # After a sweep (the writer is dead: any age will do) the same still holds.
        run(store.sweep_temp(older_than=-1))
        assert sorted(run(collect(store))) == sorted(listed)
        for cid, data in kept.items():
            assert run(store.get(cid)) == data
        run(store.close())


def test_many_namespaces_keep_a_bounded_number_of_index_files_open(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    tenants = {f"t-{n}": random_blobs(5, size=300) for n in range(45)}
    for name, blobs in tenants.items():
        run(store.scoped(name).put_many(blobs))
    for name, blobs in tenants.items():
        read_all(store.scoped(name), blobs)

    def open_indexes() -> int:
        fds = Path("/proc/self/fd")
        links = []
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                links.append(os.readlink(fd))
        return sum(1 for link in links if link.startswith(str(tmp_path)) and link.endswith("index.sqlite"))

    assert open_indexes() <= 2 * 33  # two connections per namespace, for the 32 most recent (+1)
    run(store.close())
    assert open_indexes() == 0


def test_a_pack_indexed_by_a_rebuild_before_its_writer_commits_stays_whole(tmp_path: Path) -> None:
    # Another process rebuilt a lost index between this writer's rename and its commit, and so
    # already indexed the new pack: the commit must count those rows as the pack's own.
    store = FileBlobStore(tmp_path)
    run(store.put_many(random_blobs(5, size=100)))
    run(store.close())
    packs = PackSet(tmp_path, lambda d: d.mkdir(parents=True, exist_ok=True), lambda _d: None)
    blobs = random_blobs(8, size=700)
    name, entries = packs._write_pack(blobs)
    packs.close()
    for index in (tmp_path / PACKS_DIR).glob("index.sqlite*"):
        index.unlink()
    rebuilt = FileBlobStore(tmp_path)
    read_all(rebuilt, blobs)  # the rebuild indexed the uncommitted pack
    run(rebuilt.close())

    late = PackSet(tmp_path, lambda d: d.mkdir(parents=True, exist_ok=True), lambda _d: None)
    late._commit(name, entries)
    assert late.usage()[name].blobs == 8
    late.close()
    reopened = FileBlobStore(tmp_path)
    read_all(reopened, blobs)
    for cid, _ in blobs[:7]:
        run(reopened.delete(cid))
    read_all(reopened, blobs[7:])
