"""Exponential backoff with full jitter, for retrying an unreachable hub without a thundering herd."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays base, 2·base, 4·base … capped at ``cap``, each drawn uniformly from [delay/2, delay]."""

    def __init__(self, base: float = 0.5, cap: float = 60.0, rand: Callable[[], float] | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rand = rand or random.SystemRandom().random
        self.failures = 0

    def next_delay(self) -> float:
        """The wait before the next attempt, after one more failure."""
        ceiling = min(self.cap, self.base * (2 ** min(self.failures, 32)))
        self.failures += 1
        return float(ceiling / 2 + self._rand() * ceiling / 2)

    def reset(self) -> None:
        self.failures = 0
