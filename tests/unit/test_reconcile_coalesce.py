"""Event coalescing with a debounce on a clock the test controls."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shoal.reconcile import Batch, Coalescer, Event, EventType, Move

C, M, D, MV = EventType.CREATED, EventType.MODIFIED, EventType.DELETED, EventType.MOVED


def test_a_burst_of_writes_becomes_one_ready_path_after_the_quiet_delay() -> None:
    co = Coalescer(delay=1.0)
    co.add(Event(C, "a.txt", 0.0))
    for i in range(1, 50):
        co.add(Event(M, "a.txt", i * 0.05))
    last = 49 * 0.05
    assert not co.ready(last + 0.5)
    assert co.next_deadline() == last + 1.0
    batch = co.ready(last + 1.0)
    assert batch.paths == {"a.txt"}
    assert not co.ready(100.0)
    assert co.next_deadline() is None


def test_a_file_written_without_pause_is_ready_after_max_delay() -> None:
    co = Coalescer(delay=1.0, max_delay=5.0)
    t = 0.0
    while t < 5.0:
        co.add(Event(M, "log", t))
        t += 0.5
    assert co.ready(5.0).paths == {"log"}


def test_paths_become_ready_independently() -> None:
    co = Coalescer(delay=1.0)
    co.add(Event(C, "early", 0.0))
    co.add(Event(C, "late", 0.8))
    assert co.ready(1.0).paths == {"early"}
    assert co.ready(1.8).paths == {"late"}


def test_moves_chain_and_cancel() -> None:
    co = Coalescer(delay=1.0)
    co.add(Event(MV, "a", 0.0, dest="b"))
    co.add(Event(MV, "b", 0.1, dest="c"))
    batch = co.ready(2.0)
    assert batch.moves == (Move("a", "c", False),)
    assert batch.paths == {"a", "b", "c"}

    co.add(Event(MV, "x", 3.0, dest="y"))
    co.add(Event(MV, "y", 3.1, dest="x"))
    assert co.ready(5.0).moves == ()


def test_a_move_source_waits_for_its_busy_destination() -> None:
    co = Coalescer(delay=1.0)
    co.add(Event(MV, "old", 0.0, dest="new"))
    co.add(Event(M, "new", 0.9))
    assert co.ready(1.5) == Batch()
    batch = co.ready(2.0)
    assert batch.paths == {"old", "new"}
    assert batch.moves == (Move("old", "new", False),)


def test_folders_created_or_deleted_are_rescanned_as_subtrees() -> None:
    co = Coalescer(delay=0.5)
    co.add(Event(C, "photos", 0.0, is_dir=True))
    co.add(Event(D, "old", 0.0, is_dir=True))
    co.add(Event(MV, "src", 0.0, is_dir=True, dest="dst"))
    batch = co.ready(1.0)
    assert batch.subtrees == {"photos", "old", "src", "dst"}
    assert batch.moves == (Move("src", "dst", True),)


def test_flush_returns_everything_pending() -> None:
    co = Coalescer(delay=60.0)
    co.add(Event(C, "a", 0.0))
    co.add(Event(D, "b", 1.0))
    assert co.flush().paths == {"a", "b"}
    assert len(co) == 0


events = st.builds(
    Event,
    type=st.sampled_from([C, M, D]),
    path=st.sampled_from(["a", "b", "c/d"]),
    at=st.floats(0, 10, allow_nan=False),
)


@given(st.lists(events, max_size=40))
def test_every_touched_path_is_reported_exactly_once_after_a_flush(evs: list[Event]) -> None:
    co = Coalescer(delay=1.0)
    co.add_all(evs)
    seen: list[str] = []
    now = 0.0
    while len(co):
        now += 0.25
        batch = co.ready(now)
        seen.extend(batch.paths)
        seen.extend(batch.subtrees)
    assert sorted(seen) == sorted({e.path for e in evs})
