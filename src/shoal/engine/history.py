"""History of one arena: the change log, a path's versions, and restoring one (in place or to a copy)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from shoal.engine.context import ArenaContext
from shoal.engine.records import EntryRecord, RecordKind
from shoal.errors import IntegrityError, NotFoundError, StorageError, UsageError
from shoal.net.schemas_sync import ChangeEntry, CommitResult, VersionEntry

_SIZE_LOOKUPS = 8  # log reads at a time when an encrypted arena's versions are listed


@dataclass(frozen=True, slots=True)
class LogLine:
    entry: ChangeEntry
    record: EntryRecord


async def read_log(ctx: ArenaContext, path: str | None = None, limit: int = 50) -> list[LogLine]:
    """The newest ``limit`` changes of the arena (or of ``path``), oldest first."""
    out: list[LogLine] = []
    async for entry in ctx.client.iter_changes(ctx.arena_id, 0):
        record = ctx.codec.decode(entry.record)
        if path is not None and path not in (record.path, record.from_path):
            continue
        out.append(LogLine(entry, record))
        if len(out) > limit:
            out.pop(0)
    return out


async def versions(ctx: ArenaContext, path: str) -> list[VersionEntry]:
    """Every change that wrote or removed ``path``, newest first."""
    found = await ctx.client.versions(ctx.arena_id, ctx.codec.path_key(path))
    if not found:
        raise NotFoundError(f"{path!r} has no history in arena {ctx.arena.name!r}")
    if ctx.arena.settings.get("encrypted"):
        found = await _sizes_from_records(ctx, found)
    return found


async def _sizes_from_records(ctx: ArenaContext, found: list[VersionEntry]) -> list[VersionEntry]:
    """The hub of an encrypted arena knows no sizes: read them from the sealed records here."""
    limit = asyncio.Semaphore(_SIZE_LOOKUPS)

    async def sized(v: VersionEntry) -> VersionEntry:
        if v.deleted or v.size is not None:
            return v
        async with limit:
            try:
                line = await entry_at(ctx, v.seq)
            except NotFoundError:
                return v  # compacted out of the log meanwhile: the size stays unknown
        return v.model_copy(update={"size": line.record.size})

    return list(await asyncio.gather(*(sized(v) for v in found)))


def pick_version(found: list[VersionEntry], wanted: int | None) -> VersionEntry:
    """``wanted`` if given; else the version before the current one (or the last one before a delete)."""
    if wanted is not None:
        for v in found:
            if v.seq == wanted:
                return v
        raise NotFoundError(
            f"version {wanted} is not in this path's history", hint="see `shoal versions PATH`"
        )
    live = [v for v in found if not v.deleted]
    if not live:
        raise NotFoundError("this path has no version with content to restore")
    if found[0].deleted or len(live) == 1:
        return live[0]
    return live[1]


async def entry_at(ctx: ArenaContext, seq: int) -> LogLine:
    page = await ctx.client.changes(ctx.arena_id, since=seq - 1, limit=1)
    if not page.entries or page.entries[0].seq != seq:
        raise NotFoundError(f"change {seq} is no longer in the hub's log")
    entry = page.entries[0]
    return LogLine(entry, ctx.codec.decode(entry.record))


async def restore_in_place(ctx: ArenaContext, path: str, seq: int) -> CommitResult:
    """Append a change making ``path`` what version ``seq`` made of it (the next pull applies it)."""
    return await ctx.client.restore(ctx.arena_id, ctx.codec.path_key(path), seq, device=ctx.device)


async def restore_to(ctx: ArenaContext, path: str, seq: int, dest: Path) -> Path:
    """Write version ``seq`` of ``path`` to ``dest`` (a new file, or a file of that name inside a folder)."""
    line = await entry_at(ctx, seq)
    record = line.record
    if record.kind is not RecordKind.FILE or record.path != path:
        raise UsageError(
            f"version {seq} of {path!r} is not a file's content", hint="see `shoal versions PATH`"
        )
    target = dest / path.rpartition("/")[2] if dest.is_dir() else dest
    if target.exists() or target.is_symlink():
        raise UsageError(f"{target} already exists; nothing was overwritten", hint="pick another --to")
    temp = target.with_name(f".{target.name}.shoal-restore-{os.getpid()}")
    manifest = record.decoded_manifest()
    try:
        with open(temp, "xb") as f:
            written = 0
            for ref in manifest.chunks:
                data = await ctx.store.get(ref.id)  # verified against its id
                f.write(data)
                written += len(data)
            if written != manifest.size:
                raise IntegrityError(
                    f"restored {written} bytes of {path!r}, the manifest says {manifest.size}"
                )
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, (record.mode or 0o644) & 0o777)
        os.utime(temp, ns=(record.mtime_ns, record.mtime_ns))
        os.link(temp, target)  # fails rather than replace a file created meanwhile
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        temp.unlink(missing_ok=True)
    return target
