"""Several devices of one user, each with its own ``SHOAL_HOME`` and folder, syncing through a real hub.

    household = Household.create(hub, tmp_path, ["laptop", "desktop"], arena="docs")
    (household["laptop"].root / "a.txt").write_text("hi")
    asyncio.run(household.converge())
    assert snapshot(household["desktop"].root) == snapshot(household["laptop"].root)

Devices log in with personal tokens (``shoal login --token-file``, done in
process) and join the arena like ``shoal arena join``. ``Device.cli`` runs the
real command line with the device's home; ``Device.sync`` runs one round in
process (fast, and what most tests use).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat as st
import subprocess
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.cli.home import DeviceHome
from shoal.cli.login_cmd import _login_with_token
from shoal.daemon.engine_link import DEVICE_DB_NAME
from shoal.engine.context import SyncOptions, SyncReport
from shoal.engine.fsck import fsck
from shoal.engine.join import join_arena
from shoal.engine.sync import ArenaSync
from shoal.net.sync import SyncClient
from shoal.state.arenas import ArenaRegistry
from shoal.state.db import DeviceDB
from shoal.testing.hubproc import HubProcess, run_shoal
from shoal.worktree.entries import is_temp_name
from shoal.worktree.ignore import ARENA_MARKER

CONVERGE_ROUNDS = 8


@dataclass
class Device:
    name: str
    home: Path
    root: Path
    hub: HubProcess
    arena: str
    device_id: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {"SHOAL_HOME": str(self.home)}

    def cli(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``shoal ARGS`` as this device (its own SHOAL_HOME)."""
        return run_shoal(*args, env=self.env, check=check, timeout=timeout)

    def open_db(self) -> DeviceDB:
        return DeviceDB.open(self.home / DEVICE_DB_NAME)

    async def login(self, token: str) -> None:
        creds = await _login_with_token(DeviceHome(self.home), self.hub.base_url, token, self.name)
        DeviceHome(self.home).save_credentials(creds)
        assert creds.device_id is not None
        self.device_id = creds.device_id

    async def join(self) -> None:
        db = self.open_db()
        try:
            async with DeviceHome(self.home).session() as session:
                await join_arena(db, SyncClient(session), self.arena, self.root, self.hub.base_url)
        finally:
            db.close()

    @asynccontextmanager
    async def syncer(self, **options: Any) -> AsyncIterator[ArenaSync]:
        db = self.open_db()
        try:
            record = ArenaRegistry(db).by_name(self.arena)
            async with DeviceHome(self.home).session() as session:
                sync = ArenaSync(
                    db,
                    record,
                    SyncClient(session),
                    self.device_id,
                    options=SyncOptions(**{"overlay_dir": self.home / "ignore", **self.options, **options}),
                )
                try:
                    yield sync
                finally:
                    await sync.aclose()
        finally:
            db.close()

    async def sync(self, **options: Any) -> SyncReport:
        """One ``sync --once`` round in process."""
        async with self.syncer(**options) as s:
            return await s.sync_once()


class Household:
    """One user's devices on one hub, all joined to one arena."""

    def __init__(self, hub: HubProcess, devices: list[Device]) -> None:
        self.hub = hub
        self.devices = devices

    def __getitem__(self, name: str) -> Device:
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)

    @classmethod
    def create(
        cls,
        hub: HubProcess,
        base: Path,
        names: Iterable[str],
        *,
        arena: str = "docs",
        user: str = "alice",
        conflict_policy: str = "keep-both",
        add_user: bool = True,
    ) -> Household:
        if add_user:
            hub.add_user(user)
        names = list(names)
        with ThreadPoolExecutor(len(names)) as pool:  # one token per device (a token binds to its device)
            tokens = list(pool.map(lambda _n: hub.create_token(user), names))
        devices = []
        for name, token in zip(names, tokens, strict=True):
            device = Device(name, base / f"{name}-home", base / name, hub, arena)
            asyncio.run(device.login(token))
            devices.append(device)
        household = cls(hub, devices)
        asyncio.run(household._join_all(conflict_policy))
        return household

    def with_arena(self, arena: str, base: Path, *, conflict_policy: str = "keep-both") -> Household:
        """The same logged-in devices joined to another (new) arena, in fresh folders under ``base``."""
        devices = [
            Device(d.name, d.home, base / d.name, d.hub, arena, d.device_id, dict(d.options))
            for d in self.devices
        ]
        household = Household(self.hub, devices)
        asyncio.run(household._join_all(conflict_policy))
        return household

    async def _join_all(self, conflict_policy: str) -> None:
        arena = self.devices[0].arena
        async with DeviceHome(self.devices[0].home).session() as session:
            client = SyncClient(session)
            known = {a.name for a in await client.list_arenas()}
            if arena not in known:
                await client.create_arena(arena, conflict_policy=conflict_policy)  # type: ignore[arg-type]
        for device in self.devices:
            await device.join()

    async def sync_all(self, names: Iterable[str] | None = None) -> list[SyncReport]:
        chosen = self.devices if names is None else [self[n] for n in names]
        return [await device.sync() for device in chosen]

    async def converge(self, rounds: int = CONVERGE_ROUNDS) -> int:
        """Sync every device in turn until a whole pass moves nothing; return the passes it took."""
        for n in range(1, rounds + 1):
            reports = await self.sync_all()
            if all(r.pushed == 0 and r.pulled == 0 and not r.conflicts for r in reports):
                return n
        raise AssertionError(f"the devices did not converge within {rounds} passes")


Snapshot = dict[str, tuple[Any, ...]]


def snapshot(root: Path, *, mtimes: bool = True) -> Snapshot:
    """Every path below ``root`` with what a user compares: kind, content hash, mode, mtime, target."""
    out: Snapshot = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        rel_folder = os.path.relpath(folder, root)
        for name in dirs + files:
            full = os.path.join(folder, name)
            rel = name if rel_folder == "." else f"{rel_folder}/{name}"
            if is_temp_name(rel) or rel == ARENA_MARKER:
                continue
            info = os.lstat(full)
            if st.S_ISLNK(info.st_mode):
                out[rel] = ("symlink", os.readlink(full))
            elif st.S_ISDIR(info.st_mode):
                out[rel] = ("dir", st.S_IMODE(info.st_mode))
            else:
                digest = hashlib.sha256(Path(full).read_bytes()).hexdigest()
                mtime = info.st_mtime_ns if mtimes else 0
                out[rel] = ("file", digest, st.S_IMODE(info.st_mode), mtime)
    return out


def contents(root: Path) -> set[bytes]:
    """Every file content below ``root`` (for 'nothing lost' checks)."""
    found = set()
    for folder, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink() and path != root / ARENA_MARKER:
                found.add(path.read_bytes())
    return found


async def fsck_device(device: Device) -> list[str]:
    """``engine.fsck`` for a device's arena: the problems it finds (none after convergence)."""
    async with device.syncer() as s:
        return await fsck(s.ctx)
