"""Pull throughput of many small files: batched chunk fetch vs one request per chunk, interleaved.

    python bench/pull_bench.py                 # 5000 files of ~10 KB, 3 rounds
    python bench/pull_bench.py --files 20000 --rounds 1

One hub on 127.0.0.1, two devices of one user per arena (a tenant per arena,
so nothing dedups against an earlier round). Device A pushes the corpus with
``sync --once`` in process, then device B pulls it. The ``per-chunk`` mode
replaces ``HubBlobStore.get_many`` with the per-chunk ``GET /chunks/{id}``
requests the pull made before ``/chunks/fetch`` existed (8 at a time), so both
ways run in the same conditions; the modes alternate. Medians and ranges are
printed as JSON, with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import make_small
from e2e_bench import create, one_sync
from precompile import compile_shoal
from shoal.engine.hubstore import HubBlobStore
from shoal.model.ids import ChunkId
from shoal.testing.devices import Device
from shoal.testing.hubproc import HubProcess, running_hub

WORK = Path(__file__).resolve().parent / ".work" / "pull"
_batched_get_many = HubBlobStore.get_many


async def _per_chunk_get_many(self: HubBlobStore, ids: Iterable[ChunkId]) -> dict[ChunkId, bytes]:
    gate = asyncio.Semaphore(8)

    async def one(cid: ChunkId) -> tuple[ChunkId, bytes]:
        async with gate:
            return cid, await self.get(cid)

    return dict(await asyncio.gather(*(one(cid) for cid in ids)))


def measure(hub: HubProcess, corpus: Path, name: str, base: Path, batched: bool) -> dict[str, float]:
    hub.add_user(name)
    a = Device("a", base / f"a-home-{name}", base / f"a-{name}", hub, name)
    b = Device("b", base / f"b-home-{name}", base / f"b-{name}", hub, name)
    for device in (a, b):
        asyncio.run(device.login(hub.create_token(name)))
    asyncio.run(create(a, b, name, False))
    asyncio.run(a.join())
    asyncio.run(b.join())
    subprocess.run(["cp", "-a", f"{corpus}/.", str(a.root)], check=True)
    subprocess.run(["sync"], check=True)
    push = asyncio.run(one_sync(a, name))
    HubBlobStore.get_many = _batched_get_many if batched else _per_chunk_get_many  # type: ignore[method-assign]
    try:
        pull = asyncio.run(one_sync(b, name))
    finally:
        HubBlobStore.get_many = _batched_get_many  # type: ignore[method-assign]
    files = sum(len(f) for _, _, f in os.walk(b.root))
    expected = sum(len(f) for _, _, f in os.walk(a.root))
    assert files == expected, f"B holds {files} files, A {expected}"
    for device in (a, b):
        shutil.rmtree(device.root)
    return {"push_s": push, "pull_s": pull}


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    compile_shoal()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    corpus = args.work / "corpus"
    make_small(corpus, count=args.files)
    results: dict[str, list[dict[str, float]]] = {"batched": [], "per-chunk": []}
    with running_hub(args.work / "hub") as hub:
        for n in range(args.rounds):
            order = ["batched", "per-chunk"] if n % 2 == 0 else ["per-chunk", "batched"]
            for mode in order:
                results[mode].append(measure(hub, corpus, f"r{n}{mode[0]}", args.work, mode == "batched"))
    out = {
        "files": args.files,
        "rounds": args.rounds,
        "loadavg": os.getloadavg(),
        **{
            mode: {key: summary([r[key] for r in runs]) for key in ("push_s", "pull_s")}
            for mode, runs in results.items()
        },
        "time": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
