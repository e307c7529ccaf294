"""The daemon's per-arena loop on real files, real inotify and a real device database.

The engine is replaced by a recorder (the daemon decides *when*, the engine
*what*), so these tests see exactly which rounds the scheduler runs.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers.api import BaseObserver

from shoal.daemon.backoff import Backoff
from shoal.daemon.runner import USER_PAUSE, ArenaRunner
from shoal.daemon.status import ArenaState
from shoal.errors import NetworkError
from shoal.net.schemas_sync import StreamMessage
from shoal.reconcile.coalesce import Batch
from shoal.settings import DaemonSettings
from shoal.state.arenas import ArenaRegistry
from shoal.state.db import DeviceDB
from shoal.state.index import ArenaIndex

FAST = DaemonSettings(
    debounce=0.05, max_delay=2.0, rescan_interval=3600.0, backoff_base=0.05, backoff_cap=0.2
)
WAIT = 15.0


class Recorder:
    """Stands in for the engine: records each push (its batch, None for a full rescan) and pull."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Batch | None]] = []
        self.fail: Exception | None = None
        self.closed = False

    async def push(self, batch: Batch | None) -> None:
        self.calls.append(("push", batch))
        if self.fail is not None:
            raise self.fail

    async def pull(self) -> None:
        self.calls.append(("pull", None))
        if self.fail is not None:
            raise self.fail

    async def aclose(self) -> None:
        self.closed = True

    def pushed_paths(self) -> set[str]:
        return {p for kind, b in self.calls if kind == "push" and b is not None for p in b.paths}

    def full_scans(self) -> int:
        return sum(1 for kind, b in self.calls if kind == "push" and b is None)


class Announcer:
    """A hub watch fed by the test: every put cursor is announced; -1 cuts the connection."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.down = False

    async def watch(self, arena_id: str, since: int = 0) -> AsyncIterator[StreamMessage]:
        if self.down:
            raise NetworkError("cannot watch: the hub is not running")
        yield StreamMessage(type="changes", cursor=since)
        while True:
            cursor = await self.queue.get()
            if cursor < 0:
                raise NetworkError("the watch was cut")
            yield StreamMessage(type="cursor", cursor=cursor)


def run_async(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body on a fresh event loop (the suite has no asyncio plugin)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


async def eventually(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + WAIT
    while not check():
        if loop.time() > end:
            raise AssertionError(f"gave up waiting: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def arena(tmp_path: Path) -> tuple[DeviceDB, Path]:
    db = DeviceDB.open(tmp_path / "state.db")
    root = tmp_path / "root"
    root.mkdir()
    (root / "keep.txt").write_text("already here\n")
    ArenaRegistry(db).add("arena-1", "docs", root, "http://127.0.0.1:1")
    return db, root


def make_runner(db: DeviceDB, syncer: Recorder, hub: Announcer | None = None) -> ArenaRunner:
    record = ArenaRegistry(db).get("arena-1")
    return ArenaRunner(record, syncer, db=db, hub=hub, settings=FAST)


@run_async
async def test_first_round_rescans_then_a_burst_of_edits_syncs_in_few_batches(
    arena: tuple[DeviceDB, Path],
) -> None:
    db, root = arena
    syncer = Recorder()
    runner = make_runner(db, syncer)
    runner.start()
    try:
        await eventually(lambda: runner.state is ArenaState.UP_TO_DATE, "the first round")
        assert syncer.full_scans() == 1  # whatever changed while no daemon ran is found
        for i in range(40):
            (root / f"note-{i}.txt").write_text(f"note {i}\n")
        await eventually(lambda: len(syncer.pushed_paths()) >= 40, "all 40 new files pushed")
        assert {f"note-{i}.txt" for i in range(40)} <= syncer.pushed_paths()
        batches = [b for kind, b in syncer.calls if kind == "push" and b is not None]
        assert len(batches) < 40  # the burst was batched, not one round per file
        assert runner.status().state is ArenaState.UP_TO_DATE
    finally:
        await runner.stop()
    assert syncer.closed


@run_async
async def test_unreachable_hub_is_offline_keeps_work_and_catches_up(arena: tuple[DeviceDB, Path]) -> None:
    db, root = arena
    syncer = Recorder()
    runner = make_runner(db, syncer)
    runner.start()
    try:
        await eventually(lambda: runner.state is ArenaState.UP_TO_DATE, "the first round")
        syncer.fail = NetworkError("cannot reach the hub at http://127.0.0.1:1")
        (root / "offline-edit.txt").write_text("written while the hub is down\n")
        await eventually(lambda: runner.state is ArenaState.OFFLINE, "offline")
        status = runner.status()
        assert status.summary().startswith("offline")
        assert status.reason is not None
        assert "cannot reach the hub" in status.reason
        assert status.retry_in is not None
        attempts = len(syncer.calls)
        await eventually(lambda: len(syncer.calls) > attempts + 2, "retries with backoff")
        syncer.fail = None
        await eventually(lambda: runner.state is ArenaState.UP_TO_DATE, "back online")
        # the retry after a failure rescans everything, so the edit cannot be dropped
        last_push = [b for kind, b in syncer.calls if kind == "push"][-1]
        assert last_push is None or "offline-edit.txt" in last_push.paths
    finally:
        await runner.stop()


@run_async
async def test_an_unexpected_engine_failure_is_shown_and_retried(arena: tuple[DeviceDB, Path]) -> None:
    db, _ = arena
    syncer = Recorder()
    syncer.fail = RuntimeError("a bug")
    runner = make_runner(db, syncer)
    runner.start()
    try:
        await eventually(lambda: runner.state is ArenaState.ERROR, "error state")
        assert runner.status().summary() == "error: internal error: RuntimeError('a bug')"
        syncer.fail = None
        await eventually(lambda: runner.state is ArenaState.UP_TO_DATE, "recovered")
    finally:
        await runner.stop()


@run_async
async def test_missing_root_pauses_without_pushing_and_resumes_when_back(
    arena: tuple[DeviceDB, Path],
) -> None:
    db, root = arena
    syncer = Recorder()
    runner = make_runner(db, syncer)
    runner.start()
    try:
        await eventually(lambda: runner.state is ArenaState.UP_TO_DATE, "the first round")
        backup = root.with_name("moved-away")
        root.rename(backup)
        await eventually(lambda: runner.state is ArenaState.PAUSED, "paused")
        calls = len(syncer.calls)
        runner.request_sync()
        await asyncio.sleep(0.3)
        assert len(syncer.calls) == calls  # nothing reaches the engine while the root is gone
        status = runner.status()
        assert status.reason is not None
        assert "missing" in status.reason
        assert "nothing is deleted" in status.summary()
        shutil.move(backup, root)
        runner.request_sync()
        await eventually(lambda: runner.state is ArenaState.UP_TO_DATE, "resumed")
        assert syncer.full_scans() >= 2
    finally:
        await runner.stop()


@run_async
async def test_user_pause_survives_and_resume_catches_up(arena: tuple[DeviceDB, Path]) -> None:
    db, root = arena
    syncer = Recorder()
    runner = make_runner(db, syncer)
    runner.start()
    try:
        await eventually(lambda: runner.state is ArenaState.UP_TO_DATE, "the first round")
        await runner.pause()
        assert ArenaRegistry(db).get("arena-1").paused_reason == USER_PAUSE
        calls = len(syncer.calls)
        (root / "during-pause.txt").write_text("x\n")
        await asyncio.sleep(0.5)
        assert len(syncer.calls) == calls
        assert runner.status().summary().startswith("paused (paused by you")
    finally:
        await runner.stop()
    # a new runner (a restarted daemon) starts paused
    again = Recorder()
    runner = make_runner(db, again)
    runner.start()
    try:
        await asyncio.sleep(0.3)
        assert runner.state is ArenaState.PAUSED
        assert again.calls == []
        await runner.resume()
        await eventually(lambda: runner.state is ArenaState.UP_TO_DATE, "resumed")
        assert again.full_scans() >= 1
        assert ArenaRegistry(db).get("arena-1").paused_reason is None
    finally:
        await runner.stop()


@run_async
async def test_hub_announcement_triggers_a_pull(arena: tuple[DeviceDB, Path]) -> None:
    db, _ = arena
    syncer = Recorder()
    hub = Announcer()
    runner = make_runner(db, syncer, hub)
    runner.start()
    try:
        await eventually(lambda: runner.state is ArenaState.UP_TO_DATE, "the first round")
        pulls = sum(1 for kind, _ in syncer.calls if kind == "pull")
        await hub.queue.put(7)
        await eventually(
            lambda: sum(1 for kind, _ in syncer.calls if kind == "pull") > pulls,
            "a pull after the announcement",
        )
    finally:
        await runner.stop()


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    backoff = Backoff(0.5, 8.0, rand=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    low = Backoff(0.5, 8.0, rand=lambda: 0.0)
    assert [low.next_delay() for _ in range(3)] == [0.25, 0.5, 1.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


@run_async
async def test_a_dropped_watch_shows_offline_and_a_reconnect_syncs_again(
    arena: tuple[DeviceDB, Path],
) -> None:
    db, _ = arena
    syncer = Recorder()
    hub = Announcer()
    runner = make_runner(db, syncer, hub)
    runner.start()
    try:
        await eventually(lambda: runner.state is ArenaState.UP_TO_DATE, "the first round")
        hub.down = True
        await hub.queue.put(-1)
        await eventually(lambda: runner.state is ArenaState.OFFLINE, "offline without any local change")
        rounds = runner.rounds
        hub.down = False
        await eventually(lambda: runner.rounds > rounds, "a round once the hub is back")
        assert runner.state is ArenaState.UP_TO_DATE
    finally:
        await runner.stop()


class PullWriter(Recorder):
    """A pull that writes files into the arena, as a real one does, and advances the cursor to
    ``to``; it records what the runner's status said about the watcher meanwhile."""

    def __init__(self, db: DeviceDB, root: Path) -> None:
        super().__init__()
        self.index = ArenaIndex(db, "arena-1")
        self.root = root
        self.to = 0
        self.runner: ArenaRunner | None = None
        self.watch_during: list[str] = []

    async def pull(self) -> None:
        await super().pull()
        assert self.runner is not None
        self.watch_during.append(self.runner.status().watch)
        if self.to > self.index.cursor:
            for i in range(5):
                (self.root / f"pulled-{self.to}-{i}.txt").write_text("from the hub\n")
            with self.index.batch() as batch:
                batch.set_cursor(self.to)


def start_pulling(
    db: DeviceDB,
    root: Path,
    hub: Announcer | None = None,
    kind: type[PullWriter] = PullWriter,
    to: int = 0,
) -> tuple[PullWriter, ArenaRunner]:
    """A runner whose pulls write files and advance the cursor to ``to``, started."""
    syncer = kind(db, root)
    syncer.to = to
    runner = make_runner(db, syncer, hub)
    syncer.runner = runner
    runner.start()
    return syncer, runner


@pytest.fixture
def new_device(tmp_path: Path) -> tuple[DeviceDB, Path]:
    """A device that joined an arena and holds nothing of it yet: empty folder, empty index."""
    db = DeviceDB.open(tmp_path / "state.db")
    root = tmp_path / "root"
    root.mkdir()
    ArenaRegistry(db).add("arena-1", "docs", root, "http://127.0.0.1:1")
    return db, root


@run_async
async def test_a_large_pull_runs_with_the_watcher_paused_and_a_full_rescan_follows(
    arena: tuple[DeviceDB, Path],
) -> None:
    hub = Announcer()
    syncer, runner = start_pulling(*arena, hub)
    root = arena[1]
    try:
        await eventually(lambda: runner.state is ArenaState.UP_TO_DATE, "the first round")
        scans = syncer.full_scans()

        syncer.to = FAST.quiet_pull + 10  # far behind: the watcher is paused through the pull
        await hub.queue.put(syncer.to)
        await eventually(lambda: syncer.full_scans() > scans, "a full rescan after the large pull")
        assert "paused for a large pull" in syncer.watch_during
        # The pull's own writes came back as no event: only the rescan looked at them.
        assert not {p for p in syncer.pushed_paths() if p.startswith("pulled-")}
        await eventually(lambda: runner.status().watch == "inotify", "the watcher back on")

        (root / "edited-after.txt").write_text("mine\n")  # watched again: pushed by its event
        await eventually(lambda: "edited-after.txt" in syncer.pushed_paths(), "the edit pushed")

        syncer.watch_during.clear()
        syncer.to += FAST.quiet_pull // 2  # a small pull: the watcher stays on
        await hub.queue.put(syncer.to)
        await eventually(
            lambda: {f"pulled-{syncer.to}-{i}.txt" for i in range(5)} <= syncer.pushed_paths(),
            "the small pull's writes seen by the watcher",
        )
        assert "paused for a large pull" not in syncer.watch_during
    finally:
        await runner.stop()


@run_async
async def test_a_failing_large_pull_turns_the_watcher_back_on(arena: tuple[DeviceDB, Path]) -> None:
    hub = Announcer()
    syncer, runner = start_pulling(*arena, hub)
    root = arena[1]
    try:
        await eventually(lambda: runner.state is ArenaState.UP_TO_DATE, "the first round")
        syncer.fail = NetworkError("the hub went away mid-pull")
        await hub.queue.put(FAST.quiet_pull * 3)
        await eventually(lambda: runner.state is ArenaState.OFFLINE, "offline after the failed pull")
        await eventually(lambda: runner.status().watch == "inotify", "the watcher back on")
        (root / "offline-edit.txt").write_text("made while the hub is away\n")
        await eventually(
            lambda: runner.status().pending > 0 or "offline-edit.txt" in syncer.pushed_paths(),
            "the offline edit noticed",
        )
    finally:
        await runner.stop()


@run_async
async def test_a_new_devices_first_pull_is_quiet_before_the_hub_says_how_far_behind(
    new_device: tuple[DeviceDB, Path],
) -> None:
    # The whole arena comes down in the first pull, before any announcement.
    syncer, runner = start_pulling(*new_device, to=40)
    try:
        await eventually(lambda: syncer.full_scans() >= 2, "the first round, then a rescan after it")
        assert syncer.watch_during[0] == "paused for a large pull"
        assert not {p for p in syncer.pushed_paths() if p.startswith("pulled-")}
        await eventually(lambda: runner.status().watch == "inotify", "the watcher back on")
    finally:
        await runner.stop()


class SlowPull(PullWriter):
    """A pull that takes a while, so the daemon can be stopped in the middle of it."""

    def __init__(self, db: DeviceDB, root: Path) -> None:
        super().__init__(db, root)
        self.pulling = asyncio.Event()

    async def pull(self) -> None:
        self.pulling.set()
        await asyncio.sleep(0.3)
        await super().pull()


@run_async
async def test_stopping_during_a_quiet_pull_leaves_no_watcher_running(
    new_device: tuple[DeviceDB, Path],
) -> None:
    before = {t for t in threading.enumerate() if isinstance(t, BaseObserver)}
    syncer, runner = start_pulling(*new_device, kind=SlowPull, to=40)
    assert isinstance(syncer, SlowPull)
    await asyncio.wait_for(syncer.pulling.wait(), WAIT)
    await runner.stop()  # the pull in progress ends quiet mode as the daemon stops
    await asyncio.sleep(0.2)
    observers = {t for t in threading.enumerate() if isinstance(t, BaseObserver) and t.is_alive()}
    assert not observers - before, "a watcher started after the daemon stopped"
