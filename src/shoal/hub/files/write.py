"""File API writes by path: put a file, make a folder, delete, rename. Each runs inside a commit group.

They append to the same change log, with the same records and version
vectors, as devices' commits (``hub.sync.commit.append_changes``): the hub
acts as one more device whose id is the caller's ``device_key``. Each change's
base is the path's current head, so the API never races itself; a device that
edited the same path without seeing the API's change gets a conflict as usual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.errors import ConflictError, NotFoundError, UsageError
from shoal.hub.db.sync_schema import changes, heads
from shoal.hub.files.tree import Entry, head_entry, require_plain
from shoal.hub.sync.arenas import ArenaRow, get_arena
from shoal.hub.sync.commit import CheckedChange, append_changes, check_change, require_chunks
from shoal.model.manifest import Manifest
from shoal.model.records import EntryBody, encode_entry
from shoal.model.vv import VersionVector
from shoal.net.schemas_sync import ChangeIn, CommitResult, Op, plain_path_key

MAX_TREE_CHANGES = 10_000  # a folder delete or rename touching more is refused, not half done


@dataclass(frozen=True, slots=True)
class Writer:
    """Who writes (the version vector key) and when."""

    tenant_id: int
    device: str
    now: float

    @property
    def mtime_ns(self) -> int:
        return int(self.now * 1e9)


def _change(
    op: Op,
    body: EntryBody,
    base: VersionVector,
    device: str,
    *,
    chunks: list[str] | None = None,
    to_path: str | None = None,
) -> CheckedChange:
    source = body.from_path or body.path
    change = ChangeIn(
        op=op,
        path_key=plain_path_key(source),
        path=source,
        to_path_key=plain_path_key(to_path) if to_path is not None else None,
        to_path=to_path,
        record=encode_entry(body),
        chunks=chunks or [],
        base_vv=base.to_dict(),
        vv=base.bump(device).to_dict(),
        device=device,
    )
    return check_change(change, encrypted=False)


async def _open(conn: AsyncConnection, who: Writer, arena_id: str) -> ArenaRow:
    arena = await get_arena(conn, who.tenant_id, arena_id, for_update=True)
    require_plain(arena)
    return arena


async def _append(
    conn: AsyncConnection, arena: ArenaRow, checked: list[CheckedChange], now: float
) -> CommitResult:
    first, last, conflicts = await append_changes(conn, arena, checked, now)
    return CommitResult(first=first, last=last, cursor=last, conflicts=conflicts)


async def _refuse_file_parents(conn: AsyncConnection, arena: ArenaRow, path: str) -> None:
    parts = path.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        parent = "/".join(parts[:depth])
        entry, _ = await head_entry(conn, arena, parent)
        if entry is not None and entry.body.kind != "dir":
            raise ConflictError(f"{parent!r} is a {entry.body.kind}, so {path!r} cannot be inside it")


async def put_file(
    conn: AsyncConnection,
    who: Writer,
    arena_id: str,
    path: str,
    manifest: Manifest,
    *,
    mode: int,
    mtime_ns: int,
    base_seq: int = -1,
) -> tuple[ArenaRow, CommitResult]:
    """Commit ``manifest`` as the new version of ``path`` (its chunks must be in the tenant's index)."""
    arena = await _open(conn, who, arena_id)
    current, vv = await head_entry(conn, arena, path)
    if base_seq >= 0 and (current.seq if current is not None else 0) != base_seq:
        raise ConflictError(
            f"{path!r} changed since version {base_seq} (now {current.seq if current else 'absent'})",
            hint="download the current version, then upload again with its seq as base",
        )
    if current is not None and current.body.kind == "dir":
        raise ConflictError(f"{path!r} is a folder; delete it before writing a file there")
    await _refuse_file_parents(conn, arena, path)
    ids = list(dict.fromkeys(ref.id.hex() for ref in manifest.chunks))
    await require_chunks(conn, who.tenant_id, ids)
    body = EntryBody(
        "file", path, who.device, size=manifest.size, mode=mode, mtime_ns=mtime_ns, manifest=manifest.encode()
    )
    return arena, await _append(conn, arena, [_change("put", body, vv, who.device, chunks=ids)], who.now)


async def make_folder(
    conn: AsyncConnection, who: Writer, arena_id: str, path: str
) -> tuple[ArenaRow, CommitResult]:
    arena = await _open(conn, who, arena_id)
    current, vv = await head_entry(conn, arena, path)
    if current is not None:
        if current.body.kind == "dir":
            return arena, CommitResult(first=current.seq, last=current.seq, cursor=arena.head_seq)
        raise ConflictError(f"{path!r} already exists as a {current.body.kind}")
    await _refuse_file_parents(conn, arena, path)
    body = EntryBody("dir", path, who.device, mode=0o755, mtime_ns=who.mtime_ns)
    return arena, await _append(conn, arena, [_change("mkdir", body, vv, who.device)], who.now)


async def _subtree(conn: AsyncConnection, arena: ArenaRow, folder: str) -> list[Entry]:
    """Every live entry strictly below ``folder``."""
    escaped = folder.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
    path = sa.case((changes.c.to_path_key == heads.c.path_key, changes.c.to_path), else_=changes.c.path)
    query = (
        sa.select(heads.c.path_key, path.label("p"))
        .select_from(
            heads.join(changes, sa.and_(changes.c.arena_id == heads.c.arena_id, changes.c.seq == heads.c.seq))
        )
        .where(heads.c.arena_id == arena.id, sa.not_(heads.c.deleted), path.like(escaped, escape="\\"))
        .limit(MAX_TREE_CHANGES + 1)
    )
    rows = (await conn.execute(query)).all()
    if len(rows) > MAX_TREE_CHANGES:
        raise UsageError(
            f"{folder!r} holds more than {MAX_TREE_CHANGES} entries; work on its subfolders first"
        )
    out = []
    for row in rows:
        entry, _ = await head_entry(conn, arena, str(row[1]))
        if entry is not None:
            out.append(entry)
    return out


async def delete_path(
    conn: AsyncConnection, who: Writer, arena_id: str, path: str
) -> tuple[ArenaRow, CommitResult]:
    """Delete a file, or a folder with everything in it (deepest first, one commit)."""
    arena = await _open(conn, who, arena_id)
    current, _ = await head_entry(conn, arena, path)
    below = await _subtree(conn, arena, path) if current is None or current.body.kind == "dir" else []
    if current is None and not below:
        raise NotFoundError(f"{path!r} does not exist in arena {arena.name!r}")
    targets = sorted(below, key=lambda e: (-e.path.count("/"), e.path))
    if current is not None:
        targets.append(current)
    checked = [
        _change("delete", EntryBody("tombstone", e.path, who.device, mtime_ns=who.mtime_ns), e.vv, who.device)
        for e in targets
    ]
    return arena, await _append(conn, arena, checked, who.now)


async def rename_path(
    conn: AsyncConnection, who: Writer, arena_id: str, src: str, dst: str
) -> tuple[ArenaRow, CommitResult]:
    """Move a file or a folder (files move by rename; folders are made anew, the old ones deleted)."""
    if src == dst or dst.startswith(src + "/"):
        raise UsageError(f"cannot move {src!r} onto itself or into itself")
    arena = await _open(conn, who, arena_id)
    current, _ = await head_entry(conn, arena, src)
    below = await _subtree(conn, arena, src) if current is None or current.body.kind == "dir" else []
    if current is None and not below:
        raise NotFoundError(f"{src!r} does not exist in arena {arena.name!r}")
    target, _ = await head_entry(conn, arena, dst)
    if target is not None:
        raise ConflictError(f"{dst!r} already exists", hint="delete it first, or move to another name")
    await _refuse_file_parents(conn, arena, dst)
    moves = ([current] if current is not None else []) + sorted(below, key=lambda e: e.path)
    checked: list[CheckedChange] = []
    removed: list[Entry] = []
    for entry in moves:
        new_path = dst + entry.path[len(src) :]
        _, dest_vv = await head_entry(conn, arena, new_path)
        body = entry.body
        if body.kind == "file":
            moved = EntryBody(
                "file",
                new_path,
                who.device,
                size=body.size,
                mode=body.mode,
                mtime_ns=body.mtime_ns,
                manifest=body.manifest,
                from_path=entry.path,
            )
            base = entry.vv.merge(dest_vv)
            checked.append(
                _change("rename", moved, base, who.device, chunks=entry.chunk_ids, to_path=new_path)
            )
            continue
        op: Op = "mkdir" if body.kind == "dir" else "symlink"
        made = EntryBody(
            body.kind, new_path, who.device, mode=body.mode, mtime_ns=body.mtime_ns, target=body.target
        )
        checked.append(_change(op, made, dest_vv, who.device))
        removed.append(entry)
    for entry in sorted(removed, key=lambda e: (-e.path.count("/"), e.path)):
        tomb = EntryBody("tombstone", entry.path, who.device, mtime_ns=who.mtime_ns)
        checked.append(_change("delete", tomb, entry.vv, who.device))
    return arena, await _append(conn, arena, checked, who.now)


def writer(tenant_id: int, device: str, now: float | None = None) -> Writer:
    return Writer(tenant_id, device, time.time() if now is None else now)
