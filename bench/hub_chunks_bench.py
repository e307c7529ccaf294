"""The hub's CPU per step of an initial sync of many small files, through ``SyncClient`` over HTTP.

    .venv/bin/python bench/hub_chunks_bench.py [--files 20000] [--fetch-rounds 5] [--work DIR]

One hub process on 127.0.0.1 (embedded SQLite, file store). For ``--files``
small plain chunks (3-9 KB, as ``corpus.py small`` makes them) it measures
the hub's CPU (user + system, from ``/proc``) to answer which chunks are
missing, take their upload (1000 per request), commit one change per file
(1000 per commit), serve the change log (pages of 1000), and serve every
chunk back (``/chunks/fetch``, 1000 ids per call; the least of
``--fetch-rounds`` rounds, the one step that can repeat). These are the
hub's share of what ``sync_bench.py`` times between two devices.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
from pathlib import Path

import blake3

from hub_bench import cpu_seconds
from precompile import compile_shoal
from shoal.chunking.envelope import encode_plain
from shoal.model.ids import ChunkId
from shoal.net.http import HubSession, TokenSet
from shoal.net.schemas_sync import ChangeIn, plain_path_key
from shoal.net.sync import SyncClient
from shoal.testing.hubproc import HubProcess

BATCH = 1000


def make_chunks(count: int) -> list[tuple[ChunkId, bytes]]:
    rng = random.Random(1)
    out = []
    for _ in range(count):
        data = rng.randbytes(3000) + b"text " * rng.randint(60, 1200)
        out.append((ChunkId(blake3.blake3(data).digest()), encode_plain(data)))
    return out


def put(index: int, cid: ChunkId) -> ChangeIn:
    path = f"d{index % 100:02d}/e{index // 100 % 20:02d}/file_{index:05d}.txt"
    record = random.Random(index).randbytes(120)  # a sealed record's size, opaque to the hub
    return ChangeIn(
        op="put", path_key=plain_path_key(path), path=path, record=record, chunks=[cid.hex()],
        vv={"bench-device": 1}, device="bench-device",
    )  # fmt: skip


async def run(hub: HubProcess, token: str, files: int, fetch_rounds: int) -> dict[str, float]:
    assert hub.proc is not None
    pid = hub.proc.pid
    chunks = make_chunks(files)
    ids = [cid for cid, _ in chunks]
    out: dict[str, float] = {}
    async with HubSession(hub.base_url, TokenSet(token)) as session:
        client = SyncClient(session)
        arena = (await client.create_arena("bench")).id
        start = cpu_seconds(pid)
        assert len(await client.missing_chunks(ids)) == files
        out["missing"] = cpu_seconds(pid) - start

        start = cpu_seconds(pid)
        for i in range(0, files, BATCH):
            await client.upload_chunks(chunks[i : i + BATCH])
        out["upload"] = cpu_seconds(pid) - start

        start = cpu_seconds(pid)
        for i in range(0, files, BATCH):
            await client.commit(arena, [put(j, ids[j]) for j in range(i, min(files, i + BATCH))])
        out["commit"] = cpu_seconds(pid) - start

        start = cpu_seconds(pid)
        listed = [entry async for entry in client.iter_changes(arena, 0, page=BATCH)]
        assert len(listed) == files
        out["changes"] = cpu_seconds(pid) - start

        fetches = []
        for _ in range(fetch_rounds):
            start = cpu_seconds(pid)
            got = 0
            for i in range(0, files, BATCH):
                got += sum([1 async for _ in client.download_chunks(ids[i : i + BATCH])])
            assert got == files
            fetches.append(cpu_seconds(pid) - start)
        out["fetch"] = min(fetches)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--fetch-rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    compile_shoal()
    print(f"load average at the start: {Path('/proc/loadavg').read_text().split()[0]}", flush=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="hub-chunks-bench-"))
    hub = HubProcess(work / "hub")
    hub.start()
    try:
        hub.add_user("bench")
        results = asyncio.run(run(hub, hub.create_token("bench"), args.files, args.fetch_rounds))
    finally:
        hub.stop()
    for step, seconds in results.items():
        print(f"{step:<8} hub CPU {seconds:6.2f} s  ({seconds * 1e6 / args.files:6.1f} µs per file)")
    print(f"total    hub CPU {sum(results.values()):6.2f} s")


if __name__ == "__main__":
    main()
