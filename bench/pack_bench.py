"""`shoal pack` against `restic backup`, interleaved in one run on the same disk.

    .venv/bin/python bench/pack_bench.py [--work DIR] [--rounds N] [--corpus mixed|small|both]

For each corpus: first ingest (encrypted, both tools), then re-ingest after
small edits (4 KiB inserted in the middle of the 512 MB image, ten source
files appended to) with the first image as parent, as restic uses its
previous snapshot. Prints wall time, MB/s, bytes stored, peak RSS and the
shoal/restic ratios. Before every timed run the disk is synced, the page
cache emptied (as root) and the corpus read once, so both tools start from
the same clean, warm state. Needs Debian's `restic`.

The key is fixed, so stored bytes compare across runs (the key sets the
cut points, and the VM-like image dedups differently under each: its chunks
take 175 MB compressed under this key, 178-203 MB under five others, so the
stored-bytes ratio to restic is on the favourable side here). Scratch copies are deleted only at the
end: on this machine's ext4 (no journal) inodes freed in the last minute are
skipped one by one when new files are created, which made the run after a
large deletion pay ~0.2 ms more per file created (shoal creates one file
per chunk, restic one per pack).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import edit_mixed, make_mixed, make_small
from precompile import compile_shoal
from shoal.state.flist import FlistReader

SHOAL = [sys.executable, "-m", "shoal"]
BENCH_KEY = hashlib.sha256(b"shoal pack bench key").hexdigest()  # fixed: see the docstring


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float  # user + system: steadier than wall time on a shared machine


def timed(argv: list[str], env: dict[str, str] | None = None) -> Run:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed:\n{stderr}")
    return Run(elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def chunk_ids(image: Path) -> set[bytes]:
    """Every chunk id an image's files name (the store keeps many small chunks in one pack file,
    so counting files in it no longer counts chunks)."""
    with FlistReader(image) as reader:
        return {ref.id for e in reader.entries() if e.manifest is not None for ref in e.manifest.chunks}


def warm(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                while handle.read(8 * 1024 * 1024):
                    pass


def drop_page_cache() -> None:
    """Empty the page cache (needs root; without it the rounds run on whatever the cache holds)."""
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        if not getattr(drop_page_cache, "warned", False):
            print("note: cannot drop the page cache (not root); later rounds may run slower", flush=True)
            drop_page_cache.warned = True  # type: ignore[attr-defined]


def bench_corpus(name: str, corpus: Path, work: Path, rounds: int, scratch: list[Path]) -> list[str]:
    size = tree_bytes(corpus)
    key = work / "pack.key"
    key.write_text(BENCH_KEY + "\n")
    restic_env = {**os.environ, "RESTIC_PASSWORD": "bench-password", "RESTIC_CACHE_DIR": str(work / "rcache")}
    results: dict[str, list[Run]] = {k: [] for k in ("shoal", "restic", "shoal-re", "restic-re")}
    stored: dict[str, int] = {}
    new_chunk_lines: list[str] = []
    for round_no in range(rounds):
        data = work / f"data-{name}-{round_no}"
        shutil.copytree(corpus, data, symlinks=True)
        store, repo = work / f"store-{name}-{round_no}", work / f"repo-{name}-{round_no}"
        subprocess.run(
            ["restic", "init", "--repo", str(repo)], env=restic_env, check=True, capture_output=True
        )
        order = ["shoal", "restic"] if round_no % 2 == 0 else ["restic", "shoal"]

        def run(
            tool: str, image: str, parent: str = "", data: Path = data, repo: Path = repo, store: Path = store
        ) -> Run:
            # Start from a clean disk and a page cache holding just the corpus: the round's copy of
            # the corpus and the other tool's store would otherwise still be written back during the
            # run, and each round's copies (2 GB) would leave later rounds reclaiming memory as they
            # go (both tools slowed round after round, shoal with its per-chunk files the more).
            os.sync()
            drop_page_cache()
            warm(data)
            if tool == "shoal":
                argv = [*SHOAL, "pack", str(data), "-o", str(work / image), "--store", f"file://{store}"]
                argv += ["--parent", str(work / parent)] if parent else []
                return timed([*argv, "--encrypt-key-file", str(key), "--quiet"])
            argv = ["restic", "backup", "--repo", str(repo), "--quiet", str(data)]
            return timed(argv, env=restic_env)

        for tool in order:
            results[tool].append(run(tool, f"first-{round_no}.flist"))
        stored = {"shoal": tree_bytes(store), "restic": tree_bytes(repo)}
        edit_mixed(data) if name == "mixed" else _edit_small(data)
        for tool in order:
            results[f"{tool}-re"].append(run(tool, f"re-{round_no}.flist", parent=f"first-{round_no}.flist"))
        new = chunk_ids(work / f"re-{round_no}.flist") - chunk_ids(work / f"first-{round_no}.flist")
        new_chunk_lines.append(f"round {round_no}: re-ingest after edits stored {len(new)} new chunks")
        scratch.extend([data, store, repo])
    lines = [f"## corpus {name}: {size / 1e6:.0f} MB, {rounds} round(s), medians (min-max)"]
    for label in ("shoal", "restic", "shoal-re", "restic-re"):
        secs = [r.seconds for r in results[label]]
        rss = max(r.peak_rss_mb for r in results[label])
        cpu = statistics.median(r.cpu_seconds for r in results[label])
        lines.append(
            f"{label:10s} {statistics.median(secs):7.2f} s ({min(secs):.2f}-{max(secs):.2f})"
            f"  {size / 1e6 / statistics.median(secs):7.1f} MB/s  peak RSS {rss:6.0f} MB  CPU {cpu:6.2f} s"
        )
    ratio = statistics.median(r.seconds for r in results["shoal"]) / statistics.median(
        r.seconds for r in results["restic"]
    )
    re_ratio = statistics.median(r.seconds for r in results["shoal-re"]) / statistics.median(
        r.seconds for r in results["restic-re"]
    )
    cpu_ratio = statistics.median(r.cpu_seconds for r in results["shoal"]) / statistics.median(
        r.cpu_seconds for r in results["restic"]
    )
    for label in ("shoal", "restic"):
        lines.append(f"{label} by round: " + " ".join(f"{r.seconds:.2f}" for r in results[label]))
    lines.append(f"time ratio shoal/restic: first ingest {ratio:.2f}, re-ingest {re_ratio:.2f}")
    lines.append(f"CPU ratio shoal/restic: first ingest {cpu_ratio:.2f}")
    lines.append(
        f"bytes stored: shoal {stored['shoal'] / 1e6:.1f} MB, restic {stored['restic'] / 1e6:.1f} MB"
        f" (ratio {stored['shoal'] / stored['restic']:.3f})"
    )
    lines.extend(new_chunk_lines)
    return lines


def _edit_small(root: Path) -> None:
    for path in sorted(root.rglob("*.txt"))[::1000]:
        with path.open("ab") as handle:
            handle.write(b"edited\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / ".work")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--corpus", choices=["mixed", "small", "both"], default="both")
    args = parser.parse_args()
    compile_shoal()
    if shutil.which("restic") is None:
        raise SystemExit("restic is not installed: apt-get install restic")
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    report: list[str] = []
    scratch: list[Path] = []
    try:
        for name in ("mixed", "small"):
            if args.corpus not in (name, "both"):
                continue
            corpus = args.work / f"corpus-{name}"
            if not corpus.exists():
                print(f"building the {name} corpus in {corpus} ...", flush=True)
                (make_mixed if name == "mixed" else make_small)(corpus)
            report.extend(bench_corpus(name, corpus, args.work, args.rounds, scratch))
            report.append("")
    finally:
        for path in scratch:
            shutil.rmtree(path, ignore_errors=True)
    print("\n".join(report))


if __name__ == "__main__":
    main()
