"""The watcher on real inotify: bursts coalesce, moves are seen, a vanished root is reported."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.events import FileSystemEvent
from watchdog.observers.api import BaseObserver

from shoal.reconcile import Move
from shoal.worktree import ArenaRoot, IgnoreRules, RootState, TreeWatcher, WatchMode, WatchReport

TIMEOUT = 20.0


@pytest.fixture
def arena(tmp_path: Path) -> Path:
    path = tmp_path / "arena"
    path.mkdir()
    (path / "seed").write_bytes(b"so the root is not empty")
    return path


@pytest.fixture
def watcher(arena: Path) -> Iterator[TreeWatcher]:
    w = TreeWatcher(ArenaRoot(arena), delay=0.3, ignore=IgnoreRules().scanner_filter)
    assert w.start().mode is WatchMode.INOTIFY
    try:
        yield w
    finally:
        w.stop()


def _collect(w: TreeWatcher, want: set[str]) -> tuple[list[WatchReport], set[str]]:
    reports: list[WatchReport] = []
    seen: set[str] = set()
    for _ in range(int(TIMEOUT / 0.5)):
        report = w.wait(0.5)
        reports.append(report)
        seen |= report.batch.paths | report.batch.subtrees
        if want <= seen:
            break
    return reports, seen


def test_a_burst_of_writes_becomes_one_ready_path(arena: Path) -> None:
    # A generous debounce, so a loaded machine pausing the writer does not split the burst.
    watcher = TreeWatcher(ArenaRoot(arena), delay=1.5)
    assert watcher.start().mode is WatchMode.INOTIFY
    try:
        with (arena / "log.txt").open("wb") as f:
            for i in range(200):
                f.write(b"line %d\n" % i)
                f.flush()
        reports, seen = _collect(watcher, {"log.txt"})
    finally:
        watcher.stop()
    assert seen == {"log.txt"}
    assert sum("log.txt" in r.batch.paths for r in reports) == 1


def test_moves_are_detected(arena: Path, watcher: TreeWatcher) -> None:
    (arena / "seed").rename(arena / "renamed")
    moves: list[Move] = []
    for _ in range(int(TIMEOUT / 0.5)):
        moves.extend(watcher.wait(0.5).batch.moves)
        if moves:
            break
    assert moves == [Move("seed", "renamed", False)]


def test_ignored_and_temp_paths_are_not_reported(arena: Path, watcher: TreeWatcher) -> None:
    (arena / "x.swp").write_bytes(b"swap")
    (arena / ".shoal-tmp-123").write_bytes(b"temp")
    (arena / "real").write_bytes(b"real")
    _, seen = _collect(watcher, {"real"})
    assert seen == {"real"}


class _CountingWatcher(TreeWatcher):
    """Records every event watchdog delivers, before the watcher decides what it means."""

    delivered: list[str]

    def _on_event(self, event: FileSystemEvent) -> None:
        self.delivered.append(os.fsdecode(event.src_path))
        super()._on_event(event)


def test_reading_files_costs_the_watcher_nothing(arena: Path) -> None:
    # Each open and close-without-write used to come back as two events parsed on the watcher's
    # thread: a pushing daemon reading 20k files handled 40k of them.
    for i in range(20):
        (arena / f"f{i}").write_bytes(b"x" * 100)
    watcher = _CountingWatcher(ArenaRoot(arena), delay=0.1)
    watcher.delivered = []
    assert watcher.start().mode is WatchMode.INOTIFY
    try:
        for _ in range(3):
            for i in range(20):
                assert (arena / f"f{i}").read_bytes() == b"x" * 100
        (arena / "marker").write_bytes(b"after the reads")  # inotify keeps order: the reads came first
        _, seen = _collect(watcher, {"marker"})
    finally:
        watcher.stop()
    assert seen == {"marker"}
    assert {Path(p).name for p in watcher.delivered} == {"marker"}


def test_mode_changes_of_files_and_folders_and_a_new_folder_are_seen(arena: Path) -> None:
    (arena / "kept").mkdir()
    watcher = TreeWatcher(ArenaRoot(arena), delay=0.1)
    assert watcher.start().mode is WatchMode.INOTIFY
    try:
        (arena / "seed").chmod(0o755)
        (arena / "kept").chmod(0o700)
        (arena / "empty").mkdir()
        _, seen = _collect(watcher, {"seed", "kept", "empty"})
    finally:
        watcher.stop()
    assert seen == {"seed", "kept", "empty"}


def test_a_removed_root_is_reported_missing(arena: Path, watcher: TreeWatcher) -> None:
    shutil.rmtree(arena)
    report = watcher.report()
    for _ in range(int(TIMEOUT / 0.5)):
        if report.root_missing:
            break
        report = watcher.wait(0.5)
    assert report.root is RootState.MISSING


def test_an_emptied_root_is_reported_empty(arena: Path, watcher: TreeWatcher) -> None:
    (arena / "seed").unlink()
    assert watcher.wait(0.1).root is RootState.EMPTY


class _LimitedObserver(BaseObserver):
    """Stands for a kernel whose inotify watch limit is used up."""

    def __init__(self) -> None:
        super().__init__(emitter_class=object)  # type: ignore[arg-type]

    def schedule(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise OSError(errno.ENOSPC, "inotify watch limit reached")


def test_watch_limit_falls_back_to_periodic_scans_with_a_warning(arena: Path) -> None:
    now = [100.0]
    w = TreeWatcher(
        ArenaRoot(arena), rescan_interval=30.0, clock=lambda: now[0], observer_factory=_LimitedObserver
    )
    status = w.start()
    assert status.mode is WatchMode.POLLING
    assert status.warning is not None
    assert "max_user_watches" in status.warning
    assert not w.report().rescan_due
    now[0] += 31.0
    assert w.report().rescan_due
    w.mark_rescanned()
    assert not w.report().rescan_due
    w.stop()
