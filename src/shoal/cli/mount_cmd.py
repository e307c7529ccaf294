"""``shoal mount ARENA DIR`` / ``shoal umount DIR``: an arena as a FUSE filesystem, content on demand."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from shoal.cli.cache_cmd import CacheSizeOpt, HomeOpt, open_cache, parse_size
from shoal.cli.console import err
from shoal.cli.home import DeviceHome
from shoal.errors import LockedError, ShoalError
from shoal.model.manifest import Manifest
from shoal.net.sync import SyncClient
from shoal.vfs.changes import LocalChange
from shoal.vfs.errors import ReadOnlyError

OVERLAY_DIR = "overlay"


async def _no_commit(change: LocalChange) -> Manifest | None:
    raise ReadOnlyError(f"cannot record {change.op.value} of {change.path}: this mount is read-only")


async def _warm_up(client: SyncClient, arena_id: str) -> None:
    try:
        await client.find_arena(arena_id)
    except ShoalError as exc:
        logging.getLogger(__name__).info("the hub is not reachable yet (%s); cached content still reads", exc)


def mount(
    arena: str = typer.Argument(..., help="The arena (joined on this device) to show."),
    directory: Path = typer.Argument(..., help="An empty folder to mount it on."),
    cache_size: str = CacheSizeOpt,
    refresh: float = typer.Option(2.0, "--refresh", help="Seconds between checks for synced changes."),
    read_only: bool = typer.Option(False, "--read-only", help="Refuse every change through the mount."),
    home: Path | None = HomeOpt,
) -> None:
    """Mount an arena: every file visible, content fetched when read. Runs until `shoal umount DIR`.

    Changes made through the mount are written into the arena's folder on this device, and the
    sync daemon (or `shoal sync`) sends them like any local edit.
    """
    from shoal.engine.hubstore import HubBlobStore
    from shoal.mount.folder_commit import FolderCommit
    from shoal.mount.fuse import serve
    from shoal.mount.mountpoint import prepare
    from shoal.reconcile.names import short_device_id
    from shoal.state.arenas import ArenaRegistry
    from shoal.state.index import ArenaIndex
    from shoal.store.cache import CachedChunks
    from shoal.store.sealed import PlainSealer, SealedChunkStore
    from shoal.vfs.fs import ArenaFS
    from shoal.worktree.paths import ArenaRoot

    logging.basicConfig(level=logging.WARNING, format="shoal mount: %(message)s")
    device_home = DeviceHome.resolve(home)
    creds = device_home.require_credentials()
    device_short = short_device_id(creds.device_id or "MOUNT")
    target = prepare(directory)
    cache, meta = open_cache(device_home.root, parse_size(cache_size))
    db = meta.db
    try:
        record = ArenaRegistry(db).by_name(arena)
        if record.settings.get("encrypted"):
            raise LockedError(f"arena {arena!r} is encrypted; this version of shoal mounts plain arenas only")

        async def main() -> None:
            async with device_home.session() as session:
                client = SyncClient(session)
                source = SealedChunkStore(HubBlobStore(client), PlainSealer())
                index = ArenaIndex(db, record.arena_id)
                writable = not read_only and record.root.is_dir()
                commit = FolderCommit(ArenaRoot(record.root), device_short=device_short) if writable else None
                fs = ArenaFS(
                    index,
                    CachedChunks(source, cache),
                    device_home.root / OVERLAY_DIR / record.arena_id,
                    commit or _no_commit,
                    read_only=not writable,
                )
                fs.start()

                def ready() -> None:
                    mode = "writes go to " + str(record.root) if writable else "read-only"
                    err.print(f"mounted {arena} at {target} ({mode}); `shoal umount {target}` to stop")
                    # Connect (and refresh the login) now, not on the first read; offline is fine.
                    warm = asyncio.get_running_loop().create_task(_warm_up(client, record.arena_id))
                    warmers.add(warm)
                    warm.add_done_callback(warmers.discard)

                warmers: set[asyncio.Task[None]] = set()

                await serve(fs, target, ready=ready, refresh_every=refresh)

        asyncio.run(main())
    finally:
        db.close()


def umount(directory: Path = typer.Argument(..., help="Where the arena is mounted.")) -> None:
    """Unmount an arena (also one whose mount process was killed)."""
    from shoal.mount.mountpoint import unmount

    unmount(directory)


def register(app: typer.Typer) -> None:
    app.command("mount")(mount)
    app.command("umount")(umount)
