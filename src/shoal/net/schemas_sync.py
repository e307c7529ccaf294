"""Wire models of the sync API (``/api/v1``), shared by the hub and ``shoal.net.sync``.

Bytes travel as base64 strings; chunk ids and path keys as 64
lowercase hex characters. See ``docs/protocol.md`` for the semantics.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from typing import Annotated, Any, Literal

from blake3 import blake3
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo

PROTOCOL_VERSION = 1
CHUNK_BATCH_MAGIC = b"SCB1"  # chunk upload body: magic, then (id 32 bytes, u32 BE length, blob) records
# The largest stored chunk: an incompressible 4 MiB chunk of an encrypted arena is Padmé-padded to
# 4 MiB + 128 KiB, plus its header and AEAD overhead (4,325,422 bytes); the rest is slack.
MAX_CHUNK_BYTES = 4 * 1024 * 1024 + 192 * 1024
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
MAX_UPLOAD_CHUNKS = 1024
MAX_MISSING_IDS = 4096
MAX_FETCH_IDS = 1024  # ids per POST /chunks/fetch
MAX_FETCH_BYTES = 32 * 1024 * 1024  # envelope bytes one fetch answer carries (the first chunk always goes)
FETCH_MISSING = 0xFFFFFFFF  # fetch answer length: the tenant has no such chunk
FETCH_DEFERRED = 0xFFFFFFFE  # fetch answer length: over this answer's byte budget, ask again
MAX_COMMIT_CHANGES = 1000
MAX_CHANGE_CHUNKS = 65536
MAX_RECORD_BYTES = 1024 * 1024
MAX_VV_DEVICES = 256
MAX_CHANGES_PAGE = 10000
MAX_TREE_PAGE = 10000

ConflictPolicy = Literal["keep-both", "lww"]
Op = Literal["put", "delete", "mkdir", "rename", "symlink"]
HexId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
DeviceName = Annotated[str, Field(min_length=1, max_length=64)]
Vector = Annotated[dict[str, Annotated[int, Field(ge=0)]], Field(max_length=MAX_VV_DEVICES)]


def _b64_in_python_mode(value: Any, info: ValidationInfo) -> Any:
    """``model_validate(model.model_dump(mode="json"))`` round-trips: decode base64 text in Python mode too.

    JSON input is left to pydantic-core (``val_json_bytes``), which decodes it without a Python call.
    """
    if info.mode == "python" and isinstance(value, str):
        try:
            return base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("not valid base64") from exc
    return value


B64Bytes = Annotated[bytes, BeforeValidator(_b64_in_python_mode)]


def plain_path_key(path: str) -> str:
    """The path key of a plain arena: unkeyed BLAKE3-256 (hex) of the NFC path, as UTF-8."""
    digest: str = blake3(unicodedata.normalize("NFC", path).encode("utf-8")).hexdigest()
    return digest


class _Model(BaseModel):
    # Bytes travel as base64 in JSON, decoded natively by pydantic-core (either alphabet is accepted).
    model_config = ConfigDict(extra="forbid", frozen=True, val_json_bytes="base64", ser_json_bytes="base64")


class ArenaCreate(_Model):
    name: str = Field(min_length=1, max_length=255)
    encrypted: bool = False
    conflict_policy: ConflictPolicy = "keep-both"
    keep_days: int = Field(default=30, ge=0, le=36500)
    keep_versions: int = Field(default=10, ge=1, le=1_000_000)


class ArenaUpdate(_Model):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    conflict_policy: ConflictPolicy | None = None
    keep_days: int | None = Field(default=None, ge=0, le=36500)
    keep_versions: int | None = Field(default=None, ge=1, le=1_000_000)


class Arena(_Model):
    id: str
    name: str
    encrypted: bool
    conflict_policy: ConflictPolicy
    keep_days: int
    keep_versions: int
    head: int
    created_at: float
    deleted_at: float | None = None
    purge_after: float | None = None


class ArenaList(_Model):
    arenas: list[Arena]


class MissingRequest(_Model):
    ids: list[str] = Field(max_length=MAX_MISSING_IDS)


class FetchRequest(_Model):
    ids: list[str] = Field(min_length=1, max_length=MAX_FETCH_IDS)


class MissingResponse(_Model):
    missing: list[str]


class UploadResult(_Model):
    stored: list[str]
    existing: list[str]


class ChangeIn(_Model):
    op: Op
    path_key: HexId
    path: str | None = None
    to_path_key: HexId | None = None
    to_path: str | None = None
    record: B64Bytes = b""
    chunks: list[HexId] = Field(default_factory=list, max_length=MAX_CHANGE_CHUNKS)
    base_vv: Vector = Field(default_factory=dict)
    vv: Vector
    device: DeviceName


class CommitRequest(_Model):
    v: Literal[1] = 1
    idempotency_key: str = Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    changes: list[ChangeIn] = Field(min_length=1, max_length=MAX_COMMIT_CHANGES)


class CommitConflict(_Model):
    seq: int
    path_key: str
    conflict_with: int


class CommitResult(_Model):
    first: int
    last: int
    cursor: int
    conflicts: list[CommitConflict] = Field(default_factory=list)
    replayed: bool = False


class ChangeEntry(_Model):
    seq: int
    op: Op
    path_key: str
    path: str | None = None
    to_path_key: str | None = None
    to_path: str | None = None
    record: B64Bytes
    chunks: list[str]
    base_vv: dict[str, int]
    vv: dict[str, int]
    device: str
    conflict_with: int | None = None
    restored_from: int | None = None
    size: int | None = None
    time: float


class ChangesPage(_Model):
    entries: list[ChangeEntry]
    cursor: int
    more: bool
    head: int


class AckRequest(_Model):
    cursor: int = Field(ge=0)


class AckResult(_Model):
    cursor: int


class VersionEntry(_Model):
    seq: int
    op: Op
    time: float
    device: str
    size: int | None = None
    deleted: bool
    conflict_with: int | None = None
    restored_from: int | None = None


class VersionList(_Model):
    path_key: str
    versions: list[VersionEntry]


class RestoreRequest(_Model):
    path_key: HexId
    seq: int = Field(ge=1)
    device: DeviceName | None = None


class TreeItem(_Model):
    path_key: str
    change: ChangeEntry


class TreePage(_Model):
    items: list[TreeItem]
    cursor: int
    next_after: str | None = None


class StreamMessage(_Model):
    """One WebSocket message or SSE event: a page of the backlog, or the announcement of a new cursor."""

    type: Literal["changes", "cursor"]
    cursor: int
    entries: list[ChangeEntry] = Field(default_factory=list)
    more: bool = False
