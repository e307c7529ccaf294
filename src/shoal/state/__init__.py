"""L2 state: all device SQL. The device database, arena registrations, the index and its cursor."""

from shoal.state.arenas import ArenaRecord, ArenaRegistry
from shoal.state.db import DeviceDB
from shoal.state.index import ArenaIndex, IndexBatch, IndexEntry, PendingPush, PushState, Residency
from shoal.state.migrations import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "ArenaIndex",
    "ArenaRecord",
    "ArenaRegistry",
    "DeviceDB",
    "IndexBatch",
    "IndexEntry",
    "PendingPush",
    "PushState",
    "Residency",
]
