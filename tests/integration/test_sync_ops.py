"""Every operation propagates between devices through a real hub: bytes and metadata equal."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.testing.devices import Household, snapshot
from shoal.testing.hubproc import running_hub


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Household]:
    with running_hub(tmp_path / "hub") as hub:
        yield Household.create(hub, tmp_path, ["laptop", "desktop"])


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
