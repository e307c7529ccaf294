"""Frozen, typed settings. Only the programs in L4 load them; everything below takes them as arguments."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class ChunkingSettings:
    """FastCDC sizes (DESIGN.md: Formats). ``seed`` alters the gear table in encrypted arenas."""

    min_size: int = 256 * KIB
    avg_size: int = 1 * MIB
    max_size: int = 4 * MIB
    seed: int = 0
    zstd_level: int = 3


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """How many worker threads hash, compress and seal chunks, and how far reading may run ahead."""

    workers: int = max(1, min(8, os.cpu_count() or 1))
    max_inflight_bytes: int = 64 * MIB


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """How the sync daemon wakes up: watcher debounce, the safety-net rescan, and retry backoff."""

    debounce: float = 0.1  # a file is synced once it has been quiet this long
    max_delay: float = 5.0  # ... or this long after its first change, even if it keeps changing
    rescan_interval: float = 300.0  # a full rescan, whatever the watcher said
    quiet_pull: int = 500  # a pull this many changes behind runs with the watcher off, then rescans
    backoff_base: float = 0.5  # first retry after a failure (doubling, with jitter)
    backoff_cap: float = 60.0  # longest wait between retries while the hub is unreachable
    registry_poll: float = 5.0  # how often arenas joined or left while running are noticed


def xdg_data_home() -> Path:
    """``$XDG_DATA_HOME``, or ``~/.local/share`` when unset: where devices and hubs keep state."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def default_hub_data_dir() -> Path:
    """Where ``shoal hub serve`` keeps its data unless told: ``$XDG_DATA_HOME/shoal-hub``."""
    return xdg_data_home() / "shoal-hub"


def local_hub_data_dirs() -> tuple[Path, ...]:
    """The hub data folders a device on this machine can know of (``$SHOAL_HUB_DATA`` and the
    default): an arena holding one must not sync a hub's own store into that hub."""
    explicit = os.environ.get("SHOAL_HUB_DATA")
    return (default_hub_data_dir(), *((Path(explicit),) if explicit else ()))
