"""``shoal pin|unpin|hydrate|dehydrate PATH...``: what this device keeps locally, in folder mode."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import typer

from shoal.cli.console import err, out
from shoal.cli.home import DeviceHome
from shoal.cli.sync_cmd import HomeOpt, _locate, _run, _syncer
from shoal.engine.context import ArenaContext
from shoal.engine.residency import (
    LocalArena,
    PathStatus,
    ResidencyReport,
    dehydrate,
    hydrate,
    status,
    unpin,
)
from shoal.errors import PartialFailureError
from shoal.state.arenas import ArenaRecord, ArenaRegistry
from shoal.state.db import DeviceDB

PathsArg = typer.Argument(..., help="Files or folders inside a joined arena (a stub NAME.shoal means NAME).")
ArenaOpt = typer.Option(
    None, "--arena", "-a", help="Read PATHs as paths inside this arena (default: file paths on disk)."
)
Action = Callable[[ArenaContext, list[str]], Awaitable[ResidencyReport]]


def _waiting(name: str) -> Callable[[], None]:
    return lambda: err.print(f"waiting for the sync round of arena {name} to finish...")


def _by_arena(db: DeviceDB, paths: list[str], arena: str | None) -> list[tuple[ArenaRecord, list[str]]]:
    groups: dict[str, tuple[ArenaRecord, list[str]]] = {}
    roots = {record.root: record for record in ArenaRegistry(db).all()}
    for raw in paths:
        top = roots.get(Path(raw).expanduser().absolute())
        record, path = (top, "") if top is not None and arena is None else _locate(db, raw, arena)
        groups.setdefault(record.arena_id, (record, []))[1].append(path)
    return list(groups.values())


def _apply(home: Path | None, paths: list[str], arena: str | None, action: Action, verb: str) -> None:
    async def main(device_home: DeviceHome, db: DeviceDB) -> list[str]:
        refused: list[str] = []
        for record, chosen in _by_arena(db, paths, arena):
            async with _syncer(device_home, db, record) as syncer:
                report = await action(syncer.ctx, chosen)
            for line in report.changed:
                out.print(f"{record.name}: {line}", markup=False)
            refused += [f"{record.name}: {why}" for why in report.refused]
        return refused

    refused = _run(home, main)
    if refused:
        raise PartialFailureError(
            f"{len(refused)} path(s) were not {verb} and were left as they were", failures=refused
        )


def pin(paths: list[str] = PathsArg, arena: str | None = ArenaOpt, home: Path | None = HomeOpt) -> None:
    """Keep files' content on this device, always; a folder's files, also those added later.

    Fetches what is still a stub. Example: `shoal pin ~/Docs/taxes` keeps the folder local for good."""

    async def action(ctx: ArenaContext, chosen: list[str]) -> ResidencyReport:
        return await hydrate(ctx, chosen, pin=True, on_wait=_waiting(ctx.arena.name))

    _apply(home, paths, arena, action, "pinned")


def unpin_cmd(paths: list[str] = PathsArg, arena: str | None = ArenaOpt, home: Path | None = HomeOpt) -> None:
    """Stop keeping files for good: their content stays (cached) until `shoal dehydrate` frees it.

    New files arriving in an unpinned folder come as stubs. Example: `shoal unpin ~/Docs/archive`."""

    async def action(ctx: ArenaContext, chosen: list[str]) -> ResidencyReport:
        return await unpin(ctx, chosen, on_wait=_waiting(ctx.arena.name))

    _apply(home, paths, arena, action, "unpinned")


def hydrate_cmd(
    paths: list[str] = PathsArg, arena: str | None = ArenaOpt, home: Path | None = HomeOpt
) -> None:
    """Fetch the content of stubs (files or whole folders) into place; they stay unpinned (cached).

    Example: `shoal hydrate ~/Docs/report.pdf.shoal` puts report.pdf back, verified chunk by chunk."""

    async def action(ctx: ArenaContext, chosen: list[str]) -> ResidencyReport:
        return await hydrate(ctx, chosen, on_wait=_waiting(ctx.arena.name))

    _apply(home, paths, arena, action, "hydrated")


def dehydrate_cmd(
    paths: list[str] = PathsArg, arena: str | None = ArenaOpt, home: Path | None = HomeOpt
) -> None:
    """Free space: replace synced files by stubs NAME.shoal (a pinned file becomes unpinned).

    Refuses, naming it, any file with changes not yet on the hub; those stay as they are.

    Example: `shoal dehydrate ~/Docs/videos` (then `shoal hydrate` brings a file back)."""

    async def action(ctx: ArenaContext, chosen: list[str]) -> ResidencyReport:
        return await dehydrate(ctx, chosen, on_wait=_waiting(ctx.arena.name))

    _apply(home, paths, arena, action, "dehydrated")


def residency_lines(home: Path | None, paths: list[str], arena: str | None = None) -> list[PathStatus]:
    """Residency of each path (for ``shoal status PATH...``); no hub is contacted."""

    async def main(device_home: DeviceHome, db: DeviceDB) -> list[PathStatus]:
        del device_home
        return [
            item
            for record, chosen in _by_arena(db, paths, arena)
            for item in status(LocalArena.open(db, record), chosen)
        ]

    return _run(home, main)


def describe(item: PathStatus) -> str:
    """One line: path, residency, size, and how much of it is on disk."""
    name = item.path or "."
    if item.kind.value == "dir":
        return f"{name}/\t{item.residency.value}\t{item.size} bytes\t{item.local} of {item.files} files local"
    where = "content local" if item.local else "stub only"
    return f"{name}\t{item.residency.value}\t{item.size} bytes\t{where}"


def register(app: typer.Typer) -> None:
    app.command("pin")(pin)
    app.command("unpin")(unpin_cmd)
    app.command("hydrate")(hydrate_cmd)
    app.command("dehydrate")(dehydrate_cmd)
