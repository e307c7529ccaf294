"""Folder mode through a real hub: a device joined on demand holds stubs, hydrates, pins, dehydrates,
and its stubs' deletes and renames reach the other device; nothing is ever lost."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.engine import residency
from shoal.state.arenas import ArenaRegistry
from shoal.state.index import ArenaIndex, Residency
from shoal.testing.devices import Device, Household, fsck_device
from shoal.testing.filestore import delete_blob, stored_blobs
from shoal.testing.hubproc import running_hub, shoal_env
from shoal.worktree.stub import MAX_STUB_BYTES

pytestmark = pytest.mark.slow  # several rounds through a hub process per test
_names = (f"fm{n}" for n in itertools.count())


@pytest.fixture(scope="module")
def base_household(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Household]:
    base = tmp_path_factory.mktemp("folder")
    with running_hub(base / "hub") as hub:
        yield Household.create(hub, base, ["laptop", "desktop"], arena="seed")


@pytest.fixture
def pair(base_household: Household, tmp_path: Path) -> Household:
    """laptop pinned (the default), desktop re-joined with `shoal arena join --on-demand`."""
    household = base_household.with_arena(next(_names), tmp_path)
    desk = household["desktop"]
    db = desk.open_db()
    try:
        registry = ArenaRegistry(db)
        registry.remove(registry.by_name(desk.arena).arena_id)
    finally:
        db.close()
    shutil.rmtree(desk.root)
    desk.cli("arena", "join", desk.arena, str(desk.root), "--on-demand")
    return household


def converge(household: Household) -> None:
    asyncio.run(household.converge())


def stub_doc(path: Path) -> dict[str, object]:
    data = path.read_bytes()
    assert len(data) <= MAX_STUB_BYTES
    doc = json.loads(data)
    assert isinstance(doc, dict)
    return doc


def residency_of(device: Device, path: str) -> Residency:
    db = device.open_db()
    try:
        arena = ArenaRegistry(db).by_name(device.arena)
        entry = ArenaIndex(db, arena.arena_id).get(path)
    finally:
        db.close()
    assert entry is not None
    return entry.residency


def folder_share(device: Device) -> int:
    """The bytes `shoal cache status` counts for files kept in arena folders."""
    line = next(x for x in device.cli("cache", "status").stdout.splitlines() if x.startswith("folder files"))
    return int(line.split("\t")[1])


def assert_clean(household: Household) -> None:
    for device in household.devices:
        assert asyncio.run(fsck_device(device)) == [], device.name


def test_on_demand_stubs_hydrate_pin_and_follow_remote_changes(pair: Household) -> None:
    laptop, desk = pair["laptop"], pair["desktop"]
    a, b = laptop.root, desk.root
    big = os.urandom(3 * 1024 * 1024 + 5)
    (a / "big.bin").write_bytes(big)
    (a / "a.txt").write_text("first\n")
    os.utime(a / "a.txt", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    (a / "keep").mkdir()
    (a / "keep" / "k.txt").write_text("keep me\n")
    converge(pair)

    # Stubs with the right names, sizes and mtimes; no content fetched; the user's notes.shoal is content.
    assert not (b / "big.bin").exists()
    assert not (b / "a.txt").exists()
    doc = stub_doc(b / "a.txt.shoal")
    assert doc["shoal-stub"] == 1
    assert doc["path"] == "a.txt"
    assert doc["size"] == len("first\n")
    assert (b / "a.txt.shoal").stat().st_mtime_ns == (a / "a.txt").stat().st_mtime_ns
    assert stub_doc(b / "big.bin.shoal")["size"] == len(big)
    assert (b / "keep" / "k.txt.shoal").is_file()
    assert sum(p.stat().st_size for p in b.rglob("*") if p.is_file()) < 16 * 1024  # nothing big here
    assert residency_of(desk, "big.bin") is Residency.ONLINE_ONLY

    # Files called *.shoal that are not this path's stub are ordinary files: a user's notes, and a
    # copy of a stub naming another path (never trusted as that file).
    (b / "notes.shoal").write_text("my own notes, not a stub\n")
    shutil.copy(b / "a.txt.shoal", b / "forged.shoal")
    converge(pair)
    assert (a / "notes.shoal").read_text() == "my own notes, not a stub\n"
    assert stub_doc(a / "forged.shoal")["path"] == "a.txt"
    assert (a / "a.txt").read_text() == "first\n"

    shown = desk.cli("status", str(b / "big.bin.shoal")).stdout
    assert f"big.bin\tonline-only\t{len(big)} bytes\tstub only" in shown

    # hydrate gives exactly the laptop's bytes, and it stays unpinned (cached).
    desk.cli("hydrate", str(b / "big.bin.shoal"))
    assert (b / "big.bin").read_bytes() == big
    assert not (b / "big.bin.shoal").exists()
    assert residency_of(desk, "big.bin") is Residency.CACHED
    assert "big.bin\tcached" in desk.cli("status", str(b / "big.bin")).stdout

    # pin a folder: everything below is fetched, and what arrives there later comes as content.
    k_stub = (b / "keep" / "k.txt.shoal").read_bytes()
    desk.cli("pin", str(b / "keep"))
    assert (b / "keep" / "k.txt").read_text() == "keep me\n"
    assert not (b / "keep" / "k.txt.shoal").exists()
    (a / "keep" / "later.txt").write_text("later\n")
    (a / "keep" / "k.txt.shoal").write_bytes(k_stub)  # content that is a stub of k.txt, byte for byte
    (a / "top.txt").write_text("top\n")
    (a / "a.txt").write_text("second version\n")
    big2 = os.urandom(1024 * 1024)
    (a / "big.bin").write_bytes(big2)
    converge(pair)
    assert (b / "keep" / "later.txt").read_text() == "later\n"
    assert residency_of(desk, "keep/later.txt") is Residency.PINNED
    assert (b / "keep" / "k.txt.shoal").read_bytes() == k_stub  # synced as content, taken for nothing else
    assert (b / "keep" / "k.txt").read_text() == "keep me\n"
    assert (b / "top.txt.shoal").is_file()
    assert not (b / "top.txt").exists()
    assert stub_doc(b / "a.txt.shoal")["size"] == len("second version\n")  # the stub follows edits
    assert (b / "big.bin").read_bytes() == big2  # a cached file gets the new content
    shown = desk.cli("status", str(b / "keep")).stdout
    assert (
        f"keep/\tpinned\t{len('keep me') + len('later') + 2 + len(k_stub)} bytes\t3 of 3 files local" in shown
    )

    # unpin keeps the content (cached); what arrives later in the folder is a stub.
    desk.cli("unpin", str(b / "keep"))
    assert residency_of(desk, "keep/k.txt") is Residency.CACHED
    assert (b / "keep" / "k.txt").read_text() == "keep me\n"
    (a / "keep" / "after.txt").write_text("after\n")
    converge(pair)
    assert (b / "keep" / "after.txt.shoal").is_file()
    assert_clean(pair)

    # Deleting a stub deletes the file everywhere (restorable); renaming one renames it, no upload.
    (b / "a.txt.shoal").unlink()
    (b / "top.txt.shoal").rename(b / "moved.txt.shoal")
    report = asyncio.run(desk.sync())
    assert report.uploaded_bytes == 0
    converge(pair)
    assert not (a / "a.txt").exists()
    assert not (a / "top.txt").exists()
    assert (a / "moved.txt").read_text() == "top\n"
    assert stub_doc(b / "moved.txt.shoal")["path"] == "moved.txt"
    laptop.cli("restore", str(a / "a.txt"))
    converge(pair)
    assert (a / "a.txt").read_text() == "second version\n"
    assert (b / "a.txt.shoal").is_file()
    assert_clean(pair)


def test_dehydrate_refuses_unpushed_edits_and_a_lost_chunk_keeps_the_stub(pair: Household) -> None:
    laptop, desk = pair["laptop"], pair["desktop"]
    a, b = laptop.root, desk.root
    (a / "doc.txt").write_text("from the laptop\n")
    (a / "lost.bin").write_bytes(os.urandom(2000))
    (a / "twin").write_text("twin\n")  # its stub is twin.shoal, the name of the next file
    (a / "twin.shoal").write_text("not a stub\n")
    converge(pair)
    assert stub_doc(b / "twin.shoal")["path"] == "twin"
    assert stub_doc(b / "twin.shoal.shoal")["path"] == "twin.shoal"
    converge(pair)
    assert (a / "twin").read_text() == "twin\n"
    assert (a / "twin.shoal").read_text() == "not a stub\n"
    before = folder_share(desk)  # the device's other arenas hold files too
    desk.cli("hydrate", str(b))
    assert (b / "doc.txt").read_text() == "from the laptop\n"
    assert (b / "twin.shoal").read_text() == "not a stub\n"
    assert (b / "twin").read_text() == "twin\n"
    assert folder_share(desk) - before == 2000 + 16 + 5 + 11  # hydrated files count against the cache

    # An edit not yet pushed: dehydrate refuses, names the file, and the edit survives.
    (b / "doc.txt").write_text("edited on the desktop\n")
    refused = desk.cli("dehydrate", str(b / "doc.txt"), check=False)
    assert refused.returncode == 10
    assert "doc.txt" in refused.stderr
    assert (b / "doc.txt").read_text() == "edited on the desktop\n"
    converge(pair)
    desk.cli("dehydrate", str(b / "doc.txt"))
    assert not (b / "doc.txt").exists()
    assert stub_doc(b / "doc.txt.shoal")["path"] == "doc.txt"
    assert (a / "doc.txt").read_text() == "edited on the desktop\n"

    # A user file next to its stub is an edit of that file: pushed, the stale stub removed.
    (b / "doc.txt").write_text("written over the stub\n")
    converge(pair)
    assert (a / "doc.txt").read_text() == "written over the stub\n"
    assert not (b / "doc.txt.shoal").exists()

    # The hub lost a chunk: hydrate fails naming the file and leaves the stub.
    desk.cli("dehydrate", str(b / "lost.bin"))
    for blob in stored_blobs(pair.hub.data_dir / "chunks"):  # files and packed blobs alike
        if _holds(blob.size):
            delete_blob(blob)
    failed = desk.cli("hydrate", str(b / "lost.bin.shoal"), check=False)
    assert failed.returncode != 0
    assert "lost.bin" in failed.stderr
    assert (b / "lost.bin.shoal").is_file()
    assert not (b / "lost.bin").exists()
    assert (a / "lost.bin").stat().st_size == 2000  # the laptop still has it

    # A new version reaches the stub, and hydrates.
    (a / "lost.bin").write_bytes(b"a new version\n")
    converge(pair)
    desk.cli("hydrate", str(b / "lost.bin.shoal"))
    assert (b / "lost.bin").read_bytes() == b"a new version\n"
    assert_clean(pair)


def test_kill_9_during_hydrate_and_dehydrate_loses_nothing(pair: Household) -> None:
    laptop, desk = pair["laptop"], pair["desktop"]
    a, b = laptop.root, desk.root
    files = {f"f{i}.bin": os.urandom(300_000 + i) for i in range(12)}
    for name, data in files.items():
        (a / name).write_bytes(data)
    converge(pair)

    def killed_midway(*args: str) -> None:
        """Run `shoal ARGS` as the desktop and kill -9 it once it has changed something on disk."""
        before = {p.name for p in b.iterdir()}
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", *args],
            env=shoal_env(desk.env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if {p.name for p in b.iterdir()} != before:
                proc.kill()
                break
            time.sleep(0.005)
        proc.wait(timeout=60)

    def nothing_lost() -> None:
        for name, data in files.items():
            here = b / name
            assert here.exists() or (b / f"{name}.shoal").exists(), name
            if here.exists() and not (b / f"{name}.shoal").exists():
                assert here.read_bytes() == data
        converge(pair)
        assert {n: (a / n).read_bytes() for n in files} == files  # no spurious delete or change
        assert_clean(pair)

    killed_midway("hydrate", str(b))
    nothing_lost()
    desk.cli("hydrate", str(b))
    assert {n: (b / n).read_bytes() for n in files} == files
    killed_midway("dehydrate", str(b))
    nothing_lost()
    desk.cli("dehydrate", str(b))
    assert not any((b / n).exists() for n in files)
    desk.cli("hydrate", str(b))
    assert {n: (b / n).read_bytes() for n in files} == files
    assert_clean(pair)


def _holds(size: int) -> bool:
    """Chunks of about 2000 bytes (the only ones this test makes that small and random)."""
    return 1900 < size < 2200


def test_interrupted_hydrate_and_dehydrate_leave_file_or_stub(
    pair: Household, monkeypatch: pytest.MonkeyPatch
) -> None:
    laptop, desk = pair["laptop"], pair["desktop"]
    a, b = laptop.root, desk.root
    (a / "one.txt").write_text("one\n")
    (a / "two.txt").write_text("two\n")
    (a / "three.txt").write_text("three\n")
    converge(pair)

    # A rename elsewhere moves the stub here, and the stub names its new path.
    (a / "sub").mkdir()
    (a / "three.txt").rename(a / "sub" / "3.txt")
    converge(pair)
    assert not (b / "three.txt.shoal").exists()
    assert stub_doc(b / "sub" / "3.txt.shoal")["path"] == "sub/3.txt"

    # A sync round holds the arena: hydrate waits for it, says so, and runs once it is over.
    async def contended() -> bool:
        told = asyncio.Event()
        async with desk.syncer() as s:
            async with residency.arena_lock(s.ctx):
                task = asyncio.create_task(residency.hydrate(s.ctx, ["sub/3.txt"], on_wait=told.set))
                await asyncio.wait_for(told.wait(), 60)
                blocked = not task.done()
            await task
        return blocked

    assert asyncio.run(contended())
    assert (b / "sub" / "3.txt").read_text() == "three\n"

    class KilledError(Exception):
        pass

    def killed(*_args: object, **_kw: object) -> None:
        raise KilledError

    async def run(action: str, path: str) -> None:
        async with desk.syncer() as s:
            if action == "hydrate":
                await residency.hydrate(s.ctx, [path])
            else:
                await residency.dehydrate(s.ctx, [path])

    # hydrate cut after the content is in place, before the index and the stub follow
    with monkeypatch.context() as m:
        m.setattr(residency, "_put", killed)
        with pytest.raises(KilledError):
            asyncio.run(run("hydrate", "one.txt"))
    assert (b / "one.txt").read_text() == "one\n"
    converge(pair)
    assert (b / "one.txt").read_text() == "one\n"
    assert not (b / "one.txt.shoal").exists()

    # dehydrate cut after the file is gone, before the index says so: the stub stands for it
    asyncio.run(run("hydrate", "two.txt"))
    with monkeypatch.context() as m:
        m.setattr(residency, "_put", killed)
        with pytest.raises(KilledError):
            asyncio.run(run("dehydrate", "two.txt"))
    assert (b / "two.txt.shoal").is_file()
    converge(pair)
    assert (a / "two.txt").read_text() == "two\n"  # no spurious delete
    asyncio.run(run("hydrate", "two.txt"))
    assert (b / "two.txt").read_text() == "two\n"

    # dehydrate cut after the stub is written, before the file goes: both stay, then only the file
    with monkeypatch.context() as m:
        m.setattr(residency, "delete", killed)
        with pytest.raises(KilledError):
            asyncio.run(run("dehydrate", "two.txt"))
    assert (b / "two.txt").read_text() == "two\n"
    assert (b / "two.txt.shoal").is_file()
    converge(pair)
    assert (b / "two.txt").read_text() == "two\n"
    assert not (b / "two.txt.shoal").exists()
    assert (a / "two.txt").read_text() == "two\n"
    assert_clean(pair)
