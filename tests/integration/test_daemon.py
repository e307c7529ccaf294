"""Two devices, each with its own ``shoal daemon`` process, syncing through a real hub on 127.0.0.1.

Nothing here calls ``sync``: every change travels because the daemons saw it
(inotify on one side, the hub's WebSocket on the other). Waits are bounded
and stop by themselves; none of them measures time.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shoal.daemon.control import call
from shoal.daemon.protocol import Request
from shoal.errors import NetworkError
from shoal.testing.devices import Device, Household, contents, snapshot
from shoal.testing.hubproc import HubProcess, running_hub, shoal_env

WAIT = 30.0


class DaemonProc:
    """``shoal daemon --foreground`` for one device, its log kept next to its home."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.log_path = device.home.parent / f"{device.name}-daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        argv = [sys.executable, "-m", "shoal", "daemon", "--foreground", "--debounce", "0.05"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=shoal_env(self.device.env))

    def wait_ready(self) -> None:
        wait_for(lambda: self.status(check=False) is not None, f"{self.device.name}'s daemon answers", self)

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def status(self, *, check: bool = True) -> dict[str, object] | None:
        """The daemon's answer on its control socket (what `shoal status --json` prints)."""
        try:
            return call(self.device.home / "daemon.sock", Request("status"), timeout=5.0)
        except NetworkError:
            if check:
                raise
            return None

    def arena(self) -> dict[str, object]:
        status = self.status()
        assert status is not None, self.log()
        arenas = status["arenas"]
        assert isinstance(arenas, list)
        return dict(arenas[0])

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


def wait_for(check: Callable[[], bool], what: str, *daemons: DaemonProc) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {d.device.name} ---\n{d.log()}" for d in daemons)
            raise AssertionError(f"gave up waiting: {what}\n{logs}")
        time.sleep(0.05)


def same_tree(a: Device, b: Device) -> bool:
    return snapshot(a.root) == snapshot(b.root)


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for the module; each test is a different user, so tenants keep the tests apart."""
    with running_hub(tmp_path_factory.mktemp("daemon-hub") / "hub") as hub:
        yield hub


@pytest.fixture
def pair(
    shared_hub: HubProcess, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Household, DaemonProc, DaemonProc]]:
    if shared_hub.proc is None or shared_hub.proc.poll() is not None:
        shared_hub.start()
    user = "u" + hashlib.sha256(request.node.name.encode()).hexdigest()[:10]
    household = Household.create(shared_hub, tmp_path, ["laptop", "desktop"], arena="docs", user=user)
    daemons = [DaemonProc(household["laptop"]), DaemonProc(household["desktop"])]
    try:
        for d in daemons:
            d.spawn()
        for d in daemons:
            d.wait_ready()
        yield household, daemons[0], daemons[1]
    finally:
        for d in daemons:
            d.stop()


@pytest.mark.slow
def test_edits_deletes_and_renames_travel_without_a_manual_sync(
    pair: tuple[Household, DaemonProc, DaemonProc],
) -> None:
    household, da, db = pair
    a, b = household["laptop"], household["desktop"]
    (a.root / "notes").mkdir()
    (a.root / "notes" / "todo.txt").write_text("buy milk\n")
    (a.root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (a.root / "run.sh").chmod(0o755)
    wait_for(lambda: (b.root / "notes" / "todo.txt").exists() and same_tree(a, b), "create on B", da, db)
    assert (b.root / "notes" / "todo.txt").read_text() == "buy milk\n"
    assert stat.S_IMODE((b.root / "run.sh").stat().st_mode) == 0o755

    (a.root / "notes" / "todo.txt").write_text("buy milk\nand bread\n")
    wait_for(lambda: (b.root / "notes" / "todo.txt").read_text() == "buy milk\nand bread\n", "edit", da, db)

    (a.root / "run.sh").chmod(0o700)  # mode changes alone: attribute events, no write
    (a.root / "notes").chmod(0o750)
    wait_for(lambda: stat.S_IMODE((b.root / "run.sh").stat().st_mode) == 0o700, "chmod on B", da, db)
    wait_for(lambda: stat.S_IMODE((b.root / "notes").stat().st_mode) == 0o750, "folder chmod on B", da, db)

    (a.root / "notes" / "todo.txt").rename(a.root / "notes" / "done.txt")
    wait_for((b.root / "notes" / "done.txt").exists, "rename on B", da, db)
    wait_for(lambda: not (b.root / "notes" / "todo.txt").exists(), "old name gone on B", da, db)

    (b.root / "run.sh").unlink()  # and the other way round
    wait_for(lambda: not (a.root / "run.sh").exists(), "delete from B reaches A", da, db)
    wait_for(lambda: same_tree(a, b), "trees equal", da, db)
    for d in (da, db):
        wait_for(lambda d=d: d.arena()["state"] == "up-to-date", "up to date", da, db)  # type: ignore[misc]
    assert da.arena()["summary"] == "up to date"


@pytest.mark.slow
def test_pause_stops_propagation_and_resume_catches_up(
    pair: tuple[Household, DaemonProc, DaemonProc],
) -> None:
    household, da, db = pair
    a, b = household["laptop"], household["desktop"]
    socket_path = a.home / "daemon.sock"
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
    (a.root / "first.txt").write_text("one\n")
    wait_for((b.root / "first.txt").exists, "first file on B", da, db)

    assert "paused" in a.cli("pause", "docs").stdout
    arena = da.arena()
    assert arena["state"] == "paused"
    assert str(arena["summary"]).startswith("paused (paused by you")
    (a.root / "while-paused.txt").write_text("held back\n")
    (a.root / "first.txt").write_text("one, edited while paused\n")
    # B keeps syncing; its own edit still reaches the hub, and A stays untouched while paused
    (b.root / "from-b.txt").write_text("from B\n")
    time.sleep(1.0)  # long enough for an unpaused daemon to have pushed (it needs well under that)
    assert not (b.root / "while-paused.txt").exists()
    assert (b.root / "first.txt").read_text() == "one\n"
    assert not (a.root / "from-b.txt").exists()

    text = a.cli("status").stdout
    assert "docs: paused (paused by you" in text

    a.cli("resume", "docs")
    wait_for((b.root / "while-paused.txt").exists, "paused work reaches B", da, db)
    wait_for((a.root / "from-b.txt").exists, "B's file reaches A", da, db)
    wait_for(lambda: same_tree(a, b), "trees equal", da, db)
    assert (b.root / "first.txt").read_text() == "one, edited while paused\n"


@pytest.mark.slow
def test_leaving_an_arena_stops_the_daemon_syncing_it_and_keeps_the_files(
    pair: tuple[Household, DaemonProc, DaemonProc],
) -> None:
    household, da, db = pair
    a, b = household["laptop"], household["desktop"]
    (a.root / "before.txt").write_text("synced\n")
    wait_for((b.root / "before.txt").exists, "first file on B", da, db)

    assert "left arena docs" in a.cli("arena", "leave", "docs").stdout
    status = da.status()
    assert status is not None
    assert status["arenas"] == []
    (a.root / "after.txt").write_text("not synced any more\n")
    (b.root / "from-b.txt").write_text("from B\n")
    time.sleep(1.0)  # long enough for a syncing daemon to have carried both (it needs well under that)
    assert not (b.root / "after.txt").exists()
    assert not (a.root / "from-b.txt").exists()
    assert (a.root / "before.txt").read_text() == "synced\n"
    assert da.proc is not None
    assert da.proc.poll() is None

    moved = a.root.parent / "moved"
    assert "the running daemon syncs it now" in a.cli("arena", "join", "docs", str(moved)).stdout
    wait_for((moved / "from-b.txt").exists, "B's file in the new folder", da, db)
    assert (moved / "before.txt").read_text() == "synced\n"


@pytest.mark.slow
def test_offline_device_keeps_working_and_catches_up_when_the_hub_returns(
    pair: tuple[Household, DaemonProc, DaemonProc],
) -> None:
    household, da, db = pair
    a, b = household["laptop"], household["desktop"]
    (a.root / "before.txt").write_text("before the outage\n")
    wait_for((b.root / "before.txt").exists, "before.txt on B", da, db)

    household.hub.stop()
    (a.root / "during.txt").write_text("written while the hub was down\n")
    wait_for(lambda: da.arena()["state"] == "offline", "A says offline", da, db)
    assert da.proc is not None
    assert da.proc.poll() is None  # the daemon keeps running
    assert "offline" in a.cli("status").stdout

    household.hub.start()
    wait_for((b.root / "during.txt").exists, "the offline edit reaches B", da, db)
    assert (b.root / "during.txt").read_text() == "written while the hub was down\n"
    wait_for(lambda: da.arena()["state"] == "up-to-date", "A up to date again", da, db)


@pytest.mark.slow
def test_emptied_root_pauses_and_nothing_is_deleted_on_the_other_device(
    pair: tuple[Household, DaemonProc, DaemonProc],
) -> None:
    household, da, db = pair
    a, b = household["laptop"], household["desktop"]
    for i in range(12):
        (a.root / f"photo-{i}.txt").write_text(f"photo {i}\n")
    wait_for(lambda: len(list(b.root.glob("photo-*.txt"))) == 12, "12 files on B", da, db)
    before = contents(b.root)

    # the disk is unmounted: the folder is still there, but bare (no files, no marker)
    moved = a.root.with_name("laptop-unmounted")
    a.root.rename(moved)
    a.root.mkdir()
    wait_for(lambda: da.arena()["state"] == "paused", "A pauses", da, db)
    summary = str(da.arena()["summary"])
    assert "empty" in summary or "missing" in summary
    assert "nothing is deleted" in summary
    assert "docs: paused (" in a.cli("status").stdout
    time.sleep(1.0)  # time enough for a wrong delete to have travelled
    assert contents(b.root) == before
    assert len(list(b.root.glob("photo-*.txt"))) == 12

    # the disk comes back: the arena resumes by itself and nothing was lost
    a.root.rmdir()
    moved.rename(a.root)
    wait_for(lambda: da.arena()["state"] == "up-to-date", "A resumes", da, db)
    (a.root / "after.txt").write_text("back\n")
    wait_for((b.root / "after.txt").exists, "syncing again", da, db)
    assert len(list(b.root.glob("photo-*.txt"))) == 12


@pytest.mark.slow
def test_missing_root_pauses_and_status_without_daemon_says_why(
    pair: tuple[Household, DaemonProc, DaemonProc],
) -> None:
    household, da, db = pair
    a, b = household["laptop"], household["desktop"]
    (a.root / "keep.txt").write_text("keep me\n")
    wait_for((b.root / "keep.txt").exists, "keep.txt on B", da, db)
    moved = a.root.with_name("laptop-away")
    a.root.rename(moved)
    wait_for(lambda: da.arena()["state"] == "paused", "A pauses", da, db)
    assert "missing" in str(da.arena()["reason"])
    da.stop()
    text = a.cli("status").stdout
    assert "daemon: not running" in text
    assert "docs: paused (" in text
    assert "missing" in text
    assert (b.root / "keep.txt").read_text() == "keep me\n"
    moved.rename(a.root)


@pytest.mark.slow
def test_kill9_mid_sync_and_restart_converges(pair: tuple[Household, DaemonProc, DaemonProc]) -> None:
    household, da, db = pair
    a, b = household["laptop"], household["desktop"]
    payloads = {f"batch/file-{i:03}.bin": os.urandom(40_000 + i) for i in range(150)}
    (a.root / "batch").mkdir()
    for rel, data in payloads.items():
        (a.root / rel).write_bytes(data)
    # kill A's daemon as soon as anything of the batch has reached B (mid-sync), and B's as well
    wait_for(lambda: any((b.root / "batch").glob("file-*")), "sync under way", da, db)
    da.kill9()
    db.kill9()
    da.spawn()
    db.spawn()
    wait_for(
        lambda: all((b.root / rel).exists() for rel in payloads) and same_tree(a, b), "converged", da, db
    )
    for rel, data in payloads.items():
        assert (b.root / rel).read_bytes() == data
    leftovers = [p for p in b.root.rglob("*") if p.name.startswith(".shoal-tmp")]
    assert leftovers == []


@pytest.mark.slow
def test_status_pause_and_ignored_without_a_daemon(shared_hub: HubProcess, tmp_path: Path) -> None:
    if shared_hub.proc is None or shared_hub.proc.poll() is not None:
        shared_hub.start()
    household = Household.create(shared_hub, tmp_path, ["solo"], arena="docs", user="solo-user")
    solo = household["solo"]
    (solo.root / ".shoalignore").write_text("build/\n*.log\n")
    (solo.root / "build").mkdir()
    (solo.root / "build" / "out.o").write_bytes(b"\0")
    (solo.root / "debug.log").write_text("noise\n")
    (solo.root / ".env").write_text("SECRET=1\n")
    (solo.root / "kept.txt").write_text("synced\n")
    (solo.root / "caf\u00e9.txt").write_text("NFC\n")  # the same name once normalised: neither syncs
    (solo.root / "cafe\u0301.txt").write_text("NFD\n")
    os.mkfifo(solo.root / "pipe")

    text = solo.cli("status").stdout
    assert "daemon: not running" in text
    assert "docs: not syncing (no daemon runs)" in text

    ignored = solo.cli("status", str(solo.root), "--ignored").stdout
    assert "ignored: build/: " in ignored
    assert "ignored: debug.log: " in ignored
    assert ".shoalignore" in ignored
    assert "ignored: .env: built-in deny list (secrets" in ignored
    assert "kept.txt" not in ignored
    assert ignored.count("the same after Unicode normalisation") == 2
    assert "not synced: pipe: not a file, folder or symlink" in ignored
    one = solo.cli("status", str(solo.root / "debug.log"), "--ignored").stdout
    assert "ignored: debug.log" in one
    assert "build/" not in one

    assert "docs: paused" in solo.cli("pause").stdout  # the only arena joined needs no name
    data = json.loads(solo.cli("status", "--json").stdout)
    assert data["running"] is False
    assert data["arenas"][0]["state"] == "paused"
    assert data["arenas"][0]["reason"].startswith("paused by you")
    missing = solo.cli("pause", "music", check=False)
    assert missing.returncode == 3
    assert "no arena named 'music'" in missing.stderr

    # a daemon started now honours the pause, and resume over its socket lets it sync
    daemon = DaemonProc(solo)
    daemon.start()
    try:
        assert daemon.arena()["state"] == "paused"
        solo.cli("resume", "docs")
        wait_for(lambda: daemon.arena()["state"] == "up-to-date", "synced after resume", daemon)
        assert daemon.arena()["cursor"] > 0  # kept.txt and .shoalignore reached the hub
        assert daemon.arena()["unsyncable"] == 3
        assert "3 paths cannot be synced" in solo.cli("status").stdout
        assert "not synced: pipe: not a file, folder or symlink" in daemon.log()
    finally:
        daemon.stop()


@pytest.mark.slow
def test_mass_delete_is_held_and_status_says_how_to_confirm(
    pair: tuple[Household, DaemonProc, DaemonProc],
) -> None:
    household, da, db = pair
    a, b = household["laptop"], household["desktop"]
    (a.root / "docs").mkdir()
    for i in range(12):
        (a.root / "docs" / f"doc-{i}.txt").write_text(f"doc {i}\n")
    wait_for(lambda: len(list(b.root.glob("docs/doc-*.txt"))) == 12, "12 files on B", da, db)
    # the user throws the whole folder away in one move (the arena marker stays)
    (a.root / "docs").rename(a.root.parent / "laptop-trash")
    wait_for(lambda: "deleted here" in str(da.arena()["summary"]), "A holds the deletes", da, db)
    arena = da.arena()
    assert "shoal sync --confirm-deletes" in str(arena["hint"]) + str(arena["summary"])
    time.sleep(1.0)  # time enough for a wrong delete to have travelled
    assert len(list(b.root.glob("docs/doc-*.txt"))) == 12
    assert "deleted here" in a.cli("status").stdout
