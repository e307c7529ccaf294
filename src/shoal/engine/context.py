"""Everything one arena's sync needs, gathered once: device state, hub client, codec, store, options."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from shoal.engine.hubstore import HubBlobStore
from shoal.engine.records import ArenaCodec, PlainCodec
from shoal.errors import LockedError
from shoal.net.sync import SyncClient
from shoal.reconcile.winner import ConflictPolicy
from shoal.settings import ChunkingSettings, PipelineSettings, local_hub_data_dirs
from shoal.state.arenas import ArenaRecord, ArenaRegistry
from shoal.state.db import DeviceDB
from shoal.state.index import ArenaIndex
from shoal.store.sealed import PlainSealer, SealedChunkStore, Sealer
from shoal.worktree.ignore import IgnoreRules
from shoal.worktree.paths import ArenaRoot

# Pause reasons the engine sets itself (and clears once the cause is gone) start with these. A safety
# pause stops the arena; held deletes only wait for `shoal sync --confirm-deletes`, the rest syncs.
SAFETY_PREFIX = "deletion safety: "
HELD_PREFIX = "deletes held: "
ENGINE_PREFIXES = (SAFETY_PREFIX, HELD_PREFIX)


def device_overlay(overlay_dir: Path, arena_id: str) -> Path:
    return overlay_dir / f"{arena_id}.shoalignore"


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """How one sync round behaves. ``delete_share`` of at least ``delete_min_entries`` synced
    paths deleted in one batch waits for ``confirm_deletes``."""

    confirm_deletes: bool = False
    delete_share: float = 0.5
    delete_min_entries: int = 10
    chunking: ChunkingSettings = field(default_factory=ChunkingSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    fetch_concurrency: int = 8
    prefetch_bytes: int = 32 * 1024 * 1024  # small files fetched ahead in parallel, per group
    overlay_dir: Path | None = None  # the device's own ignore rules, ``<dir>/<arena id>.shoalignore``
    overlay_file: Path | None = None  # or one explicit overlay file (it wins over overlay_dir)


@dataclass(slots=True)
class SyncReport:
    """What one round did, for the CLI, the daemon's status and tests."""

    pushed: int = 0
    pulled: int = 0
    uploaded_bytes: int = 0
    downloaded_bytes: int = 0
    conflicts: list[str] = field(default_factory=list)  # conflict copies created this round
    held_deletes: int = 0  # deletes waiting for --confirm-deletes
    skipped: list[str] = field(default_factory=list)  # paths left for the next round, with why
    # Paths the scan found but cannot sync (a name that is not UTF-8, two names equal after Unicode
    # normalisation, a FIFO or socket), as "path: why"; whole_scan says whether it saw every path.
    unsyncable: list[str] = field(default_factory=list)
    whole_scan: bool = False
    cursor: int = 0
    # Hub seqs (first, last) of this round's commits whose echoes the pull would only drop.
    own_commits: list[tuple[int, int]] = field(default_factory=list)

    def merge(self, other: SyncReport) -> None:
        self.pushed += other.pushed
        self.pulled += other.pulled
        self.uploaded_bytes += other.uploaded_bytes
        self.downloaded_bytes += other.downloaded_bytes
        self.conflicts += other.conflicts
        self.held_deletes = max(self.held_deletes, other.held_deletes)
        self.skipped += other.skipped
        self.unsyncable += other.unsyncable
        self.whole_scan = self.whole_scan or other.whole_scan
        self.cursor = max(self.cursor, other.cursor)
        self.own_commits += other.own_commits


class ArenaContext:
    """One joined arena on this device, ready to push and pull."""

    def __init__(
        self,
        db: DeviceDB,
        arena: ArenaRecord,
        client: SyncClient,
        device: str,
        *,
        options: SyncOptions | None = None,
        codec: ArenaCodec | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        if arena.settings.get("encrypted") and (codec is None or sealer is None):
            raise LockedError(
                f"arena {arena.name!r} is encrypted and this device has no key for it",
                hint="encrypted arenas need the arena key on this device",
            )
        self.db = db
        self.arena = arena
        self.client = client
        self.device = device
        self.options = options or SyncOptions()
        self.codec: ArenaCodec = codec or PlainCodec()
        self.registry = ArenaRegistry(db)
        self.index = ArenaIndex(db, arena.arena_id)
        self.root = ArenaRoot(arena.root)
        self.hub_store = HubBlobStore(client)
        self.executor = ThreadPoolExecutor(max_workers=self.options.pipeline.workers)
        self.store = SealedChunkStore(self.hub_store, sealer or PlainSealer(), executor=self.executor)
        self.policy = ConflictPolicy(arena.settings.get("conflict_policy", ConflictPolicy.KEEP_BOTH.value))

    @property
    def arena_id(self) -> str:
        return self.arena.arena_id

    @property
    def overlay_file(self) -> Path | None:
        """This device's own ignore rules for the arena (same syntax as ``.shoalignore``, never synced)."""
        if self.options.overlay_file is not None:
            return self.options.overlay_file
        if self.options.overlay_dir is None:
            return None
        return device_overlay(self.options.overlay_dir, self.arena_id)

    def ignore_rules(self) -> IgnoreRules:
        # The device database lives in the device's home: an arena holding it (`~` joined whole)
        # must never sync the keys, tokens and database beside it, nor a local hub's store.
        state = (self.db.path.parent, *local_hub_data_dirs())
        return IgnoreRules.load(self.root.root, self.overlay_file, state_dirs=state)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
