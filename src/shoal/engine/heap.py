"""Tune glibc's malloc for streaming megabyte-sized buffers through worker threads.

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
See ``docs/dev/pipeline.md`` for the figures.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

ARENAS = 2
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 64 * 1024 * 1024


def tune_heap_for_streaming() -> bool:
    """Apply the settings above; call before the worker threads start. False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
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
