"""What the filesystem hands to the engine: one local change at a time, through a callback.

The mount never talks to the hub itself. Every change made through it (new
content on close or fsync, a folder, a rename, a delete) becomes a
:class:`LocalChange` passed to the ``commit`` callback the program supplies;
the engine's commit records it (and queues it while the hub is away).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from shoal.model.manifest import Manifest
from shoal.reconcile.kinds import Kind


class ChangeOp(enum.StrEnum):
    PUT = "put"  # new content for a file (``content`` holds it)
    MKDIR = "mkdir"
    SYMLINK = "symlink"
    DELETE = "delete"
    RENAME = "rename"  # ``from_path`` -> ``path``
    META = "meta"  # mode or mtime of an unchanged file or folder


@dataclass(frozen=True, slots=True)
class LocalChange:
    op: ChangeOp
    path: str
    kind: Kind
    mode: int = 0
    mtime_ns: int = 0
    size: int = 0
    content: Path | None = None  # PUT: the overlay file; read it before returning, it may change after
    target: str | None = None  # SYMLINK
    from_path: str | None = None  # RENAME
    # The synced stat (``IndexEntry.stat_key()``) of the version the mount showed when the change
    # began, None for a path the mount made: a folder copy that no longer matches it is someone
    # else's edit, never to be overwritten.
    base: tuple[str, int, int, int, int, str | None] | None = None


# Returns the manifest the content was recorded under (the overlay file is then dropped and reads
# go through the cache), or None when the change was only queued (the overlay keeps serving reads).
CommitFn = Callable[[LocalChange], Awaitable[Manifest | None]]
