"""Deletion safety and rename detection over a scan's result: pure checks the engine runs before pushing.

Unknown is not deleted (DESIGN.md, promise 5): a missing or suddenly empty
arena root pauses the arena, and a batch deleting more than a configured share
of the arena waits for ``shoal sync --confirm-deletes``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from shoal.reconcile.kinds import Kind


class Verdict(enum.StrEnum):
    PROCEED = "proceed"
    PAUSE = "pause"  # do nothing until the root is back; say why
    CONFIRM = "confirm"  # push everything but the deletes until the user confirms them


@dataclass(frozen=True, slots=True)
class SafetyCheck:
    verdict: Verdict
    reason: str = ""


def check_deletions(
    *,
    root_missing: bool,
    root_empty: bool,
    indexed: int,
    deletes: int,
    max_share: float = 0.5,
    min_count: int = 10,
    confirmed: bool = False,
) -> SafetyCheck:
    """Whether a batch with ``deletes`` deletions out of ``indexed`` synced paths may be pushed.

    A batch is held back when it deletes more than ``max_share`` of the arena
    and at least ``min_count`` paths (small arenas may delete freely).
    """
    if root_missing:
        return SafetyCheck(
            Verdict.PAUSE,
            "the arena folder is missing (an unmounted disk?); nothing is deleted until it is back",
        )
    if root_empty and indexed > 0:
        return SafetyCheck(
            Verdict.PAUSE,
            f"the arena folder is empty but {indexed} synced paths were in it; nothing is deleted "
            "until files reappear or you confirm with `shoal sync --confirm-deletes`",
        )
    if deletes >= min_count and indexed > 0 and deletes / indexed > max_share and not confirmed:
        return SafetyCheck(
            Verdict.CONFIRM,
            f"{deletes} of {indexed} synced paths were deleted here; confirm with "
            "`shoal sync --confirm-deletes` to delete them everywhere",
        )
    return SafetyCheck(Verdict.PROCEED)


@dataclass(frozen=True, slots=True)
class Identity:
    """What identifies content on one disk without reading it: a moved file keeps all of these."""

    kind: Kind
    inode: int
    size: int
    mtime_ns: int


def detect_moves(gone: Mapping[str, Identity], appeared: Mapping[str, Identity]) -> list[tuple[str, str]]:
    """Pairs (old path, new path) where a path that disappeared shows up under a new name.

    Only unambiguous matches count (one candidate on each side), so a wrong
    pairing never happens; anything unmatched is a plain delete and add.
    """
    by_identity: dict[Identity, list[str]] = {}
    for path, ident in gone.items():
        by_identity.setdefault(ident, []).append(path)
    targets: dict[Identity, list[str]] = {}
    for path, ident in appeared.items():
        if ident in by_identity:
            targets.setdefault(ident, []).append(path)
    moves = []
    for ident, dsts in targets.items():
        srcs = by_identity[ident]
        if len(srcs) == 1 and len(dsts) == 1:
            moves.append((srcs[0], dsts[0]))
    return sorted(moves)
