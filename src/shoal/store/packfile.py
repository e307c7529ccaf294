"""The pack file format: many small blobs in one file, with a trailer that lists them.

Layout (``docs/formats.md``, "Pack file"): a 16-byte header (magic ``shoalpak``, version u32,
reserved u32 = 0), the blobs back to back, then one 48-byte entry per blob (id, offset u64,
length u64), then a 16-byte footer (entry count u32, CRC-32 of the entries and the count, magic
``shoalend``). The trailer alone is enough to rebuild the pack index.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from shoal.errors import FormatError
from shoal.model.ids import CHUNK_ID_BYTES, ChunkId

MAGIC = b"shoalpak"
END_MAGIC = b"shoalend"
VERSION = 1
_HEADER = struct.Struct(">8sII")
_ENTRY = struct.Struct(f">{CHUNK_ID_BYTES}sQQ")
_FOOTER = struct.Struct(">II8s")
HEADER_SIZE = _HEADER.size
ENTRY_SIZE = _ENTRY.size
FOOTER_SIZE = _FOOTER.size
PACK_SUFFIX = ".pack"


@dataclass(frozen=True, slots=True)
class PackEntry:
    cid: ChunkId
    offset: int
    length: int


def encode_pack(blobs: Sequence[tuple[ChunkId, bytes]]) -> tuple[list[bytes], list[PackEntry]]:
    """The pack's bytes as a list of buffers (header, blobs, trailer) and where each blob lies."""
    entries: list[PackEntry] = []
    offset = HEADER_SIZE
    for cid, data in blobs:
        entries.append(PackEntry(cid, offset, len(data)))
        offset += len(data)
    table = b"".join(_ENTRY.pack(e.cid, e.offset, e.length) for e in entries)
    count = struct.pack(">I", len(entries))
    footer = _FOOTER.pack(len(entries), zlib.crc32(table + count), END_MAGIC)
    header = _HEADER.pack(MAGIC, VERSION, 0)
    return [header, *(data for _, data in blobs), table, footer], entries


def decode_trailer(header: bytes, tail: bytes, file_size: int) -> list[PackEntry]:
    """The entries of a pack, from its first ``HEADER_SIZE`` bytes and (at least) its trailer.

    ``tail`` holds the last ``len(tail)`` bytes of the file; pass ``trailer_size(...)`` bytes or
    more. Raises ``FormatError`` for anything that is not a whole, consistent pack.
    """
    if len(header) < HEADER_SIZE or len(tail) < FOOTER_SIZE:
        raise FormatError("truncated pack file")
    magic, version, _reserved = _HEADER.unpack(header[:HEADER_SIZE])
    if magic != MAGIC:
        raise FormatError("not a pack file (bad magic)")
    if version != VERSION:
        raise FormatError(f"pack file version {version} is not supported; upgrade shoal")
    count, crc, end = _FOOTER.unpack(tail[-FOOTER_SIZE:])
    if end != END_MAGIC:
        raise FormatError("pack file has no trailer (bad end magic)")
    table_size = count * ENTRY_SIZE
    data_end = file_size - FOOTER_SIZE - table_size
    if data_end < HEADER_SIZE or len(tail) < FOOTER_SIZE + table_size:
        raise FormatError("pack trailer does not fit the file")
    table = tail[len(tail) - FOOTER_SIZE - table_size : len(tail) - FOOTER_SIZE]
    if zlib.crc32(table + struct.pack(">I", count)) != crc:
        raise FormatError("pack trailer checksum mismatch")
    entries = []
    for cid, offset, length in _ENTRY.iter_unpack(table):
        if offset < HEADER_SIZE or offset + length > data_end:
            raise FormatError("pack trailer entry points outside the pack")
        entries.append(PackEntry(ChunkId(cid), offset, length))
    return entries


def footer_count(tail: bytes) -> int:
    """The entry count a footer declares (its last ``FOOTER_SIZE`` bytes), or -1 if it is no footer."""
    if len(tail) < FOOTER_SIZE:
        return -1
    count, _crc, end = _FOOTER.unpack(tail[-FOOTER_SIZE:])
    return int(count) if end == END_MAGIC else -1
