"""Deletion safety verdicts and rename detection."""

from __future__ import annotations

from shoal.reconcile import Identity, Kind, Verdict, check_deletions, detect_moves


def test_a_missing_root_pauses_whatever_else() -> None:
    check = check_deletions(root_missing=True, root_empty=False, indexed=100, deletes=100, confirmed=True)
    assert check.verdict is Verdict.PAUSE
    assert "missing" in check.reason


def test_an_emptied_root_pauses_while_a_new_empty_arena_does_not() -> None:
    assert check_deletions(root_missing=False, root_empty=True, indexed=5, deletes=5).verdict is Verdict.PAUSE
    assert (
        check_deletions(root_missing=False, root_empty=True, indexed=0, deletes=0).verdict is Verdict.PROCEED
    )


def test_mass_deletes_wait_for_confirmation() -> None:
    def of_100(deletes: int, confirmed: bool = False) -> Verdict:
        return check_deletions(
            root_missing=False, root_empty=False, indexed=100, deletes=deletes, confirmed=confirmed
        ).verdict

    assert of_100(60) is Verdict.CONFIRM
    assert of_100(60, confirmed=True) is Verdict.PROCEED
    assert of_100(40) is Verdict.PROCEED
    small = check_deletions(root_missing=False, root_empty=False, indexed=4, deletes=4)
    assert small.verdict is Verdict.PROCEED


def test_moves_are_paired_only_when_unambiguous() -> None:
    a = Identity(Kind.FILE, inode=1, size=10, mtime_ns=5)
    b = Identity(Kind.FILE, inode=2, size=10, mtime_ns=5)
    twin = Identity(Kind.FILE, inode=3, size=1, mtime_ns=1)
    gone = {"old/a": a, "old/b": b, "t1": twin, "t2": twin, "lost": Identity(Kind.FILE, 9, 9, 9)}
    appeared = {"new/a": a, "new/b": b, "t3": twin, "fresh": Identity(Kind.FILE, 8, 8, 8)}
    assert detect_moves(gone, appeared) == [("old/a", "new/a"), ("old/b", "new/b")]


def test_an_edited_file_is_not_a_move() -> None:
    gone = {"a": Identity(Kind.FILE, 1, 10, 5)}
    assert detect_moves(gone, {"b": Identity(Kind.FILE, 1, 11, 6)}) == []
