"""The commit's fast forms (SQLite in one trip, PostgreSQL a group at once): same rows, same answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from shoal.errors import ChunkMissingError, ConflictError, FormatError, NotFoundError, UnsafePathError
from shoal.hub.db.engine import HubDatabase, open_database
from shoal.hub.db.migrate import migrate
from shoal.hub.db.schema import tenants
from shoal.hub.db.sqlite_driver import run_on_thread
from shoal.hub.db.sync_schema import change_chunks, changes, commits, heads
from shoal.hub.sync import arenas as arena_q
from shoal.hub.sync import chunks as chunk_q
from shoal.hub.sync.commit import commit
from shoal.hub.sync.commit_postgres import PendingCommit, commit_all_postgres
from shoal.hub.sync.commit_sqlite import commit_sqlite
from shoal.hub.sync.group import CommitGroup, PostgresBatch
from shoal.model.codec import pack_record
from shoal.model.ids import ChunkId
from shoal.net.schemas_sync import ArenaCreate, ChangeIn, CommitRequest, CommitResult, plain_path_key

T = TypeVar("T")
CHUNK = ChunkId(bytes(range(32)))
MANY = [ChunkId(bytes([n]) * 32) for n in range(40)]
D_KEY = plain_path_key("d.txt")


def run(scenario: Callable[[HubDatabase], Awaitable[T]], path: Path | str) -> T:
    async def main() -> T:
        db = await open_database(path if isinstance(path, str) else f"sqlite+aiosqlite:///{path}")
        try:
            await migrate(db)
            async with db.write() as conn:
                for name in ("alice", "bob"):
                    await conn.execute(tenants.insert().values(kind="user", name=name, created_at=0.0))
                await chunk_q.record_chunks(conn, 1, [(CHUNK, 10), *((c, 10) for c in MANY)], 1.0)
            return await scenario(db)
        finally:
            await db.close()

    return asyncio.run(main())


def put(path: str, vv: dict[str, int], base: dict[str, int] | None = None, **kw: Any) -> ChangeIn:
    return ChangeIn(
        op=kw.pop("op", "put"),
        path_key=plain_path_key(path),
        path=path,
        record=pack_record("entry", 1, {"size": 5, "path": path}),
        base_vv=base or {},
        vv=vv,
        device="dev-a",
        **kw,
    )


async def new_arena(db: HubDatabase, tenant: int = 1, **kw: Any) -> str:
    async with db.write() as conn:
        arena = await arena_q.create_arena(conn, tenant, ArenaCreate(name="docs", **kw), 1.0)
    return arena.public_id


async def one_trip(
    db: HubDatabase, arena: str, key: str, *changes: ChangeIn, tenant: int = 1
) -> CommitResult:
    request = CommitRequest(idempotency_key=key, changes=list(changes))
    async with db.write() as conn:
        _, result = await run_on_thread(conn, lambda raw: commit_sqlite(raw, tenant, arena, request, 2.0))
    return result


async def through_sqlalchemy(
    db: HubDatabase, arena: str, key: str, *changes: ChangeIn, tenant: int = 1
) -> CommitResult:
    request = CommitRequest(idempotency_key=key, changes=list(changes))
    async with db.write() as conn:
        _, result = await commit(conn, tenant, arena, request, 2.0)
    return result


def grouped(
    db: HubDatabase, group: CommitGroup, arena: str, request: CommitRequest, tenant: int = 1
) -> Awaitable[Any]:
    """A commit handed to the group with both fast forms, as the hub's commit endpoint does."""
    return group.run(
        lambda conn: commit(conn, tenant, arena, request, 2.0),
        on_sqlite=lambda raw: commit_sqlite(raw, tenant, arena, request, 2.0),
        on_postgres=PostgresBatch(commit_all_postgres, PendingCommit(tenant, arena, request, 2.0)),
    )


async def batched(db: HubDatabase, arena: str, key: str, *changes: ChangeIn, tenant: int = 1) -> CommitResult:
    """PostgreSQL: through the group, which runs it with ``commit_all_postgres``."""
    request = CommitRequest(idempotency_key=key, changes=list(changes))
    _, result = await grouped(db, CommitGroup(db), arena, request, tenant)
    assert isinstance(result, CommitResult)
    return result


Committer = Callable[..., Awaitable[CommitResult]]


def steps() -> list[tuple[str, list[ChangeIn]]]:
    """Commits covering every kind of row and refusal, some depending on the ones before them."""
    return [
        ("key-0001", [put("a.txt", {"A": 1}, chunks=[CHUNK.hex()]), put("b/c.txt", {"A": 1})]),
        ("key-0001", [put("a.txt", {"A": 1}, chunks=[CHUNK.hex()]), put("b/c.txt", {"A": 1})]),
        ("key-0001", [put("other.txt", {"A": 1})]),
        ("key-0002", [put("a.txt", {"A": 1, "B": 1}, base={"A": 1})]),
        ("key-0003", [put("a.txt", {"A": 2}, base={"A": 1})]),
        (
            "key-0004",
            [put("b/c.txt", {"A": 2}, base={"A": 1}, op="rename", to_path="d.txt", to_path_key=D_KEY)],
        ),
        ("key-0005", [put("e.txt", {"A": 1}, chunks=["ef" * 32])]),
        (
            "key-0006",
            [put("x", {"A": 1}).model_copy(update={"path": "../x", "path_key": plain_path_key("../x")})],
        ),
        ("key-0007", [put("f", {"A": 1}, op="mkdir"), put("g.txt", {"A": 3}, base={"A": 2}, op="delete")]),
        ("key-0008", [put(f"many/{n}", {"A": 1}) for n in range(10)]),
        ("key-0009", [put("big.bin", {"A": 1}, chunks=[c.hex() for c in MANY])]),
    ]


def answer(outcome: Any) -> Any:
    """What a client would see of one commit: the result, or the refusal's kind and message."""
    if isinstance(outcome, tuple):
        outcome = outcome[1]
    if isinstance(outcome, CommitResult):
        return outcome.model_dump()
    assert isinstance(
        outcome, (ChunkMissingError, ConflictError, FormatError, UnsafePathError, NotFoundError)
    )
    return (type(outcome).__name__, outcome.message)


async def tables(db: HubDatabase, arena: str) -> list[Any]:
    async with db.read() as conn:
        found: list[Any] = [
            sorted(tuple(r) for r in (await conn.execute(sa.select(table))).all())
            for table in (changes, change_chunks, heads, commits)
        ]
        found.append((await arena_q.get_arena(conn, 1, arena)).head_seq)
    return found


async def history(db: HubDatabase, committer: Committer) -> list[Any]:
    """The steps one commit after the other; the answers (or refusals) and the tables after them."""
    arena = await new_arena(db)
    answers: list[Any] = []
    for key, batch in steps():
        try:
            answers.append(answer(await committer(db, arena, key, *batch)))
        except (ChunkMissingError, ConflictError, FormatError, UnsafePathError) as exc:
            answers.append(answer(exc))
    with pytest.raises(NotFoundError):
        await committer(db, arena, "key-0010", put("h.txt", {"A": 1}), tenant=2)
    return answers + await tables(db, arena)


async def one_group(db: HubDatabase) -> list[Any]:
    """The same steps all in one group (and another tenant's commit amid them)."""
    arena = await new_arena(db)
    group = CommitGroup(db)
    requests = [CommitRequest(idempotency_key=key, changes=batch) for key, batch in steps()]
    stranger = CommitRequest(idempotency_key="key-0010", changes=[put("h.txt", {"A": 1})])
    outcomes = await asyncio.gather(
        *(grouped(db, group, arena, r) for r in requests[:5]),
        grouped(db, group, arena, stranger, tenant=2),
        *(grouped(db, group, arena, r) for r in requests[5:]),
        return_exceptions=True,
    )
    answers = [answer(o) for o in outcomes]
    answers[5] = (answers[5][0], answers[5][1].replace(arena, "<arena>"))  # ids differ from run to run
    return answers + await tables(db, arena)


def test_one_trip_commit_writes_and_answers_exactly_as_the_async_commit(tmp_path: Path) -> None:
    expected = run(lambda db: history(db, through_sqlalchemy), tmp_path / "async.db")
    got = run(lambda db: history(db, one_trip), tmp_path / "one-trip.db")
    assert got == expected
    assert expected[0]["last"] == 2
    assert expected[1]["replayed"]
    assert expected[2][0] == "ConflictError"
    assert expected[4]["conflicts"]
    assert expected[5]["last"] == 5
    assert expected[6][0] == "ChunkMissingError"
    assert expected[7][0] == "UnsafePathError"
    assert (expected[9]["first"], expected[9]["last"], expected[10]["last"]) == (8, 17, 18)


@pytest.mark.postgres
def test_postgres_commit_in_one_statement_writes_and_answers_as_on_sqlite(
    tmp_path: Path, postgres_url: str
) -> None:
    expected = run(lambda db: history(db, through_sqlalchemy), tmp_path / "async.db")
    got = run(lambda db: history(db, through_sqlalchemy), postgres_url)
    assert got == expected


@pytest.mark.postgres
def test_postgres_batched_commit_writes_and_answers_as_on_sqlite(tmp_path: Path, postgres_url: str) -> None:
    expected = run(lambda db: history(db, through_sqlalchemy), tmp_path / "async.db")
    got = run(lambda db: history(db, batched), postgres_url)
    assert got == expected


@pytest.mark.postgres
def test_a_postgres_group_decides_each_commit_as_if_it_ran_alone(tmp_path: Path, postgres_url: str) -> None:
    """Commits of one group see the ones before them (heads, cursor, keys) exactly as in turn on SQLite."""
    expected = run(one_group, tmp_path / "one-group.db")
    got = run(one_group, postgres_url)
    assert got == expected
    assert expected[1]["replayed"]  # the same key, earlier in the same group
    assert expected[2][0] == "ConflictError"
    assert expected[4]["conflicts"]  # raced the commit before it in the group
    assert expected[5][0] == "NotFoundError"  # another tenant's commit amid them


def test_encrypted_arena_refuses_clear_paths_in_one_trip(tmp_path: Path) -> None:
    async def scenario(db: HubDatabase) -> None:
        arena = await new_arena(db, encrypted=True)
        with pytest.raises(FormatError, match="never send paths"):
            await one_trip(db, arena, "key-0001", put("a.txt", {"A": 1}))
        blind = ChangeIn(op="put", path_key="cd" * 32, record=b"sealed", vv={"A": 1}, device="dev-a")
        assert (await one_trip(db, arena, "key-0002", blind)).last == 1

    run(scenario, tmp_path / "hub.db")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_group_of_fast_commits_isolates_a_refused_request(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async def scenario(db: HubDatabase) -> None:
        arena = await new_arena(db)
        group = CommitGroup(db)

        def work(key: str, *batch: ChangeIn, tenant: int = 1) -> Awaitable[Any]:
            return grouped(db, group, arena, CommitRequest(idempotency_key=key, changes=list(batch)), tenant)

        async def only_async(key: str, *batch: ChangeIn) -> Any:
            request = CommitRequest(idempotency_key=key, changes=list(batch))
            return await group.run(lambda conn: commit(conn, 1, arena, request, 2.0))

        first = await asyncio.gather(
            work("key-0001", put("a.txt", {"A": 1})),
            work("key-0002", put("b.txt", {"A": 1}, chunks=["ef" * 32])),
            work("key-0003", put("c.txt", {"A": 1}), put("d.txt", {"A": 1})),
            work("key-0001", put("a.txt", {"A": 1})),
            work("key-0004", put("e.txt", {"A": 1}), tenant=2),
            return_exceptions=True,
        )
        assert isinstance(first[1], ChunkMissingError)
        assert isinstance(first[4], NotFoundError)
        done = [o[1] for o in first if isinstance(o, tuple)]
        assert [(r.first, r.last, r.replayed) for r in done] == [(1, 1, False), (2, 3, False), (1, 1, True)]
        # A group mixing work without a plain-sqlite3 variant runs every item the async way.
        mixed = await asyncio.gather(
            work("key-0005", put("f.txt", {"A": 1})), only_async("key-0006", put("g.txt", {"A": 1}))
        )
        assert [(r.first, r.last) for _, r in mixed] == [(4, 4), (5, 5)]
        async with db.read() as conn:
            rows = (
                await conn.execute(sa.select(changes.c.seq, changes.c.path).order_by(changes.c.seq))
            ).all()
        assert [tuple(r) for r in rows] == [
            (1, "a.txt"),
            (2, "c.txt"),
            (3, "d.txt"),
            (4, "f.txt"),
            (5, "g.txt"),
        ]

    where = request.getfixturevalue("postgres_url") if backend == "postgres" else tmp_path / "hub.db"
    run(scenario, where)


@pytest.mark.postgres
def test_postgres_group_keeps_a_database_failure_with_its_own_request(postgres_url: str) -> None:
    """A statement the database refuses rolls the group back and runs each commit alone, so the
    others land and only the one that caused it gets the error."""

    async def scenario(db: HubDatabase) -> None:
        arena = await new_arena(db)
        group = CommitGroup(db)
        fine = [
            CommitRequest(idempotency_key=f"key-000{n}", changes=[put(f"{n}.txt", {"A": 1})]) for n in (1, 2)
        ]
        # A device name longer than the column: only the database can refuse it (validation would).
        too_long = put("bad.txt", {"A": 1}).model_copy(update={"device": "d" * 100})
        refused = CommitRequest.model_construct(v=1, idempotency_key="key-0009", changes=[too_long])
        outcomes = await asyncio.gather(
            grouped(db, group, arena, fine[0]),
            grouped(db, group, arena, refused),
            grouped(db, group, arena, fine[1]),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], sa.exc.DBAPIError)
        assert "too long" in str(outcomes[1])
        done = [o[1] for o in outcomes if isinstance(o, tuple)]
        assert [(r.first, r.last) for r in done] == [(1, 1), (2, 2)]
        async with db.read() as conn:
            rows = (
                await conn.execute(sa.select(changes.c.seq, changes.c.path).order_by(changes.c.seq))
            ).all()
            commit_keys = (await conn.execute(sa.select(commits.c.idempotency_key))).scalars().all()
        assert [tuple(r) for r in rows] == [(1, "1.txt"), (2, "2.txt")]
        assert sorted(commit_keys) == ["key-0001", "key-0002"]

    run(scenario, postgres_url)
