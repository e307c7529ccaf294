"""BLAKE3-256 chunk ids and whole-file hashes, unkeyed (plain arenas) or keyed (encrypted arenas).

``blake3`` releases the GIL while hashing, so worker threads hash chunks in
parallel; each call stays single-threaded inside (no ``max_threads``): the
pipeline already spreads chunks over the cores.
"""

from __future__ import annotations

from blake3 import blake3

from shoal.errors import FormatError
from shoal.model.ids import ChunkId

KEY_BYTES = 32


def chunk_id(data: bytes | memoryview, key: bytes | None = None) -> ChunkId:
    """The id of a chunk's plaintext: BLAKE3-256, keyed with the arena's id key when given."""
    return ChunkId(_new(key, data).digest())


class FileHasher:
    """Incremental whole-file hash for ``Manifest.file_hash``, keyed like chunk ids."""

    def __init__(self, key: bytes | None = None) -> None:
        self._hasher = _new(key, b"")

    def update(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)

    def digest(self) -> bytes:
        digest: bytes = self._hasher.digest()
        return digest


def _new(key: bytes | None, data: bytes | memoryview) -> blake3:
    if key is None:
        return blake3(data)
    if len(key) != KEY_BYTES:
        raise FormatError(f"a BLAKE3 key is {KEY_BYTES} bytes, got {len(key)}")
    return blake3(data, key=key)
