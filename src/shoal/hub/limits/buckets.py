"""Token buckets keyed by tenant or client address, in memory, per hub process."""

from __future__ import annotations

import time
from collections import OrderedDict

MAX_KEYS = 100_000  # the least recently seen keys are forgotten beyond this (they start full again)


class TokenBuckets:
    """``rate`` tokens a second up to ``burst``; :meth:`take` answers 0.0 or the seconds to wait."""

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_KEYS) -> None:
        self.rate = rate
        self.burst = burst
        self._max = max_keys
        self._state: OrderedDict[object, tuple[float, float]] = OrderedDict()

    def take(self, key: object, cost: float = 1.0, now: float | None = None) -> float:
        if self.rate <= 0:
            return 0.0
        at = time.monotonic() if now is None else now
        tokens, last = self._state.pop(key, (self.burst, at))
        tokens = min(self.burst, tokens + (at - last) * self.rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate
        self._state[key] = (tokens, at)
        if len(self._state) > self._max:
            self._state.popitem(last=False)
        return wait
