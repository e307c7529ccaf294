"""A watchdog (inotify) watcher feeding the coalescer, with a periodic-scan fallback.

Threads: watchdog delivers events on its own thread; :class:`TreeWatcher`
turns them into :class:`shoal.reconcile.Event` values and hands them to a
:class:`shoal.reconcile.Coalescer` under ``self._lock``. Readers
(:meth:`TreeWatcher.report`, :meth:`TreeWatcher.wait`) take the same lock only
to pop ready paths; nothing blocks while holding it. An asyncio caller uses
``await asyncio.to_thread(watcher.wait, timeout)``.

When inotify cannot watch the tree (the per-user watch or instance limit is
reached, or the watching thread dies) the watcher switches to ``polling``: the
status carries a clear warning and every report asks the caller for a full
rescan once ``rescan_interval`` has passed. Nothing is printed here.
"""

from __future__ import annotations

import enum
import errno
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from watchdog.events import (
    EVENT_TYPE_ATTRIB,
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from shoal.errors import ShoalError
from shoal.reconcile.coalesce import Batch, Coalescer, Event, EventType
from shoal.worktree.entries import is_temp_name
from shoal.worktree.paths import ArenaRoot

IgnoreFn = Callable[[str, bool], bool]
ObserverFactory = Callable[[], BaseObserver]

_TYPES = {
    EVENT_TYPE_CREATED: EventType.CREATED,
    EVENT_TYPE_MODIFIED: EventType.MODIFIED,
    EVENT_TYPE_ATTRIB: EventType.MODIFIED,  # chmod, touch: mode and mtime sync too
    EVENT_TYPE_CLOSED: EventType.MODIFIED,
    EVENT_TYPE_DELETED: EventType.DELETED,
    EVENT_TYPE_MOVED: EventType.MOVED,
}
# What the watch asks the kernel for. Without a filter watchdog also asks for every open and every
# close without a write: each file the daemon's own push read (or a user's build or grep) came
# back as two events parsed on the watcher's thread: a third of a daemon's CPU pushing 20k files.
# A folder's modification is left out (a child changed, and the child has its own event); its
# attribute changes (chmod) are not. FileModifiedEvent is what asks the kernel for attribute
# changes; they arrive as FileAttribEvent and DirAttribEvent.
_WATCHED: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    DirAttribEvent,
    FileClosedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
]
LIMIT_HINT = (
    "raise fs.inotify.max_user_watches (for example: sysctl fs.inotify.max_user_watches=524288); "
    "until then changes are found by periodic scans"
)


class WatchMode(enum.StrEnum):
    STOPPED = "stopped"
    INOTIFY = "inotify"
    POLLING = "polling"


class RootState(enum.StrEnum):
    PRESENT = "present"
    EMPTY = "empty"
    MISSING = "missing"  # the engine pauses the arena: unknown is not deleted


@dataclass(frozen=True, slots=True)
class WatchStatus:
    mode: WatchMode
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class WatchReport:
    batch: Batch
    root: RootState
    rescan_due: bool  # polling mode (or a lost watch): the caller should scan the whole tree now
    status: WatchStatus

    @property
    def root_missing(self) -> bool:
        return self.root is RootState.MISSING


def root_state(root: ArenaRoot) -> RootState:
    try:
        with os.scandir(root.root) as it:
            return RootState.PRESENT if next(it, None) is not None else RootState.EMPTY
    except (FileNotFoundError, NotADirectoryError):
        return RootState.MISSING
    except OSError:
        return RootState.MISSING  # unreadable is as unknown as missing


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: TreeWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._watcher._on_event(event)


class TreeWatcher:
    def __init__(
        self,
        root: ArenaRoot,
        *,
        delay: float = 0.2,
        max_delay: float | None = None,
        rescan_interval: float = 60.0,
        ignore: IgnoreFn | None = None,
        clock: Callable[[], float] = time.monotonic,
        observer_factory: ObserverFactory = Observer,
    ) -> None:
        self.root = root
        self.rescan_interval = rescan_interval
        self._ignore = ignore
        self._clock = clock
        self._factory = observer_factory
        self._coalescer = Coalescer(delay, max_delay)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._observer: BaseObserver | None = None
        self._status = WatchStatus(WatchMode.STOPPED)
        self._last_rescan = clock()
        self._root_event = False

    @property
    def status(self) -> WatchStatus:
        return self._status

    def start(self) -> WatchStatus:
        """Start watching; on an inotify limit fall back to polling and say so in the status."""
        observer = self._factory()
        try:
            observer.schedule(
                _Handler(self), os.fspath(self.root.root), recursive=True, event_filter=_WATCHED
            )
            observer.start()
        except OSError as exc:
            self._stop_observer(observer)
            self._status = WatchStatus(WatchMode.POLLING, _limit_warning(exc))
            return self._status
        self._observer = observer
        self._status = WatchStatus(WatchMode.INOTIFY)
        return self._status

    def stop(self) -> None:
        if self._observer is not None:
            self._stop_observer(self._observer)
            self._observer = None
        self._status = WatchStatus(WatchMode.STOPPED)
        with self._wake:
            self._wake.notify_all()

    @staticmethod
    def _stop_observer(observer: BaseObserver) -> None:
        try:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout=5)
        except (OSError, RuntimeError):
            pass

    def mark_rescanned(self) -> None:
        """The caller finished a full scan; the next one is due after ``rescan_interval``."""
        self._last_rescan = self._clock()

    def _on_event(self, event: FileSystemEvent) -> None:
        kind = _TYPES.get(event.event_type)
        if kind is None:
            return
        src = os.fsdecode(event.src_path)
        if os.path.abspath(src) == os.fspath(self.root.root):
            if kind in (EventType.DELETED, EventType.MOVED):
                self._root_event = True
                with self._wake:
                    self._wake.notify_all()
            return
        if event.event_type == EVENT_TYPE_MODIFIED and event.is_directory:
            return  # a folder's mtime moved because a child changed: the child has its own event
        path = self._arena_path(src, event.is_directory)
        dest = (
            self._arena_path(os.fsdecode(event.dest_path), event.is_directory)
            if kind is EventType.MOVED
            else None
        )
        if kind is EventType.MOVED and dest is None:
            kind, dest = EventType.DELETED, None  # moved out of the arena (or to an unsyncable name)
        if kind is EventType.MOVED and path is None:
            kind, path, dest = EventType.CREATED, dest, None  # moved in from outside
        if path is None:
            return
        now = self._clock()
        with self._wake:
            self._coalescer.add(Event(kind, path, now, is_dir=event.is_directory, dest=dest))
            self._wake.notify_all()

    def _arena_path(self, disk: str, is_dir: bool) -> str | None:
        try:
            path = self.root.arena_path(disk)
        except ShoalError:
            return None  # not a valid arena name: the next scan reports it
        if is_temp_name(path):
            return None
        if self._ignore is not None and self._ignore(path, is_dir):
            return None
        return path

    def _check_alive(self) -> None:
        observer = self._observer
        if observer is None or self._status.mode is not WatchMode.INOTIFY:
            return
        emitters_alive = all(e.is_alive() for e in observer.emitters)
        if not observer.is_alive() or not emitters_alive:
            self._observer = None
            self._stop_observer(observer)
            self._status = WatchStatus(
                WatchMode.POLLING,
                "the file watcher stopped (the folder was removed, or a watch limit was reached); "
                "changes are found by periodic scans",
            )

    def report(self) -> WatchReport:
        """Pop the ready paths now, without blocking."""
        self._check_alive()
        now = self._clock()
        with self._lock:
            batch = self._coalescer.ready(now)
        state = root_state(self.root)
        if self._root_event and state is RootState.PRESENT:
            self._root_event = False  # replaced by a new folder: a full rescan sorts it out
            return WatchReport(batch, state, True, self._status)
        rescan = self._status.mode is WatchMode.POLLING and now - self._last_rescan >= self.rescan_interval
        return WatchReport(batch, state, rescan, self._status)

    def wait(self, timeout: float) -> WatchReport:
        """Block until some path is ready, the root is in danger, or ``timeout`` seconds passed."""
        end = self._clock() + timeout
        with self._wake:
            while True:
                now = self._clock()
                if self._root_event or now >= end or self._status.mode is WatchMode.STOPPED:
                    break
                deadline = self._coalescer.next_deadline()
                if deadline is not None and deadline <= now:
                    break
                wake_at = end if deadline is None else min(end, deadline)
                if self._status.mode is WatchMode.POLLING:
                    wake_at = min(wake_at, self._last_rescan + self.rescan_interval)
                    if wake_at <= now:
                        break
                self._wake.wait(timeout=max(0.001, min(wake_at - now, 1.0)))
                if self._observer is not None and not self._observer.is_alive():
                    break
        return self.report()


def _limit_warning(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"the inotify watch limit is reached, so this folder is not watched live; {LIMIT_HINT}"
    if exc.errno == errno.EMFILE:
        return (
            "the inotify instance limit is reached, so this folder is not watched live; raise "
            "fs.inotify.max_user_instances; until then changes are found by periodic scans"
        )
    return f"the folder cannot be watched live ({exc.strerror or exc}); changes are found by periodic scans"
