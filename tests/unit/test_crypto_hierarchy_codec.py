"""The encrypted arena codec from a keychain: per-arena chunk ids, cut points, path keys, sealed records."""

from __future__ import annotations

import random as stdlib_random
from itertools import accumulate

import pytest

from shoal.chunking.chunker import iter_chunks_buf
from shoal.chunking.envelope import MAX_CHUNK_BYTES as LARGEST_CHUNK
from shoal.crypto.aead import RandomSource
from shoal.crypto.hierarchy import Keychain
from shoal.crypto.padding import padme
from shoal.engine.crypt_codec import arena_crypto
from shoal.engine.records import EntryRecord, PlainCodec, RecordKind
from shoal.errors import CorruptChunkError, LockedError
from shoal.net.schemas_sync import MAX_CHUNK_BYTES as HUB_LIMIT
from shoal.settings import ChunkingSettings

SMALL = ChunkingSettings(min_size=4096, avg_size=16384, max_size=65536)


def _random(seed: int) -> RandomSource:
    return stdlib_random.Random(seed).randbytes


def _cuts(data: bytes, settings: ChunkingSettings) -> list[int]:
    return list(accumulate(len(c) for c in iter_chunks_buf(data, settings)))


def test_two_arenas_with_the_same_file_differ_in_chunk_ids_and_cut_points() -> None:
    data = stdlib_random.Random(7).randbytes(1024 * 1024)
    _, one = arena_crypto(Keychain.new("arena-one", _random(1)))
    _, two = arena_crypto(Keychain.new("arena-two", _random(2)))
    cuts_one, cuts_two = _cuts(data, one.chunking(SMALL)), _cuts(data, two.chunking(SMALL))
    assert cuts_one != cuts_two
    assert cuts_one != _cuts(data, SMALL)  # and neither matches the public gear table
    assert one.chunk_id(data) != two.chunk_id(data)


def test_path_keys_are_keyed_stable_across_epochs_and_hide_the_name() -> None:
    chain = Keychain.new("arena-one", _random(1))
    codec, _ = arena_crypto(chain)
    later, _ = arena_crypto(chain.next_epoch(_random(3)))
    other, _ = arena_crypto(Keychain.new("arena-two", _random(2)))
    key = codec.path_key("Taxes/2024/plan.txt")
    assert later.path_key("Taxes/2024/plan.txt") == key
    assert other.path_key("Taxes/2024/plan.txt") != key
    assert codec.path_key("Taxes/2024/plan.txt") == codec.path_key("Taxes/2024/plan.txt")
    assert len(key) == 64
    assert codec.path_key("e\u0301.txt") == codec.path_key("\u00e9.txt")  # NFC


def test_records_are_sealed_padded_and_refused_when_damaged() -> None:
    chain = Keychain.new("arena-one", _random(1))
    codec, _ = arena_crypto(chain)
    record = EntryRecord(RecordKind.DIR, "AXOLOTL-secret-folder", "dev1", mode=0o755)
    sealed = codec.encode(record)
    assert b"AXOLOTL" not in sealed
    assert codec.decode(sealed) == record
    plain_size = len(PlainCodec().encode(record))
    assert len(sealed) != plain_size
    body = len(sealed) - 6 - 40
    assert padme(body) == body
    longer = codec.encode(EntryRecord(RecordKind.DIR, "AXOLOTL-secret-folderX", "dev1", mode=0o755))
    assert len(longer) in (len(sealed), 6 + 40 + padme(body + 1))  # the same or the next padding bucket
    with pytest.raises(CorruptChunkError, match="tampered"):
        codec.decode(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    other, _ = arena_crypto(Keychain.new("arena-two", _random(2)))
    with pytest.raises(CorruptChunkError):
        other.decode(sealed)


def test_new_epoch_content_is_locked_for_a_device_with_the_old_keychain() -> None:
    chain = Keychain.new("arena-one", _random(1))
    rotated = chain.next_epoch(_random(4))
    old_codec, old_sealer = arena_crypto(chain)
    new_codec, new_sealer = arena_crypto(rotated)
    record = EntryRecord(RecordKind.DIR, "after", "dev1")
    assert new_codec.decode(old_codec.encode(record)) == record  # old content stays readable
    with pytest.raises(LockedError, match="epoch 1"):
        old_codec.decode(new_codec.encode(record))
    data = b"new content after the rotation"
    cid = new_sealer.chunk_id(data)
    assert new_sealer.open(cid, new_sealer.seal(cid, data)) == data
    with pytest.raises(LockedError):
        old_sealer.open(cid, new_sealer.seal(cid, data))


def test_the_largest_sealed_chunk_fits_the_hubs_chunk_limit() -> None:
    _, sealer = arena_crypto(Keychain.new("arena-one", _random(1)))
    data = stdlib_random.Random(9).randbytes(LARGEST_CHUNK)  # incompressible: padded at full size
    sealed = sealer.seal(sealer.chunk_id(data), data)
    assert len(sealed) > LARGEST_CHUNK + 64 * 1024
    assert len(sealed) <= HUB_LIMIT
