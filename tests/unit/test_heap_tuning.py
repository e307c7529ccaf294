"""The malloc tuning `shoal pack` applies takes effect on glibc and changes no result."""

from __future__ import annotations

import gc
import platform
import subprocess
import sys
import weakref

from shoal.engine.heap import GC_THRESHOLDS, gc_tuned_for_streaming

_PROBE = """
import sys, threading
from shoal.engine.heap import tune_heap_for_streaming
from shoal.crypto.arena_keys import ArenaKeys
from shoal.store.sealed import EncryptedSealer

applied = tune_heap_for_streaming()
sealer = EncryptedSealer(ArenaKeys.derive(b"\\x11" * 32, epoch=1), b"arena")
data = bytes(range(256)) * 8192  # 2 MiB, sealed and opened on worker threads under the tuned heap
cid = sealer.chunk_id(data)
opened = []


def round_trip() -> None:
    opened.append(sealer.open(cid, sealer.seal(cid, data)))


workers = [threading.Thread(target=round_trip) for _ in range(4)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
assert opened == [data] * 4
print(applied, tune_heap_for_streaming())  # applying it twice is harmless
"""


def test_tuning_applies_on_glibc_and_sealing_still_round_trips() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert done.stdout.split() == [str(on_glibc)] * 2


def test_gc_tuning_is_undone_after_the_block() -> None:
    before = gc.get_threshold()
    with gc_tuned_for_streaming():
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        cycle: list[object] = []
        cycle.append(cycle)
        ref = weakref.ref(_Node(cycle))
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert ref() is None  # made inside the block, collected after it


class _Node:
    def __init__(self, payload: object) -> None:
        self.me = self
        self.payload = payload
