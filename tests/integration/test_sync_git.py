"""A real git repository synced from one device to another works there: same status, stashes,
history, and a clean fsck. A repository whose ``.git`` holds a lock waits for the next round."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.testing.devices import Household, fsck_device
from shoal.testing.hubproc import running_hub

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.parent)}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True, timeout=60
    )
    return done.stdout


_names = (f"git{n}" for n in itertools.count())


@pytest.fixture(scope="module")
def base_household(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Household]:
    base = tmp_path_factory.mktemp("git")
    with running_hub(base / "hub") as hub:
        yield Household.create(hub, base, ["laptop", "desktop"], arena="seed")


@pytest.fixture
def pair(base_household: Household, tmp_path: Path) -> Household:
    return base_household.with_arena(next(_names), tmp_path)


def make_repo(repo: Path) -> None:
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for n in range(3):
        (repo / f"file{n}.py").write_text(f"print({n})\n")
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", f"commit {n}")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "feature.py").write_text("feature = True\n")
    git(repo, "add", "feature.py")
    git(repo, "commit", "-q", "-m", "feature work")
    git(repo, "checkout", "-q", "main")
    (repo / "file0.py").write_text("print('stashed')\n")
    git(repo, "stash", "-q")
    (repo / "file1.py").write_text("print('staged')\n")
    git(repo, "add", "file1.py")
    (repo / "file2.py").write_text("print('unstaged')\n")
    (repo / "untracked.txt").write_text("not added\n")


@pytest.mark.slow
def test_a_git_repository_works_on_the_other_device(pair: Household) -> None:
    a = pair["laptop"].root / "project"
    b = pair["desktop"].root / "project"
    make_repo(a)
    asyncio.run(pair.converge())
    assert git(b, "status", "--porcelain") == git(a, "status", "--porcelain")
    assert git(b, "stash", "list") == git(a, "stash", "list")
    assert git(b, "log", "--all", "--oneline") == git(a, "log", "--all", "--oneline")
    assert git(b, "branch", "--list") == git(a, "branch", "--list")
    git(b, "fsck", "--strict")
    assert git(b, "diff", "--cached") == git(a, "diff", "--cached")
    assert git(b, "stash", "show", "-p") == git(a, "stash", "show", "-p")
    asyncio.run(pair.converge())  # git status refreshed the index on both sides: still in step
    for device in pair.devices:
        assert asyncio.run(fsck_device(device)) == []


def test_a_locked_repository_is_skipped_until_the_lock_is_released(pair: Household) -> None:
    a = pair["laptop"].root / "project"
    b = pair["desktop"].root / "project"
    a.mkdir()
    git(a, "init", "-q", "-b", "main")
    (a / "x.txt").write_text("x\n")
    asyncio.run(pair.converge())
    (a / ".git" / "index.lock").write_text("")
    (a / ".git" / "description").write_text("changed while locked\n")
    (a / "y.txt").write_text("outside .git: synced\n")
    report = asyncio.run(pair["laptop"].sync())
    assert any("git holds a lock" in why for why in report.skipped)
    asyncio.run(pair["desktop"].sync())
    assert (b / "y.txt").exists()
    assert (b / ".git" / "description").read_text() != "changed while locked\n"
    assert not (b / ".git" / "index.lock").exists()
    (a / ".git" / "index.lock").unlink()
    asyncio.run(pair.converge())
    assert (b / ".git" / "description").read_text() == "changed while locked\n"
