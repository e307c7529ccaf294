"""``shoal mount ARENA DIR`` / ``shoal umount DIR``: an arena as a FUSE filesystem, content on demand."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from shoal.cli.cache_cmd import CacheSizeOpt, HomeOpt, open_cache, parse_size
from shoal.cli.console import err
from shoal.cli.home import DeviceHome
from shoal.errors import LockedError, NetworkError, ShoalError
from shoal.model.manifest import Manifest
from shoal.net.sync import SyncClient
from shoal.vfs.changes import LocalChange
from shoal.vfs.errors import ReadOnlyError

if TYPE_CHECKING:
    from shoal.net.http import HubSession
    from shoal.state.arenas import ArenaRecord
    from shoal.store.sealed import Sealer

OVERLAY_DIR = "overlay"
READAHEAD_CHUNKS = 16  # chunks a sequential reader may have in flight: the hub answers them in batches of 8


async def _no_commit(change: LocalChange) -> Manifest | None:
    raise ReadOnlyError(f"cannot record {change.op.value} of {change.path}: this mount is read-only")


async def _warm_up(client: SyncClient, arena_id: str) -> None:
    try:
        await client.find_arena(arena_id)
    except ShoalError as exc:
        logging.getLogger(__name__).info("the hub is not reachable yet (%s); cached content still reads", exc)


async def arena_sealer(
    home: DeviceHome, session: HubSession, record: ArenaRecord
) -> tuple[Sealer, list[bytes | None]]:
    """The sealer sync would use for ``record`` (plain, or every key epoch this device holds), and
    the chunk id key of each epoch (None: plain ids).

    The hub is asked first, as sync does (a rotation adds an epoch); when it cannot be reached,
    the keychain cached on this device still opens what was sealed before.
    """
    from shoal.cli.device_cmd import cached_keychain, open_keyring
    from shoal.engine.crypt_codec import arena_crypto
    from shoal.store.sealed import PlainSealer

    if not record.settings.get("encrypted"):
        return PlainSealer(), [None]
    try:
        keychain = await open_keyring(home, session).unlock(record.arena_id)
    except NetworkError:
        found = cached_keychain(home, record.arena_id)
        if found is None:
            raise LockedError(
                f"arena {record.name!r} is encrypted and this device holds no key for it",
                hint="run `shoal device enroll` here (passphrase, recovery words or approval), then mount",
            ) from None
        keychain = found
    id_keys: list[bytes | None] = [keychain.current().id_key, *(keys.id_key for keys in keychain.older())]
    return arena_crypto(keychain)[1], id_keys


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
    from shoal.engine.hubstore import HubBlobStore, HubChunkSource
    from shoal.mount.folder_commit import FolderCommit
    from shoal.mount.fuse import serve
    from shoal.mount.mountpoint import prepare
    from shoal.reconcile.names import short_device_id
    from shoal.state.arenas import ArenaRegistry
    from shoal.state.index import ArenaIndex
    from shoal.store.cache import CachedChunks
    from shoal.store.sealed import SealedChunkStore
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

        async def main() -> None:
            async with device_home.session() as session:
                client = SyncClient(session)
                hub = HubBlobStore(client)
                sealer, id_keys = await arena_sealer(device_home, session, record)
                source = HubChunkSource(hub, SealedChunkStore(hub, sealer), id_keys=id_keys)
                index = ArenaIndex(db, record.arena_id)
                writable = not read_only and record.root.is_dir()
                commit = (
                    FolderCommit(ArenaRoot(record.root), arena_id=record.arena_id, device_short=device_short)
                    if writable
                    else None
                )
                fs = ArenaFS(
                    index,
                    CachedChunks(source, cache, hot_chunks=READAHEAD_CHUNKS + 4),
                    device_home.root / OVERLAY_DIR / record.arena_id,
                    commit or _no_commit,
                    read_only=not writable,
                    readahead_chunks=READAHEAD_CHUNKS,
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
