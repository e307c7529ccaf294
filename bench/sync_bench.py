"""Sync benchmarks: edit latency between two daemons, initial sync of 20k small files, rescan, RSS.

    python bench/sync_bench.py                      # everything, Syncthing and rsync included
    python bench/sync_bench.py --skip-syncthing     # shoal and rsync only
    python bench/sync_bench.py --rss-files 0        # skip the 100k-file memory run

Setup notes: the reference tools come from Debian and are not part of ``./dev``:

    apt-get install -y syncthing rsync

Everything runs on 127.0.0.1 under ``bench/.work/sync`` (the corpus is cached
there). Measured in one run, interleaved per round:

- **edit latency**: a daemon per device, a small file rewritten on device A,
  time until device B's copy has the new bytes (polled every 2 ms); once in a
  fresh arena, once in the arena holding the 20k files. Syncthing is measured
  the same way with a 1 s watcher delay (its default is 10 s).
- **initial sync**: 20k small files (~200 MB, ``bench/corpus.py`` ``small``)
  from A to B: shoal ``sync --once`` on A, then on B (push then pull), and
  again in a fresh arena between two daemons (from both starting until B
  holds every file, as for Syncthing); Syncthing
  from both processes starting until B holds every file; ``rsync -a`` to a
  fresh local folder.
- **rescan**: a push on A with nothing changed (scan by stat + compare).
- **client RSS**: a daemon whose arena holds ``--rss-files`` files, after its
  first full round (peak RSS of the process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import make_small
from precompile import compile_shoal
from shoal.daemon.control import call
from shoal.daemon.protocol import Request
from shoal.errors import NetworkError
from shoal.testing.devices import Device, Household
from shoal.testing.hubproc import HubProcess, running_hub, shoal_env

WORK = Path(__file__).resolve().parent / ".work" / "sync"
TIMEOUT = 1800.0


def count_files(root: Path) -> int:
    n = 0
    for _folder, _dirs, files in os.walk(root):
        n += sum(
            1 for f in files if not f.startswith((".syncthing.", ".shoal-tmp", ".shoal-arena", "~syncthing"))
        )
    return n


def wait(check: Callable[[], bool], what: str, timeout: float = TIMEOUT, interval: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise SystemExit(f"timed out: {what}")
        time.sleep(interval)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- shoal ---------------------------------------------------------------------------------------


class Daemon:
    def __init__(self, device: Device, log: Path, *, wait_ready: bool = True) -> None:
        argv = [sys.executable, "-m", "shoal", "daemon", "--foreground", "--debounce", "0.05"]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out, env=shoal_env(device.env))
        self.socket = device.home / "daemon.sock"
        if wait_ready:
            wait(self.ready, "daemon start", 60)

    def status(self) -> dict[str, object]:
        return call(self.socket, Request("status"), timeout=10)

    def ready(self) -> bool:
        try:
            arenas = self.status()["arenas"]
        except NetworkError:
            return False
        return isinstance(arenas, list) and all(a["state"] == "up-to-date" for a in arenas)

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def edit_latency(src: Path, dst: Path, edits: int, gap: float = 0.3) -> list[float]:
    """Rewrite ``src/edit.txt`` ``edits`` times; the seconds until ``dst`` shows each version."""
    out = []
    for i in range(edits):
        text = f"edit {i} {time.time_ns()}\n"
        start = time.monotonic()
        (src / "edit.txt").write_text(text)
        while True:
            try:
                if (dst / "edit.txt").read_text() == text:
                    break
            except OSError:
                pass
            if time.monotonic() - start > 60:
                raise SystemExit(f"edit {i} did not arrive within 60 s")
            time.sleep(0.002)
        out.append(time.monotonic() - start)
        time.sleep(gap)
    return out


def shoal_round(hub: HubProcess, base: Path, corpus: Path, edits: int, n: int) -> dict[str, object]:
    user = f"bench{n}"
    household = Household.create(hub, base, ["a", "b"], arena="small", user=user)
    a, b = household["a"], household["b"]
    fresh = household.with_arena("latency", base / "latency")
    subprocess.run(["cp", "-a", f"{corpus}/.", str(a.root)], check=True)
    subprocess.run(["sync"], check=True)

    start = time.perf_counter()
    asyncio.run(a.sync())
    pushed = time.perf_counter() - start
    asyncio.run(b.sync())
    initial = time.perf_counter() - start
    assert count_files(b.root) == count_files(corpus), "B does not hold every file"

    async def rescans() -> list[float]:
        times = []
        async with a.syncer() as s:
            for _ in range(5):
                t = time.perf_counter()
                await s.push()
                times.append(time.perf_counter() - t)
                assert s.last_report.pushed == 0
        return times

    rescan = asyncio.run(rescans())

    via_daemons = daemon_initial(hub, base / "daemons", corpus, n)

    daemons = [Daemon(d, base / f"{d.name}-daemon.log") for d in (a, b)]
    try:
        fa, fb = fresh["a"], fresh["b"]
        small = edit_latency(fa.root, fb.root, edits)
        big = edit_latency(a.root, b.root, max(5, edits // 5))
        rss = [d.rss_mb() for d in daemons]
    finally:
        for d in daemons:
            d.stop()
    return {
        "push_s": pushed,
        "initial_s": initial,
        "initial_daemons_s": via_daemons,
        "rescan_s": statistics.median(rescan),
        "latency_small_arena": small,
        "latency_20k_arena": big,
        "daemon_rss_mb_20k": max(rss),
    }


def daemon_initial(hub: HubProcess, base: Path, corpus: Path, n: int) -> float:
    """The corpus between two daemons of a new tenant (nothing dedups against the round above),
    timed like Syncthing: from both starting until B holds every file. A's first round pushes
    while B pulls each group A has committed."""
    household = Household.create(hub, base, ["a", "b"], arena="initial", user=f"daemons{n}")
    subprocess.run(["cp", "-a", f"{corpus}/.", str(household["a"].root)], check=True)
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    daemons = [Daemon(d, base / f"{d.name}-daemon.log", wait_ready=False) for d in household.devices]
    try:
        expected = count_files(corpus)
        wait(lambda: count_files(household["b"].root) >= expected, "B holding every file", interval=0.2)
        return time.perf_counter() - start
    finally:
        for d in daemons:
            d.stop()


def shoal_rss(hub: HubProcess, base: Path, files: int) -> dict[str, float]:
    """A daemon over an arena of ``files`` tiny files, after its first full round."""
    household = Household.create(hub, base, ["a"], arena="big", user="rss")
    a = household["a"]
    for i in range(files):
        folder = a.root / f"d{i % 200:03d}"
        if i < 200:
            folder.mkdir()
        (folder / f"f{i:06d}").write_bytes(b"x%d\n" % i)
    start = time.perf_counter()
    asyncio.run(a.sync())
    first = time.perf_counter() - start
    daemon = Daemon(a, base / "rss-daemon.log")
    try:
        call(daemon.socket, Request("sync-now"))
        time.sleep(1.0)
        wait(daemon.ready, "rss daemon round", 600)
        rss = daemon.rss_mb()
    finally:
        daemon.stop()
    return {"files": files, "first_push_s": first, "daemon_rss_mb": rss}


# -- rsync ---------------------------------------------------------------------------------------


def rsync_round(base: Path, corpus: Path) -> float:
    dest = base / "rsync-dest"
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    subprocess.run(["rsync", "-a", f"{corpus}/", f"{dest}/"], check=True)
    return time.perf_counter() - start


# -- Syncthing -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Syncthing:
    def __init__(self, home: Path, folder: Path) -> None:
        self.home, self.folder = home, folder
        subprocess.run(
            ["syncthing", "generate", f"--home={home}", "--no-default-folder"],
            check=True,
            capture_output=True,
        )
        self.device_id = subprocess.run(
            ["syncthing", "serve", f"--home={home}", "--device-id"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.gui = free_port()
        self.listen = free_port()
        self.apikey = "bench-" + home.name
        self.proc: subprocess.Popen[bytes] | None = None

    def configure(self, peer: Syncthing, delay_s: int) -> None:
        path = self.home / "config.xml"
        tree = ET.parse(path)
        root = tree.getroot()
        gui = root.find("gui")
        assert gui is not None
        gui.find("address").text = f"127.0.0.1:{self.gui}"  # type: ignore[union-attr]
        gui.find("apikey").text = self.apikey  # type: ignore[union-attr]
        options = root.find("options")
        assert options is not None
        settings = {
            "listenAddress": f"tcp://127.0.0.1:{self.listen}",
            "globalAnnounceEnabled": "false",
            "localAnnounceEnabled": "false",
            "relaysEnabled": "false",
            "natEnabled": "false",
            "startBrowser": "false",
            "urAccepted": "-1",
            "crashReportingEnabled": "false",
            "autoUpgradeIntervalH": "0",
            "setLowPriority": "false",
        }
        for key, value in settings.items():
            node = options.find(key)
            if node is None:
                node = ET.SubElement(options, key)
            node.text = value
        other = ET.SubElement(root, "device", id=peer.device_id, name=peer.home.name, compression="metadata")
        ET.SubElement(other, "address").text = f"tcp://127.0.0.1:{peer.listen}"
        folder = ET.Element(
            "folder",
            id="bench",
            label="bench",
            path=str(self.folder),
            type="sendreceive",
            rescanIntervalS="3600",
            fsWatcherEnabled="true",
            fsWatcherDelayS=str(delay_s),
            ignorePerms="false",
            autoNormalize="true",
        )
        ET.SubElement(folder, "filesystemType").text = "basic"
        for dev in (self.device_id, peer.device_id):
            ET.SubElement(folder, "device", id=dev, introducedBy="")
        ET.SubElement(folder, "minDiskFree", unit="%").text = "1"
        root.insert(0, folder)
        tree.write(path)

    def start(self) -> None:
        argv = ["syncthing", "serve", f"--home={self.home}", "--no-browser", "--no-restart", "--no-upgrade"]
        log = (self.home / "run.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log)

    def idle(self) -> bool:
        try:
            r = httpx.get(
                f"http://127.0.0.1:{self.gui}/rest/db/status",
                params={"folder": "bench"},
                headers={"X-API-Key": self.apikey},
                timeout=5,
            )
            data = r.json()
        except (httpx.HTTPError, json.JSONDecodeError):
            return False
        return bool(data.get("state") == "idle" and data.get("needTotalItems", 1) == 0)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def syncthing_round(base: Path, corpus: Path, edits: int) -> dict[str, object]:
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    fa, fb = base / "A", base / "B"
    subprocess.run(["cp", "-a", f"{corpus}/.", str(fa)], check=True)
    fb.mkdir()
    a, b = Syncthing(base / "st-a", fa), Syncthing(base / "st-b", fb)
    a.configure(b, 1)
    b.configure(a, 1)
    subprocess.run(["sync"], check=True)
    want = count_files(corpus)
    start = time.perf_counter()
    a.start()
    b.start()
    try:
        wait(lambda: count_files(fb) >= want, "Syncthing initial sync", interval=0.2)
        initial = time.perf_counter() - start
        wait(lambda: a.idle() and b.idle(), "Syncthing idle", 300)
        latency = edit_latency(fa, fb, max(5, edits // 5))
    finally:
        a.stop()
        b.stop()
    return {"initial_s": initial, "latency_1s_delay": latency}


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rss-files", type=int, default=100_000)
    parser.add_argument("--skip-syncthing", action="store_true")
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    compile_shoal()

    needed = ["rsync"] + ([] if args.skip_syncthing else ["syncthing"])
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        parser.error(
            f"{', '.join(missing)} not found: apt-get install -y syncthing rsync (or --skip-syncthing)"
        )

    work = args.work.resolve()
    corpus = work / f"corpus-small-{args.files}"
    if not corpus.exists():
        print(f"making the corpus ({args.files} files) in {corpus}", flush=True)
        make_small(corpus.with_suffix(".tmp"), count=args.files)
        corpus.with_suffix(".tmp").rename(corpus)
    size = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())
    print(f"corpus: {count_files(corpus)} files, {size / 1e6:.0f} MB", flush=True)

    results: dict[str, list[object]] = {"shoal": [], "rsync": [], "syncthing": []}
    runs = work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    with running_hub(runs / "hub") as hub:
        for n in range(args.rounds):
            r = shoal_round(hub, runs / f"shoal-{n}", corpus, args.edits, n)
            results["shoal"].append(r)
            print(f"shoal round {n}: initial {r['initial_s']:.1f} s (push {r['push_s']:.1f} s), "
                  f"via daemons {r['initial_daemons_s']:.1f} s, "
                  f"rescan {r['rescan_s']:.2f} s", flush=True)  # fmt: skip
            t = rsync_round(runs, corpus)
            results["rsync"].append(t)
            print(f"rsync -a round {n}: {t:.1f} s", flush=True)
            if not args.skip_syncthing:
                s = syncthing_round(runs / f"syncthing-{n}", corpus, args.edits)
                results["syncthing"].append(s)
                print(f"syncthing round {n}: initial {s['initial_s']:.1f} s", flush=True)
        if args.rss_files:
            rss = shoal_rss(hub, runs / "rss", args.rss_files)
            results["rss"] = [rss]
            print(f"rss: {rss}", flush=True)

    summary = summarise(results)
    print(json.dumps(summary, indent=2))
    (work / "last-result.json").write_text(json.dumps({"summary": summary, "raw": results}, indent=2))
    # Removed now rather than at the next start: on ext4 new files are slow to create for minutes
    # after this many were deleted, which would weigh on the next run's first round.
    shutil.rmtree(runs, ignore_errors=True)


def summarise(results: dict[str, list[object]]) -> dict[str, object]:
    shoal = [r for r in results["shoal"] if isinstance(r, dict)]
    out: dict[str, object] = {}
    small = [x for r in shoal for x in r["latency_small_arena"]]
    big = [x for r in shoal for x in r["latency_20k_arena"]]
    out["shoal_latency_ms"] = {"p50": pct(small, 0.5) * 1000, "p99": pct(small, 0.99) * 1000, "n": len(small)}
    out["shoal_latency_20k_arena_ms"] = {"p50": pct(big, 0.5) * 1000, "p99": pct(big, 0.99) * 1000}
    out["shoal_initial_s"] = [round(r["initial_s"], 2) for r in shoal]
    out["shoal_initial_daemons_s"] = [round(r["initial_daemons_s"], 2) for r in shoal]
    out["shoal_rescan_s"] = [round(r["rescan_s"], 3) for r in shoal]
    out["shoal_daemon_rss_mb_20k"] = [round(r["daemon_rss_mb_20k"], 1) for r in shoal]
    out["rsync_s"] = [round(float(t), 2) for t in results["rsync"]]  # type: ignore[arg-type]
    st = [r for r in results["syncthing"] if isinstance(r, dict)]
    if st:
        lat = [x for r in st for x in r["latency_1s_delay"]]
        out["syncthing_initial_s"] = [round(r["initial_s"], 2) for r in st]
        out["syncthing_latency_1s_delay_ms"] = {"p50": pct(lat, 0.5) * 1000, "p99": pct(lat, 0.99) * 1000}
    if "rss" in results:
        out["rss_100k"] = results["rss"][0]
    return out


if __name__ == "__main__":
    main()
