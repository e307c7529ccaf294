"""The per-tenant chunk index and store: which chunks a tenant holds, batch upload, download.

A tenant's blobs live under their own store prefix ``t-<tenant id>``, and the
``chunks`` table says which of them the tenant may reference. Upload writes
the blobs (durably) first and records them after, so a recorded chunk is
always readable; a crash in between leaves only an unrecorded blob that a
later upload records again (and garbage collection may drop).
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from shoal.chunking.envelope import ENCRYPTED_HEADER_BYTES, parse_header, verify_plain
from shoal.errors import ChunkMissingError, CorruptChunkError, FormatError
from shoal.hub.db.sync_schema import chunks
from shoal.hub.sync.commit import present_chunks
from shoal.model.ids import ChunkId, chunk_id_hex, parse_chunk_id
from shoal.net.schemas_sync import (
    CHUNK_BATCH_MAGIC,
    FETCH_DEFERRED,
    FETCH_MISSING,
    MAX_CHUNK_BYTES,
    MAX_FETCH_BYTES,
    MAX_UPLOAD_CHUNKS,
)
from shoal.store.base import BlobStore

_RECORD_HEAD = struct.Struct(">32sI")
AEAD_TAG_BYTES = 16
NONCE_BYTES = 24
# A fetch answer is read and sent a window of blobs at a time: at most this many blobs, closed
# once it holds this many stored bytes. One piece per blob had been ~20k ASGI sends (and a task
# each) for an initial pull of 20k small files, and one thread hop per blob as much again.
_WINDOW_BLOBS = 256
_WINDOW_BYTES = 8 * 1024 * 1024


def tenant_store(blobs: BlobStore, tenant_id: int) -> BlobStore:
    return blobs.scoped(f"t-{int(tenant_id)}")


def parse_batch(body: bytes) -> list[tuple[ChunkId, bytes]]:
    """Split an upload body (``SCB1`` then ``id | u32 length | blob`` records) into (id, blob) pairs."""
    if not body.startswith(CHUNK_BATCH_MAGIC):
        raise FormatError(
            "chunk upload body does not start with the SCB1 magic",
            hint="send application/octet-stream framed as described in docs/protocol.md",
        )
    view = memoryview(body)
    pos = len(CHUNK_BATCH_MAGIC)
    out: list[tuple[ChunkId, bytes]] = []
    seen: set[bytes] = set()
    while pos < len(view):
        if len(view) - pos < _RECORD_HEAD.size:
            raise FormatError(f"chunk upload body is truncated at byte {pos}")
        raw_id, length = _RECORD_HEAD.unpack_from(view, pos)
        pos += _RECORD_HEAD.size
        if length > MAX_CHUNK_BYTES:
            raise FormatError(f"chunk {raw_id.hex()} is {length} bytes; the limit is {MAX_CHUNK_BYTES}")
        if len(view) - pos < length:
            raise FormatError(f"chunk {raw_id.hex()} is truncated: {len(view) - pos} of {length} bytes")
        if raw_id not in seen:
            seen.add(raw_id)
            out.append((ChunkId(raw_id), bytes(view[pos : pos + length])))
        pos += length
        if len(out) > MAX_UPLOAD_CHUNKS:
            raise FormatError(f"a chunk upload holds at most {MAX_UPLOAD_CHUNKS} chunks")
    return out


def encode_batch(blobs: Sequence[tuple[ChunkId, bytes]]) -> bytes:
    parts = [CHUNK_BATCH_MAGIC]
    for cid, blob in blobs:
        parts.append(_RECORD_HEAD.pack(cid, len(blob)))
        parts.append(blob)
    return b"".join(parts)


def verify_blob(cid: ChunkId, blob: bytes) -> None:
    """Plain envelopes must hash to their id; encrypted ones can only be checked for shape."""
    header = parse_header(blob, cid)
    if not header.encrypted:
        verify_plain(blob, cid)
        return
    if len(blob) < ENCRYPTED_HEADER_BYTES + NONCE_BYTES + AEAD_TAG_BYTES:
        raise CorruptChunkError(f"encrypted chunk {chunk_id_hex(cid)} is too short to hold a nonce and tag")


async def missing(conn: AsyncConnection, tenant_id: int, ids: Sequence[str]) -> list[str]:
    """The ids (validated) this tenant has not uploaded, in request order; never looks at other tenants."""
    for text in ids:
        parse_chunk_id(text)
    have = await present_chunks(conn, tenant_id, ids)
    seen: set[str] = set()
    out: list[str] = []
    for text in ids:
        if text not in have and text not in seen:
            seen.add(text)
            out.append(text)
    return out


async def record_chunks(
    conn: AsyncConnection, tenant_id: int, blobs: Sequence[tuple[ChunkId, int]], now: float
) -> None:
    if not blobs:
        return
    ins = postgresql.insert(chunks) if conn.dialect.name == "postgresql" else sqlite.insert(chunks)
    rows = [
        {"tenant_id": tenant_id, "chunk_id": cid.hex(), "size": size, "created_at": now}
        for cid, size in blobs
    ]
    await conn.execute(
        ins.on_conflict_do_nothing(index_elements=[chunks.c.tenant_id, chunks.c.chunk_id]), rows
    )


async def chunk_size(conn: AsyncConnection, tenant_id: int, cid_hex: str) -> int:
    """Stored size of one of the tenant's chunks; absent and foreign chunks are the same 404."""
    parse_chunk_id(cid_hex)
    query = sa.select(chunks.c.size).where(chunks.c.tenant_id == tenant_id, chunks.c.chunk_id == cid_hex)
    row = (await conn.execute(query)).first()
    if row is None:
        raise ChunkMissingError(f"chunk {cid_hex} is not on the hub")
    return int(row[0])


async def chunk_sizes(conn: AsyncConnection, tenant_id: int, ids: Sequence[str]) -> dict[str, int]:
    """Stored sizes of those of ``ids`` this tenant holds; other tenants' chunks are simply absent."""
    wanted = sorted(set(ids))
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        part = wanted[start : start + 500]
        query = sa.select(chunks.c.chunk_id, chunks.c.size).where(
            chunks.c.tenant_id == tenant_id, chunks.c.chunk_id.in_(part)
        )
        found.update((str(cid), int(size)) for cid, size in (await conn.execute(query)).all())
    return found


async def fetch_plan(conn: AsyncConnection, tenant_id: int, ids: Sequence[str]) -> list[tuple[ChunkId, int]]:
    """What a fetch answers, in request order without repeats: each id with its stored size, or
    ``FETCH_MISSING`` (not this tenant's), or ``FETCH_DEFERRED`` (past the answer's byte budget)."""
    order = list(dict.fromkeys(ids))
    parsed = [parse_chunk_id(text) for text in order]
    sizes = await chunk_sizes(conn, tenant_id, order)
    plan: list[tuple[ChunkId, int]] = []
    budget = 0
    for text, cid in zip(order, parsed, strict=True):
        size = sizes.get(text)
        if size is None:
            plan.append((cid, FETCH_MISSING))
        elif budget and budget + size > MAX_FETCH_BYTES:
            plan.append((cid, FETCH_DEFERRED))
        else:
            budget += size
            plan.append((cid, size))
    return plan


async def fetch_stream(blobs: BlobStore, plan: Sequence[tuple[ChunkId, int]]) -> AsyncIterator[bytes]:
    """The fetch answer body: ``SCB1``, then ``id | u32 length | envelope`` per planned id (no
    envelope after a ``FETCH_MISSING``/``FETCH_DEFERRED`` length). A blob the store lost after the
    plan (a racing collection) is answered as missing. Each window of blobs is read by one store
    call and sent as one piece."""
    yield CHUNK_BATCH_MAGIC
    for window in _windows(plan):
        got = await blobs.get_many(cid for cid, size in window if size < FETCH_DEFERRED)
        piece: list[bytes] = []
        for cid, size in window:
            if size >= FETCH_DEFERRED:
                piece.append(_RECORD_HEAD.pack(cid, size))
                continue
            blob = got.get(cid)
            if blob is None:
                piece.append(_RECORD_HEAD.pack(cid, FETCH_MISSING))
            else:
                piece += (_RECORD_HEAD.pack(cid, len(blob)), blob)
        yield b"".join(piece)


def _windows(plan: Sequence[tuple[ChunkId, int]]) -> Iterator[list[tuple[ChunkId, int]]]:
    window: list[tuple[ChunkId, int]] = []
    held = 0
    for cid, size in plan:
        window.append((cid, size))
        held += size if size < FETCH_DEFERRED else 0
        if len(window) >= _WINDOW_BLOBS or held >= _WINDOW_BYTES:
            yield window
            window, held = [], 0
    if window:
        yield window
