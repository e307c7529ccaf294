"""The three-way decision, as a table and exhaustively against the invariants that protect data."""

from __future__ import annotations

import itertools

import pytest

from shoal.model.vv import Order, VersionVector
from shoal.reconcile import ABSENT, Action, Kind, Local, Remote, Synced, decide, local_changed

BASE_VV = VersionVector({"a": 1, "b": 1})
NEWER = VersionVector({"a": 1, "b": 2})
OLDER = VersionVector({"a": 1})
CONCURRENT = VersionVector({"a": 2})  # the remote never saw b:1

F, D, L = Kind.FILE, Kind.DIR, Kind.SYMLINK
FILE_BASE = Synced(F, BASE_VV, b"v1")
DIR_BASE = Synced(D, BASE_VV)

TABLE = [
    # (name, base, local, remote, expected)
    ("nothing anywhere", None, ABSENT, None, Action.NOTHING),
    ("new local file", None, Local(F), None, Action.PUSH),
    ("local edit", FILE_BASE, Local(F, modified=True), None, Action.PUSH),
    ("local delete", FILE_BASE, ABSENT, None, Action.PUSH),
    ("unchanged", FILE_BASE, Local(F), None, Action.NOTHING),
    ("own echo", FILE_BASE, Local(F), Remote(F, BASE_VV, b"v1"), Action.NOTHING),
    ("stale remote, local edit", FILE_BASE, Local(F, modified=True), Remote(F, OLDER, b"v0"), Action.PUSH),
    ("remote edit", FILE_BASE, Local(F), Remote(F, NEWER, b"v2"), Action.APPLY_REMOTE),
    ("remote new file", None, ABSENT, Remote(F, NEWER, b"v2"), Action.APPLY_REMOTE),
    ("remote delete", FILE_BASE, Local(F), Remote(None, NEWER), Action.DELETE_LOCAL),
    (
        "both edit",
        FILE_BASE,
        Local(F, modified=True, content_key=b"x"),
        Remote(F, NEWER, b"y"),
        Action.CONFLICT,
    ),
    (
        "both same edit",
        FILE_BASE,
        Local(F, modified=True, content_key=b"y"),
        Remote(F, NEWER, b"y"),
        Action.RECORD,
    ),
    ("both add same", None, Local(F, content_key=b"y"), Remote(F, NEWER, b"y"), Action.RECORD),
    ("both add differ", None, Local(F, content_key=b"x"), Remote(F, NEWER, b"y"), Action.CONFLICT),
    ("both add, local unhashed", None, Local(F), Remote(F, NEWER, b"y"), Action.CONFLICT),
    (
        "delete vs modify: remote deleted",
        FILE_BASE,
        Local(F, modified=True),
        Remote(None, NEWER),
        Action.PUSH,
    ),
    ("delete vs modify: local deleted", FILE_BASE, ABSENT, Remote(F, NEWER, b"v2"), Action.APPLY_REMOTE),
    ("deleted on both sides", FILE_BASE, ABSENT, Remote(None, NEWER), Action.RECORD),
    ("remote file replaced by folder", FILE_BASE, Local(F), Remote(D, NEWER), Action.APPLY_REMOTE),
    (
        "local file replaced by folder, remote edit",
        FILE_BASE,
        Local(D),
        Remote(F, NEWER, b"v2"),
        Action.CONFLICT,
    ),
    ("local file replaced by folder, no remote", FILE_BASE, Local(D), None, Action.PUSH),
    ("both made the folder", None, Local(D), Remote(D, NEWER), Action.RECORD),
    ("remote folder delete, folder unchanged", DIR_BASE, Local(D), Remote(None, NEWER), Action.DELETE_LOCAL),
    (
        "remote folder delete vs new local file inside",
        DIR_BASE,
        Local(D, has_unsynced_children=True),
        Remote(None, NEWER),
        Action.PUSH,
    ),
    (
        "symlink retargeted remotely",
        Synced(L, BASE_VV, b"t1"),
        Local(L),
        Remote(L, NEWER, b"t2"),
        Action.APPLY_REMOTE,
    ),
    (
        "concurrent remote vs unchanged local",
        FILE_BASE,
        Local(F),
        Remote(F, CONCURRENT, b"z"),
        Action.CONFLICT,
    ),
    (
        "concurrent remote vs same local",
        FILE_BASE,
        Local(F, content_key=b"z"),
        Remote(F, CONCURRENT, b"z"),
        Action.RECORD,
    ),
    ("concurrent delete vs local file", FILE_BASE, Local(F), Remote(None, CONCURRENT), Action.PUSH),
]


@pytest.mark.parametrize(
    ("base", "local", "remote", "expected"), [row[1:] for row in TABLE], ids=[r[0] for r in TABLE]
)
def test_decision_table(base: Synced | None, local: Local, remote: Remote | None, expected: Action) -> None:
    decision = decide(base, local, remote)
    assert decision.action is expected, decision.reason
    assert decision.reason


def test_rename_vs_modify_keeps_the_edit_and_the_renamed_copy() -> None:
    # Remote renamed a.txt → b.txt; here a.txt was edited. The log shows a delete of a.txt
    # and a put of b.txt; the edit survives at a.txt and the old content appears at b.txt.
    at_old = decide(FILE_BASE, Local(F, modified=True), Remote(None, NEWER))
    at_new = decide(None, ABSENT, Remote(F, NEWER, b"v1"))
    assert (at_old.action, at_new.action) == (Action.PUSH, Action.APPLY_REMOTE)


BASES = [None, FILE_BASE, DIR_BASE, Synced(L, BASE_VV, b"t")]
KINDS: list[Kind | None] = [None, F, D, L]
REMOTE_VVS = {Order.EQUAL: BASE_VV, Order.BEFORE: OLDER, Order.AFTER: NEWER, Order.CONCURRENT: CONCURRENT}


def _all_cases() -> list[tuple[Synced | None, Local, Remote | None]]:
    cases: list[tuple[Synced | None, Local, Remote | None]] = []
    for base, kind, modified, key, children in itertools.product(
        BASES, KINDS, [False, True], [None, b"v1", b"v2"], [False, True]
    ):
        local = Local(kind, modified=modified, content_key=key, has_unsynced_children=children)
        cases.append((base, local, None))
        for rkind, rvv, rkey in itertools.product(KINDS, REMOTE_VVS.values(), [b"v1", b"v2"]):
            cases.append((base, local, Remote(rkind, rvv, rkey)))
    return cases


ALL_CASES = _all_cases()


def test_exhaustive_no_unseen_local_edit_is_overwritten_or_deleted() -> None:
    for base, local, remote in ALL_CASES:
        action = decide(base, local, remote).action
        edited_here = local.kind is not None and local_changed(base, local)
        same = (
            remote is not None
            and remote.kind is local.kind
            and (local.kind is Kind.DIR or local.content_key == remote.content_key)
        )
        if edited_here and not same:
            assert action not in (Action.APPLY_REMOTE, Action.DELETE_LOCAL), (base, local, remote)


def test_exhaustive_a_newer_remote_version_is_never_dropped() -> None:
    for base, local, remote in ALL_CASES:
        if remote is None or remote.kind is None:
            continue
        if remote.vv.compare(base.vv if base else VersionVector()) not in (Order.AFTER, Order.CONCURRENT):
            continue
        action = decide(base, local, remote).action
        assert action in (Action.APPLY_REMOTE, Action.CONFLICT, Action.RECORD), (base, local, remote)


def test_exhaustive_known_remote_changes_defer_to_the_local_side() -> None:
    for base, local, remote in ALL_CASES:
        if remote is None or remote.vv.compare(base.vv if base else VersionVector()) not in (
            Order.EQUAL,
            Order.BEFORE,
        ):
            continue
        assert decide(base, local, remote).action is decide(base, local, None).action


def test_exhaustive_local_deletes_only_when_the_remote_deleted() -> None:
    for base, local, remote in ALL_CASES:
        if decide(base, local, remote).action is Action.DELETE_LOCAL:
            assert remote is not None
            assert remote.kind is None
            assert not local_changed(base, local)
            assert not local.has_unsynced_children or local.kind is not Kind.DIR
