"""The sealed chunk store: what comes out of ``get`` is always the verified plaintext, or an error."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import replace

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.chunking.envelope import encrypted_header, parse_header
from shoal.crypto.aead import ObjectType, associated_data, seal_aead
from shoal.crypto.arena_keys import ArenaKeys
from shoal.crypto.padding import pad, padme
from shoal.errors import (
    ChunkMissingError,
    CorruptChunkError,
    FormatError,
    LockedError,
    StorageError,
    UnsupportedVersionError,
)
from shoal.model.ids import ChunkId, chunk_id_hex
from shoal.settings import ChunkingSettings
from shoal.store.sealed import EncryptedSealer, PlainSealer, SealedChunkStore, Sealer
from shoal.testing.memory_store import MemoryBlobStore
from shoal.testing.store_contract import BlobStoreContract, StoreOpener

KEYS = ArenaKeys.derive(b"\x11" * 32, epoch=1)
ARENA = b"arena-0001"


def _encrypted(keys: ArenaKeys = KEYS, arena: bytes = ARENA, **kw: object) -> EncryptedSealer:
    return EncryptedSealer(keys, arena, **kw)  # type: ignore[arg-type]


def _store(sealer: Sealer) -> tuple[SealedChunkStore, MemoryBlobStore]:
    blobs = MemoryBlobStore()
    return SealedChunkStore(blobs, sealer), blobs


CHUNKS = [b"compressible text " * 20_000, os.urandom(300_000), b"x", b""]


@pytest.mark.parametrize("make", [PlainSealer, _encrypted])
def test_put_get_round_trip(make: type[Sealer]) -> None:
    store, blobs = _store(make())

    async def body() -> None:
        items = [(store.chunk_id(c), c) for c in CHUNKS]
        await store.put_many(items)
        assert await store.has_many(cid for cid, _ in items) == {cid for cid, _ in items}
        for cid, data in items:
            assert await store.get(cid) == data

    asyncio.run(body())
    assert len(blobs) == len(CHUNKS)


@pytest.mark.parametrize("make", [PlainSealer, _encrypted])
def test_absent_chunk_is_missing(make: type[Sealer]) -> None:
    store, _ = _store(make())
    with pytest.raises(ChunkMissingError):
        asyncio.run(store.get(store.chunk_id(b"never stored")))


@pytest.mark.parametrize("make", [PlainSealer, _encrypted])
def test_put_refuses_an_id_that_does_not_match(make: type[Sealer]) -> None:
    store, blobs = _store(make())
    with pytest.raises(FormatError, match="do not match"):
        asyncio.run(store.put_many([(store.chunk_id(b"a"), b"b")]))
    assert len(blobs) == 0


def test_oversized_chunk_is_refused_at_seal_time() -> None:
    sealer = PlainSealer(max_chunk_size=1000)
    data = os.urandom(1001)
    with pytest.raises(FormatError, match="at most 1000"):
        sealer.seal(sealer.chunk_id(data), data)


def test_encrypted_ids_are_keyed_and_blobs_hide_content() -> None:
    plain, enc = PlainSealer(), _encrypted()
    other = _encrypted(ArenaKeys.derive(b"\x22" * 32, epoch=1))
    data = b"known document " * 1000
    assert len({plain.chunk_id(data), enc.chunk_id(data), other.chunk_id(data)}) == 3
    blob = enc.seal(enc.chunk_id(data), data)
    assert b"known document" not in blob
    assert parse_header(blob).encrypted
    assert parse_header(blob).epoch == 1
    assert not parse_header(blob).compressed  # compressibility stays inside the sealed bytes


def test_encrypted_blob_sizes_are_padded_to_buckets() -> None:
    enc = _encrypted()
    sizes = set()
    for n in range(500_000, 500_400, 7):
        data = os.urandom(n)
        sizes.add(len(enc.seal(enc.chunk_id(data), data)))
    assert len(sizes) == 1
    (size,) = sizes
    assert size - 6 - 40 == padme(500_393 + 1 + 4)


def test_nonces_never_repeat() -> None:
    enc = _encrypted()
    cid = enc.chunk_id(b"same")
    nonces = {enc.seal(cid, b"same")[6:30] for _ in range(2000)}
    assert len(nonces) == 2000


def test_swapped_chunks_are_detected() -> None:
    store, blobs = _store(_encrypted())
    a, b = b"chunk a " * 1000, b"chunk b " * 1000
    ida, idb = store.chunk_id(a), store.chunk_id(b)
    asyncio.run(store.put_many([(ida, a), (idb, b)]))
    blob_a, blob_b = asyncio.run(blobs.get(ida)), asyncio.run(blobs.get(idb))
    blobs.replace_blob(ida, blob_b)
    blobs.replace_blob(idb, blob_a)
    for cid in (ida, idb):
        with pytest.raises(CorruptChunkError, match=chunk_id_hex(cid)):
            asyncio.run(store.get(cid))


def test_plain_swapped_chunks_are_detected() -> None:
    store, blobs = _store(PlainSealer())
    a, b = b"a" * 5000, b"b" * 5000
    ida, idb = store.chunk_id(a), store.chunk_id(b)
    asyncio.run(store.put_many([(ida, a), (idb, b)]))
    blobs.replace_blob(ida, asyncio.run(blobs.get(idb)))
    with pytest.raises(CorruptChunkError, match=chunk_id_hex(ida)):
        asyncio.run(store.get(ida))


def _sealed_blob(data: bytes = b"payload " * 5000) -> tuple[EncryptedSealer, ChunkId, bytes]:
    enc = _encrypted()
    cid = enc.chunk_id(data)
    return enc, cid, enc.seal(cid, data)


@pytest.mark.parametrize("position", [0 + 6, 6 + 10, 50, -1])
def test_flipped_byte_fails(position: int) -> None:
    enc, cid, blob = _sealed_blob()
    damaged = bytearray(blob)
    damaged[position] ^= 0x01
    with pytest.raises(CorruptChunkError, match=chunk_id_hex(cid)):
        enc.open(cid, bytes(damaged))


@pytest.mark.parametrize("length", [0, 1, 5, 6, 30, 45, -1])
def test_truncated_blob_fails(length: int) -> None:
    enc, cid, blob = _sealed_blob()
    with pytest.raises(CorruptChunkError):
        enc.open(cid, blob[:length])


def test_header_changes_fail() -> None:
    enc, cid, blob = _sealed_blob()
    later = _encrypted(ArenaKeys.derive(b"\x11" * 32, epoch=2), older_keys=[KEYS])
    # claimed epoch changed to one the reader holds: the header is bound, so the tag fails
    with pytest.raises(CorruptChunkError):
        later.open(cid, blob[:2] + (2).to_bytes(4, "big") + blob[6:])
    with pytest.raises(CorruptChunkError):
        enc.open(cid, blob[:1] + b"\x03" + blob[2:])  # claims outer compression
    with pytest.raises(CorruptChunkError):
        enc.open(cid, blob[:1] + b"\x00" + blob[2:])  # claims plain
    with pytest.raises(UnsupportedVersionError):
        enc.open(cid, b"\x07" + blob[1:])


def test_plain_blob_in_an_encrypted_arena_is_refused() -> None:
    enc = _encrypted()
    data = b"plain"
    with pytest.raises(CorruptChunkError, match="not encrypted"):
        enc.open(enc.chunk_id(data), PlainSealer().seal(enc.chunk_id(data), data))


def test_chunk_from_another_arena_does_not_open() -> None:
    data = b"shared content"
    a, b = _encrypted(arena=b"arena-a"), _encrypted(arena=b"arena-b")
    cid = a.chunk_id(data)
    with pytest.raises(CorruptChunkError, match="failed authentication"):
        b.open(cid, a.seal(cid, data))


def test_unknown_epoch_is_locked_and_older_epochs_open() -> None:
    _, cid, blob = _sealed_blob()
    newer_keys = ArenaKeys.derive(b"\x33" * 32, epoch=2)
    with pytest.raises(LockedError, match="epoch 1"):
        _encrypted(newer_keys).open(cid, blob)
    assert _encrypted(newer_keys, older_keys=[KEYS]).open(cid, blob) == b"payload " * 5000


def test_chunking_seed_comes_from_the_arena() -> None:
    base = replace(ChunkingSettings(), seed=99)
    assert PlainSealer().chunking(base).seed == 0
    assert _encrypted().chunking(base).seed == KEYS.gear_seed != 0


def test_injected_randomness_makes_sealing_reproducible() -> None:
    fixed = _encrypted(random=lambda n: b"\x05" * n)
    cid = fixed.chunk_id(b"data")
    assert fixed.seal(cid, b"data") == fixed.seal(cid, b"data")


def test_empty_arena_id_is_refused() -> None:
    with pytest.raises(FormatError, match="arena id"):
        EncryptedSealer(KEYS, b"")


def test_records_round_trip_and_are_bound_to_type_and_id() -> None:
    enc = _encrypted()
    manifest = b"\x93manifest bytes" * 100
    blob = enc.seal_record(ObjectType.MANIFEST, b"path-key-1", manifest)
    assert b"manifest bytes" not in blob
    assert enc.open_record(ObjectType.MANIFEST, b"path-key-1", blob) == manifest
    with pytest.raises(CorruptChunkError, match="failed authentication"):
        enc.open_record(ObjectType.RECORD, b"path-key-1", blob)
    with pytest.raises(CorruptChunkError):
        enc.open_record(ObjectType.MANIFEST, b"path-key-2", blob)
    with pytest.raises(CorruptChunkError):
        _encrypted(arena=b"arena-other").open_record(ObjectType.MANIFEST, b"path-key-1", blob)
    with pytest.raises(FormatError):
        enc.seal_record(ObjectType.CHUNK, b"x", b"y")


def test_a_record_cannot_pass_for_a_chunk_or_the_reverse() -> None:
    enc = _encrypted()
    data = b"looks like a chunk"
    cid = enc.chunk_id(data)
    as_record = enc.seal_record(ObjectType.MANIFEST, cid, data)
    with pytest.raises(CorruptChunkError):
        enc.open(cid, as_record)
    with pytest.raises(CorruptChunkError):
        enc.open_record(ObjectType.MANIFEST, cid, enc.seal(cid, data))


def test_oversized_record_is_refused_on_open() -> None:
    enc = _encrypted()
    blob = enc.seal_record(ObjectType.RECORD, b"r", os.urandom(5000))
    with pytest.raises(CorruptChunkError, match="more than"):
        enc.open_record(ObjectType.RECORD, b"r", blob, max_size=1000)


def test_zstd_bomb_inside_an_encrypted_envelope_is_refused() -> None:
    # Only a key holder could build this, but a buggy or hostile device might: it must not inflate.
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(64 * 1024 * 1024))
    padded = pad(b"\x01", bomb)
    header = encrypted_header(KEYS.epoch).encode()
    cid = KEYS_CHUNK_ID
    ad = associated_data(header=header, context=ARENA, object_type=ObjectType.CHUNK, object_id=cid)
    blob = seal_aead(KEYS.content_key, padded, ad, prefix=header)
    with pytest.raises(CorruptChunkError, match="more than"):
        _encrypted().open(cid, blob)


KEYS_CHUNK_ID = ChunkId(b"\x07" * 32)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=20_000), repeat=st.integers(min_value=1, max_value=50))
def test_any_content_round_trips_through_both_sealers(data: bytes, repeat: int) -> None:
    content = data * repeat
    for sealer in (PlainSealer(), _encrypted()):
        cid = sealer.chunk_id(content)
        assert sealer.open(cid, sealer.seal(cid, content)) == content


class TestMemoryBlobStoreContract(BlobStoreContract):
    """The in-memory store the sealed-store tests use must behave like a real backend."""

    @pytest.fixture
    def open_store(self) -> StoreOpener:
        store = MemoryBlobStore()
        return lambda: store


class _HeldStore(MemoryBlobStore):
    """Holds every put until ``release`` is set, then stores it, or fails the next ``failures``."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.failures = 0

    async def put_many(self, blobs: Sequence[tuple[ChunkId, bytes]]) -> None:
        await self.release.wait()
        if self.failures:
            self.failures -= 1
            raise StorageError("the disk went away")
        await super().put_many(blobs)


def _sealed_pair(store: SealedChunkStore, data: bytes) -> tuple[ChunkId, dict[ChunkId, bytes]]:
    cid = store.chunk_id(data)
    return cid, {cid: store.seal(cid, data)}


def test_concurrent_stores_of_one_chunk_write_it_once() -> None:
    blobs = _HeldStore()
    store = SealedChunkStore(blobs, PlainSealer())
    cid, sealed = _sealed_pair(store, b"in two batches at once\n" * 40)

    async def both() -> list[tuple[set[ChunkId], set[ChunkId]]]:
        first = asyncio.create_task(store.store_missing([cid], sealed))
        await asyncio.sleep(0)  # the first call is now storing it
        second = asyncio.create_task(store.store_missing([cid], sealed))
        await asyncio.sleep(0)
        blobs.release.set()
        return await asyncio.gather(first, second)

    assert asyncio.run(both()) == [({cid}, set()), (set(), set())]
    assert blobs.put_count == 1


def test_a_failed_store_leaves_the_waiting_call_to_write_its_own_copy() -> None:
    blobs = _HeldStore()
    store = SealedChunkStore(blobs, PlainSealer())
    cid, sealed = _sealed_pair(store, b"the first writer fails\n" * 40)

    async def both() -> tuple[BaseException | tuple[set[ChunkId], set[ChunkId]], ...]:
        first = asyncio.create_task(store.store_missing([cid], sealed))
        await asyncio.sleep(0)
        with_bytes = asyncio.create_task(store.store_missing([cid], sealed))
        without = asyncio.create_task(store.store_missing([cid], {}))
        await asyncio.sleep(0)
        blobs.failures = 1
        blobs.release.set()
        return tuple(await asyncio.gather(first, with_bytes, without, return_exceptions=True))

    failed, retried, unsealed = asyncio.run(both())
    assert isinstance(failed, StorageError)
    assert retried == ({cid}, set())
    assert unsealed == (set(), {cid})  # nothing to write it from: the caller must read it again
    assert asyncio.run(store.has_many([cid])) == {cid}


def test_a_chunk_neither_held_nor_given_is_reported_missing() -> None:
    store = SealedChunkStore(MemoryBlobStore(), PlainSealer())
    held, sealed = _sealed_pair(store, b"given\n" * 10)
    absent = store.chunk_id(b"never sealed\n")

    assert asyncio.run(store.store_missing([held, absent], sealed)) == ({held}, {absent})
    assert asyncio.run(store.store_missing([held], {})) == (set(), set())  # held now
