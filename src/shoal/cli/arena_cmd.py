"""``shoal arena create|list|rename|delete|undelete``: the arenas of the logged-in tenant on its hub."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer

from shoal.cli.arena_keys import ask_new_passphrase, create_encrypted, show_recovery_words, unlocked_here
from shoal.cli.console import err, out
from shoal.cli.home import DeviceHome
from shoal.errors import UsageError
from shoal.net.schemas_sync import Arena, ConflictPolicy
from shoal.net.sync import SyncClient

T = TypeVar("T")

arena_app = typer.Typer(
    help="Create, list, rename, delete and undelete arenas (synced folder trees) on the hub; join and "
    "leave them on this device.",
    no_args_is_help=True,
)
HomeOpt = typer.Option(
    None, "--home", envvar="SHOAL_HOME", help="Device home (default: $XDG_DATA_HOME/shoal)."
)
JsonOpt = typer.Option(False, "--json", help="Print the answer as JSON.")


def _with_client(home: Path | None, action: Callable[[SyncClient], Awaitable[T]]) -> T:
    device_home = DeviceHome.resolve(home)

    async def main() -> T:
        async with device_home.session() as session:
            return await action(SyncClient(session))

    return asyncio.run(main())


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts is not None else "-"


def _show(arena: Arena, as_json: bool, unlocked: frozenset[str] = frozenset()) -> None:
    if as_json:
        typer.echo(arena.model_dump_json())
        return
    kind = "plain"
    if arena.encrypted:
        kind = "encrypted, " + ("unlocked" if arena.id in unlocked else "locked")
    line = (
        f"{arena.name}\t{arena.id}\t{kind}\t{arena.conflict_policy}\t"
        f"keep {arena.keep_days}d then {arena.keep_versions} versions\thead {arena.head}"
    )
    if arena.deleted_at is not None:
        line += f"\tdeleted {_when(arena.deleted_at)}, restorable until {_when(arena.purge_after)}"
    typer.echo(line)  # plain tab-separated text: scripts cut it


@arena_app.command("create")
def create(
    name: str = typer.Argument(..., help="A name, unique among your live arenas."),
    encrypted: bool = typer.Option(False, "--encrypted", help="End-to-end encrypted: the hub sees no names."),
    conflict_policy: str = typer.Option(
        "keep-both", "--conflict-policy", help="keep-both (conflict copies) or lww (last writer wins)."
    ),
    keep_days: int = typer.Option(30, "--keep-days", help="Keep every version for this many days..."),
    keep_versions: int = typer.Option(10, "--keep-versions", help="...then the last this many versions."),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="With --encrypted: read the household passphrase from this file."
    ),
    kdf_cost: str = typer.Option(
        "moderate", "--kdf-cost", hidden=True, help="Argon2id cost: moderate|minimum."
    ),
    home: Path | None = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create an arena on the hub (--encrypted: asks for the passphrase, shows the recovery words once)."""
    if conflict_policy not in ("keep-both", "lww"):
        raise UsageError(f"unknown conflict policy {conflict_policy!r}", hint="use keep-both or lww")
    policy: ConflictPolicy = "lww" if conflict_policy == "lww" else "keep-both"
    if not encrypted:
        if passphrase_file is not None:
            raise UsageError("--passphrase-file is only for --encrypted arenas")
        arena = _with_client(
            home,
            lambda c: c.create_arena(
                name,
                encrypted=False,
                conflict_policy=policy,
                keep_days=keep_days,
                keep_versions=keep_versions,
            ),
        )
        _show(arena, as_json)
        return
    created = create_encrypted(
        home, name, policy, keep_days, keep_versions, ask_new_passphrase(passphrase_file), kdf_cost
    )
    show_recovery_words(created.arena, created.words, as_json)


@arena_app.command("list")
def list_(
    deleted: bool = typer.Option(False, "--deleted", help="List deleted arenas that can still be restored."),
    home: Path | None = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List your arenas (name, id, kind and whether unlocked here, conflict policy, retention, head)."""
    arenas = _with_client(home, lambda c: c.list_arenas(deleted=deleted))
    unlocked = unlocked_here(DeviceHome.resolve(home), [a.id for a in arenas if a.encrypted])
    if as_json:
        rows = [
            {**a.model_dump(mode="json"), "unlocked": a.id in unlocked}
            if a.encrypted
            else a.model_dump(mode="json")
            for a in arenas
        ]
        typer.echo(json.dumps(rows))
        return
    for arena in arenas:
        _show(arena, as_json=False, unlocked=unlocked)
    if not arenas:
        err.print("no deleted arenas" if deleted else "no arenas yet: `shoal arena create NAME`")


@arena_app.command("rename")
def rename(
    arena: str = typer.Argument(..., help="The arena's name or id."),
    new_name: str = typer.Argument(..., help="Its new name."),
    home: Path | None = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Rename an arena."""

    async def action(client: SyncClient) -> Arena:
        found = await client.find_arena(arena)
        return await client.rename_arena(found.id, new_name)

    _show(_with_client(home, action), as_json)


@arena_app.command("delete")
def delete(
    arena: str = typer.Argument(..., help="The arena's name or id."),
    home: Path | None = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Delete an arena (restorable with `shoal arena undelete` for 30 days)."""

    async def action(client: SyncClient) -> Arena:
        found = await client.find_arena(arena)
        return await client.delete_arena(found.id)

    gone = _with_client(home, action)
    if as_json:
        _show(gone, True)
        return
    out.print(f"deleted {gone.name} ({gone.id}); restorable until {_when(gone.purge_after)}")


@arena_app.command("undelete")
def undelete(
    arena: str = typer.Argument(..., help="The deleted arena's name or id."),
    home: Path | None = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Bring back a deleted arena, unchanged."""

    async def action(client: SyncClient) -> Arena:
        found = await client.find_arena(arena, deleted=True)
        return await client.undelete_arena(found.id)

    _show(_with_client(home, action), as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(arena_app, name="arena")
