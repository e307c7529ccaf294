"""Joining an arena on this device: find it on the hub, register its local folder."""

from __future__ import annotations

from pathlib import Path

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
