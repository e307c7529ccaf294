"""Where the daemon meets the sync engine: the device database, ignore rules and one syncer per arena."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from shoal.crypto.hierarchy import Keychain
from shoal.crypto.keys import DeviceKeys
from shoal.daemon.port import SyncerFactory
from shoal.engine.context import SyncOptions
from shoal.engine.crypt_codec import crypto_for
from shoal.engine.keyring import KeychainCache, Keyring, KeysClient
from shoal.engine.sync import ArenaSync
from shoal.errors import ShoalError, StorageError
from shoal.net.sync import SyncClient
from shoal.reconcile.coalesce import Batch
from shoal.settings import local_hub_data_dirs
from shoal.state.arenas import ArenaRecord
from shoal.state.db import DeviceDB
from shoal.worktree.ignore import IgnoreRules

log = logging.getLogger(__name__)

DEVICE_DB_NAME = "state.db"
DEVICE_KEY_NAME = "device.key"


def device_keys(home: Path) -> DeviceKeys | None:
    """This device's identity keys (None: it has none yet, so its encrypted arenas stay locked)."""
    try:
        return DeviceKeys.from_bytes((home / DEVICE_KEY_NAME).read_bytes())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read the device key in {home}: {exc.strerror}") from exc


def device_db_exists(home: Path) -> bool:
    return (home / DEVICE_DB_NAME).exists()


def open_device_db(home: Path) -> DeviceDB:
    return DeviceDB.open(home / DEVICE_DB_NAME)


def sync_options(home: Path) -> SyncOptions:
    """The options every sync of this device uses (the daemon never confirms mass deletes itself)."""
    return SyncOptions()


def ignore_rules(home: Path, arena_id: str, root: Path) -> IgnoreRules:
    return IgnoreRules.load(root, sync_options(home).overlay_file, state_dirs=(home, *local_hub_data_dirs()))


class EpochFollowingSyncer:
    """An encrypted arena's syncer that moves to the hub's newest key epoch as soon as this device
    holds it, so content written after a revocation is never sealed under the revoked device's keys.

    Each round first asks the hub which epoch this device's envelope holds (one small request); a
    newer one is opened, cached, and the engine rebuilt with it. Offline, the round goes on with the
    keys it has (its push fails the same way anyway)."""

    def __init__(
        self, keyring: Keyring, record: ArenaRecord, build: Callable[[Keychain | None], ArenaSync]
    ) -> None:
        self._keyring = keyring
        self._arena = record.arena_id
        self._build = build
        keychain = keyring.cached(record.arena_id)
        self._epoch = -1 if keychain is None else keychain.epoch
        self._sync = build(keychain)

    @property
    def last_report(self) -> object:
        return self._sync.last_report

    async def _follow(self) -> None:
        try:
            epoch, _current, _envelope = await self._keyring.client.envelope(self._arena)
            if epoch <= self._epoch:
                return
            keychain = await self._keyring.unlock(self._arena)
        except ShoalError as exc:
            log.debug("arena %s: key epoch not checked: %s", self._arena, exc)
            return
        old, self._sync = self._sync, self._build(keychain)
        log.info("arena %s: now sealing new content under key epoch %d", self._arena, keychain.epoch)
        self._epoch = keychain.epoch
        await old.aclose()

    async def push(self, batch: Batch | None) -> None:
        await self._follow()
        await self._sync.push(batch)

    async def pull(self) -> None:
        await self._sync.pull()

    async def aclose(self) -> None:
        await self._sync.aclose()


def syncer_factory(home: Path, db: DeviceDB, client: SyncClient, device_id: str) -> SyncerFactory:
    """One engine ``ArenaSync`` per arena, sharing this daemon's database and hub client; encrypted
    arenas follow the hub's key epoch (``EpochFollowingSyncer``)."""

    def build(record: ArenaRecord, keychain: Keychain | None) -> ArenaSync:
        codec, sealer = crypto_for(record, keychain)
        return ArenaSync(
            db, record, client, device_id, options=sync_options(home), codec=codec, sealer=sealer
        )

    def make(record: ArenaRecord) -> ArenaSync | EpochFollowingSyncer:
        if not record.settings.get("encrypted"):
            return build(record, None)
        keys = device_keys(home)
        if keys is None:
            return build(record, None)  # no identity: the engine reports the arena as locked
        keyring = Keyring(KeysClient(client.session), KeychainCache(home / "keys", keys), device_id)
        return EpochFollowingSyncer(keyring, record, lambda keychain: build(record, keychain))

    return make
