"""Where the daemon meets the sync engine: the device database, ignore rules and one syncer per arena."""

from __future__ import annotations

from pathlib import Path

from shoal.daemon.port import SyncerFactory
from shoal.errors import ConfigError
from shoal.net.sync import SyncClient
from shoal.state.db import DeviceDB
from shoal.worktree.ignore import IgnoreRules

DEVICE_DB_NAME = "state.db"


def device_db_exists(home: Path) -> bool:
    return (home / DEVICE_DB_NAME).exists()


def open_device_db(home: Path) -> DeviceDB:
    return DeviceDB.open(home / DEVICE_DB_NAME)


def ignore_rules(home: Path, arena_id: str, root: Path) -> IgnoreRules:
    return IgnoreRules.load(root, None)


def syncer_factory(home: Path, db: DeviceDB, client: SyncClient, device_id: str) -> SyncerFactory:
    raise ConfigError("the sync engine is not available in this build")
