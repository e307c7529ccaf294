"""The blob store interface: bytes in, bytes out, keyed by chunk id.

Backends know nothing of compression, keys or tenants beyond a key prefix;
``shoal.store.sealed`` wraps a backend to add the stored-chunk envelope and
to verify every read. All methods are async (asyncio); file backends run
their blocking I/O in worker threads.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Protocol, runtime_checkable

from shoal.errors import FormatError, UsageError
from shoal.model.ids import CHUNK_ID_BYTES, ChunkId, is_chunk_id_hex


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
    - ``get_many`` maps each present id of those asked to its bytes and leaves absent ids out.
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

    async def get_many(self, ids: Iterable[ChunkId]) -> dict[ChunkId, bytes]:
        """The blobs of ``ids`` that are present (absent ids left out); failures raise as ``get`` does."""
        ...

    async def size(self, cid: ChunkId) -> int: ...

    async def delete(self, cid: ChunkId) -> None: ...

    def iterate(self) -> AsyncIterator[ChunkId]: ...

    def scoped(self, prefix: str) -> BlobStore:
        """The same backend restricted to a sub-namespace (the hub uses one per tenant).

        ``prefix`` is made of ``[a-z0-9-]`` segments joined by ``/``; anything else is refused.
        """
        ...

    async def close(self) -> None: ...


# Layout shared by every backend, so a file store copied into a bucket opens as the same store:
# a blob lives at ``<shard>/<64 hex>`` with ``<shard>`` the first two hex digits of its id, and a
# scoped sub-namespace ``a/b`` lives at ``ns/a/ns/b/``. Neither ``ns`` nor a dot-file can be
# mistaken for a shard, so namespaces never see each other's blobs.
NAMESPACE_DIR = "ns"
SHARD_HEX_LEN = 2
_SCOPE_SEGMENT = re.compile(r"[a-z0-9-]{1,64}")
_MAX_SCOPE_DEPTH = 8
_HEX_DIGITS = frozenset("0123456789abcdef")


def scope_segments(prefix: str) -> tuple[str, ...]:
    """Split and check a ``scoped()`` prefix: ``[a-z0-9-]`` segments joined by ``/``."""
    segments = tuple(prefix.split("/"))
    if len(segments) > _MAX_SCOPE_DEPTH or not all(_SCOPE_SEGMENT.fullmatch(s) for s in segments):
        shown = prefix if len(prefix) <= 80 else prefix[:77] + "..."
        raise UsageError(
            f"invalid store scope {shown!r}",
            hint=f"use 1 to {_MAX_SCOPE_DEPTH} segments of a-z, 0-9 and '-' joined by '/', e.g. 'tenant-42'",
        )
    return segments


def blob_key(cid: ChunkId) -> str:
    """The relative key of a blob: ``ab/abcdef...`` (always 64 lowercase hex digits after the shard)."""
    if len(cid) != CHUNK_ID_BYTES:
        raise FormatError(f"a chunk id is {CHUNK_ID_BYTES} bytes, got {len(cid)}")
    text = cid.hex()
    return f"{text[:SHARD_HEX_LEN]}/{text}"


def is_shard_name(name: str) -> bool:
    return len(name) == SHARD_HEX_LEN and _HEX_DIGITS.issuperset(name)


def id_from_blob_name(shard: str, name: str) -> ChunkId | None:
    """The id a file ``name`` in ``shard`` holds, or None for anything else (temp files, strays)."""
    if is_chunk_id_hex(name) and name.startswith(shard):
        return ChunkId(bytes.fromhex(name))
    return None
