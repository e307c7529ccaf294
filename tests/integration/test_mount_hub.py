"""`shoal mount` against a real hub: content written on another device hydrates on open, and one
byte of a 1 GiB file costs at most two of the hub's chunk requests."""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from shoal.mount.mountpoint import is_mounted, is_stale
from shoal.state.arenas import ArenaRegistry
from shoal.testing.devices import Device, Household, fsck_device, snapshot
from shoal.testing.hubproc import HubProcess, run_shoal, shoal_env

pytestmark = pytest.mark.fuse

MIB = 1 << 20
CHUNK_ROUTE = re.compile(r'route="[^"]*/chunks/\{chunk_id\}"')


def chunk_gets(hub: HubProcess) -> int:
    """Chunk downloads the hub served (its request counter for GET .../chunks/{chunk_id})."""
    text = httpx.get(hub.base_url + "/metrics", timeout=10).text
    assert "shoal_hub_requests_total" in text
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("shoal_hub_requests_total{")
            and 'method="GET"' in line
            and CHUNK_ROUTE.search(line)
        ):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


@contextmanager
def mounted(device: Device, where: Path, *extra: str) -> Iterator[Path]:
    where.mkdir(exist_ok=True)
    log = (where.parent / f"{where.name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoal", "mount", device.arena, str(where), "--cache-size", "256M", *extra],
        stdout=log,
        stderr=log,
        env=shoal_env(device.env),
    )
    try:
        deadline = time.monotonic() + 30
        while not (is_mounted(where) and not is_stale(where) and os.listdir(where)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((where.parent / f"{where.name}.log").read_text())
            time.sleep(0.05)
        yield where
    finally:
        if is_mounted(where):
            run_shoal("umount", str(where), check=False)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _write_random(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("wb") as f:
        for _ in range(size // (16 * MIB)):
            f.write(rng.randbytes(16 * MIB))


@pytest.mark.slow
def test_hydrate_on_open_and_one_byte_of_a_large_file(hub_sqlite: HubProcess, tmp_path: Path) -> None:
    hub = hub_sqlite  # the hub's metadata backend is not what this exercises: one is enough
    household = Household.create(hub, tmp_path, ["laptop", "desktop"])
    laptop, desktop = household["laptop"], household["desktop"]
    notes = os.urandom(3 * MIB + 17)
    (laptop.root / "docs").mkdir()
    (laptop.root / "docs" / "notes.bin").write_bytes(notes)
    asyncio.run(household.converge())

    before = chunk_gets(hub)
    with mounted(desktop, tmp_path / "desktop-mnt") as mnt:
        assert (mnt / "docs" / "notes.bin").read_bytes() == notes  # hydrated from the hub on open
        assert chunk_gets(hub) > before
        assert os.getxattr(mnt / "docs" / "notes.bin", "user.shoal.residency") == b"pinned"
    with (
        mounted(desktop, tmp_path / "desktop-ro", "--read-only") as mnt,
        pytest.raises(OSError, match="Read-only"),
    ):
        (mnt / "docs" / "new.txt").write_bytes(b"x")

    big = laptop.root / "big.bin"
    _write_random(big, 1024 * MIB, seed=3)
    asyncio.run(laptop.sync())
    offset = random.Random(9).randrange(1024 * MIB)
    with big.open("rb") as f:
        f.seek(offset)
        expected = f.read(1)
    with mounted(laptop, tmp_path / "laptop-mnt") as mnt:
        assert os.stat(mnt / "big.bin").st_size == 1024 * MIB  # from the index: nothing fetched
        before = chunk_gets(hub)
        with (mnt / "big.bin").open("rb", buffering=0) as f:
            f.seek(offset)
            assert f.read(1) == expected
        assert chunk_gets(hub) - before <= 2


@pytest.mark.slow
def test_a_write_in_a_mount_reaches_the_other_device_and_back(hub_sqlite: HubProcess, tmp_path: Path) -> None:
    household = Household.create(hub_sqlite, tmp_path, ["laptop", "desktop"])
    laptop, desktop = household["laptop"], household["desktop"]
    (laptop.root / "a.txt").write_bytes(b"first version\n")
    asyncio.run(household.converge())
    payload = os.urandom(2 * MIB + 5)
    with mounted(laptop, tmp_path / "laptop-mnt", "--refresh", "0.2") as mnt:
        (mnt / "made-in-mount.bin").write_bytes(payload)
        with (mnt / "a.txt").open("r+b") as f:
            f.write(b"FIRST")
        (mnt / "sub").mkdir()
        (mnt / "sub" / "note.txt").write_bytes(b"in a new folder")
        assert (mnt / "made-in-mount.bin").read_bytes() == payload
        asyncio.run(household.converge())
        assert (desktop.root / "made-in-mount.bin").read_bytes() == payload
        assert (desktop.root / "a.txt").read_bytes() == b"FIRST version\n"
        assert (desktop.root / "sub" / "note.txt").read_bytes() == b"in a new folder"

        (desktop.root / "from-desktop.txt").write_bytes(b"written on the desktop")
        asyncio.run(household.converge())
        deadline = time.monotonic() + 20
        while not (mnt / "from-desktop.txt").exists():
            assert time.monotonic() < deadline, "the desktop's file never appeared in the laptop's mount"
            time.sleep(0.1)
        assert (mnt / "from-desktop.txt").read_bytes() == b"written on the desktop"

    # Offline: the mount still starts, cached content reads, the rest is EIO, writes wait in the folder.
    hub_sqlite.stop()
    with mounted(laptop, tmp_path / "offline-mnt") as mnt:
        assert (mnt / "from-desktop.txt").read_bytes() == b"written on the desktop"  # cached above
        with pytest.raises(OSError, match="Input/output error"):
            (mnt / "sub" / "note.txt").read_bytes()  # never fetched on this device's cache
        (mnt / "offline.txt").write_bytes(b"written while the hub was away")
    assert "sub/note.txt" in (tmp_path / "offline-mnt.log").read_text()  # the log line says why
    hub_sqlite.start()
    asyncio.run(household.converge())
    assert (desktop.root / "offline.txt").read_bytes() == b"written while the hub was away"


@pytest.mark.slow
def _rejoin_on_demand(household: Household, name: str) -> None:
    device = household[name]
    db = device.open_db()
    try:
        registry = ArenaRegistry(db)
        registry.remove(registry.by_name(device.arena).arena_id)
    finally:
        db.close()
    shutil.rmtree(device.root)
    device.cli("arena", "join", device.arena, str(device.root), "--on-demand")


def test_online_only_files_edited_deleted_and_moved_through_a_mount(
    hub_sqlite: HubProcess, tmp_path: Path
) -> None:
    household = Household.create(hub_sqlite, tmp_path, ["laptop", "desktop"])
    laptop, desktop = household["laptop"], household["desktop"]
    _rejoin_on_demand(household, "desktop")
    a, b = laptop.root, desktop.root
    (a / "edit.txt").write_bytes(b"old content\n")
    (a / "doomed.txt").write_bytes(b"to be deleted")
    (a / "move-me.bin").write_bytes(os.urandom(300_000))
    asyncio.run(household.converge())
    assert (b / "edit.txt.shoal").is_file()
    assert not (b / "edit.txt").exists()

    with mounted(desktop, tmp_path / "desk-mnt", "--refresh", "0.2") as mnt:
        assert (mnt / "edit.txt").read_bytes() == b"old content\n"  # fetched through the mount
        with (mnt / "edit.txt").open("r+b") as f:
            f.write(b"NEW")
        (mnt / "doomed.txt").unlink()
        (mnt / "move-me.bin").rename(mnt / "moved.bin")
        asyncio.run(household.converge())

    assert (a / "edit.txt").read_bytes() == b"NEW content\n"
    assert not (a / "doomed.txt").exists()
    assert not (a / "move-me.bin").exists()
    assert (a / "moved.bin").is_file()
    assert not [p.name for p in a.iterdir() if "sync-conflict" in p.name]
    assert not [p.name for p in b.iterdir() if "sync-conflict" in p.name]
    # The desktop keeps the edited file local, the moved one still online-only.
    assert (b / "edit.txt").read_bytes() == b"NEW content\n"
    assert not (b / "edit.txt.shoal").exists()
    assert (b / "moved.bin.shoal").is_file()
    assert not (b / "doomed.txt.shoal").exists()
    assert set(snapshot(a, mtimes=False)) >= {"edit.txt", "moved.bin"}
    assert asyncio.run(fsck_device(desktop)) == []
    assert asyncio.run(fsck_device(laptop)) == []
