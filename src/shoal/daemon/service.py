"""The daemon: one per device home, an :class:`ArenaRunner` per joined arena, and the control socket.

Start-up order matters: the lock first (so a second daemon never touches the
first one's socket), then the runners, then the socket (so ``status`` answers
only once every arena is known). Shutdown is the reverse; each runner
finishes the round it is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
from collections.abc import Callable
from typing import Any

from shoal.daemon.control import ControlServer
from shoal.daemon.paths import DaemonPaths
from shoal.daemon.port import HubWatch, SyncerFactory
from shoal.daemon.protocol import Request
from shoal.daemon.runner import ArenaRunner
from shoal.daemon.status import DaemonStatus
from shoal.engine.join import leave_arena
from shoal.errors import ConflictError, NotFoundError, StorageError, UsageError
from shoal.settings import DaemonSettings
from shoal.state.arenas import ArenaRecord, ArenaRegistry
from shoal.state.db import DeviceDB


class DaemonLock:
    """An exclusive ``flock`` on ``daemon.lock`` holding the daemon's pid; released when the process dies."""

    def __init__(self, paths: DaemonPaths) -> None:
        self.paths = paths
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.paths.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open {self.paths.lock}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise ConflictError(
                f"a daemon already runs for {self.paths.home}" + (f" (pid {pid})" if pid else ""),
                hint="`shoal status` talks to it; stop it first to start another",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "0") or None
    except (OSError, ValueError):
        return None


def running_pid(paths: DaemonPaths) -> int | None:
    """The pid of the daemon holding this home's lock, or None when none runs."""
    try:
        fd = os.open(paths.lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        return None
    finally:
        os.close(fd)


class Daemon:
    def __init__(
        self,
        paths: DaemonPaths,
        db: DeviceDB,
        *,
        syncer_factory: SyncerFactory,
        hub: HubWatch | None,
        settings: DaemonSettings,
        hub_url: str | None = None,
    ) -> None:
        self.paths = paths
        self.db = db
        self.registry = ArenaRegistry(db)
        self.settings = settings
        self.hub_url = hub_url
        self._factory = syncer_factory
        self._hub = hub
        self._lock = DaemonLock(paths)
        self._control = ControlServer(paths.socket, self.handle)
        self._stop = asyncio.Event()
        self.runners: dict[str, ArenaRunner] = {}

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        self._lock.acquire()
        loop = asyncio.get_running_loop()
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            await self._refresh_arenas()
            await self._control.start()
            if on_ready is not None:
                on_ready()
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=self.settings.registry_poll)
                if not self._stop.is_set():
                    await self._refresh_arenas()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self._control.close()
            await asyncio.gather(*(r.stop() for r in self.runners.values()), return_exceptions=True)
            self.runners.clear()
            self._lock.release()

    async def _refresh_arenas(self) -> None:
        """Start runners for arenas joined since the last look, stop those that were left."""
        records = {r.arena_id: r for r in await asyncio.to_thread(self.registry.all)}
        for arena_id in [a for a in self.runners if a not in records]:
            await self.runners.pop(arena_id).stop()
        for arena_id, record in records.items():
            if arena_id not in self.runners:
                self._start_runner(record)

    def _start_runner(self, record: ArenaRecord) -> None:
        runner = ArenaRunner(record, self._factory(record), db=self.db, hub=self._hub, settings=self.settings)
        self.runners[record.arena_id] = runner
        runner.start()

    # -- control requests ------------------------------------------------------------------

    def _find(self, name: str | None) -> ArenaRunner:
        if not name:
            raise UsageError("name the arena", hint="`shoal status` lists them")
        for runner in self.runners.values():
            if name in (runner.record.name, runner.record.arena_id):
                return runner
        raise NotFoundError(f"no arena named {name!r} is joined on this device", hint="see `shoal status`")

    async def status(self) -> DaemonStatus:
        arenas = await asyncio.to_thread(lambda: [r.status() for r in self.runners.values()])
        arenas.sort(key=lambda a: a.name)
        return DaemonStatus(True, os.getpid(), self.hub_url, arenas)

    async def handle(self, request: Request) -> dict[str, Any]:
        if request.cmd == "status":
            return (await self.status()).to_json()
        if request.cmd == "sync-now":
            await self._refresh_arenas()
            targets = [self._find(request.arena)] if request.arena else list(self.runners.values())
            for runner in targets:
                runner.request_sync()
            return {"arenas": [r.record.name for r in targets]}
        runner = self._find(request.arena)
        if request.cmd == "leave":
            # Stopped first (after its round in progress), so no round of it runs while it is
            # forgotten; forgotten on the loop itself, so no refresh starts it again in between (if
            # another process holds its lock, the error goes back and the next refresh restarts it).
            await runner.stop()
            del self.runners[runner.record.arena_id]
            await leave_arena(self.db, runner.record)
            return {"arena": runner.record.name, "state": "left"}
        if request.cmd == "pause":
            await runner.pause()
        else:
            await runner.resume()
        return {"arena": runner.record.name, "state": runner.state.value}
