"""The main job (`./dev run`) as a new user meets it: a hub, two devices, a file arriving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shoal.testing.hubproc import shoal_env


@pytest.mark.slow
def test_the_main_job_syncs_a_file_between_two_devices_and_says_what_next(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shoal.demo"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=shoal_env(),
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "arrived on the desktop after" in result.stdout
    assert "demo: up to date" in result.stdout
    assert "What next:" in result.stdout
    demo = tmp_path / ".shoal-demo"
    laptop, desktop = demo / "laptop", demo / "desktop"
    for rel in ("hello.txt", "welcome.txt", "notes/ideas.md", "run.sh"):
        assert (desktop / rel).read_bytes() == (laptop / rel).read_bytes()
    assert (desktop / "run.sh").stat().st_mode & 0o111
    # nothing keeps running once a non-interactive run ends
    assert not (demo / "laptop-home" / "daemon.sock").exists()
    assert not (demo / "desktop-home" / "daemon.sock").exists()
    assert oct((demo / "token-laptop").stat().st_mode & 0o777) == "0o600"
