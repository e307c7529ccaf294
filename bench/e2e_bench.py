"""Encryption overhead: first ingest (push) and sync (push, then pull on a second device), plain vs encrypted.

    python bench/e2e_bench.py                 # mixed corpus at scale 0.25 (~260 MB) and 5000 small files
    python bench/e2e_bench.py --rounds 5

One hub on 127.0.0.1, two devices of one user. Each round creates a fresh
plain arena and a fresh encrypted arena, each in a tenant of its own so no chunk
dedups against an earlier round (which kind goes first alternates), copies
the same corpus into device A's folder, times A's ``sync --once`` (chunk,
hash, compress, seal, upload, commit) and then B's (pull, open, verify,
write). Both run in process through ``ArenaSync``, the encrypted one with the
codec and sealer ``shoal sync`` builds. Target (issue 6): encryption adds at
most 15% to both. Medians and ranges are printed as JSON.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import make_mixed, make_small
from precompile import compile_shoal
from shoal.cli.device_cmd import open_keyring
from shoal.cli.home import DeviceHome
from shoal.crypto.kdf import TEST_COST
from shoal.engine.context import SyncOptions
from shoal.engine.crypt_codec import crypto_for
from shoal.engine.sync import ArenaSync
from shoal.net.sync import SyncClient
from shoal.state.arenas import ArenaRegistry
from shoal.testing.devices import Device
from shoal.testing.hubproc import HubProcess, running_hub

WORK = Path(__file__).resolve().parent / ".work" / "e2e"
PASSPHRASE = "benchmark passphrase"


async def one_sync(device: Device, arena: str) -> float:
    db = device.open_db()
    try:
        record = ArenaRegistry(db).by_name(arena)
        async with DeviceHome(device.home).session() as session:
            start = time.perf_counter()
            codec = sealer = None
            if record.settings.get("encrypted"):
                keychain = await open_keyring(DeviceHome(device.home), session).unlock(record.arena_id)
                codec, sealer = crypto_for(record, keychain)
            sync = ArenaSync(
                db,
                record,
                SyncClient(session),
                device.device_id,
                options=SyncOptions(),
                codec=codec,
                sealer=sealer,
            )
            try:
                report = await sync.sync_once()
                assert not report.skipped, f"{device.name} left files out: {report.skipped[:3]}"
            finally:
                await sync.aclose()
            return time.perf_counter() - start
    finally:
        db.close()


async def create(a: Device, b: Device, name: str, encrypted: bool) -> None:
    async with DeviceHome(a.home).session() as session:
        arena = await SyncClient(session).create_arena(name, encrypted=encrypted)
        if encrypted:
            await open_keyring(DeviceHome(a.home), session).create(
                arena.id, PASSPHRASE, TEST_COST, os.urandom
            )
    if encrypted:
        async with DeviceHome(b.home).session() as session:
            await open_keyring(DeviceHome(b.home), session).unlock_with_passphrase(arena.id, PASSPHRASE)


def measure(hub: HubProcess, corpus: Path, name: str, encrypted: bool, base: Path) -> dict[str, float]:
    # A user (tenant) per arena: the hub dedups chunks within a tenant, and a plain arena after another
    # plain arena would otherwise upload nothing.
    hub.add_user(name)
    a = Device("a", base / f"a-home-{name}", base / f"a-{name}", hub, name)
    b = Device("b", base / f"b-home-{name}", base / f"b-{name}", hub, name)
    for device in (a, b):
        asyncio.run(device.login(hub.create_token(name)))
    asyncio.run(create(a, b, name, encrypted))
    asyncio.run(a.join())
    asyncio.run(b.join())
    subprocess.run(["cp", "-a", f"{corpus}/.", str(a.root)], check=True)
    subprocess.run(["sync"], check=True)
    push = asyncio.run(one_sync(a, name))
    pull = asyncio.run(one_sync(b, name))
    files = sum(len(f) for _, _, f in os.walk(b.root))
    expected = sum(len(f) for _, _, f in os.walk(a.root))
    assert files == expected, f"B holds {files} files, A {expected}"
    for device in (a, b):
        shutil.rmtree(device.root)
    return {"push_s": push, "sync_s": push + pull}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--small", type=int, default=5000)
    args = parser.parse_args()
    compile_shoal()
    WORK.mkdir(parents=True, exist_ok=True)
    corpus = WORK / f"corpus-{args.scale}-{args.small}"
    if not corpus.exists():
        tmp = corpus.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        make_mixed(tmp / "mixed", scale=args.scale)
        make_small(tmp / "small", count=args.small)
        tmp.rename(corpus)
    run_dir = WORK / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    results: dict[str, list[dict[str, float]]] = {"plain": [], "encrypted": []}
    with running_hub(run_dir / "hub") as hub:
        for n in range(args.rounds):
            order = ("plain", "encrypted") if n % 2 == 0 else ("encrypted", "plain")
            for kind in order:
                result = measure(hub, corpus, f"{kind}{n}", kind == "encrypted", run_dir)
                results[kind].append(result)
                print(kind, n, json.dumps({k: round(v, 2) for k, v in result.items()}), flush=True)
    summary: dict[str, object] = {}
    for metric in ("push_s", "sync_s"):
        plain = [r[metric] for r in results["plain"]]
        enc = [r[metric] for r in results["encrypted"]]
        summary[metric] = {
            "plain_median": round(statistics.median(plain), 2),
            "plain_range": [round(min(plain), 2), round(max(plain), 2)],
            "encrypted_median": round(statistics.median(enc), 2),
            "encrypted_range": [round(min(enc), 2), round(max(enc), 2)],
            "overhead_pct": round(100 * (statistics.median(enc) / statistics.median(plain) - 1), 1),
        }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
