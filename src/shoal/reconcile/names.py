"""Syncthing-style conflict copy names: ``NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT``.

The name is a pure function of the losing version's metadata (its mtime and
the device that wrote it), so every device that resolves the same conflict
creates the same conflict copy instead of one copy per device.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from shoal.errors import UsageError
from shoal.model.paths import MAX_NAME_BYTES

_MARK = ".sync-conflict-"
_CONFLICT_RE = re.compile(r"\.sync-conflict-\d{8}-\d{6}-[A-Za-z0-9]{1,16}(?:\.|$)")
_DEVICE_RE = re.compile(r"^[A-Za-z0-9]{1,16}$")
SHORT_DEVICE_LEN = 7


def short_device_id(device_id: str) -> str:
    """The first seven letters and digits of a device id, upper-cased, as Syncthing shows them."""
    cleaned = "".join(ch for ch in device_id if ch.isascii() and ch.isalnum()).upper()
    if not cleaned:
        raise UsageError(f"device id {device_id!r} has no letters or digits to name a conflict copy")
    return cleaned[:SHORT_DEVICE_LEN]


def split_extension(name: str) -> tuple[str, str]:
    """Split off the last extension like Syncthing; a leading dot starts a name, not an extension.

    ``a.tar.gz`` → (``a.tar``, ``.gz``); ``.bashrc`` → (``.bashrc``, ``""``);
    ``Makefile`` → (``Makefile``, ``""``); ``.config.json`` → (``.config``, ``.json``).
    """
    dot = name.rfind(".")
    if dot <= 0 or dot == len(name) - 1 or name[:dot].strip(".") == "":
        return name, ""
    return name[:dot], name[dot:]


def conflict_copy_name(path: str, when: datetime, device_short: str) -> str:
    """The arena path of the conflict copy of ``path`` written at ``when`` by ``device_short``.

    ``when`` should be the losing version's modification time (naive values are
    taken as UTC). Only the last path component changes. If the result would be
    longer than a name may be, the stem is shortened, never the marker.
    """
    if not _DEVICE_RE.match(device_short):
        raise UsageError(f"device short id {device_short!r} must be 1-16 letters or digits")
    stamp = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    head, sep, name = path.rpartition("/")
    stem, ext = split_extension(name)
    marker = f"{_MARK}{stamp}-{device_short}"
    budget = MAX_NAME_BYTES - len((marker + ext).encode("utf-8"))
    if budget < 1:
        ext = ""
        budget = MAX_NAME_BYTES - len(marker.encode("utf-8"))
    stem_bytes = stem.encode("utf-8")
    if len(stem_bytes) > budget:
        stem = stem_bytes[:budget].decode("utf-8", errors="ignore")
    return f"{head}{sep}{stem}{marker}{ext}"


def is_conflict_copy(name: str) -> bool:
    """True if the last component of ``name`` carries a conflict copy marker."""
    return _CONFLICT_RE.search(name.rpartition("/")[2]) is not None
