"""Deterministic benchmark corpora, the same bytes on every machine for a given seed.

``mixed`` (about 1 GB): source-like small files, duplicates of some of them, a
VM-image-like file (zero runs, repeated blocks, text, random data) and
incompressible media-like files. ``small`` (about 200 MB): 20k source-like
files in nested folders.
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

MIB = 1024 * 1024

_WORDS = (
    "def class return import from self None True False async await yield lambda for while if else "
    "elif try except finally with as raise assert pass break continue global nonlocal in is not and or "
    "value result items count index buffer chunk store manifest arena device cursor path error config"
).split()


def _text_pool(rng: random.Random, size: int) -> bytes:
    lines = []
    total = 0
    while total < size:
        indent = "    " * rng.randrange(4)
        line = indent + " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(3, 12))) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def _source_file(rng: random.Random, pool: bytes, size: int) -> bytes:
    start = rng.randrange(0, len(pool) - size)
    body = bytearray(pool[start : start + size])
    for _ in range(max(1, size // 2048)):  # unique edits so files are not all dedupable
        pos = rng.randrange(size)
        body[pos : pos + 8] = rng.randbytes(4).hex().encode()[:8]
    return bytes(body[:size])


def _vm_image(rng: random.Random, pool: bytes, path: Path, size: int) -> None:
    block = 4 * MIB
    repeated = rng.randbytes(block)
    with path.open("wb") as out:
        written = 0
        while written < size:
            kind = rng.random()
            if kind < 0.25:
                piece = bytes(block)
            elif kind < 0.45:
                piece = repeated
            elif kind < 0.75:
                piece = _source_file(rng, pool, block)
            else:
                piece = rng.randbytes(block)
            piece = piece[: size - written]
            out.write(piece)
            written += len(piece)


def make_mixed(root: Path, seed: int = 1, scale: float = 1.0) -> None:
    rng = random.Random(seed)
    pool = _text_pool(rng, 8 * MIB)
    src = root / "src"
    sources: list[Path] = []
    for i in range(int(5000 * scale)):
        path = src / f"pkg{i % 50:02d}" / f"mod_{i:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_source_file(rng, pool, rng.randrange(2_000, 40_000)))
        sources.append(path)
    dup = root / "dup"
    dup.mkdir()
    for i, path in enumerate(rng.sample(sources, len(sources) // 4)):
        (dup / f"copy_{i:05d}_{path.name}").write_bytes(path.read_bytes())
    big = root / "disk.img"
    _vm_image(rng, pool, big, int(512 * MIB * scale))
    media = root / "media"
    media.mkdir()
    for i in range(int(12 * scale) or 1):
        (media / f"clip_{i:02d}.mp4").write_bytes(rng.randbytes(25 * MIB))


def make_small(root: Path, seed: int = 2, count: int = 20_000) -> None:
    rng = random.Random(seed)
    pool = _text_pool(rng, 8 * MIB)
    for i in range(count):
        path = root / f"d{i % 100:02d}" / f"e{(i // 100) % 20:02d}" / f"file_{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_source_file(rng, pool, rng.randrange(1_000, 19_000)))


def edit_mixed(root: Path, seed: int = 3) -> None:
    """Small edits: 4 KiB inserted in the middle of the big file, ten source files touched."""
    rng = random.Random(seed)
    big = root / "disk.img"
    middle = big.stat().st_size // 2
    # Streamed through a new file: holding the tail in memory would grow this process, and the
    # benchmark's children inherit its peak RSS into their own ru_maxrss.
    edited = big.with_name(big.name + ".edit")
    with big.open("rb") as source, edited.open("wb") as out:
        left = middle
        while left and (piece := source.read(min(left, 4 * MIB))):
            out.write(piece)
            left -= len(piece)
        out.write(rng.randbytes(4096))
        shutil.copyfileobj(source, out, 4 * MIB)
    edited.replace(big)
    sources = sorted((root / "src").rglob("*.py"))
    for path in rng.sample(sources, 10):
        with path.open("ab") as handle:
            handle.write(b"\n# edited\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["mixed", "small"])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--scale", type=float, default=1.0, help="mixed corpus size factor (1.0 is ~1 GB)")
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=False)
    if args.kind == "mixed":
        make_mixed(args.dest, scale=args.scale)
    else:
        make_small(args.dest)


if __name__ == "__main__":
    main()
