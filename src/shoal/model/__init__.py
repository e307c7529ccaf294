"""L0 vocabulary: ids, manifests, changes, version vectors, paths and their codecs."""

from shoal.model.ids import CHUNK_ID_BYTES, ChunkId, chunk_id_hex, parse_chunk_id
from shoal.model.manifest import ChunkRef, Manifest
from shoal.model.paths import normalize_path, validate_path
from shoal.model.vv import Order, VersionVector

__all__ = [
    "CHUNK_ID_BYTES",
    "ChunkId",
    "ChunkRef",
    "Manifest",
    "Order",
    "VersionVector",
    "chunk_id_hex",
    "normalize_path",
    "parse_chunk_id",
    "validate_path",
]
