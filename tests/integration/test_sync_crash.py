"""kill -9 of a device mid-upload and mid-apply, and a hub restart mid-sync: after a restart the
devices converge, no partial file is ever visible at a real path, nothing is lost or duplicated."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.testing.devices import Device, Household, fsck_device, snapshot
from shoal.testing.hubproc import running_hub, shoal_env
from shoal.testing.processes import children, kill_when, wait_all_gone
from shoal.worktree.entries import TEMP_PREFIX

pytestmark = pytest.mark.slow
_names = (f"crash{n}" for n in itertools.count())
BIG = 24 * 1024 * 1024 + 12345


@pytest.fixture(scope="module")
def base_household(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Household]:
    base = tmp_path_factory.mktemp("crash")
    with running_hub(base / "hub") as hub:
        yield Household.create(hub, base, ["laptop", "desktop"], arena="seed")


@pytest.fixture
def pair(base_household: Household, tmp_path: Path) -> Household:
    return base_household.with_arena(next(_names), tmp_path)


def start_sync(device: Device) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "shoal", "sync", "--once", "--quiet", device.arena]
    return subprocess.Popen(
        args, env=shoal_env(device.env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stored_chunks(household: Household) -> int:
    return sum(len(files) for _, _, files in os.walk(household.hub.data_dir / "chunks"))


def temp_files(root: Path) -> list[Path]:
    return list(root.rglob(f"{TEMP_PREFIX}*"))


def settle(h: Household) -> None:
    asyncio.run(h.converge())
    trees = [snapshot(d.root) for d in h.devices]
    assert all(t == trees[0] for t in trees)
    for device in h.devices:
        assert asyncio.run(fsck_device(device)) == []


def test_kill_mid_upload_then_restart(pair: Household) -> None:
    laptop = pair["laptop"]
    payload = os.urandom(BIG)
    (laptop.root / "big.bin").write_bytes(payload)
    for n in range(30):
        (laptop.root / f"small{n}.txt").write_text(f"small {n}\n")
    before = stored_chunks(pair)
    assert kill_when(start_sync(laptop), lambda: stored_chunks(pair) > before), (
        "the sync ended before the kill"
    )
    settle(pair)
    assert (pair["desktop"].root / "big.bin").read_bytes() == payload
    versions = laptop.cli("versions", "big.bin", "--arena", laptop.arena).stdout.splitlines()
    assert len(versions) == 2  # header + exactly one put: the retried commit created nothing twice


def test_kill_mid_push_of_many_small_files_leaves_no_worker_and_converges(pair: Household) -> None:
    laptop = pair["laptop"]
    for n in range(1500):  # enough small files for the push to read and seal them in worker processes
        folder = laptop.root / f"d{n % 10}"
        folder.mkdir(exist_ok=True)
        (folder / f"note{n:04d}.txt").write_text(f"note {n}\n" * (n % 40 + 1))
    proc = start_sync(laptop)
    workers: set[int] = set()

    def sealing() -> bool:
        workers.update(children(proc.pid))
        return bool(workers) and stored_chunks(pair) > 0

    assert kill_when(proc, sealing), "the push ended before its worker processes were seen"
    assert not wait_all_gone(workers), "a worker process outlived the killed push"
    settle(pair)
    assert len(list(pair["desktop"].root.rglob("note*.txt"))) == 1500


def test_kill_mid_apply_never_shows_a_partial_file(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    payload = os.urandom(BIG)
    (laptop.root / "big.bin").write_bytes(payload)
    asyncio.run(laptop.sync())
    seen_partial = []

    def writing() -> bool:
        target = desktop.root / "big.bin"
        if target.exists() and target.stat().st_size != len(payload):
            seen_partial.append(target.stat().st_size)
        return bool(temp_files(desktop.root))

    assert kill_when(start_sync(desktop), writing), "the sync ended before the kill"
    target = desktop.root / "big.bin"
    assert not seen_partial
    assert not target.exists() or target.read_bytes() == payload
    settle(pair)
    assert target.read_bytes() == payload
    assert temp_files(desktop.root) == []


def test_hub_restart_mid_sync(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    for n in range(200):
        (laptop.root / f"doc{n:03}.txt").write_text(f"document {n}\n" * 50)
    (laptop.root / "big.bin").write_bytes(os.urandom(BIG))
    proc = start_sync(laptop)
    time.sleep(0.5)
    pair.hub.restart()
    proc.wait(120)
    settle(pair)
    assert len(list(desktop.root.glob("doc*.txt"))) == 200


def test_a_hub_restored_from_an_older_backup_never_turns_into_deletions(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    (laptop.root / "old.txt").write_text("before the backup\n")
    settle(pair)
    hub = pair.hub
    hub.stop()
    backup = hub.data_dir.parent / f"{hub.data_dir.name}-backup-{next(_names)}"
    shutil.copytree(hub.data_dir, backup)
    hub.start()
    (laptop.root / "new.txt").write_text("after the backup\n")
    (laptop.root / "old.txt").write_text("edited after the backup\n")
    settle(pair)
    hub.stop()
    shutil.rmtree(hub.data_dir)
    shutil.copytree(backup, hub.data_dir)
    hub.start()
    report = asyncio.run(laptop.sync())
    assert any("restored from a backup?" in why for why in report.skipped)
    settle(pair)
    assert (desktop.root / "new.txt").read_text() == "after the backup\n"
    assert (desktop.root / "old.txt").read_text() == "edited after the backup\n"
    assert (laptop.root / "new.txt").read_text() == "after the backup\n"


class _CrashError(Exception):
    """Stands for a kill right after the hub acknowledged a commit."""


def test_a_commit_acknowledged_just_before_a_crash_is_recorded_once(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    (laptop.root / "once.txt").write_text("exactly one version\n")

    async def crash_after_commit() -> None:
        async with laptop.syncer() as s:
            real = s.ctx.client.commit

            async def commit_then_die(*args: object, **kw: object) -> object:
                await real(*args, **kw)  # type: ignore[arg-type]
                raise _CrashError

            s.ctx.client.commit = commit_then_die  # type: ignore[method-assign]
            with pytest.raises(_CrashError):
                await s.sync_once()
            assert len(s.ctx.index.pending_pushes()) == 1  # journalled, not yet in the index

    asyncio.run(crash_after_commit())
    settle(pair)
    assert (desktop.root / "once.txt").read_text() == "exactly one version\n"
    versions = laptop.cli("versions", "once.txt", "--arena", laptop.arena).stdout.splitlines()
    assert len(versions) == 2  # header + one put: the replay under the same key created nothing
