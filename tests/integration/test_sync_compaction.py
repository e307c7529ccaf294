"""A device idle while the hub compacted its log reads the arena again and converges, losing nothing."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from shoal.state.arenas import ArenaRegistry
from shoal.testing.devices import Household, fsck_device, snapshot
from shoal.testing.hubproc import running_hub

pytestmark = pytest.mark.slow


def test_a_device_behind_the_compacted_log_bootstraps_again(tmp_path: Path) -> None:
    with running_hub(tmp_path / "hub") as hub:
        household = Household.create(hub, tmp_path / "seed", ["laptop", "desktop"], arena="seed")
        household["laptop"].cli("arena", "create", "kept", "--keep-days", "0", "--keep-versions", "1")
        pair = household.with_arena("kept", tmp_path / "kept")
        laptop, desktop = pair["laptop"], pair["desktop"]
        a, b = laptop.root, desktop.root
        (a / "doc.txt").write_text("v0")
        (a / "gone.txt").write_text("bye")
        (a / "old.txt").write_text("old name")
        asyncio.run(pair.converge())

        # The desktop stays offline while the laptop keeps working.
        for version in range(1, 4):
            (a / "doc.txt").write_text(f"v{version}")
            asyncio.run(laptop.sync())
        (a / "gone.txt").unlink()
        (a / "old.txt").rename(a / "new.txt")
        (a / "added").mkdir()
        (a / "added" / "x.txt").write_text("x")
        asyncio.run(laptop.sync())
        (b / "offline-edit.txt").write_text("written on the desktop while away")

        time.sleep(1.2)  # both devices are now idle past the one-second limit below
        done = hub.admin("gc", "--grace", "1s", "--idle-limit", "1s").stdout
        dropped = re.search(r"dropped (\d+) old version", done)
        assert dropped is not None, done
        assert int(dropped.group(1)) > 0, done
        db = desktop.open_db()
        try:
            assert (
                ArenaRegistry(db).by_name("kept").cursor > 0
            )  # behind the compacted log: the hub answers 410
        finally:
            db.close()

        report = asyncio.run(desktop.sync())
        assert report.pulled > 0
        asyncio.run(pair.converge())
        assert snapshot(b) == snapshot(a)
        assert (a / "doc.txt").read_text() == "v3"
        assert (a / "offline-edit.txt").read_text() == "written on the desktop while away"
        assert not (b / "gone.txt").exists()
        assert not (b / "old.txt").exists()
        assert asyncio.run(fsck_device(desktop)) == []
        assert asyncio.run(fsck_device(laptop)) == []
