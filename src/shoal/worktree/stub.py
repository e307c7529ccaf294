"""Stubs: the on-disk placeholder ``NAME.shoal`` of an unpinned file whose content is not local.

A stub is a short JSON document (format version 1, see docs/formats.md)::

    {"shoal-stub": 1, "arena": "<arena id>", "path": "<arena path>", "size": 123,
     "mtime_ns": 1700000000000000000, "mode": 420, "hash": "<whole-file hash, hex>",
     "note": "..."}

It names the arena, the file's arena path, its size, mode, mtime and
whole-file hash; it holds no content and is never uploaded. The stub file's
own mtime is the file's, so ``ls -l`` sorts as if the file were there.

Only a stub naming *this* arena is a stub at all; whether it stands for the
path it sits at is the engine's call (it knows the index). Anything else
called ``X.shoal`` -- too big, not JSON, another format version, another
arena -- is an ordinary file and syncs as one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from shoal.errors import ConflictError, ShoalError
from shoal.reconcile.kinds import Kind
from shoal.worktree.atomic import AtomicFile, delete
from shoal.worktree.entries import STUB_SUFFIX, ScanEntry, entry_from_stat
from shoal.worktree.paths import ArenaRoot
from shoal.worktree.scan import ScanResult

STUB_MAGIC = "shoal-stub"
STUB_VERSION = 1
MAX_STUB_BYTES = 64 * 1024  # a path of 4096 bytes, JSON-escaped, fits many times over
STUB_MODE = 0o644
_NOTE = "Placeholder of a file kept online by shoal. Run `shoal hydrate` on it to get its content."


@dataclass(frozen=True, slots=True)
class Stub:
    arena: str
    path: str  # the arena path of the file it stands for
    size: int
    mtime_ns: int
    mode: int
    file_hash: bytes

    def encode(self) -> bytes:
        doc = {
            STUB_MAGIC: STUB_VERSION,
            "arena": self.arena,
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "mode": self.mode,
            "hash": self.file_hash.hex(),
            "note": _NOTE,
        }
        return (json.dumps(doc, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def stub_path(path: str) -> str:
    """Where the stub of ``path`` lives: ``path.shoal`` in the same folder."""
    return path + STUB_SUFFIX


def target_of(stub_file: str) -> str | None:
    """The path a stub file at ``stub_file`` stands for, or None when the name is not a stub's."""
    if not stub_file.endswith(STUB_SUFFIX) or stub_file.rpartition("/")[2] == STUB_SUFFIX:
        return None
    return stub_file[: -len(STUB_SUFFIX)]


class _NotAStubError(Exception):
    pass


def _field(doc: dict[str, object], key: str, kind: type) -> object:
    value = doc.get(key)
    if type(value) is not kind:
        raise _NotAStubError(key)
    return value


def parse_stub(data: bytes, arena: str) -> Stub | None:
    """The stub ``data`` describes if it is a well-formed version-1 stub of ``arena``; None otherwise."""
    try:
        if len(data) > MAX_STUB_BYTES:
            raise _NotAStubError("size")
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get(STUB_MAGIC) != STUB_VERSION or doc.get("arena") != arena:
            raise _NotAStubError("magic")
        path, digest = str(_field(doc, "path", str)), str(_field(doc, "hash", str))
        size, mtime, mode = (int(str(_field(doc, k, int))) for k in ("size", "mtime_ns", "mode"))
        if not path or len(digest) != 64 or size < 0 or not 0 <= mode <= 0o7777:
            raise _NotAStubError("range")
        return Stub(arena, path, size, mtime, mode, bytes.fromhex(digest))
    except (_NotAStubError, UnicodeDecodeError, ValueError):
        return None


def read_stub(root: ArenaRoot, stub_file: str, arena: str) -> Stub | None:
    """The stub at ``stub_file`` (never following a symlink), or None if it is not one of ``arena``."""
    try:
        with root.open_parent(stub_file) as (dir_fd, name):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as f:
                data = f.read(MAX_STUB_BYTES + 1)
    except (OSError, ShoalError):
        return None
    return parse_stub(data, arena)


def as_file_entry(stub: Stub, disk: ScanEntry, path: str | None = None) -> ScanEntry:
    """The scan entry of the file a stub stands for: the stub file's inode and mtime (so touching
    or replacing the stub is seen), the file's size and mode."""
    return ScanEntry(
        path=path or stub.path,
        kind=Kind.FILE,
        size=stub.size,
        mtime_ns=disk.mtime_ns,
        inode=disk.inode,
        mode=stub.mode,
        stub=True,
    )


def stub_files(scan: ScanResult, arena: str, root: ArenaRoot) -> dict[str, Stub]:
    """Every ``*.shoal`` file of ``scan`` that is a stub of ``arena``, by the stub file's path."""
    found: dict[str, Stub] = {}
    for path, entry in scan.entries.items():
        if (
            entry.stub
            or entry.kind is not Kind.FILE
            or entry.size > MAX_STUB_BYTES
            or target_of(path) is None
        ):
            continue  # (an entry standing for a stubbed file is not a file on disk: never read it)
        stub = read_stub(root, path, arena)
        if stub is not None:
            found[path] = stub
    return found


def observe_stub(root: ArenaRoot, path: str, arena: str) -> ScanEntry | None:
    """The file entry of ``path``'s stub when ``path.shoal`` is a stub of ``arena`` naming ``path``."""
    where = stub_path(path)
    try:
        info = root.lstat(where)
    except ShoalError:
        return None
    if info is None:
        return None
    disk = entry_from_stat(where, info)
    if disk is None or disk.kind is not Kind.FILE or disk.size > MAX_STUB_BYTES:
        return None
    stub = read_stub(root, where, arena)
    if stub is None or stub.path != path:
        return None
    return as_file_entry(stub, disk)


def write_stub(root: ArenaRoot, stub: Stub, *, at: str | None = None, durable: bool = True) -> ScanEntry:
    """Write ``stub`` atomically at ``at`` (default: next to its file), replacing only a stub of the
    same arena there (a stub holds no content). Returns the file entry the index keeps for it.
    A user's own file of that name raises ConflictError and is left alone. ``durable=False`` skips
    the fsyncs: the caller syncs the filesystem before its index says the stub is there."""
    where = stub_path(at or stub.path)
    expected = None
    info = root.lstat(where)
    if info is not None:
        current = entry_from_stat(where, info)
        if current is None or current.kind is not Kind.FILE or read_stub(root, where, stub.arena) is None:
            raise ConflictError(f"{where!r} exists and is not a shoal stub; it was left alone")
        expected = current.stat_key()
    with AtomicFile(root, where) as f:
        f.write(stub.encode())
        written = f.commit(expected=expected, mode=STUB_MODE, mtime_ns=stub.mtime_ns, synced=not durable)
    return as_file_entry(stub, written, at or stub.path)


def remove_stub(root: ArenaRoot, path: str, arena: str) -> bool:
    """Remove ``path``'s stub if the file there is still a stub of ``arena`` naming ``path``.
    Returns False when there was none."""
    if observe_stub(root, path, arena) is None:
        return False
    return remove_stub_file(root, stub_path(path), arena)


def remove_stub_file(root: ArenaRoot, stub_file: str, arena: str) -> bool:
    """Remove the stub file ``stub_file`` (wherever it sits) if it still is a stub of ``arena``."""
    try:
        info = root.lstat(stub_file)
        if info is None or read_stub(root, stub_file, arena) is None:
            return False
        current = entry_from_stat(stub_file, info)
        assert current is not None
        return delete(root, stub_file, expected=current.stat_key())
    except ShoalError:
        return False
