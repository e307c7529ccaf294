"""Chunk ids: 32 raw bytes in memory, 64 lowercase hex characters on the wire and on disk."""

from __future__ import annotations

from typing import NewType

from shoal.errors import FormatError

CHUNK_ID_BYTES = 32
CHUNK_ID_HEX_LEN = 2 * CHUNK_ID_BYTES
_HEX_DIGITS = frozenset("0123456789abcdef")

ChunkId = NewType("ChunkId", bytes)


def chunk_id(raw: bytes) -> ChunkId:
    """Wrap raw digest bytes, checking the length."""
    if len(raw) != CHUNK_ID_BYTES:
        raise FormatError(f"a chunk id is {CHUNK_ID_BYTES} bytes, got {len(raw)}")
    return ChunkId(bytes(raw))


def chunk_id_hex(cid: ChunkId) -> str:
    return cid.hex()


def is_chunk_id_hex(text: str) -> bool:
    """True for exactly 64 lowercase hex digits: the only form allowed near a disk path or key."""
    return len(text) == CHUNK_ID_HEX_LEN and _HEX_DIGITS.issuperset(text)


def parse_chunk_id(text: str) -> ChunkId:
    """Parse a hex chunk id, refusing anything that is not exactly 64 lowercase hex digits."""
    if not is_chunk_id_hex(text):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise FormatError(
            f"invalid chunk id {shown!r}",
            hint=f"a chunk id is {CHUNK_ID_HEX_LEN} lowercase hexadecimal digits",
        )
    return ChunkId(bytes.fromhex(text))
