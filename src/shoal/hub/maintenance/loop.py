"""The hub's periodic upkeep task: one GC round (expired uploads, retention, compaction, chunks)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from shoal.hub.audit import log as audit
from shoal.hub.context import HubContext
from shoal.hub.maintenance.gc import collect

log = logging.getLogger("shoal.hub.maintenance")
INTERVAL = 3600.0


async def maintenance_loop(ctx: HubContext, interval: float = INTERVAL) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            report = await collect(ctx)
            if (
                report.changes_dropped
                or report.blobs_deleted
                or report.uploads_expired
                or report.temp_files_removed
            ):
                fields = dataclasses.asdict(report)
                log.info("gc", extra={k: v for k, v in fields.items() if k != "arenas"})
                audit.emit(ctx.extras, "gc", **fields)
        except Exception:
            log.exception("maintenance round failed")
