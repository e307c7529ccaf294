"""Versioned msgpack records: ``{"t": kind, "v": version, "b": body}``.

Readers refuse kinds they did not ask for and versions newer than they know,
with a message that says to upgrade shoal rather than a decoding traceback.
"""

from __future__ import annotations

from typing import Any

import msgpack

from shoal.errors import FormatError, UnsupportedVersionError


def pack_record(kind: str, version: int, body: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb({"t": kind, "v": version, "b": body}, use_bin_type=True)
    return packed


def unpack_record(data: bytes, kind: str, max_version: int) -> dict[str, Any]:
    try:
        record = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise FormatError(f"malformed {kind} record: {exc}") from exc
    if not isinstance(record, dict) or record.get("t") != kind or not isinstance(record.get("b"), dict):
        raise FormatError(f"not a {kind} record")
    version = record.get("v")
    if not isinstance(version, int) or version < 1:
        raise FormatError(f"{kind} record has no valid format version")
    if version > max_version:
        raise UnsupportedVersionError(
            f"{kind} record has format version {version}; this shoal reads up to {max_version}",
            hint="upgrade shoal on this device",
        )
    body: dict[str, Any] = record["b"]
    return body
