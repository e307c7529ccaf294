"""File API benchmark: 1 GB up and down through a loopback hub, 50 concurrent clients, RSS under attack.

    .venv/bin/python bench/fileapi_bench.py [--size-mb 1024] [--streams 1] [--clients 50] [--db postgresql://…]

Starts its own hub (SQLite and a file store under a temporary directory
unless --db is given), prints one line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
import time
from pathlib import Path

import httpx

from precompile import compile_shoal
from shoal.testing.hubproc import HubProcess, running_hub

MIB = 1024 * 1024
PART = 16 * MIB
FULL = "sync:read,sync:write,arenas:admin,files:read,files:write"


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def big_file(hub: HubProcess, token: str, size: int, streams: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=hub.base_url, headers=headers, timeout=600) as c:
        arena = (await c.post("/api/v1/arenas", json={"name": "bench"})).json()["id"]
        fs = f"/api/v1/arenas/{arena}/fs"
        part = os.urandom(PART)  # incompressible, and chunks differ across parts by their offsets' content
        numbers = iter(range(1, size // PART + 1))
        started = time.perf_counter()
        up = (await c.post(f"{fs}/uploads", json={"path": "big.bin"})).json()["id"]

        async def sender() -> None:
            for n in numbers:  # shared: each stream sends the next part not yet taken
                # Vary each part so the file does not dedup against itself.
                body = n.to_bytes(8, "big") + part[8:]
                r = await c.put(f"{fs}/uploads/{up}/parts/{n}", content=body)
                r.raise_for_status()

        await asyncio.gather(*(sender() for _ in range(streams)))
        parts_done = time.perf_counter()
        r = await c.post(f"{fs}/uploads/{up}/commit")
        r.raise_for_status()
        done = time.perf_counter()
        total = done - started
        print(
            f"upload {size / MIB:.0f} MiB, {streams} part(s) in flight: {size / MIB / total:.0f} MiB/s "
            f"(parts {parts_done - started:.1f} s, commit {done - parts_done:.1f} s)"
        )
        started = time.perf_counter()
        got = 0
        async with c.stream("GET", f"{fs}/content", params={"path": "big.bin"}) as resp:
            resp.raise_for_status()
            async for piece in resp.aiter_raw(4 * MIB):
                got += len(piece)
        elapsed = time.perf_counter() - started
        assert got == size, (got, size)
        print(f"download {size / MIB:.0f} MiB: {size / MIB / elapsed:.0f} MiB/s")
        assert hub.proc is not None
        print(f"hub peak RSS after 1 GB up and down: {peak_rss_mib(hub.proc.pid):.0f} MiB")


async def many_clients(hub: HubProcess, tokens: list[str], rounds: int) -> None:
    errors = 0
    calls = 0

    async def one(token: str, i: int) -> None:
        nonlocal errors, calls
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=hub.base_url, headers=headers, timeout=120) as c:
            r = await c.post("/api/v1/arenas", json={"name": f"c{i}"})
            if r.status_code != 201:
                errors += 1
                return
            fs = f"/api/v1/arenas/{r.json()['id']}/fs"
            for k in range(rounds):
                data = os.urandom(64 * 1024)
                up = (await c.post(f"{fs}/uploads", json={"path": f"d/f{k}"})).json()["id"]
                results = [
                    await c.put(f"{fs}/uploads/{up}/parts/1", content=data),
                    await c.post(f"{fs}/uploads/{up}/commit"),
                ]
                got = await c.get(f"{fs}/content", params={"path": f"d/f{k}"})
                listing = await c.get(f"{fs}/list", params={"path": "d"})
                calls += 5
                if any(r.status_code != 200 for r in [*results, got, listing]) or got.content != data:
                    errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(t, i) for i, t in enumerate(tokens)))
    elapsed = time.perf_counter() - started
    print(f"{len(tokens)} concurrent API clients, {calls} calls in {elapsed:.1f} s: {errors} errors")


def attack(hub: HubProcess, token: str, seconds: float) -> None:
    """Oversized requests: huge declared lengths, and endless bodies without a length."""
    assert hub.proc is not None
    before = rss_mib(hub.proc.pid)
    deadline = time.monotonic() + seconds
    refused = 0
    sent = 0
    while time.monotonic() < deadline:
        socks = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", hub.port))
            s.sendall(
                f"POST /api/v1/arenas/x/commit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Length: {10**12}\r\n\r\n".encode()
            )
            socks.append(s)
        for s in socks:
            refused += s.recv(64).startswith(b"HTTP/1.1 413")
            s.close()
        with httpx.Client(timeout=60) as c:

            def endless():  # type: ignore[no-untyped-def]
                for _ in range(200):
                    yield b"x" * MIB

            r = c.post(
                hub.base_url + "/api/v1/chunks",
                content=endless(),
                headers={"Authorization": f"Bearer {token}"},
            )
            refused += r.status_code == 413
        sent += 21
    peak = peak_rss_mib(hub.proc.pid)
    print(
        f"oversized-request attack: {refused}/{sent} refused with 413; "
        f"hub RSS {before:.0f} MiB before, peak {peak:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--db", default=None)
    parser.add_argument("--streams", type=int, default=1, help="parts of the 1 GB upload sent at once")
    args = parser.parse_args()
    compile_shoal()
    with (
        tempfile.TemporaryDirectory(prefix="fileapi-bench-") as tmp,
        running_hub(Path(tmp) / "hub", db_url=args.db, extra_args=["--log-level", "warning"]) as hub,
    ):
        hub.add_user("bench")
        token = hub.create_token("bench", FULL)
        attack(hub, token, 10.0)  # first, so the peak RSS it reports is the attack's own
        asyncio.run(big_file(hub, token, args.size_mb * MIB, args.streams))
        tokens = []
        for i in range(args.clients):
            hub.add_user(f"client{i}")
            tokens.append(hub.create_token(f"client{i}", FULL))
        asyncio.run(many_clients(hub, tokens, args.rounds))


if __name__ == "__main__":
    main()
