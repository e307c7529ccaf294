from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import FormatError, UnsafePathError, UnsupportedVersionError
from shoal.model import ChunkId, ChunkRef, Manifest, Order, VersionVector, normalize_path, parse_chunk_id
from shoal.model.codec import pack_record


def test_manifest_round_trip() -> None:
    refs = (ChunkRef(ChunkId(b"\x01" * 32), 10), ChunkRef(ChunkId(b"\x02" * 32), 5))
    manifest = Manifest(size=15, chunks=refs, file_hash=b"\x03" * 32)
    assert Manifest.decode(manifest.encode()) == manifest


def test_manifest_refuses_newer_format() -> None:
    data = pack_record("manifest", 99, {"size": 0, "hash": b"", "chunks": []})
    with pytest.raises(UnsupportedVersionError, match="upgrade"):
        Manifest.decode(data)


def test_manifest_refuses_garbage() -> None:
    with pytest.raises(FormatError):
        Manifest.decode(b"\xc1garbage")


def test_manifest_size_must_match_chunks() -> None:
    with pytest.raises(FormatError):
        Manifest(size=3, chunks=(ChunkRef(ChunkId(b"\x01" * 32), 2),), file_hash=b"")


@pytest.mark.parametrize(
    "bad", ["", "/etc/passwd", "a/../b", "..", "a//b", "a/./b", "a\x00b", "x" * 256, "a/" * 2100]
)
def test_unsafe_paths_refused(bad: str) -> None:
    with pytest.raises(UnsafePathError):
        normalize_path(bad)


def test_paths_are_nfc() -> None:
    assert normalize_path("cafe\u0301/x") == "caf\u00e9/x"
    assert normalize_path("with space/new\nline") == "with space/new\nline"


@pytest.mark.parametrize("bad", ["", "ab", "A" * 64, "g" * 64, "../" + "a" * 61, "a" * 65])
def test_chunk_id_parse_refuses(bad: str) -> None:
    with pytest.raises(FormatError):
        parse_chunk_id(bad)


vectors = st.dictionaries(st.sampled_from("abcd"), st.integers(0, 5)).map(VersionVector)


@given(vectors, vectors)
def test_vv_compare_is_antisymmetric(a: VersionVector, b: VersionVector) -> None:
    flipped = {Order.BEFORE: Order.AFTER, Order.AFTER: Order.BEFORE}
    assert b.compare(a) == flipped.get(a.compare(b), a.compare(b))


@given(vectors, vectors)
def test_vv_merge_dominates(a: VersionVector, b: VersionVector) -> None:
    merged = a.merge(b)
    assert merged.compare(a) in (Order.AFTER, Order.EQUAL)
    assert merged.compare(b) in (Order.AFTER, Order.EQUAL)
    assert merged.bump("z").compare(merged) == Order.AFTER
