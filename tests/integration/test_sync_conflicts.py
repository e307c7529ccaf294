"""Concurrent changes on several devices: every device ends with the same tree and every written
content stays reachable (at its path, as a conflict copy, or as a version on the hub)."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.reconcile.names import is_conflict_copy
from shoal.testing.devices import Household, contents, fsck_device, snapshot
from shoal.testing.hubproc import running_hub

_names = (f"arena{n}" for n in itertools.count())


@pytest.fixture(scope="module")
def base_household(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Household]:
    base = tmp_path_factory.mktemp("conflicts")
    with running_hub(base / "hub") as hub:
        yield Household.create(hub, base, ["laptop", "desktop", "phone"], arena="seed")


@pytest.fixture
def trio(base_household: Household, tmp_path: Path) -> Household:
    return base_household.with_arena(next(_names), tmp_path)


def converge(h: Household) -> None:
    asyncio.run(h.converge())
    trees = {d.name: snapshot(d.root) for d in h.devices}
    first = next(iter(trees.values()))
    assert all(t == first for t in trees.values()), f"devices differ after convergence: {trees}"
    for device in h.devices:
        assert asyncio.run(fsck_device(device)) == []


def sync(h: Household, *names: str) -> None:
    asyncio.run(h.sync_all(names))


def copies(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if is_conflict_copy(p.name))


def test_concurrent_edits_keep_both_versions_as_the_same_copy_everywhere(trio: Household) -> None:
    a, b, c = (d.root for d in trio.devices)
    (a / "report.txt").write_text("v0\n")
    converge(trio)
    (a / "report.txt").write_text("laptop edit\n")
    (b / "report.txt").write_text("desktop edit, longer\n")
    (c / "report.txt").write_text("phone edit\n")
    sync(trio, "laptop", "desktop", "phone")
    converge(trio)
    found = contents(a)
    assert {b"laptop edit\n", b"desktop edit, longer\n", b"phone edit\n"} <= found
    assert len(copies(a)) == 2
    assert all(len(copies(d.root)) == 2 for d in trio.devices)


def test_delete_versus_modify_keeps_the_modification(trio: Household) -> None:
    a, b, _ = (d.root for d in trio.devices)
    (a / "plan.md").write_text("draft\n")
    converge(trio)
    (a / "plan.md").unlink()
    (b / "plan.md").write_text("draft, improved\n")
    sync(trio, "laptop", "desktop")
    converge(trio)
    assert (a / "plan.md").read_text() == "draft, improved\n"


def test_modify_then_delete_elsewhere_in_the_other_order(trio: Household) -> None:
    a, b, _ = (d.root for d in trio.devices)
    (a / "plan.md").write_text("draft\n")
    converge(trio)
    (b / "plan.md").write_text("draft, improved\n")
    (a / "plan.md").unlink()
    sync(trio, "desktop", "laptop")
    converge(trio)
    assert (a / "plan.md").read_text() == "draft, improved\n"


def test_rename_versus_modify_keeps_both_contents(trio: Household) -> None:
    a, b, _ = (d.root for d in trio.devices)
    (a / "old.txt").write_text("original\n")
    converge(trio)
    (a / "old.txt").rename(a / "new.txt")
    (b / "old.txt").write_text("edited\n")
    sync(trio, "laptop", "desktop")
    converge(trio)
    assert {b"original\n", b"edited\n"} <= contents(a)


def test_rename_versus_rename_keeps_the_content(trio: Household) -> None:
    a, b, _ = (d.root for d in trio.devices)
    (a / "x.txt").write_text("content\n")
    converge(trio)
    (a / "x.txt").rename(a / "by-laptop.txt")
    (b / "x.txt").rename(b / "by-desktop.txt")
    sync(trio, "laptop", "desktop")
    converge(trio)
    assert b"content\n" in contents(a)
    assert not (a / "x.txt").exists()


def test_folder_deleted_while_a_file_is_added_inside_it(trio: Household) -> None:
    a, b, _ = (d.root for d in trio.devices)
    (a / "proj").mkdir()
    (a / "proj" / "old.txt").write_text("old\n")
    converge(trio)
    (a / "proj" / "old.txt").unlink()
    (a / "proj").rmdir()
    (b / "proj" / "new.txt").write_text("new work\n")
    sync(trio, "laptop", "desktop")
    converge(trio)
    assert (a / "proj" / "new.txt").read_text() == "new work\n"


def test_same_new_file_on_two_devices_is_not_a_conflict(trio: Household) -> None:
    a, b, _ = (d.root for d in trio.devices)
    (a / "same.txt").write_text("identical\n")
    (b / "same.txt").write_text("identical\n")
    sync(trio, "laptop", "desktop")
    converge(trio)
    assert copies(a) == []


def test_unpushed_edit_meeting_a_remote_edit_is_kept_as_a_copy(trio: Household) -> None:
    a, b, _ = (d.root for d in trio.devices)
    (a / "f.txt").write_text("v0\n")
    converge(trio)
    (a / "f.txt").write_text("from laptop\n")
    sync(trio, "laptop")
    (b / "f.txt").write_text("desktop, not pushed yet\n")

    async def pull_only() -> None:
        async with trio["desktop"].syncer() as s:
            await s.pull()

    asyncio.run(pull_only())
    assert {b"from laptop\n", b"desktop, not pushed yet\n"} <= contents(b)
    converge(trio)
    assert {b"from laptop\n", b"desktop, not pushed yet\n"} <= contents(a)


@pytest.mark.slow
def test_lww_keeps_one_version_at_the_path_and_the_other_in_history(
    base_household: Household, tmp_path: Path
) -> None:
    h = base_household.with_arena(next(_names), tmp_path, conflict_policy="lww")
    a, b, _ = (d.root for d in h.devices)
    (a / "f.txt").write_text("v0\n")
    converge(h)
    (a / "f.txt").write_text("laptop\n")
    (b / "f.txt").write_text("desktop\n")
    sync(h, "laptop", "desktop")
    converge(h)
    assert copies(a) == []
    assert (a / "f.txt").read_text() in ("laptop\n", "desktop\n")
    listing = h["laptop"].cli("versions", str(a / "f.txt")).stdout.splitlines()[1:]
    kept = set()
    for n, line in enumerate(listing):
        out = tmp_path / f"v{n}"
        out.mkdir()
        seq = line.split("\t")[0]
        h["laptop"].cli("restore", str(a / "f.txt"), "--version", seq, "--to", str(out))
        kept.add((out / "f.txt").read_text())
    assert {"v0\n", "laptop\n", "desktop\n"} <= kept  # the loser is in the history


def test_a_delete_that_supersedes_a_conflict_winner_is_not_undone(trio: Household) -> None:
    # Found by the stateful test: a device that deleted its losing version must still apply the
    # winner's later delete, though that delete never saw the first device's tombstone.
    laptop, desktop = trio["laptop"], trio["desktop"]
    (desktop.root / "d").mkdir()
    (desktop.root / "d" / "e.txt").write_text("desktop\n")
    (laptop.root / "d").mkdir()
    sync(trio, "desktop")
    (laptop.root / "d" / "e.txt").write_text("laptop, later\n")
    shutil.rmtree(desktop.root / "d")
    sync(trio, "laptop")
    shutil.rmtree(laptop.root / "d")
    converge(trio)
    assert not (desktop.root / "d" / "e.txt").exists()


def test_a_file_replaced_by_a_folder_while_edited_elsewhere(trio: Household) -> None:
    a, b, _ = (d.root for d in trio.devices)
    (a / "thing").write_text("a file\n")
    converge(trio)
    (a / "thing").unlink()
    (a / "thing").mkdir()
    (a / "thing" / "inside.txt").write_text("now a folder\n")
    (b / "thing").write_text("the file, edited\n")
    sync(trio, "laptop", "desktop")
    converge(trio)
    assert (a / "thing" / "inside.txt").read_text() == "now a folder\n"
    assert b"the file, edited\n" in contents(a)


def test_rename_chain_and_swap(trio: Household) -> None:
    a, b, _ = (d.root for d in trio.devices)
    (a / "one.txt").write_text("1\n")
    (a / "two.txt").write_text("2\n")
    converge(trio)
    (a / "one.txt").rename(a / "tmp.txt")
    (a / "two.txt").rename(a / "one.txt")
    (a / "tmp.txt").rename(a / "two.txt")
    converge(trio)
    assert (b / "one.txt").read_text() == "2\n"
    assert (b / "two.txt").read_text() == "1\n"


def test_a_folder_turned_into_a_file_and_back(trio: Household) -> None:
    a, b, _ = (d.root for d in trio.devices)
    (a / "x").mkdir()
    (a / "x" / "child.txt").write_text("child\n")
    converge(trio)
    shutil.rmtree(a / "x")
    (a / "x").write_text("now a file\n")
    converge(trio)
    assert (b / "x").read_text() == "now a file\n"
    (a / "x").unlink()
    (a / "x").mkdir()
    (a / "x" / "again.txt").write_text("a folder again\n")
    converge(trio)
    assert (b / "x" / "again.txt").read_text() == "a folder again\n"
