"""A pull of many new folders and files (an initial sync) takes the batched path and still loses nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from shoal.testing.devices import Household, contents, fsck_device, snapshot
from shoal.testing.hubproc import HubProcess

pytestmark = pytest.mark.slow  # hundreds of files through a real hub, per metadata backend


def _tree(root: Path, files: int) -> None:
    for n in range(files):
        folder = root / f"d{n % 4}" / f"e{n % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{n:04d}.txt").write_bytes(b"file %d\n" % n * (n % 50 + 1))
    (root / "d0" / "private").mkdir()
    (root / "d0" / "private" / "key.txt").write_text("secret-ish\n")
    (root / "d0" / "private").chmod(0o700)
    (root / "empty" / "deeper").mkdir(parents=True)
    (root / "clash").mkdir()
    (root / "clash" / "inside.txt").write_text("from a\n")


def test_initial_pull_makes_every_folder_and_file_with_its_mode(hub: HubProcess, tmp_path: Path) -> None:
    pair = Household.create(hub, tmp_path, ["laptop", "desktop"], arena="bulk")
    a, b = pair["laptop"], pair["desktop"]
    _tree(a.root, 600)  # more than one durability batch of files
    asyncio.run(a.sync())
    report = asyncio.run(b.sync())
    assert not report.skipped
    assert snapshot(b.root) == snapshot(a.root)
    assert os.stat(b.root / "d0" / "private").st_mode & 0o777 == 0o700
    assert asyncio.run(fsck_device(b)) == []


def test_unpushed_local_things_where_new_folders_arrive_are_kept(hub: HubProcess, tmp_path: Path) -> None:
    pair = Household.create(hub, tmp_path, ["laptop", "desktop"], arena="bulk")
    a, b = pair["laptop"], pair["desktop"]
    _tree(a.root, 60)
    asyncio.run(a.sync())
    # The desktop has, not yet pushed: a file where the laptop made a folder, and a file of its own
    # inside a folder the laptop also made.
    (b.root / "clash").write_text("desktop's clash file\n")
    (b.root / "d1" / "e1").mkdir(parents=True)
    (b.root / "d1" / "e1" / "mine.txt").write_text("desktop's own\n")

    async def pull_only() -> None:
        async with b.syncer() as s:
            await s.pull()

    asyncio.run(pull_only())
    assert (b.root / "d1" / "e1" / "mine.txt").read_text() == "desktop's own\n"
    assert b"desktop's clash file\n" in contents(b.root)
    asyncio.run(pair.converge())
    assert snapshot(b.root) == snapshot(a.root)
    for content in (b"desktop's clash file\n", b"desktop's own\n", b"from a\n"):
        assert content in contents(a.root)
    assert asyncio.run(fsck_device(a)) == []
    assert asyncio.run(fsck_device(b)) == []
