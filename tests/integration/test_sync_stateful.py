"""Random edits on three devices with random sync interleavings: once everyone syncs, every device
shows the same tree, and every content a device ever synced is still reachable — at a path, as a
conflict copy, or as a version in the hub's history."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from pathlib import Path

import pytest
from blake3 import blake3
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from shoal.engine.records import PlainCodec, RecordKind
from shoal.testing.devices import Device, Household, contents, fsck_device, snapshot
from shoal.testing.hubproc import HubProcess, running_hub

pytestmark = pytest.mark.slow

FILES = ["a.txt", "b.txt", "d/c.txt", "d/e.txt"]
DEVICES = ["laptop", "desktop", "phone"]
_arena_names = (f"fuzz{n}" for n in itertools.count())


class SyncMachine(RuleBasedStateMachine):
    base: Household
    workdir: Path

    def __init__(self) -> None:
        super().__init__()
        self.h = self.base.with_arena(next(_arena_names), self.workdir / next(_arena_names))
        self.synced: set[bytes] = set()  # every content a device held when it synced
        self.counter = itertools.count()

    def dev(self, name: str) -> Device:
        return self.h[name]

    @rule(device=st.sampled_from(DEVICES), path=st.sampled_from(FILES))
    def write(self, device: str, path: str) -> None:
        target = self.dev(device).root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent.is_dir() and not target.is_dir():
            target.write_text(f"{device} wrote {path} #{next(self.counter)}\n")

    @rule(device=st.sampled_from(DEVICES), path=st.sampled_from(FILES))
    def delete(self, device: str, path: str) -> None:
        target = self.dev(device).root / path
        if target.is_file():
            target.unlink()

    @rule(device=st.sampled_from(DEVICES), src=st.sampled_from(FILES), dst=st.sampled_from(FILES))
    def rename(self, device: str, src: str, dst: str) -> None:
        root = self.dev(device).root
        if src != dst and (root / src).is_file() and not (root / dst).exists():
            (root / dst).parent.mkdir(parents=True, exist_ok=True)
            (root / src).rename(root / dst)

    @rule(device=st.sampled_from(DEVICES))
    def remove_folder(self, device: str) -> None:
        folder = self.dev(device).root / "d"
        if folder.is_dir():
            shutil.rmtree(folder)

    @rule(device=st.sampled_from(DEVICES))
    def sync(self, device: str) -> None:
        d = self.dev(device)
        self.synced |= contents(d.root)
        asyncio.run(d.sync())

    @invariant()
    def nothing_partial(self) -> None:
        for device in self.h.devices:
            assert not list(device.root.rglob(".shoal-tmp-*"))

    def teardown(self) -> None:
        for device in self.h.devices:
            self.synced |= contents(device.root)
        asyncio.run(self.h.converge())
        trees = [snapshot(d.root) for d in self.h.devices]
        assert all(t == trees[0] for t in trees), trees
        reachable = contents(self.h.devices[0].root)
        history = asyncio.run(_hub_hashes(self.h.devices[0]))
        lost = [c for c in self.synced if c not in reachable and blake3(c).digest() not in history]
        assert not lost, f"contents lost: {lost}"
        for device in self.h.devices:
            assert asyncio.run(fsck_device(device)) == []


async def _hub_hashes(device: Device) -> set[bytes]:
    codec = PlainCodec()
    found: set[bytes] = set()
    async with device.syncer() as s:
        async for entry in s.ctx.client.iter_changes(s.ctx.arena_id, 0):
            record = codec.decode(entry.record)
            if record.kind is RecordKind.FILE:
                found.add(record.content_key())
    return found


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> object:
    base = tmp_path_factory.mktemp("stateful")
    with running_hub(base / "hub") as running:
        yield running, base


def test_random_operations_converge_and_lose_nothing(hub: tuple[HubProcess, Path]) -> None:
    running, base = hub
    SyncMachine.base = Household.create(running, base, DEVICES, arena="seed")
    SyncMachine.workdir = base
    run_state_machine_as_test(
        SyncMachine,
        settings=settings(
            max_examples=8,
            stateful_step_count=14,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        ),
    )
