"""Tune the process's heaps for a one-shot streaming run (``shoal pack``): glibc's malloc and Python's GC.

Every chunk passes through a few buffers of about a megabyte (its plaintext,
compressed body, sealed envelope). By default glibc gives each thread an
arena of its own, serves such buffers from ``mmap`` until its dynamic
threshold rises, and returns freed memory to the kernel as soon as 128 KiB
are free at the top of a heap. Each fresh megabyte then costs 256 page
faults, and the kernel zeroes every page again: on the mixed bench corpus
that was ~190k minor faults per ``pack``. Two arenas, a fixed 32 MiB mmap
threshold and a 64 MiB trim threshold keep the freed buffers for reuse:
~55k faults, and peak RSS about the same (the pipeline's byte budget bounds
the live buffers; fewer arenas mean less memory parked per thread).

Python's cyclic GC, at its default thresholds, ran ~300 collections while
packing 20k small files (the per-file results, entries and futures are
container objects), and each older-generation pass walked every object the
imports had created: 0.26-0.43 s of GIL-holding time. Freezing the start-up
objects and collecting the youngest generation every 50k net allocations
instead of 700 left one collection (0.04 s); the pipeline creates few
cycles, so little garbage waits for it.

See ``docs/dev/pipeline.md`` for the figures.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
from collections.abc import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

ARENAS = 2
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 64 * 1024 * 1024
GC_THRESHOLDS = (50_000, 20, 100)


def tune_heap_for_streaming() -> bool:
    """Apply the malloc settings above for the rest of the process; call before the worker threads
    start. False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The running program's symbols, libc's among them: find_library("c") would run ldconfig.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no tunable mallopt): keep the defaults
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = (
        (_M_ARENA_MAX, ARENAS),
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    )
    return all(mallopt(option, value) == 1 for option, value in settings)


@contextlib.contextmanager
def gc_tuned_for_streaming() -> Iterator[None]:
    """Within the block, the objects made before it are out of the GC's reach and it collects far
    less often; both are undone on the way out (``pack`` also runs inside test processes)."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
