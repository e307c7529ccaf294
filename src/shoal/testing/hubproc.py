"""Real hub processes for tests: ``python -m shoal hub serve`` on 127.0.0.1, plus its admin CLI.

    with running_hub(tmp_path / "hub") as hub:
        hub.add_user("alice", "correct horse")
        token = hub.create_token("alice", "sync:read,sync:write")
        httpx.get(hub.base_url + "/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})

Every wait is bounded; a hub that does not come up fails with its log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 60.0
TEST_PASSWORD = "correct horse battery"  # noqa: S105 - the password of test accounts


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shoal_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a shoal subprocess: this one, without SHOAL_* (tests pass what they mean)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_shoal(
    *args: str,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m shoal ARGS`` and return its result; with ``check``, fail loudly on non-zero exit."""
    result = subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        input=input,
        capture_output=True,
        text=True,
        env=shoal_env(env),
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"shoal {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


class HubProcess:
    """One hub process and the admin CLI pointed at the same data directory and database."""

    def __init__(
        self,
        data_dir: Path,
        *,
        db_url: str | None = None,
        store_url: str | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.db_url = db_url
        self.store_url = store_url
        self.extra_args = list(extra_args)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}-hub.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def location_args(self) -> list[str]:
        """``--data DIR [--db URL]``: what every admin command needs to find this hub's database."""
        args = ["--data", str(self.data_dir)]
        if self.db_url:
            args += ["--db", self.db_url]
        return args

    def start(self, timeout: float = START_TIMEOUT) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the hub is already running")
        args = [sys.executable, "-m", "shoal", "hub", "serve", *self.location_args()]
        args += ["--bind", f"127.0.0.1:{self.port}"]
        if self.store_url:
            args += ["--store", self.store_url]
        args += self.extra_args
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=shoal_env())
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the hub exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill9()
        raise RuntimeError(f"the hub did not become healthy within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        """Terminate (SIGTERM, then SIGKILL after a bound) and wait."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)

    def kill9(self) -> None:
        """Kill the hub without warning, as a crash or power loss would."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20_000:]
        except OSError:
            return ""

    # -- admin helpers ---------------------------------------------------------------------

    def admin(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``shoal hub ARGS --data DIR [--db URL]``."""
        return run_shoal("hub", *args, *self.location_args(), input=input, check=check)

    def add_user(self, name: str, password: str = TEST_PASSWORD) -> None:
        path = self.data_dir.parent / f".{name}-password"
        path.write_text(password + "\n")
        self.admin("user", "add", name, "--password-file", str(path))
        path.unlink()

    def create_token(
        self,
        user: str,
        scopes: str = "sync:read,sync:write,arenas:admin,files:read,files:write",
        *,
        expires: str = "1d",
        tenant: str | None = None,
    ) -> str:
        args = ["token", "create", "--user", user, "--scope", scopes, "--expires", expires]
        if tenant:
            args += ["--tenant", tenant]
        return self.admin(*args).stdout.strip()

    def approve(self, code: str, user: str) -> subprocess.CompletedProcess[str]:
        return self.admin("approve", code, "--user", user)


@contextmanager
def running_hub(
    data_dir: Path,
    *,
    db_url: str | None = None,
    store_url: str | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[HubProcess]:
    """A started hub, stopped when the block ends (its log is kept next to the data directory)."""
    hub = HubProcess(data_dir, db_url=db_url, store_url=store_url, extra_args=extra_args)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


HubFactory = Callable[..., HubProcess]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hub_db_url(request: pytest.FixtureRequest) -> str | None:
    """Parametrizes a test over both metadata backends: None (embedded SQLite) or a fresh PostgreSQL URL."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return None


def _factory(root: Path, db_url: str | None) -> tuple[HubFactory, list[HubProcess]]:
    started: list[HubProcess] = []

    def make(
        *, extra_args: Sequence[str] = (), store_url: str | None = None, name: str = "hub"
    ) -> HubProcess:
        hub = HubProcess(root / name, db_url=db_url, store_url=store_url, extra_args=extra_args)
        started.append(hub)
        hub.start()
        return hub

    return make, started


@pytest.fixture
def hub_factory(tmp_path: Path, hub_db_url: str | None) -> Iterator[HubFactory]:
    """``hub_factory(extra_args=["--access-ttl", "1"])`` starts a hub on the parametrized backend."""
    make, started = _factory(tmp_path, hub_db_url)
    try:
        yield make
    finally:
        for hub in started:
            hub.stop()


@pytest.fixture
def hub(hub_factory: HubFactory) -> HubProcess:
    """A running hub, once on SQLite and once on PostgreSQL."""
    return hub_factory()


@pytest.fixture
def hub_sqlite(tmp_path: Path) -> Iterator[HubProcess]:
    with running_hub(tmp_path / "hub") as hub:
        yield hub


@pytest.fixture
def hub_postgres(tmp_path: Path, postgres_url: str) -> Iterator[HubProcess]:
    with running_hub(tmp_path / "hub", db_url=postgres_url) as hub:
        yield hub
