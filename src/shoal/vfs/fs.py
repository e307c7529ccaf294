"""An arena as a filesystem: the one definition the FUSE and WebDAV adapters translate.

Names, sizes, modes and times come from the in-memory tree (built from the
device index); content comes from :class:`~shoal.store.cache.CachedChunks`,
one chunk at a time, only the chunks a read touches, with read-ahead while a
handle reads sequentially. Writes land in an overlay file and are committed
through the ``commit`` callback on close (flush) or fsync. Every operation
runs on the event loop; docs/dev/vfs.md says what may be awaited where.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shoal.errors import NotFoundError, UnsafePathError
from shoal.model.paths import validate_path
from shoal.reconcile.kinds import Kind
from shoal.state.index import ArenaIndex
from shoal.store.cache import CachedChunks, Priority
from shoal.vfs.changes import ChangeOp, CommitFn, LocalChange
from shoal.vfs.errors import (
    BadHandleError,
    ExistsError,
    IsAFolderError,
    NotAFolderError,
    NotEmptyError,
    ReadOnlyError,
)
from shoal.vfs.overlay import Overlays
from shoal.vfs.tree import DIR_MODE, Node, Tree

log = logging.getLogger(__name__)

BLOCK = 4096


@dataclass(frozen=True, slots=True)
class Attr:
    ino: int
    kind: Kind
    size: int
    mode: int  # permission bits
    mtime_ns: int
    nlink: int


@dataclass(frozen=True, slots=True)
class FsStats:
    block_size: int
    blocks: int
    blocks_free: int
    files: int
    name_max: int = 255


@dataclass(slots=True)
class _Handle:
    node: Node
    writable: bool
    next_offset: int = -1  # where a sequential reader reads next
    streak: int = 0  # sequential reads in a row (the read-ahead window grows with it)


def _attr(node: Node) -> Attr:
    nlink = 2 + sum(1 for _ in node.children) if node.kind is Kind.DIR else 1
    size = len((node.target or "").encode()) if node.kind is Kind.SYMLINK else node.size
    return Attr(node.ino, node.kind, size, node.mode, node.mtime_ns, nlink)


def _overlay_of(node: Node) -> Path | None:
    return node.overlay


def _decode_name(name: bytes | str) -> str:
    if isinstance(name, bytes):
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnsafePathError(f"the name {name!r} is not valid UTF-8") from exc
    return name


class ArenaFS:
    def __init__(
        self,
        index: ArenaIndex,
        chunks: CachedChunks,
        overlay_dir: Path,
        commit: CommitFn,
        *,
        root_pinned: bool = False,
        readahead_chunks: int = 8,
        read_only: bool = False,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.index = index
        self.read_only = read_only
        self.chunks = chunks
        self.commit = commit
        self.overlays = Overlays(overlay_dir)
        self.tree = Tree(root_pinned=root_pinned, root_mtime_ns=clock())
        self.readahead = readahead_chunks
        self._clock = clock
        self._handles: dict[int, _Handle] = {}
        self._next_fh = 1
        self._dirty: set[int] = set()  # inodes whose overlay holds uncommitted writes

    def start(self) -> None:
        """Load the namespace from the index and clear what a killed mount left in the overlay folder."""
        self.overlays.start()
        self.tree.load(self.index.entries())

    def refresh(self) -> None:
        """Take the index's current state (after the engine applied remote changes)."""
        self.tree.load(self.index.entries())

    async def aclose(self) -> None:
        for fh in list(self._handles):
            await self.release(fh)
        self.overlays.close_all()

    # -- namespace ----------------------------------------------------------------------------

    def _dir(self, ino: int) -> Node:
        node = self.tree.get(ino)
        if node.kind is not Kind.DIR:
            raise NotAFolderError(f"{node.path} is not a folder")
        return node

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError("this mount is read-only")

    def _child_path(self, parent: Node, name: bytes | str) -> str:
        text = _decode_name(name)
        path = f"{parent.path}/{text}" if parent.path else text
        validate_path(path)
        if "/" in text:
            raise UnsafePathError(f"the name {text!r} contains '/'")
        return path

    def lookup(self, parent_ino: int, name: bytes | str) -> Attr:
        parent = self._dir(parent_ino)
        node = self.tree.child(parent, _decode_name(name))
        if node is None:
            raise NotFoundError(f"{_decode_name(name)} does not exist in {parent.path or '/'}")
        return _attr(node)

    def getattr(self, ino: int) -> Attr:
        return _attr(self.tree.get(ino))

    def readdir(self, ino: int) -> list[tuple[str, Attr]]:
        node = self._dir(ino)
        out = [(name, _attr(self.tree.nodes[i])) for name, i in node.children.items() if i in self.tree.nodes]
        out.sort()
        return out

    def readlink(self, ino: int) -> str:
        node = self.tree.get(ino)
        if node.kind is not Kind.SYMLINK or node.target is None:
            raise UnsafePathError(f"{node.path} is not a symbolic link")
        return node.target

    def path_of(self, ino: int) -> str:
        return self.tree.get(ino).path

    def statfs(self) -> FsStats:
        status = self.chunks.cache.status()
        total = max(status.limit, 1)
        free = max(status.limit - status.used - status.reserved, 0)
        return FsStats(BLOCK, total // BLOCK, free // BLOCK, len(self.tree.nodes))

    # -- reading ------------------------------------------------------------------------------

    def _priority(self, node: Node) -> Priority:
        return Priority.PINNED if node.pinned else Priority.UNPINNED

    async def open(self, ino: int, *, write: bool = False, truncate: bool = False) -> int:
        node = self.tree.get(ino)
        if node.kind is Kind.DIR:
            raise IsAFolderError(f"{node.path} is a folder")
        if write:
            self._check_writable()
            await self._ensure_overlay(node, truncate=truncate)
            if truncate:
                self._mark_dirty(node)
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = _Handle(node, write)
        return fh

    def handle_path(self, fh: int) -> str:
        """The path an open handle refers to (for log lines)."""
        handle = self._handles.get(fh)
        return handle.node.path if handle is not None else f"file handle {fh}"

    def _handle(self, fh: int) -> _Handle:
        handle = self._handles.get(fh)
        if handle is None:
            raise BadHandleError(f"file handle {fh} is not open")
        return handle

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self._handle(fh)
        node = handle.node
        if node.overlay is not None:
            return self.overlays.read(node.overlay, offset, size)
        if node.manifest is None:
            if node.size == 0:
                return b""
            raise NotFoundError(f"{node.path}: this device has no record of its content")
        span = node.chunk_span(offset, size)
        if not span:
            return b""
        priority = self._priority(node)
        self._read_ahead(handle, node, offset, size, span[-1][0], priority)
        refs = node.manifest.chunks
        if len(span) == 1:
            index, start = span[0]
            data = await self.chunks.get(refs[index].id, priority)
            return data[offset - start : offset - start + size]
        parts = await asyncio.gather(*(self.chunks.get(refs[i].id, priority) for i, _ in span))
        whole = b"".join(parts)
        first_start = span[0][1]
        return whole[offset - first_start : offset - first_start + size]

    def _read_ahead(
        self, handle: _Handle, node: Node, offset: int, size: int, last: int, priority: Priority
    ) -> None:
        sequential = offset == handle.next_offset or (offset == 0 and handle.next_offset < 0)
        handle.streak = handle.streak + 1 if sequential else 0
        handle.next_offset = offset + size
        if not sequential or self.readahead <= 0 or node.manifest is None:
            return
        window = min(self.readahead, 1 + handle.streak // 2)
        refs = node.manifest.chunks[last + 1 : last + 1 + window]
        self.chunks.prefetch((ref.id for ref in refs), priority)

    # -- writing ------------------------------------------------------------------------------

    async def _ensure_overlay(self, node: Node, *, truncate: bool) -> Path:
        if node.overlay is not None:
            if truncate:
                self.overlays.truncate(node.overlay, 0)
                node.size = 0
            return node.overlay
        if truncate or node.manifest is None:
            path = self.overlays.create()
            node.size = 0
        else:
            priority = self._priority(node)
            path = await self.overlays.copy_of(node.manifest, lambda cid: self.chunks.get(cid, priority))
        raced = _overlay_of(node)  # another writer may have made one while we fetched
        if raced is not None:
            self.overlays.discard(path)
            return raced
        node.overlay = path
        return path

    def _mark_dirty(self, node: Node) -> None:
        self._dirty.add(node.ino)
        node.recorded = False
        node.mtime_ns = self._clock()

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh)
        if not handle.writable:
            raise BadHandleError(f"{handle.node.path} was not opened for writing")
        node = handle.node
        path = await self._ensure_overlay(node, truncate=False)
        done = self.overlays.write(path, offset, data)
        node.size = max(node.size, offset + done)
        self._mark_dirty(node)
        return done

    async def flush(self, fh: int) -> None:
        """close(2): commit what this file's overlay holds, if anything changed."""
        await self._commit_content(self._handle(fh).node)

    async def fsync(self, fh: int) -> None:
        node = self._handle(fh).node
        if node.overlay is not None:
            self.overlays.sync(node.overlay)
        await self._commit_content(node)

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None:
            return
        await self._commit_content(handle.node)
        self._retire_overlay(handle.node)

    async def _commit_content(self, node: Node) -> None:
        if node.ino not in self._dirty or node.overlay is None:
            return
        if self.tree.nodes.get(node.ino) is not node:  # unlinked while open: nothing to commit
            self._dirty.discard(node.ino)
            return
        self._dirty.discard(node.ino)
        change = LocalChange(
            ChangeOp.PUT,
            node.path,
            Kind.FILE,
            node.mode,
            node.mtime_ns,
            node.size,
            content=node.overlay,
            base=node.base,
        )
        try:
            manifest = await self.commit(change)
        except BaseException:
            self._dirty.add(node.ino)  # still unsaved: the next close or fsync tries again
            raise
        if manifest is not None and manifest.size == node.size and node.ino not in self._dirty:
            node.set_manifest(manifest)
            node.local = False
            node.recorded = True

    def _retire_overlay(self, node: Node) -> None:
        """Drop the overlay once its content is recorded and no handle writes to it any more."""
        if node.overlay is None or node.ino in self._dirty or not node.recorded:
            return
        if any(h.node is node for h in self._handles.values()):
            return
        self.overlays.discard(node.overlay)
        node.overlay = None

    async def create(self, parent_ino: int, name: bytes | str, mode: int) -> tuple[int, Attr]:
        self._check_writable()
        parent = self._dir(parent_ino)
        path = self._child_path(parent, name)
        if self.tree.at(path) is not None:
            raise ExistsError(f"{path} already exists")
        node = self.tree.add(
            Node(0, path, Kind.FILE, mode=mode & 0o7777, mtime_ns=self._clock(), pinned=parent.pinned)
        )
        node.local = True
        node.overlay = self.overlays.create()
        self._dirty.add(node.ino)
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = _Handle(node, True)
        return fh, _attr(node)

    async def setattr(
        self, ino: int, *, size: int | None = None, mode: int | None = None, mtime_ns: int | None = None
    ) -> Attr:
        self._check_writable()
        node = self.tree.get(ino)
        if size is not None:
            if node.kind is Kind.DIR:
                raise IsAFolderError(f"{node.path} is a folder")
            path = await self._ensure_overlay(node, truncate=size == 0)
            self.overlays.truncate(path, size)
            node.size = size
            self._mark_dirty(node)
        if mode is not None:
            node.mode = mode & 0o7777
        if mtime_ns is not None:
            node.mtime_ns = mtime_ns
        if node.ino in self._dirty and not any(h.node is node for h in self._handles.values()):
            await self._commit_content(node)  # truncate(2) on a path: no close will follow
        elif (mode is not None or mtime_ns is not None) and node.ino not in self._dirty:
            await self.commit(
                LocalChange(
                    ChangeOp.META, node.path, node.kind, node.mode, node.mtime_ns, node.size, base=node.base
                )
            )
        return _attr(node)

    # -- folders, links, renames, deletes -----------------------------------------------------

    async def mkdir(self, parent_ino: int, name: bytes | str, mode: int) -> Attr:
        self._check_writable()
        parent = self._dir(parent_ino)
        path = self._child_path(parent, name)
        if self.tree.at(path) is not None:
            raise ExistsError(f"{path} already exists")
        node = Node(0, path, Kind.DIR, mode=(mode & 0o7777) or DIR_MODE, mtime_ns=self._clock())
        node.pinned, node.local = parent.pinned, True
        self.tree.add(node)
        await self.commit(LocalChange(ChangeOp.MKDIR, path, Kind.DIR, node.mode, node.mtime_ns))
        return _attr(node)

    async def symlink(self, parent_ino: int, name: bytes | str, target: bytes | str) -> Attr:
        self._check_writable()
        parent = self._dir(parent_ino)
        path = self._child_path(parent, name)
        if self.tree.at(path) is not None:
            raise ExistsError(f"{path} already exists")
        text = _decode_name(target)
        node = Node(0, path, Kind.SYMLINK, mode=0o777, target=text, mtime_ns=self._clock())
        node.local = True
        self.tree.add(node)
        await self.commit(
            LocalChange(ChangeOp.SYMLINK, path, Kind.SYMLINK, 0o777, node.mtime_ns, target=text)
        )
        return _attr(node)

    async def unlink(self, parent_ino: int, name: bytes | str) -> None:
        self._check_writable()
        node = self._existing(parent_ino, name)
        if node.kind is Kind.DIR:
            raise IsAFolderError(f"{node.path} is a folder")
        await self._delete(node)

    async def rmdir(self, parent_ino: int, name: bytes | str) -> None:
        self._check_writable()
        node = self._existing(parent_ino, name)
        if node.kind is not Kind.DIR:
            raise NotAFolderError(f"{node.path} is not a folder")
        if node.children:
            raise NotEmptyError(f"{node.path} is not empty")
        await self._delete(node)

    def _existing(self, parent_ino: int, name: bytes | str) -> Node:
        parent = self._dir(parent_ino)
        node = self.tree.child(parent, _decode_name(name))
        if node is None:
            raise NotFoundError(f"{_decode_name(name)} does not exist in {parent.path or '/'}")
        return node

    async def _delete(self, node: Node) -> None:
        self.tree.remove(node.path)
        self._dirty.discard(node.ino)
        if node.overlay is not None and not any(h.node is node for h in self._handles.values()):
            self.overlays.discard(node.overlay)
            node.overlay = None
        await self.commit(LocalChange(ChangeOp.DELETE, node.path, node.kind, base=node.base))

    async def rename(
        self,
        parent_ino: int,
        name: bytes | str,
        new_parent_ino: int,
        new_name: bytes | str,
        *,
        replace: bool = True,
    ) -> None:
        self._check_writable()
        node = self._existing(parent_ino, name)
        new_parent = self._dir(new_parent_ino)
        dst = self._child_path(new_parent, new_name)
        if dst == node.path:
            return
        if dst.startswith(node.path + "/"):
            raise UnsafePathError(f"cannot move {node.path} into itself")
        victim = self.tree.at(dst)
        if victim is not None:
            if not replace:
                raise ExistsError(f"{dst} already exists")
            if victim.kind is Kind.DIR and node.kind is not Kind.DIR:
                raise IsAFolderError(f"{dst} is a folder")
            if victim.kind is not Kind.DIR and node.kind is Kind.DIR:
                raise NotAFolderError(f"{dst} is not a folder")
            if victim.kind is Kind.DIR and victim.children:
                raise NotEmptyError(f"{dst} is not empty")
            await self._delete(victim)
        src = node.path
        self.tree.move(src, dst)
        await self.commit(
            LocalChange(
                ChangeOp.RENAME, dst, node.kind, node.mode, node.mtime_ns, from_path=src, base=node.base
            )
        )

    # -- residency ----------------------------------------------------------------------------

    def is_hydrated(self, node: Node) -> bool:
        if node.overlay is not None:
            return True
        if node.manifest is None:
            return node.size == 0
        return all(self.chunks.is_cached(ref.id) for ref in node.manifest.chunks)
