"""The stored-chunk envelope: every chunk blob in every store has this shape.

Byte layout (version 1; ``docs/formats.md`` is the reference)::

    plain:      version=1 | flags | body
    encrypted:  version=1 | flags | epoch (u32 BE) | nonce (24) | ciphertext+tag

``flags`` bit 0 = body is one zstd frame, bit 1 = encrypted; other bits are
zero. In an encrypted envelope the outer compressed bit is always 0: the
sealed plaintext is ``padded(inner)`` where ``inner = inner_flags | body``,
so not even compressibility shows outside. This module owns the layout and
the plain path; sealing lives in ``shoal.crypto`` and ``shoal.store.sealed``.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import zstandard

from shoal.chunking.hashing import chunk_id
from shoal.errors import CorruptChunkError, UnsupportedVersionError
from shoal.model.ids import ChunkId, chunk_id_hex
from shoal.settings import ChunkingSettings

ENVELOPE_VERSION = 1
FLAG_COMPRESSED = 0x01
FLAG_ENCRYPTED = 0x02
_KNOWN_FLAGS = FLAG_COMPRESSED | FLAG_ENCRYPTED
PLAIN_HEADER_BYTES = 2
ENCRYPTED_HEADER_BYTES = 6
MAX_CHUNK_BYTES = ChunkingSettings().max_size
DEFAULT_ZSTD_LEVEL = ChunkingSettings().zstd_level


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    version: int
    compressed: bool
    encrypted: bool
    epoch: int  # key epoch of an encrypted envelope; 0 for plain ones

    def encode(self) -> bytes:
        flags = (FLAG_COMPRESSED if self.compressed else 0) | (FLAG_ENCRYPTED if self.encrypted else 0)
        head = bytes([self.version, flags])
        return head + struct.pack(">I", self.epoch) if self.encrypted else head

    @property
    def size(self) -> int:
        return ENCRYPTED_HEADER_BYTES if self.encrypted else PLAIN_HEADER_BYTES


def encrypted_header(epoch: int) -> EnvelopeHeader:
    return EnvelopeHeader(ENVELOPE_VERSION, compressed=False, encrypted=True, epoch=epoch)


def parse_header(
    blob: bytes | memoryview, cid: ChunkId | None = None, *, what: str | None = None
) -> EnvelopeHeader:
    """Parse and check the header; refuses unknown versions and reserved flag bits.

    ``cid`` or ``what`` names the object in error messages.
    """
    what = what or _what(cid)
    if len(blob) < PLAIN_HEADER_BYTES:
        raise CorruptChunkError(f"{what} is truncated: {len(blob)} bytes, no envelope header")
    version, flags = blob[0], blob[1]
    if version == 0:
        raise CorruptChunkError(f"{what} has an invalid envelope version 0")
    if version > ENVELOPE_VERSION:
        raise UnsupportedVersionError(
            f"{what} uses envelope version {version}; this shoal reads up to {ENVELOPE_VERSION}",
            hint="upgrade shoal on this device",
        )
    if flags & ~_KNOWN_FLAGS:
        raise CorruptChunkError(f"{what} has unknown envelope flags {flags:#04x}")
    encrypted = bool(flags & FLAG_ENCRYPTED)
    compressed = bool(flags & FLAG_COMPRESSED)
    if not encrypted:
        return EnvelopeHeader(version, compressed, encrypted=False, epoch=0)
    if compressed:
        raise CorruptChunkError(f"{what} is encrypted but claims outer compression")
    if len(blob) < ENCRYPTED_HEADER_BYTES:
        raise CorruptChunkError(f"{what} is truncated inside its envelope header")
    (epoch,) = struct.unpack(">I", bytes(blob[PLAIN_HEADER_BYTES:ENCRYPTED_HEADER_BYTES]))
    return EnvelopeHeader(version, compressed=False, encrypted=True, epoch=epoch)


def is_encrypted(blob: bytes | memoryview) -> bool:
    return parse_header(blob).encrypted


def compress_if_smaller(
    data: bytes | memoryview, level: int = DEFAULT_ZSTD_LEVEL
) -> tuple[bytes | memoryview, bool]:
    """zstd ``data`` when that shrinks it; returns (body, compressed), the body uncopied if not.

    A large chunk none of whose samples shrink (media, archives, encrypted files) is not
    compressed at all: trying cost 0.3-0.7 ms per MiB of random bytes, the samples 0.09.
    """
    if len(data) == 0:
        return b"", False
    compressor = _compressor(level)
    if len(data) >= _SAMPLE_FROM and not _samples_shrink(compressor, data):
        return data, False
    packed: bytes = compressor.compress(data)
    if len(packed) < len(data):
        return packed, True
    return data, False


_SAMPLE_FROM = 128 * 1024  # smaller chunks are compressed outright
_SAMPLE_BYTES = 8 * 1024
_SAMPLE_EVERY = 64 * 1024  # so any compressible stretch of 72 KiB or more is seen
_SAMPLE_SHRINK = 0.97  # a sample "shrinks" when zstd makes it at most this share of its size


def _samples_shrink(compressor: zstandard.ZstdCompressor, data: bytes | memoryview) -> bool:
    view = memoryview(data)
    for start in range(0, len(view), _SAMPLE_EVERY):
        sample = view[start : start + _SAMPLE_BYTES]
        if len(compressor.compress(sample)) <= _SAMPLE_SHRINK * len(sample):
            return True
    return False


class _Compressors(threading.local):
    def __init__(self) -> None:
        self.by_level: dict[int, zstandard.ZstdCompressor] = {}
        self.decompressor: zstandard.ZstdDecompressor | None = None


_compressors = _Compressors()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """This thread's compressor for ``level``: ZstdCompressor is not thread-safe, and a fresh one per
    call costs ~30 µs (its context is allocated and faulted in again), as much as compressing 10 KB."""
    found = _compressors.by_level.get(level)
    if found is None:
        found = _compressors.by_level[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return found


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor: a fresh one per chunk cost ~9 µs, a reused one ~1 µs (10 KB chunks)."""
    found = _compressors.decompressor
    if found is None:
        found = _compressors.decompressor = zstandard.ZstdDecompressor()
    return found


def decompress_bounded(body: bytes | memoryview, max_size: int, what: str) -> bytes:
    """Decompress one zstd frame that must declare its size, refusing more than ``max_size`` bytes."""
    try:
        declared = zstandard.get_frame_parameters(body).content_size
    except zstandard.ZstdError as exc:
        raise CorruptChunkError(f"{what} has a damaged compressed body: {exc}") from exc
    if declared in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
        raise CorruptChunkError(f"{what} has a compressed body that does not declare its size")
    if declared > max_size:
        raise CorruptChunkError(
            f"{what} would decompress to {declared} bytes, more than the {max_size} a chunk may hold"
        )
    try:
        # With a declared size the output buffer is exactly that big: a lying frame fails, never grows.
        out: bytes = _decompressor().decompress(body, max_output_size=max_size)
    except zstandard.ZstdError as exc:
        raise CorruptChunkError(f"{what} has a damaged compressed body: {exc}") from exc
    if len(out) != declared:
        raise CorruptChunkError(f"{what} decompressed to {len(out)} bytes instead of {declared}")
    return out


def encode_plain(data: bytes | memoryview, level: int = DEFAULT_ZSTD_LEVEL) -> bytes:
    """The stored form of a chunk in a plain arena."""
    body, compressed = compress_if_smaller(data, level)
    header = EnvelopeHeader(ENVELOPE_VERSION, compressed, encrypted=False, epoch=0)
    return header.encode() + body


def decode_plain(blob: bytes | memoryview, expected_id: ChunkId, *, max_size: int = MAX_CHUNK_BYTES) -> bytes:
    """Plaintext of a plain envelope, verified against its id (unkeyed BLAKE3)."""
    plaintext = _plain_body(blob, expected_id, max_size)
    if chunk_id(plaintext) != expected_id:
        raise CorruptChunkError(
            f"chunk {chunk_id_hex(expected_id)} does not match its id: the stored bytes are damaged",
            hint="restore the chunk from another device or store",
        )
    return plaintext


def verify_plain(blob: bytes | memoryview, cid: ChunkId, *, max_size: int = MAX_CHUNK_BYTES) -> None:
    """Check an uploaded plain chunk without keeping its plaintext (the hub calls this)."""
    decode_plain(blob, cid, max_size=max_size)


def encode_inner(
    data: bytes | memoryview, level: int = DEFAULT_ZSTD_LEVEL
) -> tuple[bytes, bytes | memoryview]:
    """What an encrypted envelope seals (before padding): ``inner_flags | body``, as its two parts."""
    body, compressed = compress_if_smaller(data, level)
    return bytes([FLAG_COMPRESSED if compressed else 0]), body


def decode_inner(inner: bytes | memoryview, what: str, *, max_size: int = MAX_CHUNK_BYTES) -> bytes:
    """Reverse :func:`encode_inner` (after the tag was checked and padding removed).

    ``what`` names the object in errors, e.g. ``"chunk 3fa1..."``.
    """
    if len(inner) < 1 or inner[0] & ~FLAG_COMPRESSED:
        raise CorruptChunkError(f"{what} has a malformed sealed payload")
    body = memoryview(inner)[1:]
    if inner[0] & FLAG_COMPRESSED:
        return decompress_bounded(body, max_size, what)
    if len(body) > max_size:
        raise CorruptChunkError(f"{what} holds {len(body)} bytes, more than the {max_size} it may hold")
    return bytes(body)


def _plain_body(blob: bytes | memoryview, cid: ChunkId, max_size: int) -> bytes:
    header = parse_header(blob, cid)
    what = _what(cid)
    if header.encrypted:
        raise CorruptChunkError(f"{what} is encrypted where a plain chunk was expected")
    body = memoryview(blob)[PLAIN_HEADER_BYTES:]
    if header.compressed:
        return decompress_bounded(body, max_size, what)
    if len(body) > max_size:
        raise CorruptChunkError(f"{what} holds {len(body)} bytes, more than a chunk may hold")
    return bytes(body)


def _what(cid: ChunkId | None) -> str:
    return f"chunk {chunk_id_hex(cid)}" if cid is not None else "stored chunk"
