"""A deterministic winner between two concurrent versions of one path, and what each policy does.

Every device must pick the same winner without talking to the others, so the
choice is a total order on the versions' own metadata (as in Syncthing's
``WinsConflict``):

1. an existing version beats a deletion (a delete never destroys an unseen edit);
2. a directory beats a file or symlink (the folder may hold other synced paths);
3. the later modification time wins;
4. then the larger device id, content key, version vector and kind name, so
   equal keys mean equal versions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shoal.model.vv import VersionVector
from shoal.reconcile.kinds import Kind
from shoal.reconcile.names import conflict_copy_name, short_device_id


class ConflictPolicy(enum.StrEnum):
    KEEP_BOTH = "keep-both"
    LWW = "lww"


@dataclass(frozen=True, slots=True)
class Version:
    """The metadata of one side of a conflict.

    ``content_key`` identifies the content (for example the manifest's file
    hash, or a symlink's target); two versions with the same key and kind hold
    the same thing and are not really in conflict.
    """

    device: str
    mtime_ns: int
    vv: VersionVector = field(default_factory=VersionVector)
    kind: Kind = Kind.FILE
    deleted: bool = False
    content_key: bytes = b""

    def sort_key(self) -> tuple[bool, bool, int, str, bytes, tuple[tuple[str, int], ...], str]:
        return (
            not self.deleted,
            self.kind is Kind.DIR,
            self.mtime_ns,
            self.device,
            self.content_key,
            tuple(self.vv.counters.items()),
            self.kind.value,
        )

    def same_content(self, other: Version) -> bool:
        if self.deleted or other.deleted:
            return self.deleted and other.deleted
        if self.kind is not other.kind:
            return False
        return self.kind is Kind.DIR or self.content_key == other.content_key


def winner(a: Version, b: Version) -> Version:
    """The version that stays at the path; symmetric: ``winner(a, b) == winner(b, a)``."""
    return a if a.sort_key() >= b.sort_key() else b


@dataclass(frozen=True, slots=True)
class ConflictPlan:
    """What to do with two concurrent versions of ``path``.

    ``keep`` stays at the path. ``copy_path`` is where the loser is written in
    keep-both (``None`` when there is nothing to copy: the loser is a deletion,
    a directory, or the same content, or the policy is lww, where the loser
    stays reachable only in the hub's history). ``vv`` is the merged version
    vector the resolving device bumps when it commits the outcome.
    """

    path: str
    keep: Version
    loser: Version
    copy_path: str | None
    vv: VersionVector


def plan_conflict(path: str, a: Version, b: Version, policy: ConflictPolicy) -> ConflictPlan:
    keep = winner(a, b)
    loser = b if keep is a else a
    copy_path: str | None = None
    needs_copy = not loser.deleted and loser.kind is not Kind.DIR and not loser.same_content(keep)
    if policy is ConflictPolicy.KEEP_BOTH and needs_copy:
        when = datetime.fromtimestamp(loser.mtime_ns // 1_000_000_000, tz=UTC)
        copy_path = conflict_copy_name(path, when, short_device_id(loser.device))
    return ConflictPlan(path=path, keep=keep, loser=loser, copy_path=copy_path, vv=a.vv.merge(b.vv))
