"""The sync commands as a user meets them: join, sync --once, conflicts, log, versions, restore,
and deletion safety (an emptied or missing folder pauses; mass deletes wait for confirmation)."""

from __future__ import annotations

import asyncio
import itertools
import os
import pty
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.cli.exit_codes import PAUSED
from shoal.testing.devices import Household, fsck_device, snapshot
from shoal.testing.hubproc import running_hub
from shoal.testing.processes import read_terminal

pytestmark = pytest.mark.slow  # each command is a fresh process (about 2 s on a loaded machine)

_names = (f"cli{n}" for n in itertools.count())


@pytest.fixture(scope="module")
def base_household(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Household]:
    base = tmp_path_factory.mktemp("cli")
    with running_hub(base / "hub") as hub:
        yield Household.create(hub, base, ["laptop", "desktop"], arena="seed")


@pytest.fixture
def pair(base_household: Household, tmp_path: Path) -> Household:
    return base_household.with_arena(next(_names), tmp_path)


def test_join_and_sync_once_from_the_command_line(base_household: Household, tmp_path: Path) -> None:
    laptop = base_household["laptop"]
    name = next(_names)
    laptop.cli("arena", "create", name)
    folder = tmp_path / "via-cli"
    joined = laptop.cli("arena", "join", name, str(folder))
    assert f"joined arena {name}" in joined.stdout
    (folder / "hello.txt").write_text("hi\n")
    result = laptop.cli("sync", "--once", name)
    assert "pushed 1" in result.stdout
    desktop = base_household["desktop"]
    desktop.cli("arena", "join", name, str(tmp_path / "desktop-cli"))
    desktop.cli("sync", "--once", name)
    assert (tmp_path / "desktop-cli" / "hello.txt").read_text() == "hi\n"
    wrong = laptop.cli("arena", "join", name, str(tmp_path / "again"), check=False)
    assert wrong.returncode != 0
    assert f"already joined on this device, at {folder}" in wrong.stderr
    assert f"shoal arena leave {name}" in wrong.stderr
    assert not (tmp_path / "again").exists()


def test_leave_pushes_first_keeps_the_files_and_the_arena_joins_again_elsewhere(
    pair: Household, tmp_path: Path
) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    (laptop.root / "kept.txt").write_text("synced before\n")
    asyncio.run(pair.converge())
    (laptop.root / "last.txt").write_text("written just before leaving\n")  # never scanned yet

    left = laptop.cli("arena", "leave", laptop.arena)
    assert f"its files stay in {laptop.root}" in left.stdout
    asyncio.run(desktop.sync())
    assert (desktop.root / "last.txt").read_text() == "written just before leaving\n"
    assert (laptop.root / "kept.txt").read_text() == "synced before\n"
    assert not (laptop.root / ".shoal-arena").exists()
    assert laptop.arena not in laptop.cli("status").stdout
    again = laptop.cli("sync", "--once", laptop.arena, check=False)
    assert again.returncode != 0
    assert "is joined on this device" in again.stderr
    (laptop.root / "after.txt").write_text("no longer synced\n")

    moved = tmp_path / "moved"
    laptop.cli("arena", "join", laptop.arena, str(moved))
    laptop.cli("sync", "--once", laptop.arena)
    assert snapshot(moved, mtimes=False) == snapshot(desktop.root, mtimes=False)
    assert not (moved / "after.txt").exists()
    asyncio.run(desktop.sync())
    assert not (desktop.root / "after.txt").exists()


def test_leave_without_the_hub_is_refused_unless_forced(tmp_path: Path) -> None:
    with running_hub(tmp_path / "hub") as hub:
        household = Household.create(hub, tmp_path, ["laptop"], arena="offline")
        laptop = household["laptop"]
        (laptop.root / "draft.txt").write_text("only here\n")
        hub.stop()
        refused = laptop.cli("arena", "leave", "offline", check=False)
        assert refused.returncode != 0
        assert "so it was not left" in refused.stderr
        assert "--force" in refused.stderr
        assert (laptop.root / ".shoal-arena").exists()
        assert "offline" in laptop.cli("status").stdout
        forced = laptop.cli("arena", "leave", "offline", "--force")
        assert "left arena offline" in forced.stdout
        assert (laptop.root / "draft.txt").read_text() == "only here\n"
        hub.start()


def edit_doc_on_both(pair: Household) -> None:
    """doc.txt synced, then edited on both devices before either syncs (the desktop's is newer)."""
    (pair["laptop"].root / "doc.txt").write_text("base\n")
    asyncio.run(pair.converge())
    (pair["laptop"].root / "doc.txt").write_text("laptop version\n")
    (pair["desktop"].root / "doc.txt").write_text("desktop version, newer\n")


def test_conflicts_are_listed_and_resolved_keeping_theirs(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    edit_doc_on_both(pair)
    asyncio.run(pair.sync_all(["laptop", "desktop"]))
    asyncio.run(pair.converge())
    listed = laptop.cli("conflicts", "--arena", laptop.arena).stdout
    assert "doc.txt" in listed
    assert "sync-conflict" in listed
    copy = listed.split()[2]
    kept_at_path = (laptop.root / "doc.txt").read_text()
    in_copy = (laptop.root / copy).read_text()
    assert {kept_at_path, in_copy} == {"laptop version\n", "desktop version, newer\n"}
    laptop.cli("conflicts", "resolve", str(laptop.root / "doc.txt"), "--keep", "theirs")
    assert (laptop.root / "doc.txt").read_text() == in_copy
    assert not (laptop.root / copy).exists()
    asyncio.run(pair.converge())
    assert snapshot(desktop.root) == snapshot(laptop.root)
    assert "no conflicts" in laptop.cli("conflicts", "--arena", laptop.arena).stderr


def test_a_resolution_made_before_seeing_the_winners_recommit_holds(pair: Household) -> None:
    laptop = pair["laptop"]
    edit_doc_on_both(pair)
    # The desktop's version wins, and the desktop commits it again on top of both in its last
    # round, which the laptop has not pulled when its user picks the copy.
    asyncio.run(pair.sync_all(["laptop", "desktop", "laptop", "desktop"]))
    listed = laptop.cli("conflicts", "--arena", laptop.arena).stdout
    copy = listed.split()[2]
    chosen = (laptop.root / copy).read_text()
    laptop.cli("conflicts", "resolve", str(laptop.root / copy), "--keep", "theirs")
    asyncio.run(pair.converge())
    for device in pair.devices:
        assert (device.root / "doc.txt").read_text() == chosen, device.name
        assert not list(device.root.glob("doc.sync-conflict-*")), device.name
        assert "no conflicts" in device.cli("conflicts", "--arena", device.arena).stderr


def test_log_versions_and_restore_in_place_and_to_a_copy(pair: Household, tmp_path: Path) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    f = laptop.root / "essay.txt"
    f.write_text("first draft\n")
    asyncio.run(pair.converge())
    f.write_text("second draft\n")
    asyncio.run(pair.converge())
    f.unlink()
    asyncio.run(pair.converge())
    assert not (desktop.root / "essay.txt").exists()

    log = laptop.cli("log", "--arena", laptop.arena).stdout
    assert log.count("essay.txt") == 3
    assert "\tlaptop\tdelete\tessay.txt" in log  # devices by the name they logged in with
    versions = laptop.cli("versions", "essay.txt", "--arena", laptop.arena).stdout.splitlines()
    assert len(versions) == 4  # header, delete, two puts
    assert "deleted" in versions[1]
    assert all(line.split("\t")[2] == "laptop" for line in versions[1:])
    first = versions[-1].split("\t")[0]

    out = tmp_path / "out"
    out.mkdir()
    laptop.cli("restore", "essay.txt", "--arena", laptop.arena, "--version", first, "--to", str(out))
    assert (out / "essay.txt").read_text() == "first draft\n"

    laptop.cli("restore", "essay.txt", "--arena", laptop.arena)  # the last version before the delete
    assert f.read_text() == "second draft\n"
    asyncio.run(pair.converge())
    assert (desktop.root / "essay.txt").read_text() == "second draft\n"


def test_an_emptied_root_pauses_and_nothing_is_deleted_anywhere(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    for n in range(12):
        (laptop.root / f"f{n}.txt").write_text(f"file {n}\n")
    asyncio.run(pair.converge())
    before = snapshot(desktop.root)
    # An unmounted disk: the mount point is there, empty, without the arena's marker.
    shutil.rmtree(laptop.root)
    laptop.root.mkdir()
    result = laptop.cli("sync", "--once", laptop.arena, check=False)
    assert result.returncode == PAUSED
    assert "is empty but 12 synced paths were in it" in result.stderr
    asyncio.run(desktop.sync())
    assert snapshot(desktop.root) == before
    status = laptop.cli("status", "--json", check=False).stdout
    assert "empty" in status

    # The disk comes back: the pause lifts and nothing was lost.
    shutil.rmtree(laptop.root)
    shutil.copytree(desktop.root, laptop.root, symlinks=True)
    asyncio.run(pair.converge())
    assert snapshot(laptop.root, mtimes=False) == snapshot(desktop.root, mtimes=False)


def test_a_missing_root_pauses_without_touching_the_hub(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    (laptop.root / "keep.txt").write_text("keep me\n")
    asyncio.run(pair.converge())
    shutil.rmtree(laptop.root)
    result = laptop.cli("sync", "--once", laptop.arena, check=False)
    assert result.returncode == PAUSED
    assert "missing" in result.stderr
    asyncio.run(desktop.sync())
    assert (desktop.root / "keep.txt").read_text() == "keep me\n"


def test_paths_that_cannot_be_synced_are_named_and_the_rest_syncs(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    (laptop.root / "fine.txt").write_text("fine\n")
    (laptop.root / "docs").mkdir()
    (laptop.root / "docs" / "r\u00e9sum\u00e9.txt").write_text("NFC\n")
    (laptop.root / "docs" / "re\u0301sume\u0301.txt").write_text("NFD\n")
    os.mkfifo(laptop.root / "docs" / "[pipe]")
    result = laptop.cli("sync", "--once", laptop.arena)
    assert result.stderr.count("the same after Unicode normalisation") == 2
    assert "not synced: docs/[pipe]: not a file, folder or symlink" in result.stderr
    asyncio.run(desktop.sync())
    assert sorted(p.name for p in desktop.root.rglob("*") if not p.name.startswith(".")) == [
        "docs",
        "fine.txt",
    ]


def test_mass_delete_waits_for_confirmation(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    for n in range(20):
        (laptop.root / f"f{n}.txt").write_text(f"file {n}\n")
    asyncio.run(pair.converge())
    for n in range(15):
        (laptop.root / f"f{n}.txt").unlink()
    (laptop.root / "new.txt").write_text("still synced\n")
    held = laptop.cli("sync", "--once", laptop.arena, check=False)
    assert held.returncode == PAUSED
    assert "15 deletions are held back" in held.stderr
    asyncio.run(desktop.sync())
    assert (desktop.root / "new.txt").exists()
    assert (desktop.root / "f0.txt").exists()
    laptop.cli("sync", "--once", "--confirm-deletes", laptop.arena)
    asyncio.run(pair.converge())
    assert not (desktop.root / "f0.txt").exists()
    assert asyncio.run(fsck_device(desktop)) == []


def test_on_a_terminal_the_bar_counts_what_the_pull_fetches(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    for i in range(300):
        (laptop.root / f"n{i:03d}.txt").write_bytes(os.urandom(20_000))
    asyncio.run(laptop.sync())
    leader, follower = pty.openpty()
    env = {**os.environ, **desktop.env, "COLUMNS": "120", "TERM": "xterm"}
    argv = [sys.executable, "-m", "shoal", "sync", "--once"]
    with subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env) as proc:
        os.close(follower)
        text = read_terminal(leader)
        assert proc.wait(60) == 0, text
    os.close(leader)
    assert "syncing" in text
    assert "uploading" not in text
    down = re.findall(r"pulled 300 \(0 B up, ([\d.]+) MB down\)", text)[-1]
    frames = re.findall(r"([\d.]+)/\? MB", text)
    assert frames, text
    assert frames[-1] == down  # every fetched byte reached the bar
