"""Sealing in one buffer gives exactly the envelope the reference construction gives."""

from __future__ import annotations

import os

import pytest

from shoal.chunking.envelope import encode_inner, encrypted_header
from shoal.crypto.aead import (
    NONCE_BYTES,
    TAG_BYTES,
    ObjectType,
    associated_data,
    open_aead,
    seal_aead,
    seal_aead_in_place,
)
from shoal.crypto.arena_keys import ArenaKeys
from shoal.crypto.padding import pad
from shoal.errors import CorruptChunkError, FormatError
from shoal.store.sealed import EncryptedSealer

KEYS = ArenaKeys.derive(b"\x33" * 32, epoch=7)
ARENA = b"arena-in-place"
FIXED = bytes(range(NONCE_BYTES))


def _fixed(n: int) -> bytes:
    return FIXED[:n]


def _reference_chunk(data: bytes) -> bytes:
    """The envelope as built before sealing in place: pad, seal_aead, prefix the header."""
    sealer = EncryptedSealer(KEYS, ARENA)
    cid = sealer.chunk_id(data)
    header = encrypted_header(KEYS.epoch).encode()
    ad = associated_data(header=header, context=ARENA, object_type=ObjectType.CHUNK, object_id=cid)
    return seal_aead(KEYS.content_key, pad(*encode_inner(data)), ad, prefix=header, random=_fixed)


@pytest.mark.parametrize(
    "data",
    [
        b"x",
        b"short text " * 3,
        os.urandom(63),
        os.urandom(64 * 1024 + 13),  # incompressible: stored as is
        b"compressible words " * 60_000,  # > 1 MiB of text
        os.urandom(4 * 1024 * 1024),  # a maximum-size chunk, many cipher blocks
    ],
    ids=["1B", "text", "63B", "64KiB-random", "1MiB-text", "4MiB-random"],
)
def test_sealed_chunk_is_byte_identical_to_the_reference(data: bytes) -> None:
    sealer = EncryptedSealer(KEYS, ARENA, random=_fixed)
    cid = sealer.chunk_id(data)
    blob = sealer.seal(cid, data)
    assert blob == _reference_chunk(data)
    assert EncryptedSealer(KEYS, ARENA).open(cid, blob) == data


def test_records_still_open_and_bind_their_type() -> None:
    sealer = EncryptedSealer(KEYS, ARENA)
    blob = sealer.seal_record(ObjectType.MANIFEST, b"id-1", b"manifest bytes" * 100)
    assert sealer.open_record(ObjectType.MANIFEST, b"id-1", blob) == b"manifest bytes" * 100
    with pytest.raises(CorruptChunkError):
        sealer.open_record(ObjectType.RECORD, b"id-1", blob)


def test_in_place_layout_opens_with_open_aead() -> None:
    key = os.urandom(32)
    message = os.urandom(100_000)
    buf = bytearray(3 + NONCE_BYTES + len(message) + TAG_BYTES)
    buf[:3] = b"pfx"
    buf[3 + NONCE_BYTES : 3 + NONCE_BYTES + len(message)] = message
    seal_aead_in_place(key, buf, 3, b"ad")
    assert bytes(buf[3 + NONCE_BYTES : 3 + NONCE_BYTES + len(message)]) != message
    assert open_aead(key, memoryview(buf)[3:], b"ad", what="test") == message
    with pytest.raises(CorruptChunkError):
        open_aead(key, memoryview(buf)[3:], b"other ad", what="test")


def test_in_place_refuses_a_buffer_without_room_for_nonce_and_tag() -> None:
    with pytest.raises(FormatError):
        seal_aead_in_place(os.urandom(32), bytearray(NONCE_BYTES + TAG_BYTES - 1), 0, b"")
    with pytest.raises(FormatError):
        seal_aead_in_place(b"short key", bytearray(64), 0, b"")
