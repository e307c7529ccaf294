"""Arena-relative paths, checked the same way for names from disk and names from the wire.

An arena path is relative, uses ``/`` as separator, and has no empty, ``.``
or ``..`` component and no NUL. Paths are compared in Unicode NFC so that the
same name written on macOS and on Linux is one path.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from shoal.errors import UnsafePathError

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def normalize_path(path: str) -> str:
    """Return the NFC form of a valid arena path, raising UnsafePathError otherwise."""
    validate_path(path)
    return unicodedata.normalize("NFC", path)


def validate_path(path: str) -> None:
    if not path:
        raise UnsafePathError("empty path", hint="give a path relative to the arena root")
    if "\x00" in path:
        raise UnsafePathError(f"path {path!r} contains a NUL character")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnsafePathError(f"path {path!r} is not valid UTF-8") from exc
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafePathError(f"path is {len(encoded)} bytes long; the limit is {MAX_PATH_BYTES}")
    if path.startswith("/"):
        raise UnsafePathError(f"path {path!r} is absolute", hint="arena paths are relative to the arena root")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise UnsafePathError(
                f"path {path!r} has an empty, '.' or '..' component",
                hint="paths may not climb out of the arena or contain '//'",
            )
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise UnsafePathError(f"a name in {path!r} is longer than {MAX_NAME_BYTES} bytes")


def parent_of(path: str) -> str:
    """The parent of an arena path, or "" for a top-level entry."""
    head, _, _ = path.rpartition("/")
    return head


def path_within(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` as an arena path (``"."`` for the root itself), both with
    symlinks resolved (the part of ``path`` that does not exist yet is taken as written); None
    when it lies outside ``root``."""
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    if rel == ".." or rel.startswith(".." + os.sep):
        return None
    return rel.replace(os.sep, "/")
