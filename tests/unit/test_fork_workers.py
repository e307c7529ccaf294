"""Workers forked up front (``shoal pack``): only from a process with no other thread, and a pool
that never got a job still lets the process exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from shoal.engine.sealpool import SealingPool, fork_workers
from shoal.store.sealed import PlainSealer


def test_no_fork_while_another_thread_runs() -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        with SealingPool(PlainSealer(), 2) as pool:
            assert not fork_workers(pool)
            assert not pool.running  # left to start with spawn at its first job
    finally:
        release.set()
        other.join()


def test_forked_pools_with_and_without_jobs_shut_down(tmp_path: Path) -> None:
    # In a fresh interpreter: the test process runs threads of its own, so it would never fork.
    (tmp_path / "small.txt").write_bytes(b"hello\n")
    script = textwrap.dedent(
        f"""
        import asyncio, multiprocessing, sys
        from shoal.engine.sealpool import SealingPool, fork_workers
        from shoal.store.sealed import PlainSealer

        used = SealingPool(PlainSealer(), 2, leave_a_core=False)
        idle = SealingPool(PlainSealer(), 2, store_url={(tmp_path / "store").as_uri()!r}, leave_a_core=False)
        assert fork_workers(used, idle), "a process with one thread forks its workers"
        forked = {{p.pid for p in multiprocessing.active_children()}}
        assert len(forked) == 4, forked
        reads = asyncio.run(used.read_and_seal([({str(tmp_path / "small.txt")!r}, 1024)]))
        assert reads[0].size == 6, reads
        used.close()
        idle.close()  # never given a job: its workers must still be told to leave
        assert not multiprocessing.active_children()
        print("done")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
