"""``shoal daemon``, ``shoal status``, ``shoal pause``, ``shoal resume``: continuous sync and its control."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import typer

from shoal.cli.console import err, out
from shoal.cli.home import DeviceHome
from shoal.daemon.control import call
from shoal.daemon.engine_link import device_db_exists, ignore_rules, open_device_db, syncer_factory
from shoal.daemon.local_status import local_status
from shoal.daemon.paths import DaemonPaths
from shoal.daemon.protocol import Request
from shoal.daemon.runner import USER_PAUSE, is_user_pause
from shoal.daemon.service import Daemon, running_pid
from shoal.daemon.status import ArenaStatus, DaemonStatus
from shoal.engine.residency import PathStatus
from shoal.errors import NetworkError, NotFoundError, PausedError, ShoalError, StorageError
from shoal.net.sync import SyncClient
from shoal.settings import DaemonSettings
from shoal.state.arenas import ArenaRegistry
from shoal.worktree.paths import ArenaRoot
from shoal.worktree.scan import scan_tree

HomeOpt = typer.Option(
    None, "--home", envvar="SHOAL_HOME", help="Device home (default: $XDG_DATA_HOME/shoal)."
)
START_TIMEOUT = 30.0
_DEFAULTS = DaemonSettings()
STOP_TIMEOUT = 30.0


def _paths(home: Path | None) -> tuple[DeviceHome, DaemonPaths]:
    device_home = DeviceHome.resolve(home)
    return device_home, DaemonPaths(device_home.root)


# -- shoal daemon ----------------------------------------------------------------------------


def daemon(
    foreground: bool = typer.Option(
        False, "--foreground", help="Run in this process (for systemd and terminals) instead of detaching."
    ),
    stop: bool = typer.Option(False, "--stop", help="Stop the running daemon and wait until it has exited."),
    debounce: float = typer.Option(
        _DEFAULTS.debounce, "--debounce", help="Seconds a changed file must stay quiet before it syncs."
    ),
    rescan_interval: float = typer.Option(
        _DEFAULTS.rescan_interval, "--rescan-interval", help="Seconds between full safety-net rescans."
    ),
    home: Path | None = HomeOpt,
) -> None:
    """Sync every joined arena continuously: on local changes, hub announcements and periodic rescans."""
    device_home, paths = _paths(home)
    if stop:
        _stop_daemon(paths)
        return
    settings = DaemonSettings(debounce=debounce, rescan_interval=rescan_interval)
    if foreground:
        _run_foreground(device_home, paths, settings)
        return
    _start_background(device_home, paths, debounce, rescan_interval)


async def _serve(
    device_home: DeviceHome, paths: DaemonPaths, settings: DaemonSettings, on_ready: Callable[[], None]
) -> None:
    creds = device_home.require_credentials()
    db = open_device_db(device_home.root)
    try:
        async with device_home.session() as session:
            client = SyncClient(session)
            factory = syncer_factory(device_home.root, db, client, creds.device_id or "")
            service = Daemon(
                paths, db, syncer_factory=factory, hub=client, settings=settings, hub_url=creds.hub_url
            )
            await service.run(on_ready)
    finally:
        db.close()


def _run_foreground(device_home: DeviceHome, paths: DaemonPaths, settings: DaemonSettings) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )

    def ready() -> None:
        err.print(
            f"shoal daemon {os.getpid()} is running for {device_home.root}; control socket {paths.socket}"
        )

    asyncio.run(_serve(device_home, paths, settings, ready))


def _start_background(device_home: DeviceHome, paths: DaemonPaths, debounce: float, rescan: float) -> None:
    pid = running_pid(paths)
    if pid is not None:
        out.print(f"the daemon already runs (pid {pid})")
        return
    device_home.require_credentials()
    paths.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "shoal", "daemon", "--foreground", "--home", str(paths.home)]
    argv += ["--debounce", str(debounce), "--rescan-interval", str(rescan)]
    try:
        with paths.log.open("ab") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
    except OSError as exc:
        raise StorageError(f"cannot start the daemon: {exc.strerror or exc}") from exc
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ShoalError(
                f"the daemon exited at start with status {proc.returncode}:\n{_log_tail(paths)}",
                hint=f"the whole log is in {paths.log}",
            )
        try:
            call(paths.socket, Request("status"), timeout=2.0)
        except NetworkError:
            time.sleep(0.05)
            continue
        out.print(f"shoal daemon started (pid {proc.pid}); log: {paths.log}")
        return
    raise ShoalError(f"the daemon did not answer within {START_TIMEOUT:.0f} s", hint=f"see {paths.log}")


def _log_tail(paths: DaemonPaths) -> str:
    try:
        return "\n".join(paths.log.read_text(errors="replace").splitlines()[-15:])
    except OSError:
        return ""


def _stop_daemon(paths: DaemonPaths) -> None:
    pid = running_pid(paths)
    if pid is None:
        out.print("no daemon runs for this device")
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if running_pid(paths) is None:
            out.print(f"stopped the daemon (pid {pid})")
            return
        time.sleep(0.05)
    raise ShoalError(f"the daemon (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s")


# -- shoal status ----------------------------------------------------------------------------


def _gather_status(device_home: DeviceHome, paths: DaemonPaths) -> DaemonStatus:
    try:
        return DaemonStatus.from_json(call(paths.socket, Request("status")))
    except NetworkError:
        pass
    creds = device_home.load_credentials()
    hub_url = creds.hub_url if creds else None
    if not device_db_exists(device_home.root):
        return DaemonStatus(False, None, hub_url, [])
    db = open_device_db(device_home.root)
    try:
        return local_status(db, hub_url)
    finally:
        db.close()


def _arena_for(status: DaemonStatus, path: Path) -> tuple[ArenaStatus, str]:
    target = path.expanduser().absolute()
    for arena in status.arenas:
        root = Path(arena.root)
        if target == root or root in target.parents:
            return arena, target.relative_to(root).as_posix() if target != root else ""
    raise NotFoundError(f"{path} is not inside a joined arena", hint="`shoal status` lists the arenas")


def status(
    paths: list[Path] | None = typer.Argument(
        None, help="Show only the arenas holding these paths, and each path's residency."
    ),
    ignored: bool = typer.Option(False, "--ignored", help="List the paths that are not synced, and why."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    home: Path | None = HomeOpt,
) -> None:
    """Per arena: up to date, syncing N files, offline, paused (and why), conflicts.

    With PATHs, also each path's residency (pinned, cached or online-only), size and local content.

    Example: `shoal status ~/Docs/photos ~/Docs/todo.txt`."""
    from shoal.cli.residency_cmd import describe, residency_lines

    device_home, daemon_paths = _paths(home)
    state = _gather_status(device_home, daemon_paths)
    arenas = state.arenas
    under = ""
    resident: list[PathStatus] = []
    if paths:
        located = [_arena_for(state, p) for p in paths]
        arenas = list({a.arena_id: a for a, _ in located}.values())
        under = located[0][1] if len(paths) == 1 else ""
        resident = residency_lines(home, [str(p) for p in paths])
    skipped = {a.name: _ignored_paths(device_home.root, a, under) for a in arenas} if ignored else {}
    if as_json:
        data = state.to_json()
        data["arenas"] = [a.to_json() | ({"ignored": skipped[a.name]} if ignored else {}) for a in arenas]
        if paths:
            data["paths"] = [
                {"path": r.path, "kind": r.kind.value, "residency": r.residency.value, "size": r.size}
                | {"files": r.files, "local": r.local}
                for r in resident
            ]
        out.print_json(json.dumps(data))
        return
    if state.running:
        out.print(f"daemon: running (pid {state.pid})" + (f", hub {state.hub_url}" if state.hub_url else ""))
    else:
        out.print("daemon: not running (start it with `shoal daemon`)")
    if not arenas:
        out.print("no arenas are joined on this device (`shoal arena join NAME PATH`)")
    for arena in arenas:
        out.print(f"{arena.name}: {arena.summary()}", markup=False)
        out.print(f"  folder: {arena.root}", markup=False)
        if arena.hint:
            out.print(f"  hint: {arena.hint}", markup=False)
        if arena.retry_in is not None and arena.state.value in ("offline", "error"):
            out.print(f"  next attempt in {arena.retry_in:.0f} s", markup=False)
        if arena.watch_warning:
            out.print(f"  warning: {arena.watch_warning}", markup=False)
        for item in skipped.get(arena.name, []):
            out.print(f"  {item['kind']}: {item['path']}: {item['reason']}", markup=False)
    for line in resident:
        typer.echo(describe(line))  # tab-separated: scripts cut it


def _ignored_paths(home: Path, arena: ArenaStatus, under: str) -> list[dict[str, str]]:
    root = ArenaRoot(Path(arena.root))
    rules = ignore_rules(home, arena.arena_id, Path(arena.root))
    found: list[dict[str, str]] = []
    try:
        top = root.lstat(under) if under else None
    except ShoalError:
        top = None
    if top is not None and not _is_dir(top.st_mode):
        reason = rules.explain(under, False)
        return [{"kind": "ignored", "path": under, "reason": reason}] if reason else []
    result = scan_tree(root, under=under, ignore=rules.scanner_filter)
    found += [{"kind": "not synced", "path": p.path, "reason": p.reason} for p in result.problems]
    for item in sorted(result.ignored):
        try:
            found_stat = root.lstat(item)
        except ShoalError:
            found_stat = None
        is_dir = found_stat is not None and _is_dir(found_stat.st_mode)
        reason = rules.explain(item, is_dir) or "ignored"
        found.append({"kind": "ignored", "path": item + ("/" if is_dir else ""), "reason": reason})
    return found


def _is_dir(mode: int) -> bool:
    return stat.S_ISDIR(mode)


# -- shoal pause / resume --------------------------------------------------------------------


def _control(home: Path | None, cmd: str, arena: str) -> None:
    device_home, paths = _paths(home)
    try:
        result = call(paths.socket, Request(cmd, arena))
    except NetworkError:
        result = _control_offline(device_home, cmd, arena)
    out.print(f"{result.get('arena', arena)}: {result.get('state', cmd)}")


def _control_offline(device_home: DeviceHome, cmd: str, name: str) -> dict[str, str]:
    """No daemon runs: record the pause (or its end) in the device's state, where a daemon finds it."""
    if not device_db_exists(device_home.root):
        raise NotFoundError(f"no arena named {name!r} is joined on this device", hint="see `shoal status`")
    db = open_device_db(device_home.root)
    try:
        registry = ArenaRegistry(db)
        record = next((r for r in registry.all() if name in (r.name, r.arena_id)), None)
        if record is None:
            raise NotFoundError(
                f"no arena named {name!r} is joined on this device", hint="see `shoal status`"
            )
        if cmd == "pause":
            registry.set_paused(record.arena_id, USER_PAUSE)
            return {"arena": record.name, "state": "paused"}
        if record.paused_reason is not None and not is_user_pause(record.paused_reason):
            raise PausedError(
                f"arena {record.name!r} is held for safety, not paused by you: {record.paused_reason}",
                hint="it resumes by itself once the cause is gone (see `shoal status`)",
            )
        registry.set_paused(record.arena_id, None)
        return {"arena": record.name, "state": "resumed (syncs when `shoal daemon` runs)"}
    finally:
        db.close()


def _default_arena(home: Path | None) -> str:
    """The arena holding the current folder, else the only one joined."""
    device_home = DeviceHome.resolve(home)
    if not device_db_exists(device_home.root):
        raise NotFoundError("no arena is joined on this device", hint="`shoal arena join NAME PATH`")
    db = open_device_db(device_home.root)
    try:
        return ArenaRegistry(db).choose(None, Path.cwd()).name
    finally:
        db.close()


_ARENA_ARG = typer.Argument(
    None, help="The arena's name (default: the one holding the current folder, or the only one)."
)


def pause(arena: str | None = _ARENA_ARG, home: Path | None = HomeOpt) -> None:
    """Stop syncing an arena until `shoal resume` (survives restarts of the daemon)."""
    _control(home, "pause", arena or _default_arena(home))


def resume(arena: str | None = _ARENA_ARG, home: Path | None = HomeOpt) -> None:
    """Sync a paused arena again; what changed meanwhile, on either side, catches up."""
    _control(home, "resume", arena or _default_arena(home))


def register(app: typer.Typer) -> None:
    app.command("daemon")(daemon)
    app.command("status")(status)
    app.command("pause")(pause)
    app.command("resume")(resume)
