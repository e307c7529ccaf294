"""``shoal hub …``: run a hub and administer it.

Admin commands take the same ``--data``/``--db`` as ``serve`` and write the
database directly, so they work whether or not the hub is running (SQLite in
WAL mode and PostgreSQL both allow a second writer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
import typer

from shoal.cli.console import err, out
from shoal.errors import ConfigError, StorageError, UsageError
from shoal.hub.auth import accounts, device_flow, tokens
from shoal.hub.auth.devices import list_devices, revoke_device
from shoal.hub.auth.passwords import check_password_policy, hash_password
from shoal.hub.auth.scopes import format_scopes, parse_scopes
from shoal.hub.config import LOOPBACK_HOSTS, HubSettings, build_settings, redact_url
from shoal.hub.db.engine import HubDatabase, open_database
from shoal.hub.db.migrate import applied_versions, discover, migrate
from shoal.hub.db.schema import users

T = TypeVar("T")

hub_app = typer.Typer(
    help="Run a hub and administer its users, teams, tokens and devices.", no_args_is_help=True
)
user_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
team_app = typer.Typer(help="Manage teams (tenants shared by several users).", no_args_is_help=True)
token_app = typer.Typer(help="Manage personal access tokens.", no_args_is_help=True)
device_app = typer.Typer(help="List devices.", no_args_is_help=True)
hub_app.add_typer(user_app, name="user")
hub_app.add_typer(team_app, name="team")
hub_app.add_typer(token_app, name="token")
hub_app.add_typer(device_app, name="device")

DataOpt = typer.Option(
    None, "--data", envvar="SHOAL_HUB_DATA", help="Hub data directory (default: $XDG_DATA_HOME/shoal-hub)."
)
DbOpt = typer.Option(
    None,
    "--db",
    envvar="SHOAL_HUB_DB",
    help="Database URL (postgresql://…) (default: sqlite in the data dir).",
)


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def parse_duration(text: str) -> float | None:
    """``30d``, ``12h``, ``90m``, ``45s`` into seconds; ``never`` into None."""
    text = text.strip().lower()
    if text in ("never", "none", "0"):
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise UsageError(f"invalid duration {text!r}", hint="use a number and a unit: 45s, 90m, 12h, 30d, 2w")
    return int(number) * units[unit]


def _run_admin(data: Path | None, db_url: str | None, action: Callable[[HubDatabase], Awaitable[T]]) -> T:
    settings = build_settings(data, db_url)

    async def main() -> T:
        db = await open_database(settings.db_url)
        try:
            await migrate(db)
            return await action(db)
        finally:
            await db.close()

    return asyncio.run(main())


def _read_password(password_file: Path | None) -> str:
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read the password file {password_file}: {exc.strerror}") from exc
        password = lines[0] if lines else ""
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    check_password_policy(password)
    return password


@hub_app.command("serve")
def serve(
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    store: str | None = typer.Option(
        None, "--store", envvar="SHOAL_HUB_STORE", help="Chunk store URL (s3://…) (default: DIR/chunks)."
    ),
    bind: str = typer.Option(
        "127.0.0.1:8787", "--bind", envvar="SHOAL_HUB_BIND", help="HOST:PORT to listen on."
    ),
    public: bool = typer.Option(False, "--public", help="Allow listening on a non-loopback address."),
    access_ttl: float | None = typer.Option(None, "--access-ttl", help="Access token lifetime in seconds."),
    poll_interval: int | None = typer.Option(
        None, "--device-poll-interval", help="Seconds a device waits between login polls."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    api_rate: float | None = typer.Option(
        None, "--api-rate", help="API calls a second per tenant (bursts of 10x) (default: 500)."
    ),
    auth_rate: float | None = typer.Option(
        None,
        "--auth-rate",
        help="Login/refresh calls a second per client address (bursts of 10x) (default: 20).",
    ),
) -> None:
    """Run the hub (FastAPI on uvicorn). Embedded default: SQLite and chunks under the data directory."""
    import uvicorn

    from shoal.hub.app import create_app
    from shoal.hub.logging import configure_logging

    settings = build_settings(
        data, db, store, bind, public=public, access_ttl=access_ttl, device_poll_interval=poll_interval
    )
    limits = settings.limits
    if api_rate is not None:
        limits = dataclasses.replace(limits, api_rate=api_rate, api_burst=api_rate * 10)
    if auth_rate is not None:
        limits = dataclasses.replace(limits, auth_rate=auth_rate, auth_burst=auth_rate * 10)
    settings = dataclasses.replace(settings, limits=limits)
    if settings.bind_host not in LOOPBACK_HOSTS:
        if not public:
            raise ConfigError(
                f"refusing to listen on {settings.bind_host}, which other machines can reach",
                hint="pass --public, and put a TLS-terminating reverse proxy in front of the hub",
            )
        err.print(
            f"[bold yellow]warning:[/] listening on {settings.bind_host}: the hub speaks plain HTTP; "
            "terminate TLS in a reverse proxy in front of it"
        )
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise UsageError(f"unknown log level {log_level!r}", hint="use debug, info, warning or error")
    _prepare(settings)
    configure_logging(level)
    err.print(f"shoal hub listening on http://{settings.bind_host}:{settings.bind_port}")
    app = create_app(settings)
    # The modules and app built so far live as long as the process: keeping them out of every
    # garbage collection makes the full collections that large change-log pages trigger cheap.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.bind_host,
        port=settings.bind_port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=5,
        ws_max_size=settings.limits.max_ws_message_bytes,
    )


def _prepare(settings: HubSettings) -> None:
    """Create the data directory, migrate, and on a hub without users say how to make the first one."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the hub data directory {settings.data_dir}: {exc.strerror}"
        ) from exc

    async def main() -> int:
        db = await open_database(settings.db_url)
        try:
            await migrate(db)
            async with db.read() as conn:
                return int(await conn.scalar(sa.select(sa.func.count()).select_from(users)) or 0)
        finally:
            await db.close()

    if asyncio.run(main()) == 0:
        where = f"--data {settings.data_dir}"
        if not settings.is_embedded_db:
            where += f" --db {redact_url(settings.db_url)}"
        err.print(f"This hub has no users yet. Create the first one with:\n  shoal hub user add NAME {where}")


@hub_app.command("migrate")
def migrate_cmd(
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    to: int | None = typer.Option(None, "--to", help="Stop at this schema version."),
) -> None:
    """Bring the database schema up to date (the hub also does this when it starts)."""
    settings = build_settings(data, db)

    async def main() -> tuple[list[int], set[int]]:
        database = await open_database(settings.db_url)
        try:
            applied = await migrate(database, target=to)
            return applied, await applied_versions(database)
        finally:
            await database.close()

    applied, now = asyncio.run(main())
    newest = discover()[-1].version
    out.print(f"applied {applied or 'nothing'}; schema version {max(now, default=0)} (newest known {newest})")


@user_app.command("add")
def user_add(
    name: str = typer.Argument(..., help="User name (also the name of the user's own tenant)."),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="Read the password from this file."
    ),
    quota: str | None = typer.Option(None, "--quota", help="Storage quota, e.g. 10G (default: none)."),
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
) -> None:
    """Create a user account (prompts for the password twice)."""
    from shoal.cli.cache_cmd import parse_size
    from shoal.hub.quota.usage import set_quota

    accounts.check_name(name, "user")
    limit = parse_size(quota) if quota else None
    password = _read_password(password_file)

    async def action(database: HubDatabase) -> None:
        password_hash = await hash_password(password)
        async with database.write() as conn:
            user = await accounts.add_user(conn, name, password_hash)
            if limit is not None:
                await set_quota(conn, user.tenant_id, limit, time.time())

    _run_admin(data, db, action)
    out.print(f"created user {name}")


@team_app.command("add")
def team_add(name: str, data: Path | None = DataOpt, db: str | None = DbOpt) -> None:
    """Create a team: a tenant several users can act in."""

    async def action(database: HubDatabase) -> None:
        async with database.write() as conn:
            await accounts.add_team(conn, name)

    _run_admin(data, db, action)
    out.print(f"created team {name}")


@team_app.command("add-member")
def team_add_member(team: str, user: str, data: Path | None = DataOpt, db: str | None = DbOpt) -> None:
    """Let USER act in TEAM (choose it with `shoal login --tenant TEAM`)."""

    async def action(database: HubDatabase) -> None:
        async with database.write() as conn:
            await accounts.add_member(conn, team, user)

    _run_admin(data, db, action)
    out.print(f"{user} is a member of {team}")


@token_app.command("create")
def token_create(
    user: str = typer.Option(..., "--user", help="The user the token acts as."),
    scope: str = typer.Option(..., "--scope", help="Comma-separated scopes, e.g. sync:read,files:read."),
    expires: str = typer.Option("90d", "--expires", help="Lifetime (45m, 12h, 30d, 2w) or 'never'."),
    name: str | None = typer.Option(None, "--name", help="A label to recognise the token by."),
    tenant: str | None = typer.Option(None, "--tenant", help="A team to act in (default: the user's own)."),
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
) -> None:
    """Create a personal access token and print it once (on stdout, alone, for scripts)."""
    scopes = parse_scopes(scope)
    lifetime = parse_duration(expires)

    async def action(database: HubDatabase) -> tuple[str, int]:
        async with database.write() as conn:
            found = await accounts.find_user(conn, user)
            chosen = await accounts.resolve_tenant(conn, found, tenant)
            return await tokens.create_pat(
                conn,
                tenant_id=chosen.id,
                user_id=found.id,
                scopes=scopes,
                name=name,
                expires_at=None if lifetime is None else time.time() + lifetime,
            )

    secret, pat_id = _run_admin(data, db, action)
    err.print(f"token {pat_id} for {user} ({format_scopes(scopes)}); it is shown only once:")
    typer.echo(secret)


@token_app.command("list")
def token_list(
    user: str = typer.Option(..., "--user"),
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
) -> None:
    """List a user's personal access tokens (never the secrets)."""

    async def action(database: HubDatabase) -> list[tokens.PatInfo]:
        async with database.read() as conn:
            found = await accounts.find_user(conn, user)
            return await tokens.list_pats(conn, found.id)

    rows = _run_admin(data, db, action)
    for pat in rows:
        state = "revoked" if pat.revoked_at else "active"
        if state == "active" and pat.expires_at is not None and pat.expires_at < time.time():
            state = "expired"
        typer.echo(
            f"{pat.id}\t{pat.name or '-'}\t{pat.scopes}\t{state}\tcreated {_fmt_time(pat.created_at)}"
            f"\texpires {_fmt_time(pat.expires_at)}"
        )
    if not rows:
        err.print(f"{user} has no personal access tokens")


@token_app.command("revoke")
def token_revoke(
    token_id: str = typer.Argument(..., help="The id shown by `shoal hub token list`."),
    user: str = typer.Option(..., "--user"),
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
) -> None:
    """Revoke a personal access token; it stops working at once."""
    if not token_id.isdigit():
        raise UsageError(
            f"invalid token id {token_id!r}", hint="use the number shown by `shoal hub token list`"
        )

    async def action(database: HubDatabase) -> None:
        async with database.write() as conn:
            found = await accounts.find_user(conn, user)
            await tokens.revoke_pat(conn, found.id, int(token_id))

    _run_admin(data, db, action)
    out.print(f"revoked token {token_id}")


@hub_app.command("approve")
def approve(
    code: str = typer.Argument(..., help="The code `shoal login` shows, like BCDF-GHJK."),
    user: str = typer.Option(..., "--user", help="The user the device logs in as."),
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
) -> None:
    """Approve a device login as USER without a password (operator command)."""

    async def action(database: HubDatabase) -> device_flow.Approval:
        return await device_flow.approve(database, code, user)

    approval = _run_admin(data, db, action)
    out.print(
        f"approved {approval.device_name} ({approval.device_public_id}) for {approval.user_name} "
        f"in {approval.tenant_name}"
    )


@device_app.command("list")
def device_list(
    tenant: str = typer.Option(..., "--tenant", help="A user or team name."),
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
) -> None:
    """List the devices registered in a tenant."""

    async def action(database: HubDatabase) -> list[tuple[str, str, str, float, float | None]]:
        async with database.read() as conn:
            found = await accounts.find_tenant(conn, tenant)
            return [
                (d.public_id, d.name, d.user_name, d.created_at, d.revoked_at)
                for d in await list_devices(conn, found.id)
            ]

    rows = _run_admin(data, db, action)
    for public_id, name, user_name, created, revoked in rows:
        state = "revoked" if revoked else "active"
        typer.echo(f"{public_id}\t{name}\t{user_name}\t{state}\tsince {_fmt_time(created)}")
    if not rows:
        err.print(f"no devices in {tenant}")


@device_app.command("revoke")
def device_revoke(
    device_id: str = typer.Argument(..., help="The id shown by `shoal hub device list`."),
    tenant: str = typer.Option(..., "--tenant", help="The user or team the device belongs to."),
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
) -> None:
    """Revoke a device (lost, stolen, retired): its logins end at once."""

    async def action(database: HubDatabase) -> str:
        async with database.write() as conn:
            found = await accounts.find_tenant(conn, tenant)
            return (await revoke_device(conn, found.id, device_id)).name

    name = _run_admin(data, db, action)
    out.print(f"revoked device {name} ({device_id}) in {tenant}")
