"""The plain stored-chunk envelope: compression when it helps, id verification, hostile blobs."""

from __future__ import annotations

import os

import pytest
import zstandard

from shoal.chunking.envelope import (
    decode_plain,
    encode_plain,
    is_encrypted,
    parse_header,
    verify_plain,
)
from shoal.chunking.hashing import FileHasher, chunk_id
from shoal.errors import CorruptChunkError, UnsupportedVersionError
from shoal.model.ids import chunk_id_hex


def test_compressible_chunk_is_stored_compressed_and_round_trips() -> None:
    data = b"the same line again\n" * 50_000
    cid = chunk_id(data)
    blob = encode_plain(data)
    assert len(blob) < len(data) // 10
    assert parse_header(blob).compressed
    assert not is_encrypted(blob)
    assert decode_plain(blob, cid) == data


def test_random_chunk_is_stored_raw() -> None:
    data = os.urandom(300_000)
    blob = encode_plain(data)
    assert not parse_header(blob).compressed
    assert blob[2:] == data
    assert decode_plain(blob, chunk_id(data)) == data


def test_large_incompressible_chunk_is_not_compressed_but_one_compressible_part_is_enough() -> None:
    noise = os.urandom(2 * 1024 * 1024)
    blob = encode_plain(noise)
    assert not parse_header(blob).compressed
    assert decode_plain(blob, chunk_id(noise)) == noise

    # Noise around 100 KB of zeros, as in a disk image: a sample falls in them, so it is compressed.
    mixed = noise[:1_300_000] + bytes(100_000) + noise[1_400_000:]
    blob = encode_plain(mixed)
    assert parse_header(blob).compressed
    assert len(blob) < len(mixed) - 90_000
    assert decode_plain(blob, chunk_id(mixed)) == mixed


def test_empty_and_tiny_chunks_round_trip() -> None:
    for data in (b"", b"x"):
        assert decode_plain(encode_plain(data), chunk_id(data)) == data


def test_flipped_byte_is_reported_with_the_chunk_id() -> None:
    data = os.urandom(10_000)
    cid = chunk_id(data)
    blob = bytearray(encode_plain(data))
    blob[5000] ^= 0x01
    with pytest.raises(CorruptChunkError, match=chunk_id_hex(cid)):
        decode_plain(bytes(blob), cid)
    with pytest.raises(CorruptChunkError):
        verify_plain(bytes(blob), cid)


def test_flipped_byte_in_a_compressed_body_is_corrupt() -> None:
    data = b"abc" * 100_000
    cid = chunk_id(data)
    blob = bytearray(encode_plain(data))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(CorruptChunkError):
        decode_plain(bytes(blob), cid)


def test_blob_of_another_chunk_is_refused() -> None:
    a, b = b"a" * 1000, b"b" * 1000
    with pytest.raises(CorruptChunkError):
        verify_plain(encode_plain(a), chunk_id(b))


@pytest.mark.parametrize("cut", [0, 1, 2, 10])
def test_truncated_blobs_are_corrupt(cut: int) -> None:
    data = b"compress me " * 10_000
    blob = encode_plain(data)
    with pytest.raises(CorruptChunkError):
        decode_plain(blob[:cut], chunk_id(data))


def test_header_changes_are_caught() -> None:
    data = b"compress me " * 10_000
    cid = chunk_id(data)
    blob = encode_plain(data)
    no_compress_flag = blob[:1] + b"\x00" + blob[2:]
    with pytest.raises(CorruptChunkError):
        decode_plain(no_compress_flag, cid)
    with pytest.raises(CorruptChunkError, match="flags"):
        decode_plain(blob[:1] + b"\x81" + blob[2:], cid)
    with pytest.raises(CorruptChunkError, match="version 0"):
        decode_plain(b"\x00" + blob[1:], cid)
    with pytest.raises(CorruptChunkError, match="encrypted"):
        decode_plain(blob[:1] + b"\x02" + b"\x00" * 30, cid)


def test_unknown_version_says_upgrade() -> None:
    data = b"x" * 100
    blob = encode_plain(data)
    with pytest.raises(UnsupportedVersionError, match="envelope version 2") as info:
        decode_plain(b"\x02" + blob[1:], chunk_id(data))
    assert info.value.hint is not None
    assert "upgrade" in info.value.hint


def test_zstd_bomb_is_refused_before_inflating() -> None:
    bomb_plain = b"\0" * (64 * 1024 * 1024)
    frame = zstandard.ZstdCompressor(level=3).compress(bomb_plain)
    blob = b"\x01\x01" + frame
    with pytest.raises(CorruptChunkError, match="more than"):
        decode_plain(blob, chunk_id(bomb_plain))


def test_frame_without_declared_size_is_refused() -> None:
    data = b"\0" * 100_000
    frame = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(data)
    with pytest.raises(CorruptChunkError, match="declare its size"):
        decode_plain(b"\x01\x01" + frame, chunk_id(data))


def test_oversized_raw_body_is_refused() -> None:
    data = b"\0" * 2000
    with pytest.raises(CorruptChunkError, match="more than"):
        decode_plain(b"\x01\x00" + data, chunk_id(data), max_size=1000)


def test_keyed_ids_differ_from_unkeyed_and_between_keys() -> None:
    data = b"same content"
    plain = chunk_id(data)
    k1, k2 = chunk_id(data, b"1" * 32), chunk_id(data, b"2" * 32)
    assert len({plain, k1, k2}) == 3
    assert chunk_id(data, b"1" * 32) == k1
    assert len(plain) == 32


def test_file_hasher_equals_one_shot_hash() -> None:
    data = os.urandom(100_000)
    for key in (None, b"k" * 32):
        hasher = FileHasher(key)
        for start in range(0, len(data), 7777):
            hasher.update(data[start : start + 7777])
        assert hasher.digest() == chunk_id(data, key)
