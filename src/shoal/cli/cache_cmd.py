"""``shoal cache status|clear|shrink``: the device's chunk cache (shared by every arena and mount)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import typer

from shoal.cli.home import DeviceHome
from shoal.errors import UsageError
from shoal.state.cache import CacheIndex, referenced_chunks
from shoal.state.db import DeviceDB
from shoal.state.index import hydrated_bytes
from shoal.store.cache import ChunkCache, Priority

cache_app = typer.Typer(
    help="Show, clear or shrink the chunk cache of on-demand files.", no_args_is_help=True
)
HomeOpt = typer.Option(
    None, "--home", envvar="SHOAL_HOME", help="Device home (default: $XDG_DATA_HOME/shoal)."
)
DEFAULT_CACHE_SIZE = "10G"
CacheSizeOpt = typer.Option(
    DEFAULT_CACHE_SIZE,
    "--cache-size",
    envvar="SHOAL_CACHE_SIZE",
    help="Limit of the cache plus pinned content, e.g. 500M, 10G.",
)
CACHE_DIR = "cache"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``10G``, ``500M``, ``1.5G`` or a byte count."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text.upper())
    if match is None:
        raise UsageError(f"invalid size {text!r}", hint="use a number with K, M, G or T, e.g. 10G")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def open_cache(home: Path, limit: int) -> tuple[ChunkCache, CacheIndex]:
    """The device's cache (``HOME/cache``), its priorities refreshed from the index."""
    from shoal.daemon.engine_link import open_device_db

    db = open_device_db(home)
    meta = CacheIndex(db)
    cache = ChunkCache.open(home / CACHE_DIR, meta, limit, reserved=_folder_share(db))
    cache.reclassify(referenced_chunks(db))
    return cache, meta


def _folder_share(db: DeviceDB, every: float = 30.0) -> Callable[[], int]:
    """Bytes of pinned and cached files in arena folders (they share the cache's limit), summed
    again at most every ``every`` seconds: the cache asks on every write."""
    last = [-every, 0]

    def reserved() -> int:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0], last[1] = now, hydrated_bytes(db)
        return int(last[1])

    return reserved


_NAMES = {
    Priority.PINNED: "pinned",
    Priority.UNPINNED: "unpinned files",
    Priority.UNREFERENCED: "unreferenced",
}


@cache_app.command("status")
def status(home: Path | None = HomeOpt, cache_size: str = CacheSizeOpt) -> None:
    """How much the cache holds, by priority, against its limit."""
    cache, meta = open_cache(DeviceHome.resolve(home).root, parse_size(cache_size))
    try:
        st = cache.status()
        typer.echo(f"cache\t{st.root}")
        typer.echo(f"used\t{st.used}\t{human(st.used)}")
        typer.echo(f"limit\t{st.limit}\t{human(st.limit)}")
        typer.echo(
            f"folder files\t{st.reserved}\t{human(st.reserved)} (pinned and cached files in arena folders)"
        )
        for priority in (Priority.PINNED, Priority.UNPINNED, Priority.UNREFERENCED):
            typer.echo(f"{_NAMES[priority]}\t{st.bytes[priority]}\t{st.chunks[priority]} chunks")
        if st.over_limit:
            typer.echo(
                "over the limit: pinned content alone exceeds it; unpin something or raise --cache-size"
            )
    finally:
        meta.db.close()


@cache_app.command("clear")
def clear(home: Path | None = HomeOpt, cache_size: str = CacheSizeOpt) -> None:
    """Drop every cached chunk that is not pinned (they are fetched again when read)."""
    cache, meta = open_cache(DeviceHome.resolve(home).root, parse_size(cache_size))
    try:
        freed = cache.clear()
        typer.echo(f"freed {human(freed)}; {human(cache.used)} of pinned content kept")
    finally:
        meta.db.close()


@cache_app.command("shrink")
def shrink(
    to: str = typer.Option(None, "--to", help="Shrink to this size (default: the limit)."),
    home: Path | None = HomeOpt,
    cache_size: str = CacheSizeOpt,
) -> None:
    """Evict least recently used chunks (unreferenced first, never pinned) down to a size."""
    cache, meta = open_cache(DeviceHome.resolve(home).root, parse_size(cache_size))
    try:
        freed = cache.shrink(parse_size(to) if to else None)
        typer.echo(f"freed {human(freed)}; the cache holds {human(cache.used)}")
    finally:
        meta.db.close()


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
