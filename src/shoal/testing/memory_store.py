"""An in-memory ``BlobStore`` for tests: one dict shared by every scoped view of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

from shoal.errors import ChunkMissingError
from shoal.model.ids import ChunkId, chunk_id_hex
from shoal.store.base import blob_key, scope_segments


@dataclass
class _Backing:
    blobs: dict[tuple[tuple[str, ...], ChunkId], bytes] = field(default_factory=dict)
    puts: int = 0  # blobs written (including no-op re-puts), for tests that check dedup


class MemoryBlobStore:
    """Holds blobs in a dict. ``put_count`` counts blobs handed to ``put_many``."""

    def __init__(self, *, _backing: _Backing | None = None, _scope: tuple[str, ...] = ()) -> None:
        self._backing = _backing or _Backing()
        self._scope = _scope

    @property
    def url(self) -> str:
        return "memory://" + "/".join(self._scope)

    @property
    def put_count(self) -> int:
        return self._backing.puts

    def __len__(self) -> int:
        return sum(1 for scope, _ in self._backing.blobs if scope == self._scope)

    async def has_many(self, ids: Iterable[ChunkId]) -> set[ChunkId]:
        return {cid for cid in ids if (self._scope, _checked(cid)) in self._backing.blobs}

    async def put_many(self, blobs: Sequence[tuple[ChunkId, bytes]]) -> None:
        for cid, _ in blobs:
            _checked(cid)
        for cid, data in blobs:
            self._backing.puts += 1
            self._backing.blobs.setdefault((self._scope, cid), bytes(data))

    async def get(self, cid: ChunkId) -> bytes:
        try:
            return self._backing.blobs[(self._scope, _checked(cid))]
        except KeyError:
            raise ChunkMissingError(f"chunk {chunk_id_hex(cid)} is not in the store {self.url}") from None

    async def get_many(self, ids: Iterable[ChunkId]) -> dict[ChunkId, bytes]:
        keys = [(self._scope, _checked(cid)) for cid in ids]
        return {key[1]: self._backing.blobs[key] for key in keys if key in self._backing.blobs}

    async def size(self, cid: ChunkId) -> int:
        return len(await self.get(cid))

    async def delete(self, cid: ChunkId) -> None:
        self._backing.blobs.pop((self._scope, _checked(cid)), None)

    async def iterate(self) -> AsyncIterator[ChunkId]:
        for scope, cid in list(self._backing.blobs):
            if scope == self._scope:
                yield cid

    def scoped(self, prefix: str) -> MemoryBlobStore:
        return MemoryBlobStore(_backing=self._backing, _scope=self._scope + scope_segments(prefix))

    def replace_blob(self, cid: ChunkId, data: bytes) -> None:
        """Overwrite a stored blob in place (tests use it to simulate corruption or substitution)."""
        self._backing.blobs[(self._scope, _checked(cid))] = data

    async def close(self) -> None:
        return None


def _checked(cid: ChunkId) -> ChunkId:
    blob_key(cid)  # raises FormatError for anything but a 32-byte id
    return cid
