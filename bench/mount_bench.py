"""The shoal mount against a bare pyfuse3 passthrough (its ceiling), measured in the same run.

    .venv/bin/python bench/mount_bench.py [--work DIR] [--big-mib 1024] [--small 20000] [--rounds 3]

Builds a test arena (device index + chunks in a local file store, 1 MiB
chunks) and the same files as a plain folder, mounts the arena with shoal's
FUSE adapter and the folder with ``passthrough.py``, then measures:

* first byte and sequential read of the cold big file (chunks fetched from the
  store, verified, cached);
* sequential read of the big file once cached, against the passthrough on the
  same bytes (interleaved rounds, median);
* ``ls -lR`` of the small-file tree on both (shoal: no chunk fetched);
* reading every small file (cached) on both.

Needs root (FUSE). Page caches are warm for both sides.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from precompile import compile_shoal
from shoal.chunking.hashing import FileHasher
from shoal.model.manifest import ChunkRef, Manifest
from shoal.model.vv import VersionVector
from shoal.reconcile.kinds import Kind
from shoal.state.index import IndexEntry, Residency
from shoal.testing.vfs import MTIME_NS, TestArena

HERE = Path(__file__).resolve().parent
MIB = 1 << 20


def make_corpus(plain: Path, big_mib: int, small: int) -> None:
    rng = random.Random(42)
    plain.mkdir(parents=True)
    with (plain / "big.bin").open("wb") as f:
        for _ in range(big_mib):
            f.write(rng.randbytes(MIB))
    for i in range(small):
        folder = plain / "tree" / f"d{i // 200:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.txt").write_bytes(rng.randbytes(rng.randint(512, 4096)))


def make_arena(base: Path, plain: Path) -> None:
    import asyncio

    arena = TestArena.create(base, {})

    async def ingest() -> None:
        entries = []
        for path in sorted(p for p in plain.rglob("*") if p.is_file()):
            rel = path.relative_to(plain).as_posix()
            hasher, refs, batch = FileHasher(None), [], []
            with path.open("rb") as f:
                while piece := f.read(MIB):
                    hasher.update(piece)
                    cid = arena.sealed.chunk_id(piece)
                    refs.append(ChunkRef(cid, len(piece)))
                    batch.append((cid, piece))
                    if len(batch) >= 64:
                        await arena.sealed.put_many(batch)
                        batch = []
            await arena.sealed.put_many(batch)
            size = sum(r.length for r in refs)
            manifest = Manifest(size, tuple(refs), hasher.digest())
            entries.append(
                IndexEntry(
                    rel,
                    Kind.FILE,
                    size=size,
                    mtime_ns=MTIME_NS,
                    mode=0o644,
                    manifest=manifest.encode(),
                    vv=VersionVector({"t": 1}),
                    residency=Residency.CACHED,
                )
            )
        with arena.index.batch() as b:
            b.put(entries)

    asyncio.run(ingest())
    arena.close()


def wait_mounted(where: Path, proc: subprocess.Popen[bytes], marker: Path | None = None) -> None:
    deadline = time.monotonic() + 60
    while True:
        ok = os.path.ismount(where) if marker is None else marker.exists()
        if ok:
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"mount at {where} did not come up")
        time.sleep(0.05)


def read_file(path: Path, block: int = MIB) -> int:
    total = 0
    with path.open("rb", buffering=0) as f:
        # Drop the mount's page cache of this file, so every read reaches the FUSE server (the files
        # underneath, the passthrough's source and shoal's cache, stay in the page cache).
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while data := f.read(block):
            total += len(data)
    return total


def read_tree(root: Path) -> int:
    total = 0
    for folder in sorted(root.iterdir()):
        for path in sorted(folder.iterdir()):
            total += read_file(path)
    return total


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def fetches(base: Path) -> int:
    log = base / "fetches.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def hub_cold(work: Path, big: Path, size: int) -> None:
    """First byte and cold read of the big file through `shoal mount` on a loopback hub."""
    import asyncio

    from shoal.testing.devices import Household
    from shoal.testing.hubproc import HubProcess, shoal_env

    hub = HubProcess(work / "hub-data")
    hub.start()
    mnt = work / "mnt-hub"
    mnt.mkdir()
    try:
        device = Household.create(hub, work / "devices", ["laptop"])["laptop"]
        os.link(big, device.root / "big.bin")
        t = time.perf_counter()
        asyncio.run(device.sync())
        print(f"pushed the big file to the hub in {time.perf_counter() - t:.0f} s")
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "mount", device.arena, str(mnt)],
            env=shoal_env(device.env),
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not (mnt / "big.bin").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("shoal mount did not come up")
                time.sleep(0.05)
            start = time.perf_counter()
            with (mnt / "big.bin").open("rb", buffering=0) as f:
                f.read(1)
            first = time.perf_counter() - start
            cold = timed(lambda: read_file(mnt / "big.bin"))
            print(
                f"cold big file through a loopback hub: first byte {first * 1000:.1f} ms, "
                f"read {size / cold / 1e6:.0f} MB/s"
            )
        finally:
            subprocess.run([sys.executable, "-m", "shoal", "umount", str(mnt)], check=False)
            proc.wait(timeout=30)
    finally:
        hub.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/shoal-mount-bench"))
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--hub", action="store_true", help="Also read the big file cold through a loopback hub."
    )
    args = parser.parse_args()
    compile_shoal()
    work: Path = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    plain, base = work / "plain", work / "arena"
    pt_mnt, sh_mnt = work / "mnt-passthrough", work / "mnt-shoal"
    pt_mnt.mkdir(parents=True)
    sh_mnt.mkdir(parents=True)
    t = time.perf_counter()
    make_corpus(plain, args.big_mib, args.small)
    make_arena(base, plain)
    built = time.perf_counter() - t
    print(f"corpus: {args.big_mib} MiB file + {args.small} small files, built in {built:.0f} s")

    passthrough = subprocess.Popen([sys.executable, str(HERE / "passthrough.py"), str(plain), str(pt_mnt)])
    shoal = subprocess.Popen(
        [sys.executable, "-m", "shoal.testing.vfs", str(base), str(sh_mnt), str(64 * 1024 * MIB)],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_mounted(pt_mnt, passthrough)
        wait_mounted(sh_mnt, shoal, base / "ready")
        big_bytes = args.big_mib * MIB

        start = time.perf_counter()
        with (sh_mnt / "big.bin").open("rb", buffering=0) as f:
            f.read(1)
        first_byte = time.perf_counter() - start
        cold = timed(lambda: read_file(sh_mnt / "big.bin"))
        print(
            f"cold big file (store -> verify -> cache): first byte {first_byte * 1000:.1f} ms, "
            f"read {big_bytes / cold / 1e6:.0f} MB/s, {fetches(base)} chunks fetched"
        )

        seq_pt, seq_sh = [], []
        for _ in range(args.rounds):
            seq_pt.append(big_bytes / timed(lambda: read_file(pt_mnt / "big.bin")) / 1e6)
            seq_sh.append(big_bytes / timed(lambda: read_file(sh_mnt / "big.bin")) / 1e6)
        print(
            f"sequential read, cached: passthrough {statistics.median(seq_pt):.0f} MB/s "
            f"(range {min(seq_pt):.0f}-{max(seq_pt):.0f}), shoal {statistics.median(seq_sh):.0f} MB/s "
            f"(range {min(seq_sh):.0f}-{max(seq_sh):.0f}): "
            f"{statistics.median(seq_sh) / statistics.median(seq_pt):.0%} of the ceiling"
        )

        before = fetches(base)
        ls_pt, ls_sh = [], []
        for _ in range(args.rounds):
            ls_pt.append(
                timed(
                    lambda: subprocess.run(
                        ["ls", "-lR", str(pt_mnt / "tree")], stdout=subprocess.DEVNULL, check=True
                    )
                )
            )
            ls_sh.append(
                timed(
                    lambda: subprocess.run(
                        ["ls", "-lR", str(sh_mnt / "tree")], stdout=subprocess.DEVNULL, check=True
                    )
                )
            )
        print(
            f"ls -lR of {args.small} files: passthrough {statistics.median(ls_pt):.2f} s, "
            f"shoal {statistics.median(ls_sh):.2f} s, "
            f"chunks fetched by shoal's listing: {fetches(base) - before}"
        )

        small_bytes = read_tree(sh_mnt / "tree")  # hydrate the small files once
        tree_pt, tree_sh = [], []
        for _ in range(args.rounds):
            tree_pt.append(small_bytes / timed(lambda: read_tree(pt_mnt / "tree")) / 1e6)
            tree_sh.append(small_bytes / timed(lambda: read_tree(sh_mnt / "tree")) / 1e6)
        print(
            f"reading all {args.small} small files, cached: "
            f"passthrough {statistics.median(tree_pt):.1f} MB/s "
            f"(range {min(tree_pt):.1f}-{max(tree_pt):.1f}), shoal {statistics.median(tree_sh):.1f} MB/s "
            f"(range {min(tree_sh):.1f}-{max(tree_sh):.1f}): "
            f"{statistics.median(tree_sh) / statistics.median(tree_pt):.0%} of the ceiling"
        )
        if args.hub:
            hub_cold(work, plain / "big.bin", big_bytes)
    finally:
        for where, proc in ((pt_mnt, passthrough), (sh_mnt, shoal)):
            subprocess.run(["fusermount3", "-u", "-z", str(where)], check=False)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
