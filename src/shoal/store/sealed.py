"""The sealing wrapper: compression, encryption and verification around a blob store.

A :class:`Sealer` turns a chunk's plaintext into its stored envelope and
back. :class:`PlainSealer` (plain arenas) compresses when that helps and
checks the unkeyed BLAKE3 id on every open. :class:`EncryptedSealer`
(encrypted arenas) compresses, pads (Padmé) and seals with
XChaCha20-Poly1305, binding arena, object type, id, header and key epoch as
associated data; every open checks the tag, then the keyed id.

:class:`SealedChunkStore` puts a sealer in front of any ``BlobStore``: what
it returns from ``get`` has always been verified. ``seal``/``open`` are
plain synchronous calls that worker threads may run in parallel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import replace
from typing import Protocol

from shoal.chunking.envelope import (
    DEFAULT_ZSTD_LEVEL,
    ENCRYPTED_HEADER_BYTES,
    MAX_CHUNK_BYTES,
    decode_inner,
    decode_plain,
    encode_inner,
    encode_plain,
    encrypted_header,
    parse_header,
)
from shoal.chunking.hashing import chunk_id
from shoal.crypto.aead import (
    NONCE_BYTES,
    OPENSSL_FROM,
    TAG_BYTES,
    ObjectType,
    RandomSource,
    associated_data_prefix,
    associated_data_suffix,
    open_aead,
    seal_aead,
    seal_aead_in_place,
)
from shoal.crypto.arena_keys import ArenaKeys
from shoal.crypto.padding import padme, unpad
from shoal.errors import CorruptChunkError, FormatError, LockedError, StorageError
from shoal.model.ids import ChunkId, chunk_id_hex
from shoal.settings import ChunkingSettings
from shoal.store.base import BlobStore

MAX_RECORD_BYTES = 256 * 1024 * 1024  # a manifest of a multi-terabyte file still fits


class Sealer(Protocol):
    """Chunk ids, cut-point seed and the stored form of chunks, for one arena."""

    @property
    def encrypted(self) -> bool: ...

    @property
    def id_key(self) -> bytes | None:
        """The BLAKE3 key for chunk ids and whole-file hashes (None in plain arenas)."""
        ...

    def chunking(self, base: ChunkingSettings) -> ChunkingSettings:
        """``base`` with this arena's gear seed."""
        ...

    def chunk_id(self, data: bytes | memoryview) -> ChunkId: ...

    def seal(self, cid: ChunkId, plaintext: bytes | memoryview) -> bytes: ...

    def open(self, cid: ChunkId, blob: bytes) -> bytes:
        """Verified plaintext; CorruptChunkError when the blob does not hold chunk ``cid``."""
        ...


class PlainSealer:
    """Plain arenas: unkeyed ids, zstd when it shrinks the chunk, id checked on open."""

    encrypted = False
    id_key = None

    def __init__(
        self, *, zstd_level: int = DEFAULT_ZSTD_LEVEL, max_chunk_size: int = MAX_CHUNK_BYTES
    ) -> None:
        self._level = zstd_level
        self._max = max_chunk_size

    def chunking(self, base: ChunkingSettings) -> ChunkingSettings:
        return replace(base, seed=0)

    def chunk_id(self, data: bytes | memoryview) -> ChunkId:
        return chunk_id(data)

    def seal(self, cid: ChunkId, plaintext: bytes | memoryview) -> bytes:
        _check_size(cid, plaintext, self._max)
        return encode_plain(plaintext, self._level)

    def open(self, cid: ChunkId, blob: bytes) -> bytes:
        return decode_plain(blob, cid, max_size=self._max)


class EncryptedSealer:
    """Encrypted arenas: keyed ids and gear seed; compress, pad, then seal with bound associated data.

    ``arena`` is the arena's id as bytes, so a chunk of one arena never opens
    in another. ``older_keys`` open chunks sealed under earlier key epochs.
    """

    encrypted = True

    def __init__(
        self,
        keys: ArenaKeys,
        arena: bytes,
        *,
        older_keys: Iterable[ArenaKeys] = (),
        zstd_level: int = DEFAULT_ZSTD_LEVEL,
        max_chunk_size: int = MAX_CHUNK_BYTES,
        random: RandomSource | None = None,
    ) -> None:
        if not arena:
            raise FormatError("an encrypted arena needs a non-empty arena id to bind its chunks to")
        self._keys = keys
        self._by_epoch: Mapping[int, ArenaKeys] = {k.epoch: k for k in (*older_keys, keys)}
        self._arena = arena
        # Encoded once: building the header and the fixed part of the associated data per chunk was
        # a few percent of the GIL time of packing 20k small files.
        self._header = encrypted_header(keys.epoch).encode()
        self._ad_prefix = associated_data_prefix(self._header, arena)
        self._level = zstd_level
        self._max = max_chunk_size
        self._random = random

    @property
    def id_key(self) -> bytes:
        return self._keys.id_key

    def chunking(self, base: ChunkingSettings) -> ChunkingSettings:
        return replace(base, seed=self._keys.gear_seed)

    def chunk_id(self, data: bytes | memoryview) -> ChunkId:
        return chunk_id(data, self._keys.id_key)

    def seal(self, cid: ChunkId, plaintext: bytes | memoryview) -> bytes:
        _check_size(cid, plaintext, self._max)
        return self._seal(self._keys.content_key, ObjectType.CHUNK, cid, plaintext)

    def open(self, cid: ChunkId, blob: bytes) -> bytes:
        what = f"chunk {chunk_id_hex(cid)}"
        keys, header = self._keys_for(blob, what)
        plaintext = self._open(keys.content_key, header, ObjectType.CHUNK, cid, blob, self._max, what)
        if chunk_id(plaintext, keys.id_key) != cid:
            raise CorruptChunkError(f"{what} does not match its id", hint=_RESTORE_HINT)
        return plaintext

    def seal_record(self, object_type: ObjectType, object_id: bytes, payload: bytes) -> bytes:
        """Seal a manifest or change record with the record key, bound to its type and id."""
        if object_type is ObjectType.CHUNK:
            raise FormatError("chunks are sealed with seal(), not seal_record()")
        return self._seal(self._keys.record_key, object_type, object_id, payload)

    def open_record(
        self, object_type: ObjectType, object_id: bytes, blob: bytes, *, max_size: int = MAX_RECORD_BYTES
    ) -> bytes:
        """Open what :meth:`seal_record` made; CorruptChunkError if it is not that record."""
        what = f"{object_type.name.lower()} {object_id.hex()}"
        keys, header = self._keys_for(blob, what)
        return self._open(keys.record_key, header, object_type, object_id, blob, max_size, what)

    def _seal(
        self, key: bytes, object_type: ObjectType, object_id: bytes, plaintext: bytes | memoryview
    ) -> bytes:
        header = self._header
        flags, body = encode_inner(plaintext, self._level)
        length = len(flags) + len(body)
        padded = padme(_LENGTH_BYTES + length)
        ad = self._ad(header, object_type, object_id)
        if padded >= OPENSSL_FROM:  # the faster cipher; seal_aead joins the header in
            size = length.to_bytes(_LENGTH_BYTES, "big")
            payload = b"".join((size, flags, body, bytes(padded - _LENGTH_BYTES - length)))
            del body
            return seal_aead(key, payload, ad, prefix=header, random=self._random)
        # header | nonce | padded(flags | body) | tag, built in one buffer and sealed in place: the
        # same bytes as seal_aead(pad(flags, body)) with fewer copies, for small payloads.
        start = ENCRYPTED_HEADER_BYTES + NONCE_BYTES + _LENGTH_BYTES
        buf = bytearray(ENCRYPTED_HEADER_BYTES + NONCE_BYTES + padded + TAG_BYTES)
        buf[:ENCRYPTED_HEADER_BYTES] = header
        buf[start - _LENGTH_BYTES : start] = length.to_bytes(_LENGTH_BYTES, "big")
        buf[start : start + len(flags)] = flags
        buf[start + len(flags) : start + length] = body
        del body
        seal_aead_in_place(key, buf, ENCRYPTED_HEADER_BYTES, ad, random=self._random)
        return bytes(buf)

    def _keys_for(self, blob: bytes, what: str) -> tuple[ArenaKeys, bytes]:
        header = parse_header(blob, what=what)
        if not header.encrypted:
            raise CorruptChunkError(f"{what} is not encrypted, but this arena is", hint=_RESTORE_HINT)
        keys = self._by_epoch.get(header.epoch)
        if keys is None:
            raise LockedError(
                f"{what} was sealed with key epoch {header.epoch}, whose keys this device does not hold",
                hint="unlock the arena again to fetch its current keys",
            )
        return keys, bytes(blob[:ENCRYPTED_HEADER_BYTES])

    def _open(
        self,
        key: bytes,
        header: bytes,
        object_type: ObjectType,
        object_id: bytes,
        blob: bytes,
        max_size: int,
        what: str,
    ) -> bytes:
        ad = self._ad(header, object_type, object_id)
        padded = open_aead(key, memoryview(blob)[ENCRYPTED_HEADER_BYTES:], ad, what=what)
        return decode_inner(unpad(padded, what=what), what, max_size=max_size)

    def _ad(self, header: bytes, object_type: ObjectType, object_id: bytes) -> bytes:
        prefix = self._ad_prefix if header == self._header else associated_data_prefix(header, self._arena)
        return prefix + associated_data_suffix(object_type, object_id)


_RESTORE_HINT = "restore the chunk from another device or store"
_LENGTH_BYTES = 4  # the real length ahead of the payload in a Padmé-padded buffer (shoal.crypto.padding)


def _check_size(cid: ChunkId, plaintext: bytes | memoryview, max_size: int) -> None:
    # A chunk over the limit would be stored but refused on every read: refuse it now instead.
    if len(plaintext) > max_size:
        raise FormatError(
            f"chunk {chunk_id_hex(cid)} is {len(plaintext)} bytes; a chunk holds at most {max_size}"
        )


class SealedChunkStore:
    """A blob store seen through a sealer: plaintext in, verified plaintext out.

    Sealing and opening run on ``executor`` (the event loop's default when None).
    """

    def __init__(self, blobs: BlobStore, sealer: Sealer, *, executor: Executor | None = None) -> None:
        self.blobs = blobs
        self.sealer = sealer
        self._executor = executor
        # Chunks a store_missing call is storing right now, each with the future its call settles.
        self._storing: dict[ChunkId, asyncio.Future[None]] = {}

    def chunk_id(self, data: bytes | memoryview) -> ChunkId:
        return self.sealer.chunk_id(data)

    def seal(self, cid: ChunkId, plaintext: bytes | memoryview) -> bytes:
        return self.sealer.seal(cid, plaintext)

    def open(self, cid: ChunkId, blob: bytes) -> bytes:
        return self.sealer.open(cid, blob)

    async def has_many(self, ids: Iterable[ChunkId]) -> set[ChunkId]:
        return await self.blobs.has_many(ids)

    async def put_many(self, chunks: Sequence[tuple[ChunkId, bytes]]) -> None:
        """Seal and store chunks, checking first that each id matches its plaintext."""
        loop = asyncio.get_running_loop()
        sealed = await asyncio.gather(
            *(loop.run_in_executor(self._executor, self._checked_seal, cid, data) for cid, data in chunks)
        )
        await self.blobs.put_many(list(zip((cid for cid, _ in chunks), sealed, strict=True)))

    async def put_sealed_many(self, blobs: Sequence[tuple[ChunkId, bytes]]) -> None:
        """Store blobs that :meth:`seal` already produced (the ingest pipeline seals in its workers)."""
        await self.blobs.put_many(blobs)

    async def store_missing(
        self, ids: Iterable[ChunkId], sealed: Mapping[ChunkId, bytes]
    ) -> tuple[set[ChunkId], set[ChunkId]]:
        """Make each of ``ids`` present, each stored once by all calls running at the same time.

        An id the store holds is left alone; one that another call is storing is waited for, not
        written again (unless that call fails); the rest are written from ``sealed``. Returns the
        ids this call wrote and those it could not make present: absent from ``sealed`` and neither
        held by the store nor stored by another call. A write failure raises, as
        :meth:`put_sealed_many` does.
        """
        wanted = set(ids)
        others = {cid: self._storing[cid] for cid in wanted if cid in self._storing}
        mine = {cid: sealed[cid] for cid in wanted - others.keys() if cid in sealed}
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for cid in mine:
            self._storing[cid] = done
        try:
            present = await self.has_many(wanted - others.keys())
            written = [(cid, blob) for cid, blob in mine.items() if cid not in present]
            if written:
                await self.put_sealed_many(written)
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(
                exc if isinstance(exc, Exception) else StorageError("the store was interrupted")
            )
            done.exception()  # the callers waiting get it; nobody else needs to be told
            raise
        finally:
            for cid in mine:
                if self._storing.get(cid) is done:
                    del self._storing[cid]
        if others:
            await asyncio.wait(set(others.values()))
        failed = {cid for cid, future in others.items() if future.exception() is not None}
        retried = [(cid, sealed[cid]) for cid in failed if cid in sealed]
        if retried:  # the other call failed: write our own copy
            await self.put_sealed_many(retried)
        unclaimed = wanted - present - mine.keys() - others.keys()  # not sealed, not held, not stored
        missing = unclaimed | (failed - sealed.keys())
        return {cid for cid, _ in written + retried}, missing

    async def get(self, cid: ChunkId) -> bytes:
        """Verified plaintext of ``cid``: ChunkMissingError if absent, CorruptChunkError if damaged."""
        blob = await self.blobs.get(cid)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.sealer.open, cid, blob)

    async def close(self) -> None:
        await self.blobs.close()

    def _checked_seal(self, cid: ChunkId, data: bytes) -> bytes:
        if self.sealer.chunk_id(data) != cid:
            raise FormatError(f"chunk {chunk_id_hex(cid)} was given bytes that do not match its id")
        return self.sealer.seal(cid, data)
