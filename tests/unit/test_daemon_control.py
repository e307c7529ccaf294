"""The control socket as the CLI meets it: a real Unix socket, JSON lines, versioned, owner-only."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path

import pytest
from test_daemon_runner import Recorder, eventually

from shoal.daemon.control import call
from shoal.daemon.paths import DaemonPaths, connect_unix
from shoal.daemon.protocol import Request, decode_request
from shoal.daemon.service import Daemon, DaemonLock, running_pid
from shoal.daemon.status import DaemonStatus
from shoal.errors import ConflictError, FormatError, NetworkError, NotFoundError, UnsupportedVersionError
from shoal.settings import DaemonSettings
from shoal.state.arenas import ArenaRecord, ArenaRegistry
from shoal.state.db import DeviceDB

SETTINGS = DaemonSettings(debounce=0.05, rescan_interval=3600.0, backoff_base=0.05, backoff_cap=0.2)


def deep_home(tmp_path: Path) -> Path:
    """A home whose socket path is longer than a Unix socket address may be."""
    home = tmp_path / ("a-rather-long-folder-name-" * 4) / "device-home"
    home.mkdir(parents=True)
    assert len(str(home / "daemon.sock")) > 108
    return home


def test_socket_status_pause_resume_and_mode(tmp_path: Path) -> None:
    home = deep_home(tmp_path)
    paths = DaemonPaths(home)
    db = DeviceDB.open(home / "state.db")
    registry = ArenaRegistry(db)
    for name in ("docs", "photos"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.txt").write_text(name)
        registry.add(f"id-{name}", name, tmp_path / name, "http://127.0.0.1:1")
    syncers: dict[str, Recorder] = {}

    def factory(record: ArenaRecord) -> Recorder:
        syncers[record.name] = Recorder()
        return syncers[record.name]

    async def scenario() -> None:
        daemon = Daemon(paths, db, syncer_factory=factory, hub=None, settings=SETTINGS)
        ready = asyncio.Event()
        task = asyncio.create_task(daemon.run(ready.set))
        await asyncio.wait_for(ready.wait(), 10)
        try:
            assert stat.S_IMODE(os.stat(paths.socket).st_mode) == 0o600
            assert running_pid(paths) == os.getpid()

            async def ask(cmd: str, arena: str | None = None) -> dict[str, object]:
                return await asyncio.to_thread(call, paths.socket, Request(cmd, arena))

            async def states() -> dict[str, str]:
                status = DaemonStatus.from_json(await ask("status"))
                return {a.name: a.summary() for a in status.arenas}

            async def settled() -> bool:
                return set((await states()).values()) == {"up to date"}

            for _ in range(200):
                if await settled():
                    break
                await asyncio.sleep(0.05)
            assert await states() == {"docs": "up to date", "photos": "up to date"}
            assert (await ask("pause", "photos"))["state"] == "paused"
            assert (await states())["photos"].startswith("paused (paused by you")
            assert registry.get("id-photos").paused_reason is not None
            calls = len(syncers["photos"].calls)
            await ask("sync-now")
            await eventually(lambda: syncers["docs"].full_scans() >= 2, "sync-now reached docs")
            assert len(syncers["photos"].calls) == calls  # a paused arena ignores sync-now
            await ask("resume", "photos")
            await eventually(lambda: len(syncers["photos"].calls) > calls, "resumed photos synced")
            with pytest.raises(NotFoundError, match="no arena named 'music'"):
                await ask("pause", "music")
            with pytest.raises(ConflictError, match="already runs"):
                DaemonLock(paths).acquire()
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 20)
        assert not paths.socket.exists()
        assert running_pid(paths) is None
        assert all(s.closed for s in syncers.values())

    asyncio.run(scenario())
    db.close()
    with pytest.raises(NetworkError, match="no daemon answers"):
        call(paths.socket, Request("status"))


def test_requests_of_another_version_or_shape_are_refused() -> None:
    assert decode_request(b'{"v": 1, "cmd": "pause", "arena": "docs"}\n') == Request("pause", "docs")
    with pytest.raises(UnsupportedVersionError, match="restart the daemon"):
        decode_request(b'{"v": 2, "cmd": "status"}\n')
    with pytest.raises(FormatError, match="unknown control command"):
        decode_request(b'{"v": 1, "cmd": "rm -rf"}\n')
    with pytest.raises(FormatError, match="not JSON"):
        decode_request(b"status\n")


def test_a_bad_line_gets_an_error_answer_on_the_wire(tmp_path: Path) -> None:
    paths = DaemonPaths(tmp_path / "home")
    db = DeviceDB.open(paths.home / "state.db")

    async def scenario() -> None:
        daemon = Daemon(paths, db, syncer_factory=lambda r: Recorder(), hub=None, settings=SETTINGS)
        ready = asyncio.Event()
        task = asyncio.create_task(daemon.run(ready.set))
        await asyncio.wait_for(ready.wait(), 10)

        def raw() -> list[dict[str, object]]:
            with connect_unix(paths.socket, 5.0) as sock:
                sock.sendall(b'{"v": 9, "cmd": "status"}\n{"v": 1, "cmd": "status"}\n')
                sock.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            return [json.loads(line) for line in data.splitlines()]

        try:
            first, second = await asyncio.to_thread(raw)
            assert first["ok"] is False
            assert first["error"]["code"] == "UnsupportedVersionError"  # type: ignore[index]
            assert second["ok"] is True
            assert second["result"]["arenas"] == []
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 20)

    asyncio.run(scenario())
    db.close()
