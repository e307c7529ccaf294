"""Bring a hub database up to the newest schema, one numbered migration at a time.

Migrations are the ``mNNNN_*.py`` modules of ``shoal.hub.db.migrations``.
The hub runs them at start and every admin command runs them before it
touches the database, so both may race: each migration takes the write lock
(``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL), re-reads the
applied versions, and applies itself only if still missing.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import UnsupportedVersionError
from shoal.hub.db import migrations as migrations_package
from shoal.hub.db.engine import HubDatabase
from shoal.hub.db.schema import schema_migrations

_PG_MIGRATION_LOCK = 0x5E0A1  # any constant: all hub processes agree on it


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    description: str
    upgrade: Callable[[sa.Connection], None]


def discover() -> list[Migration]:
    """Every migration module, in version order; gaps and duplicates are programming errors."""
    found: list[Migration] = []
    for info in pkgutil.iter_modules(migrations_package.__path__):
        if not (info.name.startswith("m") and info.name[1:5].isdigit()):
            continue
        module: ModuleType = importlib.import_module(f"{migrations_package.__name__}.{info.name}")
        doc = (module.__doc__ or "").strip().splitlines()
        found.append(Migration(module.VERSION, info.name, doc[0] if doc else "", module.upgrade))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"hub migrations must be numbered 1..N without gaps, found {versions}")
    return found


async def _applied(conn: AsyncConnection) -> set[int]:
    await conn.run_sync(lambda sync: schema_migrations.create(sync, checkfirst=True))
    rows = await conn.execute(sa.select(schema_migrations.c.version))
    return {int(r[0]) for r in rows}


async def applied_versions(db: HubDatabase) -> set[int]:
    async with db.write() as conn:
        return await _applied(conn)


async def migrate(db: HubDatabase, *, target: int | None = None) -> list[int]:
    """Apply the missing migrations up to ``target`` (default: all); return the versions applied."""
    known = discover()
    newest = known[-1].version if known else 0
    applied_now: list[int] = []
    for migration in known:
        if target is not None and migration.version > target:
            break
        async with db.write() as conn:
            if db.dialect == "postgresql":
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            done = await _applied(conn)
            if done and max(done) > newest:
                raise UnsupportedVersionError(
                    f"the hub database is at schema version {max(done)}, "
                    f"newer than this shoal knows ({newest})",
                    hint="upgrade shoal on this machine before running the hub against this database",
                )
            if migration.version in done:
                continue
            await conn.run_sync(migration.upgrade)
            await conn.execute(
                schema_migrations.insert().values(
                    version=migration.version, name=migration.name, applied_at=time.time()
                )
            )
            applied_now.append(migration.version)
    return applied_now
