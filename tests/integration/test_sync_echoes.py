"""A device pulling its own pushed changes back (echoes) leaves its files alone and still applies
what other devices changed among them."""

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
    assert report.pulled == 6
    assert report.conflicts == []
    assert report.skipped == []
    assert snapshot(a.root) == snapshot(b.root)
    after = _stamps(a.root)
    edited = {f"d{n % 5}/f{n:03d}.txt" for n in range(0, 50, 10)}
    assert {p for p in before if before[p] != after[p]} == edited  # nothing else was rewritten
    assert (a.root / "d0" / "f010.txt").read_bytes() == b"desktop edit 10\n"
    assert asyncio.run(fsck_device(a)) == []
    assert asyncio.run(fsck_device(b)) == []
