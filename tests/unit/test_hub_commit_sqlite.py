"""The commit's fast forms (SQLite in one trip, PostgreSQL pipelined): same rows, same answers."""

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
from shoal.hub.sync.commit_postgres import commit_postgres
from shoal.hub.sync.commit_sqlite import commit_sqlite
from shoal.hub.sync.group import CommitGroup
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


async def pipelined(
    db: HubDatabase, arena: str, key: str, *changes: ChangeIn, tenant: int = 1
) -> CommitResult:
    """PostgreSQL: through the group, which runs the psycopg variant in a pipeline."""
    request = CommitRequest(idempotency_key=key, changes=list(changes))
    _, result = await CommitGroup(db).run(
        lambda conn: commit(conn, tenant, arena, request, 2.0),
        on_postgres=lambda raw: commit_postgres(raw, db.engine.dialect, tenant, arena, request, 2.0),
    )
    return result


Committer = Callable[..., Awaitable[CommitResult]]


async def history(db: HubDatabase, committer: Committer) -> list[Any]:
    """A run of commits covering every kind of row; the answers (or refusals) and the tables after it."""
    arena = await new_arena(db)
    answers: list[Any] = []
    steps: list[tuple[str, list[ChangeIn]]] = [
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
    for key, batch in steps:
        try:
            answers.append((await committer(db, arena, key, *batch)).model_dump())
        except (ChunkMissingError, ConflictError, FormatError, UnsafePathError) as exc:
            answers.append((type(exc).__name__, exc.message))
    with pytest.raises(NotFoundError):
        await committer(db, arena, "key-0010", put("h.txt", {"A": 1}), tenant=2)
    async with db.read() as conn:
        for table in (changes, change_chunks, heads, commits):
            rows = (await conn.execute(sa.select(table))).all()
            answers.append(sorted(tuple(r) for r in rows))
        answers.append((await arena_q.get_arena(conn, 1, arena)).head_seq)
    return answers


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
def test_postgres_pipelined_commit_writes_and_answers_as_on_sqlite(tmp_path: Path, postgres_url: str) -> None:
    expected = run(lambda db: history(db, through_sqlalchemy), tmp_path / "async.db")
    got = run(lambda db: history(db, pipelined), postgres_url)
    assert got == expected


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
            request = CommitRequest(idempotency_key=key, changes=list(batch))
            return group.run(
                lambda conn: commit(conn, tenant, arena, request, 2.0),
                on_sqlite=lambda raw: commit_sqlite(raw, tenant, arena, request, 2.0),
                on_postgres=lambda raw: commit_postgres(raw, db.engine.dialect, tenant, arena, request, 2.0),
            )

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
