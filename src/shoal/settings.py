"""Frozen, typed settings. Only the programs in L4 load them; everything below takes them as arguments."""

from __future__ import annotations

import os
from dataclasses import dataclass

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
