"""Padmé padding (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files", PETS 2019).

A sealed payload's length is rounded up so that only O(log log n) bits of the
real length show, at most about 12% overhead. The real length travels inside
the sealed bytes::

    padded = length (u32 BE) | payload | zero bytes up to padme(4 + length)
"""

from __future__ import annotations

import struct

from shoal.errors import CorruptChunkError

_LENGTH = struct.Struct(">I")


def padme(length: int) -> int:
    """The Padmé bucket for ``length``: ``length`` with its low bits rounded up."""
    if length < 2:
        return length
    exponent = length.bit_length() - 1  # floor(log2(length))
    mantissa_bits = exponent.bit_length()  # floor(log2(exponent)) + 1
    mask = (1 << (exponent - mantissa_bits)) - 1
    return (length + mask) & ~mask


def pad(*parts: bytes | memoryview) -> bytes:
    """Prefix the real length of the concatenated ``parts`` and pad with zeros to the Padmé bucket.

    Built in one buffer: this runs once per megabyte-sized chunk, so copies count.
    """
    length = sum(len(part) for part in parts)
    buf = bytearray(padme(_LENGTH.size + length))
    _LENGTH.pack_into(buf, 0, length)
    offset = _LENGTH.size
    for part in parts:
        buf[offset : offset + len(part)] = part
        offset += len(part)
    return bytes(buf)


def unpad(padded: bytes, *, what: str = "sealed payload") -> memoryview:
    """Reverse :func:`pad`, refusing a length that does not fit or a non-canonical padding."""
    if len(padded) < _LENGTH.size:
        raise CorruptChunkError(f"{what} is too short to hold its length")
    (length,) = _LENGTH.unpack_from(padded)
    end = _LENGTH.size + length
    if end > len(padded) or padme(end) != len(padded) or any(padded[end:]):
        raise CorruptChunkError(f"{what} has an invalid padding")
    return memoryview(padded)[_LENGTH.size : end]
