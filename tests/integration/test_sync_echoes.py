"""A device pulling its own pushed changes back (echoes) leaves its files alone and still applies
what other devices changed among them; a push whose commits follow the cursor moves it past them
without reading them back, and never past another device's change."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shoal.testing.devices import Device, Household, fsck_device, snapshot
from shoal.testing.hubproc import HubProcess


def _stamps(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in root.rglob("*.txt")
        if p.is_file()
    }


async def _push(device: Device) -> None:
    async with device.syncer() as s:
        await s.push()


def test_own_changes_come_back_as_nothing_and_others_edits_among_them_land(
    hub: HubProcess, tmp_path: Path
) -> None:
    pair = Household.create(hub, tmp_path, ["laptop", "desktop"], arena="echoes")
    a, b = pair["laptop"], pair["desktop"]
    (b.root / "first.txt").write_bytes(b"desktop first\n")
    asyncio.run(_push(b))  # the laptop's commits do not follow its cursor: its echoes come back
    for n in range(300):
        folder = a.root / f"d{n % 5}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{n:03d}.txt").write_bytes(b"laptop %d\n" % n)
    asyncio.run(_push(a))  # pushed, not pulled back yet
    before = _stamps(a.root)

    asyncio.run(b.sync())
    for n in range(0, 50, 10):
        (b.root / f"d{n % 5}" / f"f{n:03d}.txt").write_bytes(b"desktop edit %d\n" % n)
    (b.root / "d1" / "new.txt").write_bytes(b"desktop new\n")
    asyncio.run(_push(b))

    report = asyncio.run(a.sync())  # one page: 300 echoes of its own, then the desktop's changes
    assert report.pulled == 7
    assert report.conflicts == []
    assert report.skipped == []
    assert snapshot(a.root) == snapshot(b.root)
    after = _stamps(a.root)
    edited = {f"d{n % 5}/f{n:03d}.txt" for n in range(0, 50, 10)}
    assert {p for p in before if before[p] != after[p]} == edited  # nothing else was rewritten
    assert (a.root / "d0" / "f010.txt").read_bytes() == b"desktop edit 10\n"
    assert asyncio.run(fsck_device(a)) == []
    assert asyncio.run(fsck_device(b)) == []


async def _cursor_after_push(device: Device) -> tuple[int, int]:
    """The device's cursor after a push, and the hub's head."""
    async with device.syncer() as s:
        await s.push()
        page = await s.ctx.client.changes(s.ctx.arena_id, s.ctx.index.cursor, 1)
        return s.ctx.index.cursor, page.head


def test_a_push_following_the_cursor_moves_it_past_its_own_commits(hub: HubProcess, tmp_path: Path) -> None:
    pair = Household.create(hub, tmp_path, ["laptop", "desktop"], arena="skip")
    a, b = pair["laptop"], pair["desktop"]
    for n in range(700):  # more than one commit
        folder = a.root / f"d{n % 7}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{n:03d}.txt").write_bytes(b"laptop %d\n" % n)
    cursor, head = asyncio.run(_cursor_after_push(a))
    assert cursor == head == 707  # 7 folders and 700 files, none read back
    report = asyncio.run(a.sync())
    assert (report.pushed, report.pulled, report.cursor) == (0, 0, 707)

    asyncio.run(b.sync())
    assert snapshot(b.root) == snapshot(a.root)
    assert asyncio.run(fsck_device(a)) == []
    assert asyncio.run(fsck_device(b)) == []


def test_the_cursor_never_skips_another_devices_change(hub: HubProcess, tmp_path: Path) -> None:
    pair = Household.create(hub, tmp_path, ["laptop", "desktop"], arena="between")
    a, b = pair["laptop"], pair["desktop"]
    (a.root / "one.txt").write_bytes(b"laptop one\n")
    cursor, _ = asyncio.run(_cursor_after_push(a))
    assert cursor == 1
    (b.root / "desk.txt").write_bytes(b"desktop\n")
    asyncio.run(_push(b))  # seq 2, which the laptop has not seen
    (a.root / "two.txt").write_bytes(b"laptop two\n")
    cursor, head = asyncio.run(_cursor_after_push(a))
    assert (cursor, head) == (1, 3)  # its commit at 3 does not follow the cursor

    report = asyncio.run(a.sync())
    assert report.pulled == 1
    assert (a.root / "desk.txt").read_bytes() == b"desktop\n"
    asyncio.run(b.sync())
    assert snapshot(a.root) == snapshot(b.root)
