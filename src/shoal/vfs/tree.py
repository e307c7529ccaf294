"""The arena's namespace in memory: one node per path with a stable inode number.

Built from the device index once (names, sizes, modes and times need no
content), then changed by the filesystem's own operations and refreshed from
the index when the engine has applied remote changes. Inode numbers stay
the same for a path for the life of the mount.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shoal.errors import FormatError, NotFoundError
from shoal.model.manifest import Manifest
from shoal.reconcile.kinds import Kind
from shoal.state.index import IndexEntry, Residency, StatKey

ROOT_INODE = 1
DIR_MODE = 0o755


@dataclass(slots=True)
class Node:
    ino: int
    path: str  # "" for the root
    kind: Kind
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0o644  # permission bits
    target: str | None = None
    manifest: Manifest | None = None
    pinned: bool = False  # the residency setting: pinned, or unpinned (cached / online-only)
    overlay: Path | None = None  # content written through the mount, not yet in the index
    local: bool = False  # made through the mount; the index does not show it yet
    recorded: bool = False  # the overlay's content is what ``manifest`` describes (the overlay may go)
    base: StatKey | None = None  # the index's stat of the version shown (None: made through the mount)
    children: dict[str, int] = field(default_factory=dict)  # dirs: name -> inode
    _ends: list[int] | None = None  # end offset of each chunk, computed on first read

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    @property
    def parent_path(self) -> str:
        return self.path.rpartition("/")[0]

    def chunk_span(self, offset: int, size: int) -> list[tuple[int, int]]:
        """(chunk index, chunk start offset) of every chunk ``[offset, offset + size)`` touches."""
        if self.manifest is None or size <= 0 or offset >= self.size:
            return []
        if self._ends is None:
            ends, total = [], 0
            for ref in self.manifest.chunks:
                total += ref.length
                ends.append(total)
            self._ends = ends
        ends = self._ends
        first = bisect.bisect_right(ends, offset)
        last_byte = min(offset + size, self.size) - 1
        last = bisect.bisect_right(ends, last_byte)
        return [(i, ends[i] - self.manifest.chunks[i].length) for i in range(first, last + 1)]

    def set_manifest(self, manifest: Manifest | None) -> None:
        self.manifest = manifest
        self._ends = None


def _manifest_of(entry: IndexEntry) -> Manifest | None:
    if entry.kind is not Kind.FILE or entry.manifest is None:
        return None
    try:
        return Manifest.decode(entry.manifest)
    except FormatError:
        return None  # reads of this file fail with EIO; fsck reports the row


class Tree:
    def __init__(self, *, root_pinned: bool, root_mtime_ns: int = 0) -> None:
        self.nodes: dict[int, Node] = {}
        self.by_path: dict[str, int] = {}
        self._next = ROOT_INODE
        self._add(Node(0, "", Kind.DIR, mode=DIR_MODE, pinned=root_pinned, mtime_ns=root_mtime_ns))

    def _add(self, node: Node) -> Node:
        known = self.by_path.get(node.path)
        if known is not None:
            node.ino = known
        else:
            node.ino = self._next
            self._next += 1
            self.by_path[node.path] = node.ino
        old = self.nodes.get(node.ino)
        if old is not None and old.kind is Kind.DIR and node.kind is Kind.DIR:
            node.children = old.children
        self.nodes[node.ino] = node
        if node.path:
            self.dir_of(node.parent_path, create=True).children[node.name] = node.ino
        return node

    @property
    def root(self) -> Node:
        return self.nodes[ROOT_INODE]

    def get(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise NotFoundError(f"no file with inode {ino} in this mount")
        return node

    def at(self, path: str) -> Node | None:
        ino = self.by_path.get(path)
        return None if ino is None else self.nodes.get(ino)

    def dir_of(self, path: str, *, create: bool = False) -> Node:
        node = self.at(path)
        if node is not None and node.kind is Kind.DIR:
            return node
        if node is None and create:
            parent = self.dir_of(path.rpartition("/")[0], create=True) if path else None
            return self._add(
                Node(0, path, Kind.DIR, mode=DIR_MODE, pinned=parent.pinned if parent else False)
            )
        raise NotFoundError(f"{path or '/'} is not a folder in this arena")

    def child(self, parent: Node, name: str) -> Node | None:
        ino = parent.children.get(name)
        return None if ino is None else self.nodes.get(ino)

    def put_entry(self, entry: IndexEntry) -> Node:
        """Add or replace the node of an index entry (a node with unsaved overlay content is kept)."""
        current = self.at(entry.path)
        if current is not None and current.overlay is not None:
            return current
        if current is not None and current.kind is not entry.kind:
            self.remove(entry.path)
        node = Node(
            0,
            entry.path,
            entry.kind,
            size=entry.size if entry.kind is Kind.FILE else 0,
            mtime_ns=entry.mtime_ns,
            mode=entry.mode or (DIR_MODE if entry.kind is Kind.DIR else 0o644),
            target=entry.target,
            pinned=entry.residency is Residency.PINNED,
            base=entry.stat_key(),
        )
        node.set_manifest(_manifest_of(entry))
        return self._add(node)

    def add(self, node: Node) -> Node:
        return self._add(node)

    def remove(self, path: str) -> Node | None:
        """Remove a path and everything below it from the namespace."""
        node = self.at(path)
        if node is None:
            return None
        for below in list(self.walk(node))[1:]:
            self.by_path.pop(below.path, None)
            self.nodes.pop(below.ino, None)
        self.by_path.pop(path, None)
        self.nodes.pop(node.ino, None)
        parent = self.at(node.parent_path)
        if parent is not None:
            parent.children.pop(node.name, None)
        return node

    def move(self, src: str, dst: str) -> Node:
        """Rename ``src`` (and its subtree) to ``dst``; inode numbers move with the nodes."""
        node = self.at(src)
        if node is None:
            raise NotFoundError(f"{src} does not exist")
        subtree = list(self.walk(node))
        old_parent = self.at(node.parent_path)
        if old_parent is not None:
            old_parent.children.pop(node.name, None)
        for item in subtree:
            self.by_path.pop(item.path, None)
        for item in subtree:
            item.path = dst + item.path[len(src) :]
            self.by_path[item.path] = item.ino
        self.dir_of(node.parent_path, create=True).children[node.name] = node.ino
        return node

    def walk(self, node: Node) -> Iterator[Node]:
        """``node`` then every node below it."""
        stack = [node]
        while stack:
            current = stack.pop()
            yield current
            if current.kind is Kind.DIR:
                stack.extend(self.nodes[i] for i in current.children.values() if i in self.nodes)

    def load(self, entries: Iterable[IndexEntry]) -> None:
        """Replace the namespace with the index's live entries (nodes with unsaved content stay)."""
        seen = {""}
        for entry in entries:
            if entry.deleted:
                continue
            self.put_entry(entry)
            path = entry.path
            while path and path not in seen:
                seen.add(path)
                path = path.rpartition("/")[0]
        stale = [n.path for n in self.nodes.values() if n.path not in seen and not _unsaved(n)]
        for path in sorted(stale, key=len):
            node = self.at(path)
            if node is not None and not any(_unsaved(x) for x in self.walk(node)):
                self.remove(path)


def _unsaved(node: Node) -> bool:
    return node.overlay is not None or node.local
