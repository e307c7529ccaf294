"""Byte-compile shoal before a benchmark times it, as an installed package is.

`pip install` compiles a wheel's modules when it installs them, but an editable
install (`./dev setup`) leaves that to the first import, and with
PYTHONDONTWRITEBYTECODE set (as on some CI and container images) never: every
`shoal` process then compiles its ~150 modules from source, ~0.04 s of CPU
warm and ~0.09 s from an emptied page cache per command and per spawned
worker. The benchmarks compare against tools installed as binaries, so they
measure shoal installed too.
"""

from __future__ import annotations

import compileall
from pathlib import Path

import shoal


def compile_shoal() -> None:
    package = Path(shoal.__file__).resolve().parent
    if not compileall.compile_dir(package, quiet=1, workers=0):
        raise SystemExit(f"could not byte-compile {package}")
