"""Where the daemon meets the sync engine: the device database, ignore rules and one syncer per arena."""

from __future__ import annotations

from pathlib import Path

from shoal.crypto.hierarchy import Keychain
from shoal.crypto.keys import DeviceKeys
from shoal.daemon.port import SyncerFactory
from shoal.engine.context import SyncOptions
from shoal.engine.crypt_codec import crypto_for
from shoal.engine.keyring import KeychainCache
from shoal.engine.sync import ArenaSync
from shoal.errors import StorageError
from shoal.net.sync import SyncClient
from shoal.state.arenas import ArenaRecord
from shoal.state.db import DeviceDB
from shoal.worktree.ignore import IgnoreRules

DEVICE_DB_NAME = "state.db"
DEVICE_KEY_NAME = "device.key"


def cached_keychain(home: Path, record: ArenaRecord) -> Keychain | None:
    """The arena's keychain as ``shoal sync`` or ``shoal device enroll`` last cached it (None: locked)."""
    try:
        keys = DeviceKeys.from_bytes((home / DEVICE_KEY_NAME).read_bytes())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read the device key in {home}: {exc.strerror}") from exc
    return KeychainCache(home / "keys", keys).load(record.arena_id)


def device_db_exists(home: Path) -> bool:
    return (home / DEVICE_DB_NAME).exists()


def open_device_db(home: Path) -> DeviceDB:
    return DeviceDB.open(home / DEVICE_DB_NAME)


def sync_options(home: Path) -> SyncOptions:
    """The options every sync of this device uses (the daemon never confirms mass deletes itself)."""
    return SyncOptions()


def ignore_rules(home: Path, arena_id: str, root: Path) -> IgnoreRules:
    return IgnoreRules.load(root, sync_options(home).overlay_file)


def syncer_factory(home: Path, db: DeviceDB, client: SyncClient, device_id: str) -> SyncerFactory:
    """One engine ``ArenaSync`` per arena, sharing this daemon's database and hub client."""

    def make(record: ArenaRecord) -> ArenaSync:
        codec, sealer = (
            crypto_for(record, cached_keychain(home, record))
            if record.settings.get("encrypted")
            else (None, None)
        )
        return ArenaSync(
            db, record, client, device_id, options=sync_options(home), codec=codec, sealer=sealer
        )

    return make
