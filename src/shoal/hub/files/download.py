"""Streaming a file version's bytes, whole or one byte range, a chunk at a time.

Only the chunks the range touches are read; while one chunk is sent the next
is fetched and decoded, so memory stays at a few chunks whatever the size.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from shoal.chunking.envelope import decode_plain
from shoal.hub.errors import RangeNotSatisfiableError
from shoal.model.ids import ChunkId
from shoal.model.manifest import Manifest
from shoal.store.base import BlobStore

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One ``bytes=`` range, or None for the whole file (also for forms we do not serve, like lists)."""
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None  # RFC 9110: a server may ignore a Range it does not support
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiableError(f"the range {header!r} selects no bytes", size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiableError(f"the range {header!r} starts past the end of the file", size)
    return ByteRange(start, end)


async def _plain(store: BlobStore, cid: ChunkId) -> bytes:
    blob = await store.get(cid)
    return await asyncio.to_thread(decode_plain, blob, cid)


async def stream_bytes(
    store: BlobStore, manifest: Manifest, wanted: ByteRange | None
) -> AsyncIterator[bytes]:
    """Yield the bytes of ``wanted`` (the whole file when None), verified chunk by chunk."""
    if manifest.size == 0:
        return
    span = wanted or ByteRange(0, manifest.size - 1)
    pieces: list[tuple[ChunkId, int, int]] = []  # (chunk, from, to) within the chunk
    offset = 0
    for ref in manifest.chunks:
        lo, hi = offset, offset + ref.length - 1
        offset += ref.length
        if hi < span.start or lo > span.end:
            continue
        pieces.append((ref.id, max(span.start, lo) - lo, min(span.end, hi) - lo + 1))
    ahead: asyncio.Task[bytes] | None = None
    try:
        for index, (cid, a, b) in enumerate(pieces):
            current = ahead if ahead is not None else asyncio.ensure_future(_plain(store, cid))
            ahead = (
                asyncio.ensure_future(_plain(store, pieces[index + 1][0]))
                if index + 1 < len(pieces)
                else None
            )
            data = await current
            yield data[a:b] if (a, b) != (0, len(data)) else data
    finally:
        if ahead is not None and not ahead.done():
            ahead.cancel()
