"""A push limited to the watcher's hinted paths: every change at those paths is pushed (edits,
new folders whole, deletes, renames), nothing else is judged, and what a hint cannot settle
falls back to the full scan."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.engine.context import SyncReport
from shoal.reconcile.coalesce import Batch, Move
from shoal.testing.devices import Device, Household, fsck_device, snapshot
from shoal.testing.hubproc import running_hub

_names = (f"hinted{n}" for n in itertools.count())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Household]:
    where = tmp_path_factory.mktemp("hinted")
    with running_hub(where / "hub") as hub:
        yield Household.create(hub, where, ["laptop", "desktop"], arena="seed")


@pytest.fixture
def pair(base: Household, tmp_path: Path) -> Household:
    return base.with_arena(next(_names), tmp_path)


def hinted_push(
    device: Device, paths: list[str], subtrees: tuple[str, ...] = (), moves: tuple[Move, ...] = ()
) -> SyncReport:
    async def run() -> SyncReport:
        async with device.syncer() as s:
            await s.push(Batch(frozenset(paths), frozenset(subtrees), moves))
            return s.last_report

    return asyncio.run(run())


def pull(device: Device) -> None:
    async def run() -> None:
        async with device.syncer() as s:
            await s.pull()

    asyncio.run(run())


def seeded(pair: Household) -> tuple[Device, Device]:
    a, b = pair["laptop"], pair["desktop"]
    for n in range(30):
        (a.root / "docs" / f"sub{n % 3}").mkdir(parents=True, exist_ok=True)
        (a.root / "docs" / f"sub{n % 3}" / f"f{n}.txt").write_text(f"file {n}\n")
    (a.root / "old").mkdir()
    (a.root / "old" / "x.txt").write_text("x\n")
    asyncio.run(pair.converge())
    return a, b


def test_hinted_paths_carry_edits_and_new_folders_whole(pair: Household) -> None:
    a, b = seeded(pair)
    (a.root / "docs" / "sub0" / "f0.txt").write_text("edited\n")
    (a.root / "new" / "deep").mkdir(parents=True)
    (a.root / "new" / "deep" / "n.txt").write_text("new\n")
    (a.root / "docs" / "sub0" / "unhinted.txt").write_text("not named by the watcher\n")
    hinted_push(a, ["docs/sub0/f0.txt", "new"])
    pull(b)
    assert (b.root / "docs" / "sub0" / "f0.txt").read_text() == "edited\n"
    assert (b.root / "new" / "deep" / "n.txt").read_text() == "new\n"
    assert not (b.root / "docs" / "sub0" / "unhinted.txt").exists()  # only the hinted paths were looked at
    asyncio.run(pair.converge())  # the full scan is the backstop
    assert (b.root / "docs" / "sub0" / "unhinted.txt").read_text() == "not named by the watcher\n"
    assert snapshot(b.root) == snapshot(a.root)
    assert asyncio.run(fsck_device(a)) == []
    assert asyncio.run(fsck_device(b)) == []


def test_a_write_through_one_hard_link_pushes_every_name_of_it(pair: Household) -> None:
    a, b = seeded(pair)
    os.link(a.root / "old" / "x.txt", a.root / "docs" / "x-link.txt")
    asyncio.run(pair.converge())
    with (a.root / "old" / "x.txt").open("a") as f:  # the watcher names only this path
        f.write("appended\n")
    hinted_push(a, ["old/x.txt"])
    pull(b)
    assert (b.root / "old" / "x.txt").read_text() == "x\nappended\n"
    assert (b.root / "docs" / "x-link.txt").read_text() == "x\nappended\n"
    assert snapshot(b.root) == snapshot(a.root)


def test_hinted_deletes_and_renames_are_judged_by_a_full_scan(pair: Household) -> None:
    a, b = seeded(pair)
    (a.root / "docs" / "sub1" / "f1.txt").unlink()
    (a.root / "docs" / "sub2" / "f2.txt").rename(a.root / "docs" / "moved.txt")
    (a.root / "old" / "x.txt").unlink()
    (a.root / "old").rmdir()
    (a.root / "docs" / "sub0" / "unhinted.txt").write_text("found by the full scan\n")
    hinted_push(
        a,
        ["docs/sub1/f1.txt"],
        subtrees=("old",),
        moves=(Move("docs/sub2/f2.txt", "docs/moved.txt", False),),
    )
    pull(b)
    assert not (b.root / "docs" / "sub1" / "f1.txt").exists()
    assert (b.root / "docs" / "moved.txt").read_text() == "file 2\n"
    assert not (b.root / "docs" / "sub2" / "f2.txt").exists()
    assert not (b.root / "old").exists()
    assert (b.root / "docs" / "sub0" / "unhinted.txt").read_text() == "found by the full scan\n"
    assert snapshot(b.root) == snapshot(a.root)


def test_a_mass_delete_reported_over_several_batches_is_still_held(pair: Household) -> None:
    a, b = seeded(pair)
    files = sorted((a.root / "docs").rglob("*.txt"))
    for f in files:
        f.unlink()
    first = [str(f.relative_to(a.root)) for f in files[:8]]  # fewer than the mass-delete minimum
    report = hinted_push(a, first)
    assert report.held_deletes == len(files)
    pull(b)
    assert len(list((b.root / "docs").rglob("*.txt"))) == len(files)


def test_a_hinted_mass_delete_waits_for_confirmation(pair: Household) -> None:
    a, b = seeded(pair)
    for folder in ("sub0", "sub1", "sub2"):
        for f in (a.root / "docs" / folder).iterdir():
            f.unlink()
        (a.root / "docs" / folder).rmdir()
    (a.root / "docs").rmdir()
    report = hinted_push(a, [], subtrees=("docs",))
    assert report.held_deletes > 0
    pull(b)
    assert len(list((b.root / "docs").rglob("*.txt"))) == 30


def test_hints_below_an_ignored_folder_push_nothing(pair: Household) -> None:
    a, b = seeded(pair)
    (a.root / ".shoalignore").write_text("build/\n")
    asyncio.run(pair.converge())
    (a.root / "build").mkdir()
    (a.root / "build" / "out.o").write_bytes(b"\0object")
    hinted_push(a, ["build/out.o"])
    pull(b)
    assert not (b.root / "build").exists()


@pytest.mark.parametrize("hint", ["docs/caf\u00e9.txt", ".shoalignore", "repo/.git/index"])
def test_hints_a_path_cannot_settle_fall_back_to_the_full_scan(pair: Household, hint: str) -> None:
    a, b = seeded(pair)
    (a.root / "elsewhere.txt").write_text("found by the full scan\n")
    hinted_push(a, [hint])
    pull(b)
    assert (b.root / "elsewhere.txt").read_text() == "found by the full scan\n"


def test_a_vanished_hint_with_unreadable_parent_deletes_nothing(pair: Household) -> None:
    a, b = seeded(pair)
    if os.geteuid() == 0:
        # root reads any folder; a symlinked parent is the unknown case the scan refuses instead
        (a.root / "docs" / "sub0").rename(a.root / "real0")
        (a.root / "docs" / "sub0").symlink_to(a.root / "real0")
    hinted_push(a, ["docs/sub0/f0.txt"])
    pull(b)
    assert (b.root / "docs" / "sub0" / "f0.txt").read_text() == "file 0\n"
