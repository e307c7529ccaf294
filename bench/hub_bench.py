"""The hub's sync API on loopback, embedded SQLite and PostgreSQL side by side.

    .venv/bin/python bench/hub_bench.py [--work DIR] [--backends sqlite,postgres] [--commits N]
        [--clients C] [--entries N] [--watchers W] [--rounds R]

For each backend it starts a real hub process (``shoal hub serve``) and
measures, through ``SyncClient`` over HTTP:

- commits/s of single small changes (C concurrent clients, N commits in all),
  with the CPU time the hub and this client spent per commit (the machine's
  cores are shared by both, so they bound the rate together);
- the time to pull N entries of one arena's log (pages of 10000, parsed);
- the delay from sending a commit to each of W WebSocket watchers receiving
  its cursor (median, p99, max over R commits);
- the hub's resident memory, idle after start and idle after the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import websockets
from websockets.asyncio.client import connect as ws_connect

from precompile import compile_shoal
from shoal.net.http import HubSession, TokenSet
from shoal.net.schemas_sync import ChangeIn, plain_path_key
from shoal.net.sync import SyncClient
from shoal.testing.hubproc import HubProcess
from shoal.testing.postgres import PG_BIN, PostgresCluster


class DurablePostgres(PostgresCluster):
    """The test cluster runs with fsync off; a benchmark against SQLite FULL needs durable commits."""

    def start(self) -> None:
        super().start()
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c max_connections=200"
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(data_dir: Path | None) -> float:
    """CPU time of a PostgreSQL cluster: the postmaster (with its reaped children) and its live
    backends; 0 without a cluster (SQLite runs inside the hub)."""
    if data_dir is None:
        return 0.0
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            if pid == postmaster:
                total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
            elif int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def change(path: str, device: str, n: int) -> ChangeIn:
    return ChangeIn(
        op="put",
        path_key=plain_path_key(path),
        path=path,
        record=b"\x81\xa4size\x10",
        vv={device: n},
        base_vv={device: n - 1} if n > 1 else {},
        device=device,
    )


async def bench_commits(client: SyncClient, arena: str, total: int, clients: int) -> float:
    per = total // clients

    async def one(worker: int) -> None:
        for n in range(1, per + 1):
            await client.commit(arena, [change(f"w{worker}/f{n}", f"d{worker}", 1)])

    started = time.perf_counter()
    await asyncio.gather(*(one(w) for w in range(clients)))
    return per * clients / (time.perf_counter() - started)


async def bench_pull(client: SyncClient, entries: int) -> float:
    arena = (await client.create_arena(f"pull-{entries}")).id
    batch = 1000
    for start in range(0, entries, batch):
        await client.commit(arena, [change(f"p/{start + i}", "filler", 1) for i in range(batch)])
    started = time.perf_counter()
    count = 0
    async for _ in client.iter_changes(arena, 0, page=10000):
        count += 1
    elapsed = time.perf_counter() - started
    assert count == entries, (count, entries)
    return elapsed


async def bench_watchers(
    session: HubSession, client: SyncClient, watchers: int, rounds: int
) -> tuple[list[float], list[float]]:
    """Per watcher and commit: seconds from sending the commit, and from its answer (0 if earlier)."""
    arena = (await client.create_arena("watched")).id
    url = session.websocket_url(f"/api/v1/arenas/{arena}/ws?since=0")
    conns = []
    for _ in range(watchers):
        ws = await ws_connect(url, additional_headers=session.auth_headers())
        await ws.recv()  # the (empty) backlog page
        conns.append(ws)
    from_send: list[float] = []
    from_answer: list[float] = []
    try:
        for n in range(1, rounds + 1):
            waits = [asyncio.create_task(ws.recv()) for ws in conns]
            sent = time.perf_counter()
            await client.commit(arena, [change("w.txt", "dev", n)])
            answered = time.perf_counter()
            arrived = []
            for task in asyncio.as_completed(waits):
                await task
                arrived.append(time.perf_counter())
            from_send.extend(t - sent for t in arrived)
            from_answer.extend(max(0.0, t - answered) for t in arrived)
            await asyncio.sleep(0.05)
    finally:
        for ws in conns:
            with contextlib.suppress(websockets.WebSocketException):
                await ws.close()
    return from_send, from_answer


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_backend(
    hub: HubProcess, token: str, args: argparse.Namespace, pg_data: Path | None
) -> dict[str, float]:
    assert hub.proc is not None
    out: dict[str, float] = {"rss_start_mb": rss_mb(hub.proc.pid)}
    async with HubSession(hub.base_url, TokenSet(token)) as session:
        client = SyncClient(session)
        arena = (await client.create_arena("commits")).id
        hub_cpu, own_cpu = cpu_seconds(hub.proc.pid), cpu_seconds(os.getpid())
        db_cpu = server_cpu_seconds(pg_data)
        out["commits_per_s"] = await bench_commits(client, arena, args.commits, args.clients)
        done = args.commits // args.clients * args.clients
        out["hub_cpu_ms_per_commit"] = (cpu_seconds(hub.proc.pid) - hub_cpu) * 1000 / done
        out["client_cpu_ms_per_commit"] = (cpu_seconds(os.getpid()) - own_cpu) * 1000 / done
        out["db_server_cpu_ms_per_commit"] = (server_cpu_seconds(pg_data) - db_cpu) * 1000 / done
        out["pull_s"] = await bench_pull(client, args.entries)
        from_send, from_answer = await bench_watchers(session, client, args.watchers, args.rounds)
        out["notify_p50_ms"] = statistics.median(from_answer) * 1000
        out["notify_p99_ms"] = pct(from_answer, 0.99) * 1000
        out["notify_max_ms"] = max(from_answer) * 1000
        out["send_to_notify_p99_ms"] = pct(from_send, 0.99) * 1000
    await asyncio.sleep(2)
    out["rss_idle_after_mb"] = rss_mb(hub.proc.pid)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    compile_shoal()
    print(f"load average at the start: {Path('/proc/loadavg').read_text().split()[0]}", flush=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="hub-bench-"))
    cluster: PostgresCluster | None = None
    results: dict[str, dict[str, float]] = {}
    try:
        for backend in args.backends.split(","):
            db_url = None
            if backend == "postgres":
                if cluster is None:
                    cluster = DurablePostgres()
                    cluster.start()
                db_url = cluster.create_database()
            hub = HubProcess(work / backend, db_url=db_url)
            hub.start()
            try:
                hub.add_user("bench")
                token = hub.create_token("bench")
                pg_data = cluster.data if db_url is not None and cluster is not None else None
                results[backend] = asyncio.run(run_backend(hub, token, args, pg_data))
            finally:
                hub.stop()
    finally:
        if cluster is not None:
            cluster.stop()
    names = list(results)
    print(f"{'metric':<26}" + "".join(f"{n:>14}" for n in names))
    for metric in next(iter(results.values())):
        print(f"{metric:<26}" + "".join(f"{results[n][metric]:>14.1f}" for n in names))
    print(f"load average at the end: {Path('/proc/loadavg').read_text().split()[0]}")


if __name__ == "__main__":
    main()
