"""The three-way decision for one path: last synced state, local disk, remote change → one action.

The rules, in the order they apply (see ``docs/dev/worktree.md`` for the table):

* A remote change whose version vector the synced state already covers is an
  echo or stale: the local side alone decides (push a change, or nothing).
* A newer remote change meets an unchanged local path: apply it (write,
  mkdir, symlink, or delete), except that a directory still holding unsynced
  children is kept and pushed again instead of deleted.
* A newer remote change meets a local change: a delete never destroys an
  unseen edit (the edited side survives on both sides), the same content on
  both sides is only recorded, anything else is a conflict for
  :func:`shoal.reconcile.winner.plan_conflict`.
* A remote version concurrent with the synced state (a hub restored from an
  old backup, a lost index) is treated as if the local side had changed, so
  nothing local is overwritten on that evidence.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from shoal.model.vv import Order, VersionVector
from shoal.reconcile.kinds import Kind


class Action(enum.StrEnum):
    NOTHING = "nothing"  # both sides agree; nothing to move
    RECORD = "record"  # both sides already hold the same thing: adopt the remote version vector
    APPLY_REMOTE = "apply-remote"  # write the remote version (file, dir, symlink) at the path
    DELETE_LOCAL = "delete-local"  # the remote deleted it and the local copy is unchanged
    PUSH = "push"  # the local state (an edit, a delete, or a survivor) goes to the hub
    CONFLICT = "conflict"  # concurrent edits: keep both or lww, see plan_conflict


@dataclass(frozen=True, slots=True)
class Synced:
    """The last state of the path both this device and the hub agreed on (the index entry)."""

    kind: Kind
    vv: VersionVector
    content_key: bytes = b""


@dataclass(frozen=True, slots=True)
class Local:
    """What is on disk now. ``kind`` None means absent; ``modified`` means its stat or content
    differs from the synced state; ``content_key`` is set when the content is known (hashed)."""

    kind: Kind | None
    modified: bool = False
    content_key: bytes | None = None
    has_unsynced_children: bool = False


@dataclass(frozen=True, slots=True)
class Remote:
    """A change from the hub's log. ``kind`` None means the path was deleted."""

    kind: Kind | None
    vv: VersionVector = field(default_factory=VersionVector)
    content_key: bytes = b""


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str


ABSENT = Local(kind=None)


def local_changed(base: Synced | None, local: Local) -> bool:
    """True if the disk differs from the synced state (new, edited, retyped or deleted)."""
    if base is None:
        return local.kind is not None
    return local.kind is None or local.kind is not base.kind or local.modified


def _local_only(base: Synced | None, local: Local, why: str) -> Decision:
    if local_changed(base, local):
        what = "deleted" if local.kind is None else "changed"
        return Decision(Action.PUSH, f"{why}; the local copy {what} since the last sync")
    return Decision(Action.NOTHING, f"{why}; the local copy is unchanged")


def _same_thing(local: Local, remote: Remote) -> bool:
    if local.kind is None or remote.kind is None or local.kind is not remote.kind:
        return False
    if local.kind is Kind.DIR:
        return True
    return local.content_key is not None and local.content_key == remote.content_key


def decide(base: Synced | None, local: Local, remote: Remote | None) -> Decision:
    """The action for one path; pure and total over its inputs."""
    if remote is None:
        return _local_only(base, local, "no remote change")
    order = remote.vv.compare(base.vv if base else VersionVector())
    if order in (Order.EQUAL, Order.BEFORE):
        return _local_only(base, local, "the remote change is already known here")
    changed = local_changed(base, local) or (order is Order.CONCURRENT and local.kind is not None)
    return _meet_changed(local, remote) if changed else _meet_unchanged(local, remote)


def _meet_unchanged(local: Local, remote: Remote) -> Decision:
    if remote.kind is not None:
        return Decision(Action.APPLY_REMOTE, "a newer remote version and no local edit")
    if local.kind is None:
        return Decision(Action.RECORD, "deleted on both sides")
    if local.kind is Kind.DIR and local.has_unsynced_children:
        return Decision(Action.PUSH, "the remote deleted a folder that holds unsynced local files")
    return Decision(Action.DELETE_LOCAL, "deleted remotely and unchanged here")


def _meet_changed(local: Local, remote: Remote) -> Decision:
    if local.kind is None and remote.kind is None:
        return Decision(Action.RECORD, "deleted on both sides")
    if local.kind is None:
        return Decision(
            Action.APPLY_REMOTE, "edited remotely and deleted here: the edit wins over the delete"
        )
    if remote.kind is None:
        return Decision(Action.PUSH, "deleted remotely and edited here: the edit wins over the delete")
    if _same_thing(local, remote):
        return Decision(Action.RECORD, "both sides hold the same content")
    return Decision(Action.CONFLICT, "edited on both sides")
