"""Version vectors: one counter per device that edited a path."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field


class Order(enum.Enum):
    EQUAL = "equal"
    BEFORE = "before"  # self happened before other: other supersedes self
    AFTER = "after"  # self supersedes other
    CONCURRENT = "concurrent"


@dataclass(frozen=True)
class VersionVector(Mapping[str, int]):
    counters: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean = {dev: n for dev, n in self.counters.items() if n > 0}
        object.__setattr__(self, "counters", dict(sorted(clean.items())))

    def __getitem__(self, device: str) -> int:
        return self.counters[device]

    def __iter__(self) -> Iterator[str]:
        return iter(self.counters)

    def __len__(self) -> int:
        return len(self.counters)

    def __hash__(self) -> int:
        return hash(tuple(self.counters.items()))

    def bump(self, device: str) -> VersionVector:
        merged = dict(self.counters)
        merged[device] = merged.get(device, 0) + 1
        return VersionVector(merged)

    def merge(self, other: Mapping[str, int]) -> VersionVector:
        merged = dict(self.counters)
        for dev, n in other.items():
            merged[dev] = max(merged.get(dev, 0), n)
        return VersionVector(merged)

    def compare(self, other: Mapping[str, int]) -> Order:
        less = greater = False
        for dev in set(self.counters) | set(other):
            mine, theirs = self.counters.get(dev, 0), other.get(dev, 0)
            if mine < theirs:
                less = True
            elif mine > theirs:
                greater = True
        if less and greater:
            return Order.CONCURRENT
        if less:
            return Order.BEFORE
        if greater:
            return Order.AFTER
        return Order.EQUAL

    def to_dict(self) -> dict[str, int]:
        return dict(self.counters)
