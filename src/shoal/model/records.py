"""The entry record codec of plain arenas: what one log entry says about one path, as bytes.

Devices (``shoal.engine.records``) and the hub's file API write the same
record, so either side reads what the other wrote. The record is a versioned
msgpack record (``shoal.model.codec``) with ``size`` in its body, so the hub
can list versions without understanding the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.errors import FormatError
from shoal.model.codec import pack_record, unpack_record
from shoal.model.paths import normalize_path

ENTRY_RECORD_KIND = "entry"
ENTRY_RECORD_FORMAT = 1
ENTRY_KINDS = frozenset({"file", "dir", "symlink", "tombstone"})


@dataclass(frozen=True, slots=True)
class EntryBody:
    """The decoded body of an entry record; ``kind`` is one of :data:`ENTRY_KINDS`."""

    kind: str
    path: str
    device: str
    size: int = 0
    mode: int = 0
    mtime_ns: int = 0
    target: str | None = None
    manifest: bytes | None = None  # ``Manifest.encode()`` of a file version
    from_path: str | None = None  # a rename's source


def encode_entry(entry: EntryBody) -> bytes:
    body: dict[str, Any] = {
        "kind": entry.kind,
        "path": entry.path,
        "device": entry.device,
        "size": entry.size,
        "mode": entry.mode,
        "mtime_ns": entry.mtime_ns,
    }
    if entry.target is not None:
        body["target"] = entry.target
    if entry.manifest is not None:
        body["manifest"] = entry.manifest
    if entry.from_path is not None:
        body["from"] = entry.from_path
    return pack_record(ENTRY_RECORD_KIND, ENTRY_RECORD_FORMAT, body)


def decode_entry(data: bytes) -> EntryBody:
    """Decode and check an entry record (paths in NFC, files carry a manifest, symlinks a target)."""
    body = unpack_record(data, ENTRY_RECORD_KIND, ENTRY_RECORD_FORMAT)
    try:
        kind = str(body["kind"])
        entry = EntryBody(
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
    if kind not in ENTRY_KINDS:
        raise FormatError(f"malformed entry record: unknown kind {kind!r}")
    if kind == "file" and entry.manifest is None:
        raise FormatError(f"the file record of {entry.path!r} has no manifest")
    if kind == "symlink" and entry.target is None:
        raise FormatError(f"the symlink record of {entry.path!r} has no target")
    return entry
