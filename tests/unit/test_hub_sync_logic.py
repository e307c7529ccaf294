"""The hub's commit transaction and log queries against a real SQLite file (no HTTP)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from shoal.errors import ChunkMissingError, ConflictError, FormatError, NotFoundError, UnsafePathError
from shoal.hub.db.engine import HubDatabase, open_database
from shoal.hub.db.migrate import migrate
from shoal.hub.db.schema import tenants
from shoal.hub.notify import InProcessNotifier
from shoal.hub.sync import arenas as arena_q
from shoal.hub.sync import chunks as chunk_q
from shoal.hub.sync.commit import commit, record_size
from shoal.hub.sync.group import CommitGroup
from shoal.hub.sync.log import ack, changes_page, restore, tree_page, versions
from shoal.model.codec import pack_record
from shoal.model.ids import ChunkId
from shoal.net.schemas_sync import (
    ArenaCreate,
    ArenaUpdate,
    ChangeIn,
    CommitRequest,
    RestoreRequest,
    plain_path_key,
)

T = TypeVar("T")


def run(scenario: Callable[[HubDatabase], Awaitable[T]], tmp_path: Path) -> T:
    async def main() -> T:
        db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
        try:
            await migrate(db)
            async with db.write() as conn:
                for name in ("alice", "bob"):
                    await conn.execute(tenants.insert().values(kind="user", name=name, created_at=0.0))
            return await scenario(db)
        finally:
            await db.close()

    return asyncio.run(main())


def put(
    path: str, vv: dict[str, int], base: dict[str, int] | None = None, chunks: list[str] | None = None
) -> ChangeIn:
    record = pack_record("entry", 1, {"size": 5, "path": path})
    return ChangeIn(
        op="put",
        path_key=plain_path_key(path),
        path=path,
        record=record,
        chunks=chunks or [],
        base_vv=base or {},
        vv=vv,
        device="dev-a",
    )


async def new_arena(db: HubDatabase, tenant: int = 1, **kw: Any) -> str:
    async with db.write() as conn:
        arena = await arena_q.create_arena(conn, tenant, ArenaCreate(name=kw.pop("name", "docs"), **kw), 1.0)
    return arena.public_id


async def do_commit(db: HubDatabase, arena: str, key: str, *changes: ChangeIn, tenant: int = 1) -> Any:
    async with db.write() as conn:
        _, result = await commit(
            conn, tenant, arena, CommitRequest(idempotency_key=key, changes=list(changes)), 2.0
        )
    return result


def test_commits_get_gap_free_cursors_and_replay_is_idempotent(tmp_path: Path) -> None:
    async def scenario(db: HubDatabase) -> None:
        arena = await new_arena(db)
        first = await do_commit(db, arena, "key-0001", put("a.txt", {"A": 1}), put("b/c.txt", {"A": 1}))
        assert (first.first, first.last) == (1, 2)
        again = await do_commit(db, arena, "key-0001", put("a.txt", {"A": 1}), put("b/c.txt", {"A": 1}))
        assert again.replayed
        assert (again.first, again.last) == (1, 2)
        second = await do_commit(db, arena, "key-0002", put("a.txt", {"A": 2}, base={"A": 1}))
        assert (second.first, second.last, second.conflicts) == (3, 3, [])
        with pytest.raises(ConflictError, match="already used"):
            await do_commit(db, arena, "key-0002", put("other.txt", {"A": 1}))
        async with db.read() as conn:
            row = await arena_q.get_arena(conn, 1, arena)
            page = await changes_page(conn, row, 0, 100)
        entries = [json.loads(e) for e in page["entries"]]
        assert [e["seq"] for e in entries] == [1, 2, 3]
        assert page["head"] == 3
        assert not page["more"]
        assert entries[0]["size"] == 5

    run(scenario, tmp_path)


def test_concurrent_edit_is_flagged_with_the_seq_it_raced(tmp_path: Path) -> None:
    async def scenario(db: HubDatabase) -> None:
        arena = await new_arena(db)
        await do_commit(db, arena, "key-0001", put("a.txt", {"A": 1}))
        b_edit = put("a.txt", {"A": 1, "B": 1}, base={"A": 1}).model_copy(update={"device": "dev-b"})
        a_edit = put("a.txt", {"A": 2}, base={"A": 1})
        assert (await do_commit(db, arena, "key-0002", b_edit)).conflicts == []
        raced = await do_commit(db, arena, "key-0003", a_edit)
        assert [(c.seq, c.conflict_with) for c in raced.conflicts] == [(3, 2)]
        # A device that saw both (merged vector) edits again without conflict.
        merged = await do_commit(db, arena, "key-0004", put("a.txt", {"A": 3, "B": 1}, base={"A": 2, "B": 1}))
        assert merged.conflicts == []

    run(scenario, tmp_path)


def test_batch_with_a_missing_chunk_or_bad_path_commits_nothing(tmp_path: Path) -> None:
    async def scenario(db: HubDatabase) -> None:
        arena = await new_arena(db)
        ghost = "ab" * 32
        with pytest.raises(ChunkMissingError, match=ghost):
            await do_commit(
                db, arena, "key-0001", put("a.txt", {"A": 1}), put("b.txt", {"A": 1}, chunks=[ghost])
            )
        evil = put("x", {"A": 1}).model_copy(
            update={"path": "../etc/passwd", "path_key": plain_path_key("../etc/passwd")}
        )
        with pytest.raises(UnsafePathError, match=r"'\.\.'"):
            await do_commit(db, arena, "key-0002", put("a.txt", {"A": 1}), evil)
        lying = put("a.txt", {"A": 1}).model_copy(update={"path_key": plain_path_key("b.txt")})
        with pytest.raises(UnsafePathError, match="does not match"):
            await do_commit(db, arena, "key-0003", lying)
        async with db.read() as conn:
            row = await arena_q.get_arena(conn, 1, arena)
            assert row.head_seq == 0
            assert (await changes_page(conn, row, 0, 10))["entries"] == []

    run(scenario, tmp_path)


def test_encrypted_arena_refuses_clear_paths(tmp_path: Path) -> None:
    async def scenario(db: HubDatabase) -> None:
        arena = await new_arena(db, encrypted=True)
        with pytest.raises(FormatError, match="never send paths"):
            await do_commit(db, arena, "key-0001", put("a.txt", {"A": 1}))
        blind = ChangeIn(op="put", path_key="cd" * 32, record=b"sealed", vv={"A": 1}, device="dev-a")
        assert (await do_commit(db, arena, "key-0002", blind)).last == 1

    run(scenario, tmp_path)


def test_other_tenant_sees_neither_arena_nor_chunks(tmp_path: Path) -> None:
    async def scenario(db: HubDatabase) -> None:
        arena = await new_arena(db)
        cid = ChunkId(bytes(32))
        async with db.write() as conn:
            await chunk_q.record_chunks(conn, 1, [(cid, 10)], 1.0)
        async with db.read() as conn:
            assert await chunk_q.missing(conn, 1, [cid.hex()]) == []
            assert await chunk_q.missing(conn, 2, [cid.hex()]) == [cid.hex()]
            with pytest.raises(NotFoundError):
                await arena_q.get_arena(conn, 2, arena)
            with pytest.raises(NotFoundError):
                await chunk_q.chunk_size(conn, 2, cid.hex())
        with pytest.raises(NotFoundError):
            await do_commit(db, arena, "key-0001", put("a.txt", {"A": 1}), tenant=2)
        theirs = await new_arena(db, tenant=2)
        with pytest.raises(ChunkMissingError):
            await do_commit(db, theirs, "key-0001", put("a.txt", {"A": 1}, chunks=[cid.hex()]), tenant=2)

    run(scenario, tmp_path)


def test_versions_restore_and_tombstones(tmp_path: Path) -> None:
    async def scenario(db: HubDatabase) -> None:
        arena = await new_arena(db)
        key = plain_path_key("a.txt")
        await do_commit(db, arena, "key-0001", put("a.txt", {"A": 1}))
        await do_commit(db, arena, "key-0002", put("a.txt", {"A": 2}, base={"A": 1}))
        gone = ChangeIn(
            op="delete", path_key=key, path="a.txt", base_vv={"A": 2}, vv={"A": 3}, device="dev-a"
        )
        await do_commit(db, arena, "key-0003", gone)
        async with db.read() as conn:
            row = await arena_q.get_arena(conn, 1, arena)
            listed = await versions(conn, row, key)
            assert [(v.seq, v.deleted) for v in listed.versions] == [(3, True), (2, False), (1, False)]
            assert (await tree_page(conn, row, "", 10))["items"] == []
        async with db.write() as conn:
            _, result = await restore(
                conn, 1, arena, RestoreRequest(path_key=key, seq=1), device="dev-b", now=3.0
            )
        assert result.last == 4
        assert result.conflicts == []
        async with db.read() as conn:
            row = await arena_q.get_arena(conn, 1, arena)
            entries = [json.loads(e) for e in (await changes_page(conn, row, 3, 10))["entries"]]
            tree = [json.loads(t) for t in (await tree_page(conn, row, "", 10))["items"]]
        assert entries[0]["restored_from"] == 1
        assert entries[0]["op"] == "put"
        assert entries[0]["vv"] == {"A": 3, "dev-b": 1}
        assert [(t["path_key"], t["change"]["seq"]) for t in tree] == [(key, 4)]

    run(scenario, tmp_path)


def test_arena_names_unique_among_live_and_undelete(tmp_path: Path) -> None:
    async def scenario(db: HubDatabase) -> None:
        first = await new_arena(db, name="photos")
        with pytest.raises(ConflictError, match="already exists"):
            await new_arena(db, name="photos")
        async with db.write() as conn:
            await arena_q.delete_arena(conn, 1, first, 5.0)
        second = await new_arena(db, name="photos")
        async with db.write() as conn:
            with pytest.raises(ConflictError, match="another live arena"):
                await arena_q.undelete_arena(conn, 1, first, 6.0)
            await arena_q.update_arena(conn, 1, second, ArenaUpdate(name="photos-new"))
            back = await arena_q.undelete_arena(conn, 1, first, 6.0)
        assert back.deleted_at is None
        assert back.name == "photos"
        assert await new_arena(db, tenant=2, name="photos")  # names are per tenant

    run(scenario, tmp_path)


def test_ack_never_moves_back_and_not_past_head(tmp_path: Path) -> None:
    async def scenario(db: HubDatabase) -> None:
        arena = await new_arena(db)
        await do_commit(db, arena, "key-0001", put("a.txt", {"A": 1}), put("b.txt", {"A": 1}))
        async with db.write() as conn:
            row = await arena_q.get_arena(conn, 1, arena)
            assert await ack(conn, row, "dev-a", 2, 1.0) == 2
            assert await ack(conn, row, "dev-a", 1, 1.0) == 2
            with pytest.raises(Exception, match="past the arena's head"):
                await ack(conn, row, "dev-a", 9, 1.0)

    run(scenario, tmp_path)


def test_upload_framing_roundtrip_and_refusals() -> None:
    a, b = ChunkId(b"\x01" * 32), ChunkId(b"\x02" * 32)
    body = chunk_q.encode_batch([(a, b"one"), (b, b"two"), (a, b"one")])
    assert chunk_q.parse_batch(body) == [(a, b"one"), (b, b"two")]
    with pytest.raises(FormatError, match="magic"):
        chunk_q.parse_batch(b"XXXX" + body[4:])
    with pytest.raises(FormatError, match="truncated"):
        chunk_q.parse_batch(body[:-1])
    assert record_size(b"\xc1") is None
    assert record_size(pack_record("entry", 1, {"size": 7})) == 7


def test_group_commit_isolates_a_refused_request_and_numbers_the_rest(tmp_path: Path) -> None:
    async def scenario(db: HubDatabase) -> None:
        arena = await new_arena(db)
        group = CommitGroup(db)

        def work(key: str, *changes: ChangeIn) -> Any:
            request = CommitRequest(idempotency_key=key, changes=list(changes))
            return group.run(lambda conn: commit(conn, 1, arena, request, 2.0))

        outcomes = await asyncio.gather(
            work("key-0001", put("a.txt", {"A": 1})),
            work("key-0002", put("b.txt", {"A": 1}, chunks=["ef" * 32])),
            work("key-0003", put("c.txt", {"A": 1}), put("d.txt", {"A": 1})),
            work("key-0001", put("a.txt", {"A": 1})),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], ChunkMissingError)
        results = [o[1] for o in outcomes if isinstance(o, tuple)]
        assert [(r.first, r.last, r.replayed) for r in results] == [
            (1, 1, False),
            (2, 3, False),
            (1, 1, True),
        ]
        async with db.read() as conn:
            row = await arena_q.get_arena(conn, 1, arena)
            entries = [json.loads(e) for e in (await changes_page(conn, row, 0, 10))["entries"]]
        assert [e["path"] for e in entries] == ["a.txt", "c.txt", "d.txt"]

    run(scenario, tmp_path)


def test_notifier_coalesces_to_the_newest_cursor() -> None:
    async def scenario() -> None:
        notifier = InProcessNotifier()
        async with notifier.subscribe(7) as sub, notifier.subscribe(8) as other:
            await notifier.publish(7, 3)
            await notifier.publish(7, 5)
            assert await sub.next_cursor(1.0) == 5
            assert await sub.next_cursor(0.01) is None
            assert await other.next_cursor(0.01) is None
            assert notifier.watcher_count() == 2
        assert notifier.watcher_count() == 0

    asyncio.run(scenario())


def test_sync_migration_upgrades_an_accounts_only_database_keeping_its_data(tmp_path: Path) -> None:
    async def main() -> None:
        db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
        try:
            assert await migrate(db, target=1) == [1]
            async with db.write() as conn:
                await conn.execute(tenants.insert().values(kind="user", name="early", created_at=0.0))
            assert (await migrate(db))[0] == 2  # and any later migrations
            async with db.write() as conn:
                arena = await arena_q.create_arena(conn, 1, ArenaCreate(name="after-upgrade"), 1.0)
                names = (await conn.execute(tenants.select())).all()
            assert [r.name for r in names] == ["early"]
            assert arena.head_seq == 0
            assert await migrate(db) == []
        finally:
            await db.close()

    asyncio.run(main())


def test_wire_records_round_trip_through_json_and_python_mode() -> None:
    """A push journal stores ``model_dump(mode="json")`` and reads it back with ``model_validate``."""
    for record in (b"", b"\xfb\xff\xfe", bytes(range(256))):
        change = ChangeIn(
            op="put", path_key=plain_path_key("a"), path="a", record=record, vv={"d": 1}, device="d"
        )
        assert ChangeIn.model_validate(change.model_dump(mode="json")).record == record
        assert ChangeIn.model_validate_json(change.model_dump_json()).record == record
    with pytest.raises(ValueError, match="base64"):
        ChangeIn.model_validate(
            {"op": "put", "path_key": "ab" * 32, "record": "!!", "vv": {"d": 1}, "device": "d"}
        )
