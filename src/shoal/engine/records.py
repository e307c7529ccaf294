"""Change records: what one log entry says about one path, and the codec that (de)serialises them.

The hub stores a record as opaque bytes. A plain arena's record is a
versioned msgpack record (``shoal.model.codec``) of the entry, with ``size``
in its body so the hub can list versions; path keys are the unkeyed BLAKE3
of the path. An encrypted arena will plug in another :class:`ArenaCodec`
(keyed path keys, sealed records) without touching the sync logic.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Protocol

from shoal.errors import FormatError
from shoal.model.manifest import Manifest
from shoal.model.records import ENTRY_RECORD_FORMAT, ENTRY_RECORD_KIND, EntryBody, decode_entry, encode_entry
from shoal.net.schemas_sync import plain_path_key
from shoal.reconcile.kinds import Kind

RECORD_KIND = ENTRY_RECORD_KIND
RECORD_FORMAT = ENTRY_RECORD_FORMAT


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
        return _decode_manifest(self.manifest)

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


@functools.lru_cache(maxsize=4096)
def _decode_manifest(encoded: bytes) -> Manifest:
    """Decoded once per record rather than at each step of a pull that asks (planning, fetching,
    writing: three or four times each, an eighth of the pull's time holding the GIL)."""
    return Manifest.decode(encoded)


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
        return encode_entry(
            EntryBody(
                kind=record.kind.value,
                path=record.path,
                device=record.device,
                size=record.size,
                mode=record.mode,
                mtime_ns=record.mtime_ns,
                target=record.target,
                manifest=record.manifest,
                from_path=record.from_path,
            )
        )

    def decode(self, data: bytes) -> EntryRecord:
        body = decode_entry(data)
        return EntryRecord(
            kind=RecordKind(body.kind),
            path=body.path,
            device=body.device,
            size=body.size,
            mode=body.mode,
            mtime_ns=body.mtime_ns,
            target=body.target,
            manifest=body.manifest,
            from_path=body.from_path,
        )
