"""One arena's sync loop: wake on local changes, hub announcements, a periodic rescan or a request.

Three asyncio tasks per arena, all on the daemon's event loop:

- ``_round_loop`` runs sync rounds (push, then pull) one at a time, so the
  engine never sees two rounds of one arena at once;
- ``_watch_local`` waits on the inotify watcher in a private thread and hands
  ready paths (debounced, bursts batched) to the loop;
- ``_watch_hub`` keeps a WebSocket open and asks for a pull when the hub
  announces a newer cursor, reconnecting with backoff.

A pull that is far behind (``DaemonSettings.quiet_pull`` changes or more,
and a twentieth of the arena's files: a return from a long time offline),
or a new device's first pull, runs with the watcher off, and a full rescan
follows it. Every file a pull writes comes
back from inotify as events that the watcher parses and hands over and a
push then checks, only to find the pull's own writes: between two daemons,
20k pulled files kept about a quarter of the receiving daemon's CPU on that.
The rescan (by stat) finds the same, and any edit made meanwhile, for a
fraction of it; the pull itself never overwrites an edit it did not see
(it checks each file's stat right before placing its new copy).

A failed round keeps its work: the next attempt does a full rescan, which the
engine makes cheap (by stat). While the hub is unreachable the arena is
*offline* and retries with exponential backoff and jitter; a reconnected
WebSocket cuts the wait short, so a returning hub is noticed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from shoal.daemon.backoff import Backoff
from shoal.daemon.port import ArenaSyncer, HubWatch
from shoal.daemon.status import ArenaState, ArenaStatus
from shoal.engine.context import HELD_PREFIX, SyncReport
from shoal.errors import AuthError, NetworkError, PausedError, RateLimitedError, ShoalError
from shoal.reconcile.coalesce import Batch
from shoal.settings import DaemonSettings
from shoal.state.arenas import ArenaRecord, ArenaRegistry
from shoal.state.db import DeviceDB
from shoal.state.index import ArenaIndex
from shoal.worktree.ignore import ARENA_MARKER
from shoal.worktree.paths import ArenaRoot
from shoal.worktree.watch import RootState, TreeWatcher, WatchMode, root_state

log = logging.getLogger("shoal.daemon")

USER_PAUSE = "paused by you; `shoal resume` continues"
MAX_BATCH_PATHS = 5000  # a bigger burst is cheaper as one full rescan
_WATCH_POLL = 1.0
_ROOT_POLL = 1.0
_SKIPPED_RETRY = 2.0
STOP_GRACE = 10.0  # seconds a stopping daemon lets a round in progress finish


def merge(a: Batch, b: Batch) -> Batch:
    return Batch(a.paths | b.paths, a.subtrees | b.subtrees, a.moves + b.moves)


def is_user_pause(reason: str | None) -> bool:
    return reason is not None and reason.startswith("paused by you")


class ArenaRunner:
    def __init__(
        self,
        record: ArenaRecord,
        syncer: ArenaSyncer,
        *,
        db: DeviceDB,
        hub: HubWatch | None,
        settings: DaemonSettings,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.record = record
        self.syncer = syncer
        self.db = db
        self.hub = hub
        self.settings = settings
        self._clock = clock
        self._root = ArenaRoot(record.root)
        self._index = ArenaIndex(db, record.arena_id)
        self._backoff = Backoff(settings.backoff_base, settings.backoff_cap, rand)
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._watch_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"watch-{record.name}")
        self._watcher = self._new_watcher()
        # Work waiting for the next round (touched only on the event loop).
        self._batch = Batch()
        self._full_scan_due = True  # the first round catches up with whatever happened while stopped
        self._pull_due = True
        self._retry_at: float | None = None
        self._next_rescan = clock() + settings.rescan_interval
        self._known_cursor = 0
        self._quiet = False  # the watcher is off through a large pull (see the module's docstring)
        self._rewatch = False  # a quiet pull ended: the round loop starts a new watcher first
        self._root_unsafe = False
        self._hub_lost = False
        # What status shows.
        self._user_paused = is_user_pause(record.paused_reason)
        self.state = ArenaState.PAUSED if self._user_paused else ArenaState.STARTING
        self.reason: str | None = record.paused_reason if self._user_paused else None
        self.hint: str | None = None
        self.syncing = 0
        self.last_synced: float | None = None
        self.rounds = 0  # completed successful rounds, for tests and benchmarks
        self._unsyncable: list[str] = []  # "path: why" from the last whole scan and hints since
        self._logged: tuple[ArenaState, str | None] = (self.state, self.reason)

    # -- lifecycle -------------------------------------------------------------------------

    def _new_watcher(self) -> TreeWatcher:
        return TreeWatcher(
            self._root,
            delay=self.settings.debounce,
            max_delay=self.settings.max_delay,
            rescan_interval=self.settings.rescan_interval,
            clock=self._clock,
        )

    def _restart_watcher(self) -> None:
        old, self._watcher = self._watcher, self._new_watcher()
        old.stop()  # its waiting thread returns; _watch_local carries on with the new one
        self._watcher.start()

    def start(self) -> None:
        self._watcher.start()
        self._tasks = [
            asyncio.create_task(self._round_loop(), name=f"rounds-{self.record.name}"),
            asyncio.create_task(self._watch_local(), name=f"local-{self.record.name}"),
        ]
        if self.hub is not None:
            self._tasks.append(asyncio.create_task(self._watch_hub(), name=f"hub-{self.record.name}"))

    async def stop(self) -> None:
        """Stop after the round in progress, or cut it after ``STOP_GRACE`` seconds."""
        self._stopping = True
        self._wake.set()
        self._watcher.stop()
        for task in self._tasks[2:]:
            task.cancel()  # the hub watch only waits
        _, late = await asyncio.wait(self._tasks, timeout=STOP_GRACE)
        for task in late:
            task.cancel()  # a long round: the engine is safe to stop anywhere (journal, atomic writes)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._watch_thread.shutdown(wait=True)
        await self.syncer.aclose()

    # -- control ---------------------------------------------------------------------------

    def request_sync(self) -> None:
        """``sync-now``: a full rescan and a pull right away, even during a backoff wait."""
        self._full_scan_due = True
        self._pull_due = True
        self._retry_at = None
        self._wake.set()

    async def pause(self) -> None:
        """Stop syncing this arena until ``resume``; the pause survives a restart of the daemon."""
        await asyncio.to_thread(self.db_set_paused, USER_PAUSE)
        self._user_paused = True
        self.state, self.reason, self.hint = ArenaState.PAUSED, USER_PAUSE, None
        self._wake.set()

    async def resume(self) -> None:
        await asyncio.to_thread(self.db_set_paused, None)
        self._user_paused = False
        self.state, self.reason = ArenaState.STARTING, None
        self.request_sync()

    def db_set_paused(self, reason: str | None) -> None:
        ArenaRegistry(self.db).set_paused(self.record.arena_id, reason)

    def status(self) -> ArenaStatus:
        """The arena's state now (reads the index: call it off the event loop)."""
        pending = len(self._batch.paths) + len(self._batch.subtrees) + len(self._index.dirty())
        retry_in = None
        if self._retry_at is not None:
            retry_in = max(0.0, self._retry_at - self._clock())
        watch = self._watcher.status
        watch_mode = "paused for a large pull" if self._quiet else watch.mode.value
        reason, hint = self.reason, self.hint
        held = ArenaRegistry(self.db).get(self.record.arena_id).paused_reason
        if self.state is ArenaState.UP_TO_DATE and held is not None and held.startswith(HELD_PREFIX):
            reason = held.removeprefix(HELD_PREFIX)
            hint = "`shoal sync --confirm-deletes` deletes them everywhere; restoring the files cancels it"
        return ArenaStatus(
            arena_id=self.record.arena_id,
            name=self.record.name,
            root=str(self.record.root),
            state=self.state,
            reason=reason,
            hint=hint,
            syncing=self.syncing,
            pending=pending,
            conflicts=len(self._index.conflicts()),
            cursor=self._index.cursor,
            last_synced=self.last_synced,
            retry_in=retry_in,
            watch=watch_mode,
            watch_warning=watch.warning,
            unsyncable=len(self._unsyncable),
        )

    # -- the round loop --------------------------------------------------------------------

    def _timeout(self) -> float:
        now = self._clock()
        due = self._next_rescan
        if self._retry_at is not None:
            due = min(due, self._retry_at)
        return max(0.0, due - now)

    def _has_work(self) -> bool:
        return self._full_scan_due or self._pull_due or bool(self._batch)

    async def _round_loop(self) -> None:
        while not self._stopping:
            await self._rewatch_if_due()
            if self._user_paused or self._root_unsafe or not self._has_work() or self._in_backoff():
                timeout = self._timeout()
                if self._root_unsafe:
                    timeout = min(timeout, _ROOT_POLL)  # a remounted disk brings no event: look again
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)
                self._wake.clear()
            if self._stopped():
                return
            if self._clock() >= self._next_rescan:
                self._full_scan_due = True
                self._pull_due = True
            if self._user_paused:
                self.state, self.reason = ArenaState.PAUSED, USER_PAUSE
                self._log_transition()
                continue
            if not await self._root_is_safe():
                self._log_transition()
                continue
            if self._in_backoff() or not self._has_work():
                continue
            await self._round()
            self._log_transition()

    def _log_transition(self) -> None:
        now = (self.state, self.reason)
        if now == self._logged:
            return
        self._logged = now
        level = logging.WARNING if self.state in (ArenaState.ERROR, ArenaState.OFFLINE) else logging.INFO
        text = self.reason if self.reason and self.state is not ArenaState.PAUSED else ""
        log.log(level, "%s: %s%s", self.record.name, self.state.value, f" ({text})" if text else "")
        if self.state is ArenaState.PAUSED and self.reason:
            log.warning("%s: %s", self.record.name, self.reason)

    def _stopped(self) -> bool:
        return self._stopping  # a method, so the checks between awaits are not narrowed away

    def _in_backoff(self) -> bool:
        return self._retry_at is not None and self._clock() < self._retry_at

    async def _root_is_safe(self) -> bool:
        """Unknown is not deleted: a missing root, or an empty one that had files, pauses the arena."""
        state = await asyncio.to_thread(root_state, self._root)
        reason = None
        if state is RootState.MISSING:
            reason = f"the folder {self.record.root} is missing (an unmounted disk?); nothing is deleted"
        elif state is RootState.EMPTY and await asyncio.to_thread(self._index.count) > 0:
            reason = (
                f"the folder {self.record.root} is empty but had synced files (an unmounted disk?); "
                "nothing is deleted"
            )
        if reason is None:
            if self._root_unsafe:
                self._root_unsafe = False
                # Back from a safety pause: a fresh watch on the folder now there, and a full look.
                self._full_scan_due = self._pull_due = True
                self._restart_watcher()
                self.state, self.reason, self.hint = ArenaState.STARTING, None, None
            return True
        self._root_unsafe = True
        self.state, self.reason = ArenaState.PAUSED, reason
        self.hint = "mount or restore the folder and syncing resumes by itself"
        self._full_scan_due = True
        self._batch = Batch()
        return False

    async def _round(self) -> None:
        full = self._full_scan_due or len(self._batch.paths) + len(self._batch.subtrees) > MAX_BATCH_PATHS
        batch, self._batch = self._batch, Batch()
        self._full_scan_due = self._pull_due = False
        self.state, self.reason, self.hint = ArenaState.SYNCING, None, None
        self.syncing = len(batch.paths) + len(batch.subtrees)
        started = self._clock()
        try:
            if full or batch:
                await self.syncer.push(None if full else batch)
                pushed = getattr(self.syncer, "last_report", None)
                if isinstance(pushed, SyncReport):
                    self._note_unsyncable(pushed)
                self._follow_up(pushed)  # the pull's report replaces it
            await self._pull()
        except (NetworkError, RateLimitedError) as exc:
            self._failed(ArenaState.OFFLINE, exc, batch)
        except PausedError as exc:
            self._failed(ArenaState.PAUSED, exc, batch)
        except AuthError as exc:
            self._failed(ArenaState.ERROR, exc, batch)
            self.hint = exc.hint or "log in again with `shoal login`"
        except ShoalError as exc:
            self._failed(ArenaState.ERROR, exc, batch)
        except Exception as exc:  # a bug must not end this arena's loop: it is logged and retried
            log.exception("%s: the sync round failed unexpectedly", self.record.name)
            self._failed(
                ArenaState.ERROR, ShoalError(f"internal error: {exc!r}", hint="see the daemon's log"), batch
            )
        else:
            self._backoff.reset()
            self._retry_at = None
            self.state, self.syncing = ArenaState.UP_TO_DATE, 0
            self.last_synced = time.time()
            self.rounds += 1
            if full:
                self._next_rescan = started + self.settings.rescan_interval
                self._watcher.mark_rescanned()
            self._follow_up(getattr(self.syncer, "last_report", None))

    async def _pull(self) -> None:
        """Pull; one far behind runs with the watcher off until the arena has caught up."""
        if not self._quiet and await self._far_behind():
            log.info("%s: pulling with the watcher paused (far behind the hub)", self.record.name)
            self._quiet = True
            self._watcher.stop()
        try:
            await self.syncer.pull()
        except BaseException:
            self._end_quiet()  # a failing hub may stay away: watch again meanwhile
            raise
        if self._quiet and await self._behind() < await self._quiet_from():
            self._end_quiet()

    async def _far_behind(self) -> bool:
        behind = await self._behind()
        if behind >= self.settings.quiet_pull:
            return behind >= await self._quiet_from()
        # A device that holds nothing yet may be about to pull a whole arena, and its first pull
        # often starts before the hub's watch has said how far ahead it is.
        return self.rounds == 0 and await asyncio.to_thread(self._holds_nothing)

    def _holds_nothing(self) -> bool:
        if self._index.count():
            return False
        try:
            with os.scandir(self._root.root) as listing:
                return all(entry.name == ARENA_MARKER for entry in listing)
        except OSError:
            return False

    async def _quiet_from(self) -> int:
        """How far behind a pull runs quiet: ``quiet_pull`` changes, and a twentieth of the arena's
        files, since the rescan after it takes ~12 µs per file (0.24 s for 20k) where a pulled
        file's events cost a few hundred (with a new watch on every folder to set up as well)."""
        indexed = await asyncio.to_thread(self._index.count)
        return max(self.settings.quiet_pull, indexed // 20)

    async def _behind(self) -> int:
        """Changes announced by the hub and not yet pulled (about: cursors count the arena's log)."""
        cursor = await asyncio.to_thread(lambda: self._index.cursor)
        return self._known_cursor - cursor

    def _end_quiet(self) -> None:
        """The round loop starts a new watcher, then the full rescan runs (in that order: an edit
        made after the rescan looked must reach the watcher)."""
        if self._quiet:
            log.info("%s: watching again; a full rescan follows the large pull", self.record.name)
            self._quiet = False
            self._rewatch = True
            self._full_scan_due = True  # what the watcher missed, the pull's writes and any edit
            self._wake.set()

    async def _rewatch_if_due(self) -> None:
        """Start the watcher a quiet pull stopped, in a thread: a watch per folder takes a while to
        set up in a big tree (0.13 s for 2,100 folders), and the loop serves other arenas too."""
        if not self._rewatch or self._stopping:
            return
        self._rewatch = False
        watcher = self._new_watcher()
        starting = asyncio.ensure_future(asyncio.to_thread(watcher.start))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            starting.add_done_callback(lambda _: watcher.stop())
            raise
        if self._stopped():
            watcher.stop()
            return
        old, self._watcher = self._watcher, watcher
        old.stop()  # its waiting thread returns; _watch_local carries on with the new one

    def _note_unsyncable(self, report: SyncReport) -> None:
        """A whole scan says which paths cannot be synced now; a hinted one adds what it saw. Each
        is logged once, when it is first found."""
        before = set(self._unsyncable)
        found = [u for u in dict.fromkeys(report.unsyncable) if u not in before]
        for item in found:
            log.warning("%s: not synced: %s", self.record.name, item)
        if report.whole_scan:
            self._unsyncable = list(dict.fromkeys(report.unsyncable))
        else:
            self._unsyncable += found

    def _follow_up(self, report: object) -> None:
        """A pull that made conflict copies has something to push now; paths skipped (a git lock
        held) are looked at again soon, without spinning while the lock stays."""
        if getattr(report, "conflicts", None):
            self._full_scan_due = True
        if getattr(report, "skipped", None):
            self._next_rescan = min(self._next_rescan, self._clock() + _SKIPPED_RETRY)

    def _failed(self, state: ArenaState, exc: ShoalError, batch: Batch) -> None:
        # Keep the work: the batch goes back, and the retry rescans everything (cheap, by stat), so
        # a change the engine had half-handled when the hub vanished is found again.
        self._batch = merge(batch, self._batch)
        self._full_scan_due = True
        self._pull_due = True
        self.state, self.reason, self.hint, self.syncing = state, exc.message, exc.hint, 0
        self._retry_at = self._clock() + self._backoff.next_delay()

    # -- wake-up sources -------------------------------------------------------------------

    async def _watch_local(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            watcher = self._watcher
            report = await loop.run_in_executor(self._watch_thread, watcher.wait, _WATCH_POLL)
            if self._stopped():
                return
            if report.status.mode is WatchMode.STOPPED:
                if watcher is self._watcher:
                    await asyncio.sleep(_WATCH_POLL)  # not started yet (or failed to): do not spin
                continue
            woke = False
            if report.batch:
                self._batch = merge(self._batch, report.batch)
                woke = True
            if report.rescan_due:
                self._full_scan_due = True
                woke = True
            if report.root is not RootState.PRESENT and not self._root_unsafe:
                woke = True  # the round loop pauses the arena and says why
            if woke:
                self._wake.set()

    async def _watch_hub(self) -> None:
        assert self.hub is not None
        backoff = Backoff(self.settings.backoff_base, self.settings.backoff_cap)
        while not self._stopping:
            since = await asyncio.to_thread(lambda: self._index.cursor)
            try:
                async for message in self.hub.watch(self.record.arena_id, since):
                    backoff.reset()
                    back = self._hub_lost or self._retry_at is not None
                    self._hub_lost = False
                    if message.type == "cursor" or message.entries or message.cursor > since or back:
                        self._announce(message.cursor)  # new commits, or the hub is back: a round now
            except NetworkError as exc:
                self._lost_hub(exc)
            except ShoalError:
                pass
            if self._stopped():
                return
            await asyncio.sleep(backoff.next_delay())

    def _lost_hub(self, exc: NetworkError) -> None:
        """The watch dropped: an idle arena says offline at once, not at its next local change."""
        self._hub_lost = True
        if self.state is ArenaState.UP_TO_DATE:
            self.state, self.reason, self.hint = ArenaState.OFFLINE, exc.message, exc.hint
            self._log_transition()

    def _announce(self, cursor: int) -> None:
        self._known_cursor = max(self._known_cursor, cursor)
        self._pull_due = True
        if self._retry_at is not None:
            self._retry_at = None  # the hub answers again: do not sit out the backoff
            self._full_scan_due = True
        self._wake.set()
