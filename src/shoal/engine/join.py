"""Joining an arena on this device (find it on the hub, register its local folder), and leaving it."""

from __future__ import annotations

import contextlib
from pathlib import Path

from shoal.engine.arenalock import arena_lock
from shoal.errors import ConflictError, StorageError, UsageError
from shoal.model.paths import path_within
from shoal.net.sync import SyncClient
from shoal.state.arenas import ArenaRecord, ArenaRegistry
from shoal.state.db import DeviceDB
from shoal.state.index import Residency
from shoal.worktree.ignore import ARENA_MARKER


async def join_arena(
    db: DeviceDB,
    client: SyncClient,
    name_or_id: str,
    root: Path,
    hub_url: str,
    *,
    residency: Residency = Residency.PINNED,
) -> ArenaRecord:
    """Register the hub's arena ``name_or_id`` at ``root`` (created if missing); the first sync fills it.
    ``residency``: PINNED fetches every file, ONLINE_ONLY (folder mode on demand) writes stubs."""
    arena = await client.find_arena(name_or_id)  # encrypted ones sync once this device holds their keys
    root = root.expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a folder", hint="pick a folder for the arena")
    state = db.path.parent.absolute()
    if (inside := path_within(state, root)) is not None:
        where = "is" if inside == "." else "is inside"
        raise UsageError(
            f"{root} {where} this device's state folder {state} (its keys, tokens and database)",
            hint="pick a folder outside it; an arena that holds it, such as your home, leaves it out",
        )
    for other in ArenaRegistry(db).all():
        if other.arena_id == arena.id:
            raise ConflictError(
                f"arena {arena.name!r} is already joined on this device, at {other.root}",
                hint=f"to sync it into another folder: `shoal arena leave {arena.name}`, then join again",
            )
        if root == other.root or root.is_relative_to(other.root) or other.root.is_relative_to(root):
            raise ConflictError(
                f"{root} overlaps the folder of arena {other.name!r} ({other.root})",
                hint="arenas on one device live in separate folders",
            )
    try:
        root.mkdir(parents=True, exist_ok=True)
        marker = root / ARENA_MARKER
        if not marker.exists():
            marker.write_text(f"shoal arena {arena.id}\n")
    except OSError as exc:
        raise StorageError(f"cannot create the arena folder {root}: {exc.strerror}") from exc
    settings = {
        "conflict_policy": arena.conflict_policy,
        "encrypted": arena.encrypted,
        "residency": Residency.PINNED.value if residency is Residency.PINNED else Residency.ONLINE_ONLY.value,
    }
    return ArenaRegistry(db).add(arena.id, arena.name, root, hub_url, settings)


def unpushed_changes(db: DeviceDB, arena_id: str) -> int:
    """Local changes the index knows the hub lacks: scanned but not pushed, or pushes in flight."""
    with db.reading() as conn:
        dirty = conn.execute(
            "SELECT count(*) FROM entries WHERE arena_id = ? AND dirty = 1", (arena_id,)
        ).fetchone()[0]
        journal = conn.execute(
            "SELECT count(*) FROM push_journal WHERE arena_id = ?", (arena_id,)
        ).fetchone()[0]
    return int(dirty) + int(journal)


def check_can_leave(db: DeviceDB, record: ArenaRecord) -> None:
    """Refuse to leave while the hub lacks local changes (they would stay only in the folder)."""
    pending = unpushed_changes(db, record.arena_id)
    if pending:
        raise ConflictError(
            f"{pending} local change(s) in arena {record.name!r} are not on the hub yet",
            hint=f"sync first (`shoal sync --once {record.name}`), or add --force to leave anyway "
            f"(the files stay in {record.root})",
        )


async def leave_arena(db: DeviceDB, record: ArenaRecord) -> None:
    """Stop syncing ``record`` on this device: forget its index, pending pushes and conflicts, and
    unmark its folder. Its files stay where they are, and the arena stays on the hub. Refused
    while another process runs a round of it (the daemon leaves through its control socket)."""
    async with arena_lock(db, record.arena_id, record.name, wait=0):
        ArenaRegistry(db).remove(record.arena_id)
    marker = record.root / ARENA_MARKER
    with contextlib.suppress(OSError):
        if record.arena_id in marker.read_text().split():
            marker.unlink()
