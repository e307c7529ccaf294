"""A ``BlobStore`` over the hub's chunk API, so ``SealedChunkStore`` and ``ingest_file`` push to a hub.

``has_many`` asks ``/chunks/missing``, ``put_many`` uploads in batches that
fit the hub's limits, ``get`` downloads one envelope and ``get_many`` many in
a few ``/chunks/fetch`` requests (the sealed store or the puller verifies
them). The hub never deletes or lists chunks for a device, so those
calls are refused. ``HubChunkSource`` is what a mount reads through: verified
plaintext, one chunk or many streamed from one ``/chunks/fetch``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

from shoal.chunking.hashing import chunk_id
from shoal.errors import ChunkMissingError, NotFoundError, ShoalError, UsageError
from shoal.model.ids import ChunkId, chunk_id_hex
from shoal.net.sync import SyncClient
from shoal.store.base import BlobStore
from shoal.store.sealed import SealedChunkStore


class HubBlobStore:
    """The calling tenant's chunks on one hub."""

    def __init__(self, client: SyncClient) -> None:
        self.client = client
        self.uploaded_bytes = 0
        self.downloaded_bytes = 0

    @property
    def url(self) -> str:
        return self.client.session.base_url

    async def has_many(self, ids: Iterable[ChunkId]) -> set[ChunkId]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return set()
        missing = set(await self.client.missing_chunks(wanted))
        return {cid for cid in wanted if chunk_id_hex(cid) not in missing}

    async def put_many(self, blobs: Sequence[tuple[ChunkId, bytes]]) -> None:
        if blobs:
            await self.client.upload_chunks(blobs)
            self.uploaded_bytes += sum(len(blob) for _, blob in blobs)

    async def get(self, cid: ChunkId) -> bytes:
        try:
            blob = await self.client.download_chunk(cid)
        except ChunkMissingError:
            raise
        except NotFoundError as exc:
            raise ChunkMissingError(
                f"chunk {chunk_id_hex(cid)} is not on the hub {self.url}",
                hint="the device that wrote this file may not have finished uploading; sync it again",
            ) from exc
        self.downloaded_bytes += len(blob)
        return blob

    async def get_many(self, ids: Iterable[ChunkId]) -> dict[ChunkId, bytes]:
        """Envelopes of the ids the hub holds (a few batched requests); absent ids are left out."""
        wanted = list(ids)
        got: dict[ChunkId, bytes] = {}
        try:
            async for cid, blob in self.client.download_chunks(wanted):
                got[cid] = blob
                self.downloaded_bytes += len(blob)
        except NotFoundError:
            # The fetch never answers 404 for absent chunks: this hub predates it. One GET each.
            for cid in wanted:
                if cid not in got:
                    try:
                        got[cid] = await self.get(cid)
                    except ChunkMissingError:
                        continue
        return got

    async def size(self, cid: ChunkId) -> int:
        return len(await self.get(cid))

    async def delete(self, cid: ChunkId) -> None:
        raise UsageError("devices never delete chunks on the hub; the hub collects unreferenced ones")

    def iterate(self) -> AsyncIterator[ChunkId]:
        raise UsageError("the hub does not list its chunks to devices")

    def scoped(self, prefix: str) -> BlobStore:
        raise UsageError("the hub already scopes chunks to the caller's tenant")

    async def close(self) -> None:
        return None


class HubChunkSource:
    """Verified plaintext from the hub for ``CachedChunks``: one chunk per ``get``, or a streamed batch.

    Each envelope of a batch is opened (AEAD tag, then keyed id; or the plain id) as it arrives,
    off the event loop; one that fails is reported for its id, and the rest still arrive.
    """

    def __init__(
        self, hub: HubBlobStore, sealed: SealedChunkStore, *, id_keys: Sequence[bytes | None] = (None,)
    ) -> None:
        self.hub = hub
        self.sealed = sealed
        self.id_keys = list(id_keys)  # one per key epoch: chunks keep the id of the epoch sealing them

    def chunk_id(self, data: bytes | memoryview) -> ChunkId:
        return self.sealed.chunk_id(data)

    def id_matches(self, cid: ChunkId, data: bytes) -> bool:
        """True if ``cid`` is the id of ``data`` under any key epoch this device holds."""
        return any(chunk_id(data, key) == cid for key in self.id_keys)

    async def get(self, cid: ChunkId) -> bytes:
        return await self.sealed.get(cid)

    async def stream(self, ids: Sequence[ChunkId]) -> AsyncIterator[tuple[ChunkId, bytes | ShoalError]]:
        loop = asyncio.get_running_loop()
        try:
            async for cid, blob in self.hub.client.download_chunks(ids):
                self.hub.downloaded_bytes += len(blob)
                try:
                    yield cid, await loop.run_in_executor(None, self.sealed.open, cid, blob)
                except ShoalError as exc:
                    yield cid, exc
        except NotFoundError:
            return  # a hub without the batched fetch: the caller asks for each chunk left out
