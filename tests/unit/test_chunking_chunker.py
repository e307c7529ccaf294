"""FastCDC cut points: sizes, determinism, locality of edits, streaming equals buffers, keyed seeds."""

from __future__ import annotations

import io
import random
from dataclasses import replace

import pytest

from shoal.chunking.chunker import BlockChunker, iter_chunks, iter_chunks_buf
from shoal.errors import ConfigError
from shoal.settings import KIB, MIB, ChunkingSettings

SETTINGS = ChunkingSettings()


def _random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture(scope="module")
def big() -> bytes:
    return _random_bytes(32 * MIB, seed=1)


def test_sizes_within_bounds_and_cover_the_input(big: bytes) -> None:
    chunks = list(iter_chunks(io.BytesIO(big), SETTINGS))
    assert b"".join(chunks) == big
    for chunk in chunks[:-1]:
        assert SETTINGS.min_size <= len(chunk) <= SETTINGS.max_size
    assert 0 < len(chunks[-1]) <= SETTINGS.max_size
    assert 8 <= len(chunks) <= 128  # average about 1 MiB (plus the minimum)


def test_chunking_is_deterministic(big: bytes) -> None:
    first = [len(c) for c in iter_chunks(io.BytesIO(big), SETTINGS)]
    second = [len(c) for c in iter_chunks(io.BytesIO(big), SETTINGS)]
    assert first == second


def test_streaming_equals_buffer_chunking(big: bytes) -> None:
    streamed = list(iter_chunks(io.BytesIO(big), SETTINGS))
    buffered = [bytes(view) for view in iter_chunks_buf(big, SETTINGS)]
    assert streamed == buffered


def test_streamed_chunks_stay_valid_after_the_next_one(big: bytes) -> None:
    chunks = list(iter_chunks(io.BytesIO(big[: 12 * MIB]), SETTINGS))
    assert b"".join(chunks) == big[: 12 * MIB]
    assert len({bytes(c[:64]) for c in chunks}) == len(chunks)


def test_insertion_in_the_middle_changes_at_most_three_chunks(big: bytes) -> None:
    middle = len(big) // 2
    edited = big[:middle] + _random_bytes(4 * KIB, seed=2) + big[middle:]
    before = set(iter_chunks(io.BytesIO(big), SETTINGS))
    after = list(iter_chunks(io.BytesIO(edited), SETTINGS))
    changed = [c for c in after if c not in before]
    assert 1 <= len(changed) <= 3
    assert b"".join(after) == edited


def test_zero_byte_input_yields_no_chunk() -> None:
    assert list(iter_chunks(io.BytesIO(b""), SETTINGS)) == []
    assert list(iter_chunks_buf(b"", SETTINGS)) == []


@pytest.mark.parametrize("size", [1, 4096, 256 * KIB - 1, 256 * KIB])
def test_input_up_to_the_minimum_is_one_chunk(size: int) -> None:
    data = _random_bytes(size, seed=3)
    assert list(iter_chunks(io.BytesIO(data), SETTINGS)) == [data]


def test_long_run_of_zeros_is_cut_at_the_maximum() -> None:
    data = bytes(10 * MIB)
    sizes = [len(c) for c in iter_chunks(io.BytesIO(data), SETTINGS)]
    assert sizes == [4 * MIB, 4 * MIB, 2 * MIB]


def test_a_seed_changes_cut_points(big: bytes) -> None:
    sample = big[: 16 * MIB]
    default = [len(c) for c in iter_chunks_buf(sample, SETTINGS)]
    seeded = [len(c) for c in iter_chunks_buf(sample, replace(SETTINGS, seed=0x5EED_1234_ABCD))]
    other = [len(c) for c in iter_chunks_buf(sample, replace(SETTINGS, seed=2**63 - 1))]
    assert default != seeded
    assert seeded != other
    assert sum(seeded) == len(sample)


def test_invalid_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="seed"):
        list(iter_chunks_buf(b"x", replace(SETTINGS, seed=-1)))
    with pytest.raises(ConfigError, match="seed"):
        list(iter_chunks_buf(b"x", replace(SETTINGS, seed=2**63)))
    with pytest.raises(ConfigError, match="chunk sizes"):
        list(iter_chunks_buf(b"x", replace(SETTINGS, max_size=64 * MIB)))


class _Trickle(io.RawIOBase):
    """A stream that hands out at most ``step`` bytes per read, as a pipe or a slow disk may."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._step, len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


@pytest.mark.parametrize("block", [1, SETTINGS.max_size, 5 * MIB + 7, 64 * MIB])
@pytest.mark.parametrize("step", [None, 777_777])
def test_block_chunker_cuts_where_streaming_cuts(big: bytes, block: int, step: int | None) -> None:
    data = big[: 20 * MIB] + b"text that compresses\n" * 200_000 + big[-3 * MIB :]
    expected = list(iter_chunks(io.BytesIO(data), SETTINGS))
    chunker = BlockChunker(io.BytesIO(data) if step is None else _Trickle(data, step), SETTINGS)
    got: list[bytes] = []
    while views := chunker.next_block(block):
        got.extend(bytes(view) for view in views)
    assert got == expected
    assert chunker.next_block(block) == []


def test_block_chunker_views_outlive_the_next_block(big: bytes) -> None:
    chunker = BlockChunker(io.BytesIO(big[: 12 * MIB]), SETTINGS)
    first = chunker.next_block(6 * MIB)
    saved = [bytes(view) for view in first]
    rest = [view for views in iter(lambda: chunker.next_block(6 * MIB), []) for view in views]
    assert [bytes(view) for view in first] == saved
    assert b"".join([*saved, *(bytes(view) for view in rest)]) == big[: 12 * MIB]


def test_block_chunker_on_an_empty_stream() -> None:
    assert BlockChunker(io.BytesIO(b""), SETTINGS).next_block(MIB) == []
