"""Real FUSE mounts of a test arena: bytes equal, listings fetch nothing, writes reach the commit,
the cache keeps its limit, and a killed mount is cleaned by the next one."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.mount.mountpoint import device_of, is_mounted, is_stale
from shoal.testing.hubproc import run_shoal
from shoal.testing.vfs import TestArena

pytestmark = pytest.mark.fuse

MIB = 1 << 20
MOUNT_WAIT = 15.0


class Mount:
    def __init__(
        self, base: Path, where: Path, limit: int = 1 << 30, env: dict[str, str] | None = None
    ) -> None:
        self.base = base
        self.where = where
        self.log = (base / "mount.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shoal.testing.vfs", str(base), str(where), str(limit)],
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + MOUNT_WAIT
        ready = base / "ready"
        while not (ready.exists() and ready.read_text() == str(self.proc.pid) and not is_stale(where)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.close()
                raise AssertionError(f"the mount did not come up: {(base / 'mount.log').read_text()}")
            time.sleep(0.05)

    def fetches(self) -> int:
        path = self.base / "fetches.log"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def changes(self) -> list[dict[str, object]]:
        path = self.base / "changes.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def unmount(self) -> None:
        if is_mounted(self.where):
            subprocess.run(["fusermount3", "-u", "-z", str(self.where)], check=False)
        try:
            self.proc.wait(timeout=MOUNT_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def files() -> dict[str, bytes]:
    rng = random.Random(11)
    return {
        "docs/a.txt": b"hello from the hub\n",
        "docs/deep/b.bin": rng.randbytes(3 * MIB + 5),
        "big.bin": rng.randbytes(6 * MIB + 7),
        "pinned.bin": rng.randbytes(MIB + 1),
    }


@pytest.fixture
def arena(tmp_path: Path, files: dict[str, bytes]) -> Path:
    base = tmp_path / "arena"
    made = TestArena.create(
        base, files, pinned=["pinned.bin"], dirs=["docs", "docs/deep", "empty"], links={"ln": "big.bin"}
    )
    made.close()
    return base


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "mnt"
    where.mkdir()
    yield where
    if is_mounted(where):
        subprocess.run(["fusermount3", "-u", "-z", str(where)], check=False)


def _cache_bytes(base: Path) -> int:
    return sum(p.stat().st_size for p in (base / "cache").glob("*/*") if not p.name.startswith("."))


def test_listing_fetches_nothing_and_reads_return_the_bytes(
    arena: Path, mnt: Path, files: dict[str, bytes]
) -> None:
    mount = Mount(arena, mnt)
    try:
        listing = subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, text=True, check=True).stdout
        assert "big.bin" in listing
        assert "b.bin" in listing
        assert os.stat(mnt / "big.bin").st_size == len(files["big.bin"])
        assert os.readlink(mnt / "ln") == "big.bin"
        assert (mnt / "empty").is_dir()
        assert mount.fetches() == 0
        for path, data in files.items():
            assert (mnt / path).read_bytes() == data
        with (mnt / "big.bin").open("rb") as f:
            f.seek(4 * MIB + 3)
            before = mount.fetches()
            assert f.read(1) == files["big.bin"][4 * MIB + 3 : 4 * MIB + 4]  # cached now: no fetch
            assert mount.fetches() == before
        assert os.getxattr(mnt / "big.bin", "user.shoal.residency") == b"cached"
    finally:
        mount.unmount()


def test_one_byte_of_a_cold_file_fetches_at_most_two_chunks(
    arena: Path, mnt: Path, files: dict[str, bytes]
) -> None:
    mount = Mount(arena, mnt)
    try:
        rng = random.Random(5)
        offset = rng.randrange(len(files["big.bin"]))
        with (mnt / "big.bin").open("rb", buffering=0) as f:
            f.seek(offset)
            assert f.read(1) == files["big.bin"][offset : offset + 1]
        assert mount.fetches() <= 2
        assert os.getxattr(mnt / "docs/deep/b.bin", "user.shoal.residency") == b"online-only"
    finally:
        mount.unmount()


def test_writes_through_the_mount_reach_the_commit_with_the_right_bytes(arena: Path, mnt: Path) -> None:
    mount = Mount(arena, mnt)
    payload = random.Random(2).randbytes(MIB + 333)
    try:
        (mnt / "docs" / "new.bin").write_bytes(payload)
        with (mnt / "docs" / "a.txt").open("r+b") as f:
            f.seek(6)
            f.write(b"FROM")
            f.flush()
            os.fsync(f.fileno())
        (mnt / "docs" / "made").mkdir()
        os.rename(mnt / "docs" / "new.bin", mnt / "docs" / "made" / "moved.bin")
        os.symlink("moved.bin", mnt / "docs" / "made" / "ln")
        os.truncate(mnt / "big.bin", 10)
        (mnt / "pinned.bin").unlink()
        assert (mnt / "docs" / "made" / "moved.bin").read_bytes() == payload
        assert (mnt / "docs" / "a.txt").read_bytes() == b"hello FROM the hub\n"
        changes = mount.changes()
        puts = {c["path"]: bytes.fromhex(str(c["content"])) for c in changes if c["op"] == "put"}
        assert puts["docs/new.bin"] == payload
        assert puts["docs/a.txt"] == b"hello FROM the hub\n"
        assert len(puts["big.bin"]) == 10
        ops = [(c["op"], c["path"]) for c in changes if c["op"] != "put"]
        assert ops == [
            ("mkdir", "docs/made"),
            ("rename", "docs/made/moved.bin"),
            ("symlink", "docs/made/ln"),
            ("delete", "pinned.bin"),
        ]
    finally:
        mount.unmount()


def test_ls_stops_asking_for_xattr_namespaces_residency_still_works_and_read_ahead_is_1_mib(
    arena: Path, mnt: Path
) -> None:
    mount = Mount(arena, mnt)
    try:
        traced = subprocess.run(
            ["strace", "-f", "-c", "-e", "trace=getxattr,lgetxattr", "ls", "-lR", str(mnt)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "big.bin" in traced.stdout
        calls = sum(int(line.split()[3]) for line in traced.stderr.splitlines() if "getxattr" in line)
        assert 0 < calls <= 4  # once for the whole mount, not once per file and name
        device = device_of(mnt.resolve())
        assert (Path("/sys/class/bdi") / str(device) / "read_ahead_kb").read_text().strip() == "1024"

        for name in ("security.selinux", "system.nfs4_acl", "trusted.x"):
            with pytest.raises(OSError, match="not supported") as unsupported:
                os.getxattr(mnt / "big.bin", name)
            assert unsupported.value.errno == errno.EOPNOTSUPP
        with pytest.raises(OSError, match="No data") as absent:
            os.getxattr(mnt / "big.bin", "user.other")
        assert absent.value.errno == errno.ENODATA
        assert os.listxattr(mnt / "big.bin") == ["user.shoal.residency"]
        assert os.getxattr(mnt / "big.bin", "user.shoal.residency") == b"online-only"  # never read
        os.setxattr(mnt / "big.bin", "user.shoal.residency", b"pinned")
        assert os.getxattr(mnt / "big.bin", "user.shoal.residency") == b"pinned"
    finally:
        mount.unmount()


def test_reading_more_than_the_cache_limit_keeps_it_and_pinned_content_stays(
    arena: Path, mnt: Path, files: dict[str, bytes]
) -> None:
    limit = 3 * MIB
    mount = Mount(arena, mnt, limit=limit)
    try:
        os.setxattr(mnt / "pinned.bin", "user.shoal.residency", b"pinned")
        assert os.getxattr(mnt / "pinned.bin", "user.shoal.residency") == b"pinned"
        for path in ("big.bin", "docs/deep/b.bin"):
            assert (mnt / path).read_bytes() == files[path]
            assert _cache_bytes(arena) <= limit
        pinned_fetches = mount.fetches()
        assert (mnt / "pinned.bin").read_bytes() == files["pinned.bin"]
        assert mount.fetches() == pinned_fetches  # still cached: pinned content was never evicted
    finally:
        mount.unmount()


def test_cache_clear_then_rehydrate_and_remount(arena: Path, mnt: Path, files: dict[str, bytes]) -> None:
    mount = Mount(arena, mnt)
    try:
        for path in ("big.bin", "docs/deep/b.bin"):
            assert (mnt / path).read_bytes() == files[path]
        fetched = mount.fetches()
        cleared = run_shoal("cache", "clear", "--home", str(arena))
        assert "freed" in cleared.stdout
        assert _cache_bytes(arena) == 0
        for path in ("big.bin", "docs/deep/b.bin"):  # memory may still answer; the bytes are right either way
            assert (mnt / path).read_bytes() == files[path]
    finally:
        mount.unmount()
    assert not is_mounted(mnt)
    status = run_shoal("cache", "status", "--home", str(arena)).stdout
    assert "unpinned files" in status
    again = Mount(arena, mnt)
    try:
        for path in ("big.bin", "docs/deep/b.bin"):
            assert (mnt / path).read_bytes() == files[path]
        # Each of the 11 chunks came from the store again, in the first mount or after the remount.
        assert again.fetches() - fetched >= 11
        assert _cache_bytes(arena) >= len(files["big.bin"]) + len(files["docs/deep/b.bin"])
        assert (mnt / "docs/a.txt").read_bytes() == files["docs/a.txt"]
    finally:
        again.unmount()


def test_a_killed_mount_answers_enotconn_and_the_next_mount_cleans_it(
    arena: Path, mnt: Path, files: dict[str, bytes]
) -> None:
    first = Mount(arena, mnt)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    first.log.close()
    with pytest.raises(OSError, match="not connected") as info:
        os.listdir(mnt)
    assert info.value.errno == errno.ENOTCONN  # never looks empty
    second = Mount(arena, mnt)
    try:
        assert (mnt / "docs/a.txt").read_bytes() == files["docs/a.txt"]
    finally:
        second.unmount()
    assert run_shoal("umount", str(mnt), check=False).returncode == 3  # nothing mounted any more


def test_offline_cached_content_reads_the_rest_fails_with_eio(
    arena: Path, mnt: Path, files: dict[str, bytes]
) -> None:
    online = Mount(arena, mnt)
    try:
        assert (mnt / "docs/a.txt").read_bytes() == files["docs/a.txt"]
    finally:
        online.unmount()
    offline = Mount(arena, mnt, env={"SHOAL_TEST_OFFLINE": "1"})
    try:
        assert sorted(os.listdir(mnt)) == ["big.bin", "docs", "empty", "ln", "pinned.bin"]
        assert (mnt / "docs/a.txt").read_bytes() == files["docs/a.txt"]
        with pytest.raises(OSError, match="Input/output error") as info:
            (mnt / "big.bin").read_bytes()
        assert info.value.errno == errno.EIO
    finally:
        offline.unmount()
    assert "cannot be reached" in (arena / "mount.log").read_text()
