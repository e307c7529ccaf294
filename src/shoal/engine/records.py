"""Change records: what one log entry says about one path, and the codec that (de)serialises them.

The hub stores a record as opaque bytes. A plain arena's record is a
versioned msgpack record (``shoal.model.codec``) of the entry, with ``size``
in its body so the hub can list versions; path keys are the unkeyed BLAKE3
of the path. An encrypted arena will plug in another :class:`ArenaCodec`
(keyed path keys, sealed records) without touching the sync logic.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from shoal.errors import FormatError
from shoal.model.codec import pack_record, unpack_record
from shoal.model.manifest import Manifest
from shoal.model.paths import normalize_path
from shoal.net.schemas_sync import plain_path_key
from shoal.reconcile.kinds import Kind

RECORD_KIND = "entry"
RECORD_FORMAT = 1


class RecordKind(enum.StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    TOMBSTONE = "tombstone"

    def as_kind(self) -> Kind | None:
        return None if self is RecordKind.TOMBSTONE else Kind(self.value)


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """One version of one path as devices exchange it (a tombstone records a delete)."""

    kind: RecordKind
    path: str
    device: str
    size: int = 0
    mode: int = 0
    mtime_ns: int = 0
    target: str | None = None
    manifest: bytes | None = None  # ``Manifest.encode()`` of a file version
    from_path: str | None = None  # a rename's source (encrypted arenas send no clear paths)

    @property
    def deleted(self) -> bool:
        return self.kind is RecordKind.TOMBSTONE

    def decoded_manifest(self) -> Manifest:
        if self.manifest is None:
            raise FormatError(f"the record of {self.path!r} is a {self.kind} and has no manifest")
        return Manifest.decode(self.manifest)

    def chunk_ids(self) -> list[str]:
        """Distinct chunk ids (hex) the record references, in first-use order."""
        if self.manifest is None:
            return []
        seen: dict[str, None] = {}
        for ref in self.decoded_manifest().chunks:
            seen.setdefault(ref.id.hex(), None)
        return list(seen)

    def content_key(self) -> bytes:
        """What identifies the content: the whole-file hash, a symlink's target, nothing for folders."""
        if self.kind is RecordKind.FILE:
            return self.decoded_manifest().file_hash
        if self.kind is RecordKind.SYMLINK:
            return (self.target or "").encode("utf-8")
        return b""


class ArenaCodec(Protocol):
    """Path keys and record bytes for one arena."""

    @property
    def sends_paths(self) -> bool:
        """True when the hub sees paths in clear (plain arenas)."""
        ...

    def path_key(self, path: str) -> str: ...

    def encode(self, record: EntryRecord) -> bytes: ...

    def decode(self, data: bytes) -> EntryRecord: ...


class PlainCodec:
    """Plain arenas: clear paths, unkeyed path keys, msgpack records."""

    sends_paths = True

    def path_key(self, path: str) -> str:
        return plain_path_key(path)

    def encode(self, record: EntryRecord) -> bytes:
        body: dict[str, Any] = {
            "kind": record.kind.value,
            "path": record.path,
            "device": record.device,
            "size": record.size,
            "mode": record.mode,
            "mtime_ns": record.mtime_ns,
        }
        if record.target is not None:
            body["target"] = record.target
        if record.manifest is not None:
            body["manifest"] = record.manifest
        if record.from_path is not None:
            body["from"] = record.from_path
        return pack_record(RECORD_KIND, RECORD_FORMAT, body)

    def decode(self, data: bytes) -> EntryRecord:
        body = unpack_record(data, RECORD_KIND, RECORD_FORMAT)
        try:
            kind = RecordKind(body["kind"])
            record = EntryRecord(
                kind=kind,
                path=normalize_path(str(body["path"])),
                device=str(body["device"]),
                size=int(body.get("size", 0)),
                mode=int(body.get("mode", 0)) & 0o7777,
                mtime_ns=int(body.get("mtime_ns", 0)),
                target=None if body.get("target") is None else str(body["target"]),
                manifest=None if body.get("manifest") is None else bytes(body["manifest"]),
                from_path=None if body.get("from") is None else normalize_path(str(body["from"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"malformed entry record: {exc}") from exc
        if kind is RecordKind.FILE and record.manifest is None:
            raise FormatError(f"the file record of {record.path!r} has no manifest")
        if kind is RecordKind.SYMLINK and record.target is None:
            raise FormatError(f"the symlink record of {record.path!r} has no target")
        return record
