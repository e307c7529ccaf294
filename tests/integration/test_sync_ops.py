"""Every operation propagates between devices through a real hub: bytes and metadata equal."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.state.arenas import ArenaRegistry
from shoal.testing.devices import Device, Household, fsck_device, snapshot
from shoal.testing.hubproc import running_hub

pytestmark = pytest.mark.slow  # whole trees, both ways: several rounds each
_names = (f"ops{n}" for n in itertools.count())


@pytest.fixture(scope="module")
def base_household(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Household]:
    base = tmp_path_factory.mktemp("ops")
    with running_hub(base / "hub") as hub:
        yield Household.create(hub, base, ["laptop", "desktop"], arena="seed")


@pytest.fixture
def pair(base_household: Household, tmp_path: Path) -> Household:
    return base_household.with_arena(next(_names), tmp_path)


def converge(household: Household) -> None:
    asyncio.run(household.converge())


def test_create_modify_delete_rename_mkdir_symlink_mode_and_mtime_propagate(pair: Household) -> None:
    a, b = pair["laptop"].root, pair["desktop"].root
    (a / "notes").mkdir()
    (a / "notes" / "hello.txt").write_text("hello\n")
    (a / "empty").mkdir()
    (a / "deep" / "er" / "est").mkdir(parents=True)
    (a / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (a / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (a / "run.sh").chmod(0o755)
    os.utime(a / "notes" / "hello.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    (a / "link").symlink_to("notes/hello.txt")
    (a / "outside").symlink_to("/etc/passwd")
    (a / "zero").write_bytes(b"")
    converge(pair)
    assert snapshot(b) == snapshot(a)
    assert os.readlink(b / "outside") == "/etc/passwd"  # stored as given, never followed

    (a / "notes" / "hello.txt").write_text("hello again\n")
    (a / "run.sh").chmod(0o644)
    (a / "big.bin").rename(a / "notes" / "moved.bin")
    (a / "zero").unlink()
    (a / "deep" / "er" / "est").rmdir()
    (a / "link").unlink()
    (a / "link").symlink_to("run.sh")
    (a / "notes").chmod(0o700)
    converge(pair)
    assert snapshot(b) == snapshot(a)
    assert not (b / "zero").exists()
    assert (b / "deep" / "er").is_dir()
    assert not (b / "deep" / "er" / "est").exists()

    # and back the other way
    (b / "from-desktop.txt").write_text("desktop\n")
    (b / "notes" / "hello.txt").unlink()
    converge(pair)
    assert snapshot(a) == snapshot(b)
    assert (a / "from-desktop.txt").read_text() == "desktop\n"


def test_ignore_rules_secrets_and_the_device_overlay(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    a, b = laptop.root, desktop.root
    (a / ".shoalignore").write_text("build/\n*.log\n!keep.log\n")
    (a / "build").mkdir()
    (a / "build" / "out.o").write_bytes(b"\x7fELF")
    (a / "debug.log").write_text("noise\n")
    (a / "keep.log").write_text("wanted\n")
    (a / ".env").write_text("SECRET=1\n")
    (a / "notes.txt.swp").write_text("swap\n")
    (a / "notes.txt").write_text("notes\n")
    overlay = laptop.home / "ignore"
    overlay.mkdir()
    arena_id = desktop_arena_id(pair)
    (overlay / f"{arena_id}.shoalignore").write_text("private/\n")
    (a / "private").mkdir()
    (a / "private" / "diary.txt").write_text("mine only\n")
    converge(pair)
    assert (b / ".shoalignore").read_text() == "build/\n*.log\n!keep.log\n"
    assert (b / "notes.txt").exists()
    assert (b / "keep.log").exists()
    for skipped in ("build", "debug.log", ".env", "notes.txt.swp", "private"):
        assert not (b / skipped).exists(), skipped
    # The other device follows the synced rules for its own files too.
    (b / "b.log").write_text("desktop noise\n")
    (b / "private").mkdir()
    (b / "private" / "shared.txt").write_text("the overlay is only the laptop's\n")
    converge(pair)
    assert not (a / "b.log").exists()
    assert not (a / "private" / "shared.txt").exists()
    for device in pair.devices:
        assert asyncio.run(fsck_device(device)) == []


def test_what_a_dropped_rule_kept_out_arrives_on_the_other_device(pair: Household) -> None:
    laptop, desktop = pair["laptop"], pair["desktop"]
    a, b = laptop.root, desktop.root
    (a / ".shoalignore").write_text("build/\n")
    (a / "build").mkdir()
    (a / "build" / "out.o").write_text("built while ignored\n")
    converge(pair)
    assert not (b / "build").exists()
    # The rule goes in the same push as nothing else: the other device's pull brings the new
    # .shoalignore, then must read again what the old rule had made it skip.
    (a / ".shoalignore").write_text("")
    asyncio.run(laptop.sync())
    asyncio.run(desktop.sync())
    assert (b / "build" / "out.o").read_text() == "built while ignored\n"

    # A device's own overlay: entries it skipped arrive once it drops the rule, with no new change.
    overlay = desktop.home / "ignore"
    overlay.mkdir(exist_ok=True)
    rules = overlay / f"{desktop_arena_id(pair)}.shoalignore"
    rules.write_text("private/\n")
    (a / "private").mkdir()
    (a / "private" / "plan.txt").write_text("for every device but the desktop, for now\n")
    converge(pair)
    assert not (b / "private").exists()
    rules.write_text("")
    asyncio.run(desktop.sync())
    assert (b / "private" / "plan.txt").read_text() == "for every device but the desktop, for now\n"
    assert snapshot(b) == snapshot(a)


def test_an_arena_holding_the_device_home_never_syncs_it(base_household: Household, tmp_path: Path) -> None:
    # `shoal arena join home ~` with SHOAL_HOME in ~/.local/share/shoal: the device's keys, tokens
    # and database sat inside the arena, and a plain arena would have uploaded them.
    hub = base_household.hub
    me = tmp_path / "me"
    solo = Device("solo", me / ".local" / "share" / "shoal", me, hub, "homes")
    asyncio.run(solo.login(hub.create_token("alice")))
    solo.cli("arena", "create", "homes")
    asyncio.run(solo.join())
    (me / "notes.txt").write_text("mine\n")
    asyncio.run(solo.sync())
    asyncio.run(solo.sync())  # the first round changed the database: nothing of it goes up either
    elsewhere = Device("laptop", base_household["laptop"].home, tmp_path / "copy", hub, "homes")
    asyncio.run(elsewhere.join())
    asyncio.run(elsewhere.sync())
    assert (tmp_path / "copy" / "notes.txt").read_text() == "mine\n"
    assert not (tmp_path / "copy" / ".local" / "share" / "shoal").exists()
    ignored = solo.cli("status", "--ignored").stdout
    assert "ignored: .local/share/shoal/: shoal's own state on this machine" in ignored
    refused = solo.cli("arena", "join", "seed", str(me / ".local" / "share" / "shoal" / "x"), check=False)
    assert refused.returncode == 2
    assert "inside this device's state folder" in refused.stderr


def desktop_arena_id(pair: Household) -> str:
    db = pair["laptop"].open_db()
    try:
        return ArenaRegistry(db).by_name(pair["laptop"].arena).arena_id
    finally:
        db.close()
