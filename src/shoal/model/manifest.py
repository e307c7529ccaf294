"""A manifest is one version of one file: its chunks in order, its size and its whole-file hash."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.errors import FormatError
from shoal.model.codec import pack_record, unpack_record
from shoal.model.ids import ChunkId, chunk_id

MANIFEST_FORMAT = 1


@dataclass(frozen=True, slots=True)
class ChunkRef:
    id: ChunkId
    length: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """Ordered chunk references plus the size and BLAKE3 of the whole file.

    In encrypted arenas ``file_hash`` is keyed like chunk ids, so a manifest
    never carries a plaintext hash the hub could match against known files.
    """

    size: int
    chunks: tuple[ChunkRef, ...]
    file_hash: bytes

    def __post_init__(self) -> None:
        total = sum(ref.length for ref in self.chunks)
        if total != self.size:
            raise FormatError(f"manifest chunk lengths add up to {total}, not the size {self.size}")

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "size": self.size,
            "hash": self.file_hash,
            "chunks": [[ref.id, ref.length] for ref in self.chunks],
        }
        return pack_record("manifest", MANIFEST_FORMAT, body)

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        body = unpack_record(data, "manifest", MANIFEST_FORMAT)
        try:
            chunks = tuple(ChunkRef(chunk_id(bytes(cid)), int(length)) for cid, length in body["chunks"])
            return cls(size=int(body["size"]), chunks=chunks, file_hash=bytes(body["hash"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"malformed manifest: {exc}") from exc
