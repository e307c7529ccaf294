"""``shoal hub quota|audit|gc``: the operations side of running a hub for several tenants."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import typer

from shoal.cli.cache_cmd import human, parse_size
from shoal.cli.console import out
from shoal.cli.hub_cmd import DataOpt, DbOpt, _run_admin, hub_app, parse_duration
from shoal.hub.audit.log import recent
from shoal.hub.auth import accounts
from shoal.hub.config import build_settings
from shoal.hub.context import HubContext
from shoal.hub.db.engine import HubDatabase, open_database
from shoal.hub.db.migrate import migrate
from shoal.hub.maintenance.compact import IDLE_LIMIT
from shoal.hub.maintenance.gc import GRACE, GcReport, collect
from shoal.hub.notify import InProcessNotifier
from shoal.hub.quota.usage import set_quota, usage
from shoal.store.url import open_blob_store

quota_app = typer.Typer(
    help="Show and set tenants' storage quotas (unique chunk bytes).", no_args_is_help=True
)
hub_app.add_typer(quota_app, name="quota")


@quota_app.command("set")
def quota_set(
    tenant: str = typer.Argument(..., help="User or team name."),
    size: str = typer.Argument(..., help="Limit such as 10G or 500M; 'none' for unlimited."),
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
) -> None:
    """Set TENANT's storage quota; uploads that would pass it are refused (HTTP 507)."""
    limit = None if size.strip().lower() in ("none", "unlimited") else parse_size(size)

    async def action(database: HubDatabase) -> int:
        async with database.write() as conn:
            found = await accounts.find_tenant(conn, tenant)
            await set_quota(conn, found.id, limit, time.time())
            return (await usage(conn, found.id)).used

    used = _run_admin(data, db, action)
    shown = "unlimited" if limit is None else human(limit)
    out.print(f"quota of {tenant}: {shown} ({human(used)} used)")


@quota_app.command("show")
def quota_show(tenant: str, data: Path | None = DataOpt, db: str | None = DbOpt) -> None:
    """Show TENANT's usage and quota in bytes."""

    async def action(database: HubDatabase) -> tuple[int, int | None]:
        async with database.read() as conn:
            found = await accounts.find_tenant(conn, tenant)
            now = await usage(conn, found.id)
            return now.used, now.limit

    used, limit = _run_admin(data, db, action)
    out.print(f"{tenant}: used {used} bytes ({human(used)}), limit {'none' if limit is None else limit}")


def _fmt(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@hub_app.command("audit")
def audit_cmd(
    tenant: str | None = typer.Option(None, "--tenant", help="Only this user's or team's events."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="How many of the newest events."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
) -> None:
    """Show the newest audit events (logins, failed auth, rotations, removals, restores, refusals)."""

    async def action(database: HubDatabase) -> list[dict[str, object]]:
        async with database.read() as conn:
            tenant_id = (await accounts.find_tenant(conn, tenant)).id if tenant else None
            return [dataclasses.asdict(e) for e in await recent(conn, tenant_id, limit)]

    for event in _run_admin(data, db, action):
        if as_json:
            out.print(json.dumps(event), markup=False, highlight=False)
            continue
        detail = " ".join(f"{k}={v}" for k, v in dict(event["detail"]).items())  # type: ignore[call-overload]
        who = event["actor"] or "-"
        out.print(
            f"{_fmt(float(event['at']))}  {event['kind']:<14} tenant={event['tenant_id'] or '-'} "  # type: ignore[arg-type]
            f"actor={who} ip={event['ip'] or '-'} {detail}",
            markup=False,
            highlight=False,
        )


@hub_app.command("gc")
def gc_cmd(
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would go, delete nothing."),
    grace: str = typer.Option(
        "1h", "--grace", help="Unreferenced chunks younger than this stay (45m, 2h, 1d)."
    ),
    idle_limit: str = typer.Option(
        "90d",
        "--idle-limit",
        help="A device that has not synced for this long stops holding back log compaction; "
        "its next sync reads the arena again from the start (1h, 30d).",
    ),
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    store: str | None = typer.Option(None, "--store", envvar="SHOAL_HUB_STORE", help="Chunk store URL."),
) -> None:
    """Prune versions past retention, compact logs, then delete unreferenced chunks older than --grace."""
    settings = build_settings(data, db, store)
    grace_s = parse_duration(grace) or GRACE
    idle_s = parse_duration(idle_limit) or IDLE_LIMIT

    async def main() -> GcReport:
        database = await open_database(settings.db_url)
        blobs = open_blob_store(settings.store_url)
        try:
            await migrate(database)
            ctx = HubContext(settings=settings, db=database, blobs=blobs, notifier=InProcessNotifier())
            return await collect(ctx, dry_run=dry_run, grace=grace_s, idle_limit=idle_s)
        finally:
            await blobs.close()
            await database.close()

    report = asyncio.run(main())
    verb = "would drop" if dry_run else "dropped"
    out.print(
        f"{verb} {report.changes_dropped} old version(s); "
        f"{report.chunks_unreferenced} unreferenced chunk(s), "
        f"{human(report.bytes_unreferenced)}; {report.blobs_deleted} blob(s) deleted; "
        f"{report.uploads_expired} expired upload(s) removed"
        + (f"; {report.temp_files_removed} stale temp file(s) removed" if report.temp_files_removed else "")
    )
