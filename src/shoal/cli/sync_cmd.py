"""``shoal arena join``, ``shoal sync --once``, ``shoal conflicts``, ``shoal log``, ``shoal versions``,
``shoal restore``: one-shot sync and history, for people and scripts (``shoal daemon`` syncs continuously)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import typer
from rich.markup import escape

from shoal.cli.arena_keys import unlocked_here
from shoal.cli.console import err, human_bytes, out
from shoal.cli.device_cmd import open_keyring
from shoal.cli.home import DeviceHome
from shoal.cli.progress import byte_progress
from shoal.daemon.control import call
from shoal.daemon.engine_link import DEVICE_DB_NAME
from shoal.daemon.paths import DaemonPaths
from shoal.daemon.protocol import Request
from shoal.engine.context import SyncOptions, SyncReport
from shoal.engine.crypt_codec import crypto_for
from shoal.engine.history import pick_version, read_log, restore_in_place, restore_to, versions
from shoal.engine.join import check_can_leave, join_arena, leave_arena
from shoal.engine.resolve import Keep, resolve
from shoal.engine.sync import ArenaSync
from shoal.errors import ConfigError, NetworkError, NotFoundError, PausedError, ShoalError, UsageError
from shoal.net.auth import AuthClient
from shoal.net.http import HubSession
from shoal.net.sync import SyncClient
from shoal.state.arenas import ArenaRecord, ArenaRegistry
from shoal.state.db import DeviceDB
from shoal.state.index import ArenaIndex, Residency
from shoal.worktree.paths import ArenaRoot
from shoal.worktree.stub import target_of

T = TypeVar("T")
HomeOpt = typer.Option(
    None, "--home", envvar="SHOAL_HOME", help="Device home (default: $XDG_DATA_HOME/shoal)."
)
ArenaOpt = typer.Option(
    None, "--arena", "-a", help="The arena (default: the one holding PATH, or the only one)."
)
conflicts_app = typer.Typer(help="List conflict copies, or resolve one.", invoke_without_command=True)


def _open_db(home: DeviceHome) -> DeviceDB:
    return DeviceDB.open(home.root / DEVICE_DB_NAME)


def _device_id(home: DeviceHome) -> str:
    creds = home.require_credentials()
    if not creds.device_id:
        raise ConfigError(
            "this login has no device identity; syncing needs one", hint="log in again with `shoal login`"
        )
    return creds.device_id


def _pick_arena(db: DeviceDB, name: str | None) -> ArenaRecord:
    return ArenaRegistry(db).choose(name, Path.cwd())


def _locate(db: DeviceDB, raw: str, name: str | None) -> tuple[ArenaRecord, str]:
    """The arena and arena path of a path given on the command line (a file path, or arena-relative);
    an on-demand file's stub ``NAME.shoal`` means ``NAME``."""
    disk = Path(raw).expanduser().absolute()
    for arena in ArenaRegistry(db).all():
        if name is not None and name not in (arena.name, arena.arena_id):
            continue
        if disk.is_relative_to(arena.root) and disk != arena.root:
            return arena, _unstubbed(db, arena, ArenaRoot(arena.root).arena_path(disk))
    arena = _pick_arena(db, name)
    ArenaRoot(arena.root).disk_path(raw)  # validates an arena-relative path
    return arena, _unstubbed(db, arena, raw)


def _unstubbed(db: DeviceDB, arena: ArenaRecord, path: str) -> str:
    index = ArenaIndex(db, arena.arena_id)
    if (entry := index.get(path)) is not None and not entry.deleted:
        return path
    target = target_of(path)
    if target is not None and (live := index.get(target)) is not None and not live.deleted:
        return target
    return path


@asynccontextmanager
async def _syncer(
    home: DeviceHome, db: DeviceDB, arena: ArenaRecord, *, session: HubSession | None = None, **kw: object
) -> AsyncIterator[ArenaSync]:
    """An arena's syncer on ``session``, or on a session of its own."""
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(home.session())
        if arena.settings.get("encrypted") and "codec" not in kw:
            # Always ask the hub: after a rotation, new content must use the newest key epoch.
            keychain = await open_keyring(home, session).unlock(arena.arena_id)
            kw["codec"], kw["sealer"] = crypto_for(arena, keychain)
        sync = ArenaSync(db, arena, SyncClient(session), _device_id(home), **kw)  # type: ignore[arg-type]
        try:
            yield sync
        finally:
            await sync.aclose()


async def _device_names(session: HubSession) -> dict[str, str]:
    """Device id -> the name it logged in with, for the household's devices: what `log` and
    `versions` show. A name two devices share keeps its id beside it; a device the hub does not
    list (another household's, in a shared arena) keeps its id alone."""
    try:
        devices = await AuthClient(session).list_devices()
    except ShoalError:
        return {}  # the change log was read a moment ago; names are a nicety
    taken = Counter(d.name for d in devices)
    return {d.id: d.name if taken[d.name] == 1 else f"{d.name} ({d.id})" for d in devices}


def _run(home_dir: Path | None, action: Callable[[DeviceHome, DeviceDB], Coroutine[object, object, T]]) -> T:
    home = DeviceHome.resolve(home_dir)
    db = _open_db(home)
    try:
        return asyncio.run(action(home, db))
    finally:
        db.close()


def join(
    name: str = typer.Argument(..., help="The arena's name (or id) on the hub."),
    path: Path = typer.Argument(..., help="The local folder to sync it into (created if missing)."),
    hub: str | None = typer.Option(None, "--hub", help="The hub's URL (default: the one you logged in to)."),
    on_demand: bool = typer.Option(
        False,
        "--on-demand/--pinned",
        show_default=False,
        help="--pinned: fetch every file's content (default: --pinned). --on-demand: files arrive as "
        "stubs NAME.shoal; `shoal hydrate` or `shoal pin` fetches them.",
    ),
    home: Path | None = HomeOpt,
) -> None:
    """Join an arena: sync the hub's arena NAME into the folder PATH on this device.

    Example: `shoal arena join photos ~/Photos --on-demand` (every photo arrives as a stub NAME.shoal)."""

    async def action(device_home: DeviceHome, db: DeviceDB) -> ArenaRecord:
        creds = device_home.require_credentials()
        if hub is not None and hub.rstrip("/") != creds.hub_url:
            raise UsageError(
                f"this device is logged in to {creds.hub_url}, not {hub}",
                hint=f"run `shoal login --hub {hub}` first",
            )
        async with device_home.session() as session:
            residency = Residency.ONLINE_ONLY if on_demand else Residency.PINNED
            return await join_arena(db, SyncClient(session), name, path, creds.hub_url, residency=residency)

    record = _run(home, action)
    if record.settings.get("encrypted") and not unlocked_here(DeviceHome.resolve(home), [record.arena_id]):
        out.print(f"joined encrypted arena {record.name} at {record.root}; it stays empty until this device")
        out.print(
            f"holds its key: run `shoal device enroll --arena {record.name}` (with --passphrase-file or"
            " --recovery-words-file, or approve it from a device that has the key), then sync"
        )
        return
    try:  # a running daemon starts syncing it now rather than at its next look at the arenas
        call(DaemonPaths(DeviceHome.resolve(home).root).socket, Request("sync-now"), timeout=10)
    except NetworkError:
        how = "run `shoal sync --once` or `shoal daemon` to sync it"
        out.print(f"joined arena {record.name} at {record.root}; {how}")
        return
    out.print(f"joined arena {record.name} at {record.root}; the running daemon syncs it now")


def leave(
    name: str = typer.Argument(..., help="The joined arena's name (or id)."),
    force: bool = typer.Option(
        False, "--force", help="Leave even if this device's last changes cannot reach the hub first."
    ),
    home: Path | None = HomeOpt,
) -> None:
    """Stop syncing an arena on this device. Its files stay in the folder; the arena stays on the hub.

    This device's changes are pushed first, so the other devices keep them; if that fails (no hub,
    an arena held for safety), nothing is left unless --force. A running daemon stops syncing it at
    once. Example: `shoal arena leave photos`, then `shoal arena join photos ~/Pictures` to sync it
    into another folder."""

    async def action(device_home: DeviceHome, db: DeviceDB) -> ArenaRecord:
        record = ArenaRegistry(db).choose(name)
        try:
            async with _syncer(device_home, db, record) as syncer:
                await syncer.push()
        except ShoalError:
            if not force:
                err.print(
                    f"could not push this device's changes to arena {record.name!r}, so it was not left; "
                    f"fix what follows and try again, or add --force (changes not pushed then exist "
                    f"only in {record.root})",
                    highlight=False,
                )
                raise
        if not force:
            check_can_leave(db, record)  # what the push could not send (still journalled or marked)
        try:
            # The daemon first lets a round in progress finish (up to its stop grace).
            call(DaemonPaths(device_home.root).socket, Request("leave", record.arena_id), timeout=60)
        except NetworkError:  # no daemon runs: leave here
            await leave_arena(db, record)
        return record

    record = _run(home, action)
    out.print(f"left arena {record.name}: its files stay in {record.root}; it is no longer synced here")


def _print_report(name: str, report: SyncReport) -> None:
    out.print(
        f"{name}: pushed {report.pushed}, pulled {report.pulled} "
        f"({human_bytes(report.uploaded_bytes)} up, {human_bytes(report.downloaded_bytes)} down), "
        f"cursor {report.cursor}"
    )
    for copy in report.conflicts:
        out.print(f"  conflict: kept both versions, the other one as {copy}")
    for why in report.skipped[:20]:
        err.print(f"  [yellow]skipped:[/] {escape(why)}")
    unsyncable = list(dict.fromkeys(report.unsyncable))
    for why in unsyncable[:20]:
        err.print(f"  [yellow]not synced:[/] {escape(why)}", highlight=False)
    if len(unsyncable) > 20:
        err.print(f"  ... and {len(unsyncable) - 20} more: `shoal status --ignored` lists every one")


def sync(
    arena: str | None = typer.Argument(None, help="The arena (default: every joined arena)."),
    once: bool = typer.Option(
        True, "--once", help="Sync one round and exit (continuous sync: `shoal daemon`)."
    ),
    confirm_deletes: bool = typer.Option(
        False, "--confirm-deletes", help="Also push deletions held back for safety."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    home: Path | None = HomeOpt,
) -> None:
    """Sync joined arenas once: push local changes, pull and apply remote ones."""
    del once

    async def action(device_home: DeviceHome, db: DeviceDB) -> int:
        chosen = [_pick_arena(db, arena)] if arena is not None else ArenaRegistry(db).all()
        if not chosen:
            raise NotFoundError("no arena is joined on this device", hint="`shoal arena join NAME PATH`")
        held = 0
        for record in chosen:
            with byte_progress(f"{record.name}: syncing", None, quiet=quiet) as advance:
                async with _syncer(
                    device_home,
                    db,
                    record,
                    options=SyncOptions(confirm_deletes=confirm_deletes),
                    progress=advance,
                ) as syncer:
                    report = await syncer.sync_once()
            _print_report(record.name, report)
            if report.held_deletes:
                err.print(
                    f"[yellow]{record.name}: {report.held_deletes} deletions are held back[/]: "
                    "run `shoal sync --confirm-deletes` to delete them everywhere"
                )
                held += report.held_deletes
        return held

    held = _run(home, action)
    if held:
        raise PausedError(f"{held} deletions wait for confirmation", hint="shoal sync --confirm-deletes")


@conflicts_app.callback()
def conflicts(
    ctx: typer.Context,
    arena: str | None = ArenaOpt,
    home: Path | None = HomeOpt,
) -> None:
    """List open conflicts: the file at each path and the conflict copy kept next to it."""
    if ctx.invoked_subcommand is not None:
        return
    device_home = DeviceHome.resolve(home)
    db = _open_db(device_home)
    try:
        chosen = [_pick_arena(db, arena)] if arena is not None else ArenaRegistry(db).all()
        count = 0
        for record in chosen:
            for path, copy in ArenaIndex(db, record.arena_id).conflicts():
                typer.echo(f"{record.name}\t{path}\t{copy}")
                count += 1
        if not count:
            err.print("no conflicts")
    finally:
        db.close()


@conflicts_app.command("resolve")
def conflicts_resolve(
    path: str = typer.Argument(..., help="The path in conflict, or its conflict copy."),
    keep: Keep = typer.Option(
        ..., "--keep", help="mine: the file at the path; theirs: the copy; both: keep both."
    ),
    arena: str | None = ArenaOpt,
    home: Path | None = HomeOpt,
) -> None:
    """Resolve a conflict; the next sync sends the outcome to every device."""

    async def action(device_home: DeviceHome, db: DeviceDB) -> list[str]:
        record, rel = _locate(db, path, arena)
        async with _syncer(device_home, db, record) as syncer:
            # Up to date first: the device that won the conflict commits its version again on top of
            # both, and a choice made without having seen that commit raced it on the hub and lost,
            # bringing the conflict copy back.
            await syncer.sync_once()
            done = resolve(syncer.ctx, rel, keep)
            await syncer.sync_once()
        return done

    done = _run(home, action)
    out.print(f"resolved {len(done)} conflict(s) keeping {keep.value}")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def log(
    path: str | None = typer.Argument(None, help="Only the changes of this path."),
    limit: int = typer.Option(50, "--limit", "-n", help="Show at most this many (the newest)."),
    arena: str | None = ArenaOpt,
    home: Path | None = HomeOpt,
) -> None:
    """Show the arena's change log (seq, time, device, operation, path)."""

    async def action(device_home: DeviceHome, db: DeviceDB) -> None:
        if path is not None:
            record, rel = _locate(db, path, arena)
        else:
            record, rel = _pick_arena(db, arena), None
        async with (
            device_home.session() as session,
            _syncer(device_home, db, record, session=session) as syncer,
        ):
            lines = await read_log(syncer.ctx, rel, limit)
            names = await _device_names(session)
        for line in lines:
            e, r = line.entry, line.record
            where = f"{r.from_path} -> {r.path}" if r.from_path else r.path
            extra = f"\tconflict with {e.conflict_with}" if e.conflict_with else ""
            extra += f"\trestored from {e.restored_from}" if e.restored_from else ""
            typer.echo(f"{e.seq}\t{_when(e.time)}\t{names.get(e.device, e.device)}\t{e.op}\t{where}{extra}")

    _run(home, action)


def versions_cmd(
    path: str = typer.Argument(..., help="A file or folder in a joined arena."),
    arena: str | None = ArenaOpt,
    home: Path | None = HomeOpt,
) -> None:
    """List every version of PATH, newest first (deletions included)."""

    async def action(device_home: DeviceHome, db: DeviceDB) -> None:
        record, rel = _locate(db, path, arena)
        async with (
            device_home.session() as session,
            _syncer(device_home, db, record, session=session) as syncer,
        ):
            found = await versions(syncer.ctx, rel)
            names = await _device_names(session)
        typer.echo("version\ttime\tdevice\tsize\tstate")
        for v in found:
            state: str = "deleted" if v.deleted else v.op
            if v.conflict_with:
                state += f" (conflict with {v.conflict_with})"
            size = "-" if v.size is None else str(v.size)
            typer.echo(f"{v.seq}\t{_when(v.time)}\t{names.get(v.device, v.device)}\t{size}\t{state}")

    _run(home, action)


def restore(
    path: str = typer.Argument(..., help="A file in a joined arena (it may be deleted)."),
    version: int | None = typer.Option(
        None, "--version", "-V", help="The version (default: the one before)."
    ),
    to: Path | None = typer.Option(None, "--to", help="Write it here instead of restoring it in place."),
    arena: str | None = ArenaOpt,
    home: Path | None = HomeOpt,
) -> None:
    """Restore a version of PATH: in place (synced to every device), or as a copy with --to."""

    async def action(device_home: DeviceHome, db: DeviceDB) -> str:
        record, rel = _locate(db, path, arena)
        async with _syncer(device_home, db, record) as syncer:
            chosen = pick_version(await versions(syncer.ctx, rel), version)
            if to is not None:
                written = await restore_to(syncer.ctx, rel, chosen.seq, to.expanduser().absolute())
                return f"wrote version {chosen.seq} of {rel} to {written}"
            await restore_in_place(syncer.ctx, rel, chosen.seq)
            await syncer.sync_once()
            return f"restored {rel} to version {chosen.seq}"

    out.print(_run(home, action))


def register(app: typer.Typer, arena_app: typer.Typer) -> None:
    arena_app.command("join")(join)
    arena_app.command("leave")(leave)
    app.command("sync")(sync)
    app.add_typer(conflicts_app, name="conflicts")
    app.command("log")(log)
    app.command("versions")(versions_cmd)
    app.command("restore")(restore)
