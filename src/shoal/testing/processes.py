"""Process helpers for crash tests: kill a command at the right moment, see what it left running."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float = 60.0) -> bool:
    """kill -9 ``proc`` as soon as ``ready()`` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            proc.kill()
            proc.wait(10)
            return True
        time.sleep(0.01)
    proc.kill()
    proc.wait(10)
    return False


def children(pid: int) -> set[int]:
    """The processes ``pid``'s threads have started and not yet reaped (Linux)."""
    found: set[int] = set()
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that just ended
                found.update(int(c) for c in (task / "children").read_text().split())
    except FileNotFoundError:  # the process itself ended
        pass
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not reaped, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_all_gone(pids: set[int], timeout: float = 30.0) -> set[int]:
    """Wait until none of ``pids`` runs; those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {pid for pid in pids if alive(pid)}


def read_terminal(fd: int) -> str:
    """Everything written to a pseudo-terminal (its leader side) until every writer closed it."""
    out = bytearray()
    while True:
        try:
            piece = os.read(fd, 65536)
        except OSError:  # EIO: the last writer is gone
            break
        if not piece:
            break
        out += piece
    return out.decode(errors="replace")
