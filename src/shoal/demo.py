"""The main job of `./dev run`: pack a sample folder into a local chunk store and restore it.

Everything lives under ``.shoal-demo/`` in the current directory; running it
again packs the same folder once more and shows that nothing new is stored.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from shoal.cli.app import main as shoal

DEMO = Path(".shoal-demo")


def _sample_folder(root: Path) -> None:
    (root / "notes").mkdir(parents=True, exist_ok=True)
    (root / "empty folder").mkdir(exist_ok=True)
    (root / "notes" / "hello.txt").write_text("Hello from shoal.\n")
    (root / "notes" / "repeated.txt").write_text("the same line again\n" * 20_000)
    (root / "notes" / "copy of repeated.txt").write_text("the same line again\n" * 20_000)
    (root / "photo.raw").write_bytes(os.urandom(3 * 1024 * 1024))
    if not (root / "latest").is_symlink():
        (root / "latest").symlink_to("notes/hello.txt")


def _run(*argv: str) -> None:
    print(f"\n$ shoal {' '.join(argv)}", flush=True)
    try:
        shoal(list(argv))
    except SystemExit as exc:
        if exc.code:
            raise


def _tree(root: Path) -> dict[str, bytes | str]:
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = os.readlink(path)
        elif path.is_file():
            found[rel] = path.read_bytes()
        else:
            found[rel] = "dir"
    return found


def main() -> None:
    sample, store, image, restored = DEMO / "sample", DEMO / "chunks", DEMO / "sample.flist", DEMO / "restored"
    if not sample.exists():
        _sample_folder(sample)
    shutil.rmtree(restored, ignore_errors=True)
    _run("pack", str(sample), "-o", str(image), "--store", f"file://{store.absolute()}")
    _run("flist", "inspect", str(image))
    _run("unpack", str(image), str(restored), "--store", f"file://{store.absolute()}")
    _run("store", "check", str(store), "--image", str(image))
    same = _tree(sample) == _tree(restored)
    print(f"\nrestored copy identical to the sample: {'yes' if same else 'NO'}")
    print(
        "\nNext: run `./dev run` again (nothing new is stored), pack a folder of your own with\n"
        f"  .venv/bin/shoal pack ~/Documents -o docs.flist --store file://{store.absolute()}\n"
        "or see `.venv/bin/shoal --help`."
    )
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
