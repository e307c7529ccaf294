"""Deterministic winners and the keep-both / lww plans."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.model.vv import VersionVector
from shoal.reconcile import ConflictPolicy, Kind, Version, is_conflict_copy, plan_conflict, winner

S = 1_000_000_000

versions = st.builds(
    Version,
    device=st.sampled_from(["dev-a", "dev-b", "dev-c"]),
    mtime_ns=st.integers(0, 3).map(lambda n: n * S),
    vv=st.dictionaries(st.sampled_from(["dev-a", "dev-b"]), st.integers(0, 3)).map(VersionVector),
    kind=st.sampled_from(list(Kind)),
    deleted=st.booleans(),
    content_key=st.sampled_from([b"", b"x", b"y"]),
)


@given(versions, versions)
def test_winner_is_symmetric(a: Version, b: Version) -> None:
    assert winner(a, b) == winner(b, a)


@given(versions, versions, versions)
def test_winner_is_transitive(a: Version, b: Version, c: Version) -> None:
    assert winner(winner(a, b), c) == winner(a, winner(b, c))


@given(versions, versions, st.sampled_from(list(ConflictPolicy)))
def test_every_device_plans_the_same_outcome(a: Version, b: Version, policy: ConflictPolicy) -> None:
    assert plan_conflict("p/f.txt", a, b, policy) == plan_conflict("p/f.txt", b, a, policy)


@given(versions, versions)
def test_keep_both_keeps_every_edited_file(a: Version, b: Version) -> None:
    plan = plan_conflict("f.txt", a, b, ConflictPolicy.KEEP_BOTH)
    if not plan.loser.deleted and plan.loser.kind is not Kind.DIR and not plan.loser.same_content(plan.keep):
        assert plan.copy_path is not None
        assert is_conflict_copy(plan.copy_path)
    assert plan.vv.compare(a.vv).value in ("after", "equal")
    assert plan.vv.compare(b.vv).value in ("after", "equal")


def test_later_mtime_wins_then_device_id() -> None:
    old = Version("dev-a", 1 * S, content_key=b"1")
    new = Version("dev-b", 2 * S, content_key=b"2")
    assert winner(old, new) is new
    tie_a = Version("dev-a", 5 * S, content_key=b"1")
    tie_b = Version("dev-b", 5 * S, content_key=b"2")
    assert winner(tie_a, tie_b) is tie_b


def test_a_delete_never_wins_over_an_edit() -> None:
    edit = Version("dev-a", 1 * S, content_key=b"e")
    delete = Version("dev-b", 9 * S, deleted=True)
    plan = plan_conflict("f", edit, delete, ConflictPolicy.KEEP_BOTH)
    assert plan.keep is edit
    assert plan.copy_path is None


def test_a_folder_wins_over_the_file_it_replaced() -> None:
    folder = Version("dev-a", 1 * S, kind=Kind.DIR)
    file = Version("dev-b", 9 * S, content_key=b"f")
    plan = plan_conflict("thing", folder, file, ConflictPolicy.KEEP_BOTH)
    assert plan.keep is folder
    assert plan.copy_path is not None
    assert plan.copy_path.startswith("thing.sync-conflict-19700101-000009-DEVB")


def test_keep_both_names_the_copy_after_the_loser() -> None:
    a = Version("laptop01", 1_763_773_323 * S, content_key=b"a")
    b = Version("desktop9", 1_763_773_000 * S, content_key=b"b")
    plan = plan_conflict("notes/todo.md", a, b, ConflictPolicy.KEEP_BOTH)
    assert plan.keep is a
    assert plan.copy_path == "notes/todo.sync-conflict-20251122-005640-DESKTOP.md"


def test_lww_keeps_only_the_winner_at_the_path() -> None:
    a = Version("dev-a", 1 * S, content_key=b"a")
    b = Version("dev-b", 2 * S, content_key=b"b")
    plan = plan_conflict("f", a, b, ConflictPolicy.LWW)
    assert plan.keep is b
    assert plan.loser is a
    assert plan.copy_path is None


def test_same_content_needs_no_copy() -> None:
    a = Version("dev-a", 1 * S, content_key=b"same")
    b = Version("dev-b", 2 * S, content_key=b"same")
    assert plan_conflict("f", a, b, ConflictPolicy.KEEP_BOTH).copy_path is None
