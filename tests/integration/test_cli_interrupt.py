"""Ctrl-C at any moment of a command's life, start-up included, exits 130 with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.parametrize("delay", [0.03, 0.06, 0.1, 0.15, 0.25])
def test_ctrl_c_while_starting_exits_130_without_a_traceback(tmp_path: Path, delay: float) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for n in range(200):
        (src / f"f{n}").write_bytes(os.urandom(64 * 1024))
    argv = [sys.executable, "-m", "shoal", "pack", str(src), "-o", str(tmp_path / "i.flist")]
    argv += ["--store", str(tmp_path / "store"), "--quiet"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    time.sleep(delay)  # Python is still importing the CLI for the first tenth of a second or so
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal sends it: to the whole group
    _, err = proc.communicate(timeout=60)
    text = err.decode(errors="replace")
    assert "Traceback" not in text
    if proc.returncode == 0:  # finished first: nothing to interrupt
        assert (tmp_path / "i.flist").exists()
    elif proc.returncode == -signal.SIGINT:  # before Python set up its own handler: killed like any program
        assert text == ""
    else:
        assert proc.returncode == 130, text
        assert text.strip() == "interrupted"
