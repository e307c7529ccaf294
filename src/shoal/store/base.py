"""The blob store interface: bytes in, bytes out, keyed by chunk id.

Backends know nothing of compression, keys or tenants beyond a key prefix;
``shoal.store.sealed`` wraps a backend to add the stored-chunk envelope and
to verify every read. All methods are async (asyncio); file backends run
their blocking I/O in worker threads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Protocol, runtime_checkable

from shoal.model.ids import ChunkId


@runtime_checkable
class BlobStore(Protocol):
    """A flat namespace of immutable blobs named by chunk id.

    Contract (checked by ``shoal.testing.store_contract``):

    - ``put_many`` is atomic per blob: a reader (or a process restarted after
      a kill at any point) sees either no blob or the whole blob, never a
      prefix. Putting an id that exists is a no-op success. Concurrent writers
      of the same id are safe. When it returns, every blob is durable.
    - ``get`` raises ``shoal.errors.ChunkMissingError`` for an absent id and
      ``shoal.errors.StorageError`` when the backend fails.
    - ``has_many`` returns the subset of the given ids that are present.
    - ``delete`` of an absent id is a no-op.
    - ``iterate`` yields every stored id once, in no particular order.
    - ``url`` is the URL the store was opened from, with no credentials.
    """

    @property
    def url(self) -> str: ...

    async def has_many(self, ids: Iterable[ChunkId]) -> set[ChunkId]: ...

    async def put_many(self, blobs: Sequence[tuple[ChunkId, bytes]]) -> None: ...

    async def get(self, cid: ChunkId) -> bytes: ...

    async def size(self, cid: ChunkId) -> int: ...

    async def delete(self, cid: ChunkId) -> None: ...

    def iterate(self) -> AsyncIterator[ChunkId]: ...

    def scoped(self, prefix: str) -> BlobStore:
        """The same backend restricted to a sub-namespace (the hub uses one per tenant).

        ``prefix`` is made of ``[a-z0-9-]`` segments joined by ``/``; anything else is refused.
        """
        ...

    async def close(self) -> None: ...
