"""Turn a burst of watcher events into a few ready paths and detected moves, with a debounce.

A path is *ready* once no event touched it for ``delay`` seconds (or, for a
file written without pause, once ``max_delay`` passed since its first event,
so an endlessly growing log still syncs). The clock is passed in: every method
that needs the time takes ``now`` in seconds from any monotonic source.

Moves are kept as ``source → destination`` pairs and chained (a→b then b→c
is a→c; a→b then b→a is no move at all). They are hints for rename detection:
the engine still checks by stat and content that the destination holds what
the source held, so a wrong hint costs an upload, never data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventType(enum.StrEnum):
    CREATED = "created"
    MODIFIED = "modified"
    DELETED = "deleted"
    MOVED = "moved"


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    path: str
    at: float
    is_dir: bool = False
    dest: str | None = None  # the new path of a MOVED event


@dataclass(frozen=True, slots=True)
class Move:
    src: str
    dst: str
    is_dir: bool


@dataclass(frozen=True, slots=True)
class Batch:
    """Paths to look at now. ``subtrees`` are folders whose whole content must be rescanned
    (a folder moved in or deleted brings no events for its children)."""

    paths: frozenset[str] = frozenset()
    subtrees: frozenset[str] = frozenset()
    moves: tuple[Move, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.paths or self.subtrees or self.moves)


@dataclass(slots=True)
class _Pending:
    first: float
    last: float
    subtree: bool


class Coalescer:
    def __init__(self, delay: float, max_delay: float | None = None) -> None:
        if delay < 0:
            raise ValueError("delay must not be negative")
        self.delay = delay
        self.max_delay = max_delay if max_delay is not None else max(10 * delay, delay)
        self._pending: dict[str, _Pending] = {}
        self._moves: dict[str, Move] = {}  # keyed by destination

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, event: Event) -> None:
        if event.type is EventType.MOVED and event.dest is not None:
            self._touch(event.path, event.at, subtree=event.is_dir)
            self._touch(event.dest, event.at, subtree=event.is_dir)
            self._add_move(event.path, event.dest, event.is_dir)
            return
        subtree = event.is_dir and event.type in (EventType.CREATED, EventType.DELETED)
        self._touch(event.path, event.at, subtree=subtree)

    def add_all(self, events: list[Event]) -> None:
        for event in events:
            self.add(event)

    def _touch(self, path: str, at: float, *, subtree: bool) -> None:
        entry = self._pending.get(path)
        if entry is None:
            self._pending[path] = _Pending(first=at, last=at, subtree=subtree)
        else:
            entry.last = max(entry.last, at)
            entry.subtree = entry.subtree or subtree

    def _add_move(self, src: str, dst: str, is_dir: bool) -> None:
        earlier = self._moves.pop(src, None)
        origin = earlier.src if earlier is not None else src
        self._moves.pop(dst, None)  # whatever was moved to dst before is overwritten now
        if origin != dst:
            self._moves[dst] = Move(origin, dst, is_dir)

    def next_deadline(self) -> float | None:
        """The earliest time at which some path becomes ready, or None when nothing is pending."""
        if not self._pending:
            return None
        return min(min(p.last + self.delay, p.first + self.max_delay) for p in self._pending.values())

    def _is_quiet(self, path: str, now: float) -> bool | None:
        p = self._pending.get(path)
        if p is None:
            return None
        return now - p.last >= self.delay or now - p.first >= self.max_delay

    def ready(self, now: float) -> Batch:
        """Pop every path that is ready at ``now``, with the moves whose both ends are ready."""
        waiting_dst = {m.src for m in self._moves.values() if self._is_quiet(m.dst, now) is False}
        done = [
            path
            for path in self._pending
            if self._is_quiet(path, now)
            and path not in waiting_dst  # a move's source waits for its destination
        ]
        if not done:
            return Batch()
        paths: set[str] = set()
        subtrees: set[str] = set()
        for path in done:
            entry = self._pending.pop(path)
            (subtrees if entry.subtree else paths).add(path)
        moves = []
        for dst, move in list(self._moves.items()):
            if dst not in self._pending and move.src not in self._pending:
                moves.append(move)
                del self._moves[dst]
        return Batch(frozenset(paths), frozenset(subtrees), tuple(moves))

    def flush(self) -> Batch:
        """Everything pending, ready or not (for a shutdown or a forced sync)."""
        far = max((max(p.last, p.first) for p in self._pending.values()), default=0.0)
        return self.ready(far + self.delay + self.max_delay)
