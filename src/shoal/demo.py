"""The main job of ``./dev run``: a hub, two devices and a folder syncing between them, on this machine.

Everything lives under ``.shoal-demo/`` in the current directory:

    hub/                the embedded hub (SQLite metadata, chunks on disk), on 127.0.0.1 only
    laptop/ desktop/    the synced folder as each device sees it
    laptop-home/ ...    each device's identity, login, state and daemon socket

It starts the hub, creates a user and one access token per device (no
prompts), logs both devices in, creates an arena, joins it on both, starts a
sync daemon for each, and shows a file written on the laptop arriving on the
desktop. On a terminal it keeps syncing until Ctrl-C; otherwise it stops
everything it started and exits. Running it again reuses what is there, so
files you put in the demo folders stay.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

DEMO = Path(".shoal-demo").absolute()
HUB_DIR = DEMO / "hub"
ARENA = "demo"
USER = "demo"
DEVICES = ("laptop", "desktop")
SCOPES = "sync:read,sync:write,arenas:admin,files:read,files:write"
WAIT = 60.0


def _say(text: str) -> None:
    print(text, flush=True)


def _shoal(*args: str, capture: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a real ``shoal`` command, showing it first the way a user would type it."""
    if not capture:
        _say(f"\n$ shoal {' '.join(args)}")
    result = subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        text=True,
        capture_output=capture,
        check=False,
        env=_env(),
    )
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip()
        raise SystemExit(f"`shoal {' '.join(args)}` failed with status {result.returncode}\n{detail}")
    return result


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")} | {"PYTHONUNBUFFERED": "1"}


def _private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _port() -> int:
    """The demo hub's port: the one used last time if it is free (device logins remember it)."""
    saved = DEMO / "hub-port"
    with contextlib.suppress(OSError, ValueError):
        port = int(saved.read_text())
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the hub binds it
            sock.bind(("127.0.0.1", port))
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    saved.write_text(f"{port}\n")
    return port


@contextlib.contextmanager
def _hub(port: int) -> Iterator[str]:
    url = f"http://127.0.0.1:{port}"
    args = [
        sys.executable,
        "-m",
        "shoal",
        "hub",
        "serve",
        "--data",
        str(HUB_DIR),
        "--bind",
        f"127.0.0.1:{port}",
    ]
    _say(f"\n$ shoal hub serve --data {HUB_DIR} --bind 127.0.0.1:{port}   (in the background)")
    with (DEMO / "hub.log").open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the hub exited with status {proc.returncode}; see {DEMO / 'hub.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the hub did not start within {WAIT:.0f} s; see {DEMO / 'hub.log'}")
            time.sleep(0.1)
        _say(f"hub ready at {url} (log: {DEMO / 'hub.log'})")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _account() -> None:
    """A user and one token per device, made once with the hub's admin commands (no prompts)."""
    if all((DEMO / f"token-{name}").exists() for name in DEVICES):
        return
    password = DEMO / "password"
    if not password.exists():
        _private(password, secrets.token_urlsafe(18) + "\n")
        _shoal("hub", "user", "add", USER, "--password-file", str(password), "--data", str(HUB_DIR))
    for name in DEVICES:
        token = _shoal(
            "hub", "token", "create", "--user", USER, "--scope", SCOPES, "--expires", "52w",
            "--name", f"demo {name}", "--data", str(HUB_DIR), capture=True,
        ).stdout.strip()  # fmt: skip
        _say(f"\n$ shoal hub token create --user {USER} --scope ... --data {HUB_DIR}   (for the {name})")
        _private(DEMO / f"token-{name}", token + "\n")


def _joined(home: Path) -> bool:
    result = _shoal("status", "--json", "--home", str(home), capture=True)
    return any(a.get("name") == ARENA for a in json.loads(result.stdout).get("arenas", []))


def _device(name: str, url: str, *, create_arena: bool) -> Path:
    home, folder = DEMO / f"{name}-home", DEMO / name
    token = DEMO / f"token-{name}"
    _shoal("login", "--hub", url, "--token-file", str(token), "--name", name, "--home", str(home))
    if create_arena:
        listed = _shoal("arena", "list", "--home", str(home), capture=True).stdout
        if not any(line.split("\t")[0] == ARENA for line in listed.splitlines()):
            _shoal("arena", "create", ARENA, "--home", str(home))
    if not _joined(home):
        _shoal("arena", "join", ARENA, str(folder), "--home", str(home))
    return home


def _sample(folder: Path) -> None:
    if (folder / "welcome.txt").exists():
        return
    (folder / "notes").mkdir(parents=True, exist_ok=True)
    (folder / "welcome.txt").write_text(
        "This folder is synced by shoal. Edit it here or in the desktop folder.\n"
    )
    (folder / "notes" / "ideas.md").write_text("# Ideas\n\n- sync my photos\n")
    (folder / "run.sh").write_text("#!/bin/sh\necho 'the executable bit travels too'\n")
    (folder / "run.sh").chmod(0o755)


def _wait_for(path: Path, text: str) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < WAIT:
        with contextlib.suppress(OSError):
            if path.read_text() == text:
                return time.monotonic() - start
        time.sleep(0.02)
    return None


def main() -> None:
    DEMO.mkdir(exist_ok=True)
    HUB_DIR.mkdir(exist_ok=True)
    homes: list[Path] = []
    with _hub(_port()) as url:
        try:
            _account()
            homes = [_device(name, url, create_arena=i == 0) for i, name in enumerate(DEVICES)]
            laptop, desktop = DEMO / "laptop", DEMO / "desktop"
            _sample(laptop)
            for home in homes:
                _shoal("daemon", "--home", str(home))
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            message = f"Hello from the laptop, written at {stamp}.\n"
            _say(f"\nwriting {laptop / 'hello.txt'} on the laptop ...")
            (laptop / "hello.txt").write_text(message)
            took = _wait_for(desktop / "hello.txt", message)
            if took is None:
                raise SystemExit(
                    f"the file did not reach the desktop within {WAIT:.0f} s; see `shoal status`"
                )
            _say(f"... and it arrived on the desktop after {took * 1000:.0f} ms: {desktop / 'hello.txt'}")
            for home in homes:
                _shoal("status", "--home", str(home))
            interactive = sys.stdin.isatty() and sys.stdout.isatty()
            _next_steps(laptop, desktop, homes[0], interactive)
            if interactive:
                _say("\nSyncing until you press Ctrl-C (that stops the demo hub and both daemons).")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)
        finally:
            for home in homes:
                _shoal("daemon", "--stop", "--home", str(home), capture=True, check=False)
    _say("\nstopped the demo hub and daemons; `./dev run` starts them again, with your files kept.")


def _next_steps(laptop: Path, desktop: Path, home: Path, interactive: bool) -> None:
    shoal = ".venv/bin/shoal"
    watch = "" if interactive else " (run `./dev run` in a terminal: it keeps syncing until Ctrl-C)"
    _say(
        "\nWhat next:\n"
        f"  - edit, add, rename or delete files in {laptop} and watch {desktop} follow (and back){watch};\n"
        f"  - `{shoal} status --home {home}` shows each arena's state; "
        f"`{shoal} pause {ARENA} --home {home}` and `resume` stop and restart it;\n"
        f"  - `{shoal} log --home {home}` and `versions PATH` show history, `restore PATH` brings one back;\n"
        f"  - your own hub: `{shoal} hub serve`, then `{shoal} login --hub URL`, "
        "`shoal arena create NAME`, `shoal arena join NAME ~/Folder`, `shoal daemon`\n"
        "    (contrib/systemd/shoal.service runs the daemon at login);\n"
        "  - `./dev test` runs every check CI runs."
    )


if __name__ == "__main__":
    main()
