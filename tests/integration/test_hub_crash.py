"""Kill -9 of the hub while devices upload and commit: every acknowledged commit survives, whole."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import pytest

from shoal.chunking.envelope import decode_plain, encode_plain
from shoal.chunking.hashing import chunk_id
from shoal.errors import NetworkError
from shoal.model.codec import pack_record
from shoal.model.ids import ChunkId
from shoal.net.http import HubSession, TokenSet
from shoal.net.schemas_sync import ChangeEntry, ChangeIn, plain_path_key
from shoal.net.sync import SyncClient
from shoal.testing.hubproc import HubProcess

ROUNDS = 5
WRITERS = 4
BATCH = 3


@dataclass(frozen=True)
class Acked:
    batch: str
    first: int
    last: int


def batch_changes(batch: str, cid: ChunkId, device: str) -> list[ChangeIn]:
    out = []
    for n in range(BATCH):
        path = f"{batch}/f{n}.bin"
        out.append(
            ChangeIn(
                op="put",
                path_key=plain_path_key(path),
                path=path,
                record=pack_record("entry", 1, {"size": 64, "chunks": [bytes(cid)]}),
                chunks=[cid.hex()],
                vv={device: 1},
                device=device,
            )
        )
    return out


async def writer(client: SyncClient, arena: str, round_no: int, wid: int, acked: list[Acked]) -> None:
    """Upload a fresh chunk, then commit a batch naming it, until the hub goes away."""
    device = f"w{wid}"
    n = 0
    while True:
        n += 1
        batch = f"r{round_no}/w{wid}/b{n}"
        data = f"{batch} content ".encode() * 4
        cid = chunk_id(data)
        try:
            await client.upload_chunks([(cid, encode_plain(data))])
            result = await client.commit(arena, batch_changes(batch, cid, device), retries=0)
        except NetworkError:
            return
        acked.append(Acked(batch, result.first, result.last))


async def read_log(client: SyncClient, arena: str) -> list[ChangeEntry]:
    return [entry async for entry in client.iter_changes(arena)]


@pytest.mark.slow
def test_kill9_during_commits_loses_no_acknowledged_commit_and_no_batch_is_partial(hub: HubProcess) -> None:
    hub.add_user("crash")
    token = hub.create_token("crash")
    rng = random.Random(20261122)
    acked: list[Acked] = []

    async def one_round(round_no: int, arena_id: str | None) -> str:
        async with HubSession(hub.base_url, TokenSet(token)) as session:
            client = SyncClient(session)
            if arena_id is None:
                arena_id = (await client.create_arena("crashy")).id
            tasks = [
                asyncio.create_task(writer(client, arena_id, round_no, w, acked)) for w in range(WRITERS)
            ]
            await asyncio.sleep(rng.uniform(0.4, 1.2))
            hub.kill9()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        return arena_id

    async def check(arena_id: str) -> int:
        async with HubSession(hub.base_url, TokenSet(token)) as session:
            client = SyncClient(session)
            log = await read_log(client, arena_id)
            assert [e.seq for e in log] == list(range(1, len(log) + 1)), "cursors have gaps"
            by_seq = {e.seq: e for e in log}
            for ack in acked:
                got = [by_seq[s].path for s in range(ack.first, ack.last + 1)]
                assert got == [f"{ack.batch}/f{n}.bin" for n in range(BATCH)], f"acknowledged {ack} lost"
            batches: dict[str, list[int]] = {}
            for entry in log:
                assert entry.path is not None
                batches.setdefault(entry.path.rsplit("/", 1)[0], []).append(entry.seq)
            for name, seqs in batches.items():
                assert len(seqs) == BATCH, f"batch {name} is partial: {seqs}"
                assert seqs == list(range(seqs[0], seqs[0] + BATCH))
            for cid in {c for e in log for c in e.chunks}:
                blob = await client.download_chunk(cid)
                decode_plain(blob, ChunkId(bytes.fromhex(cid)))  # raises if damaged
            return len(log)

    arena: str | None = None
    sizes = []
    for round_no in range(ROUNDS):
        arena = asyncio.run(one_round(round_no, arena))
        hub.start()
        sizes.append(asyncio.run(check(arena)))
    assert len(acked) >= ROUNDS, "the writers never got a commit through; the test proved nothing"
    assert sizes == sorted(sizes)
