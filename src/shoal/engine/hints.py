"""Push by the watcher's hints: stat only the paths it named, and judge deletions only there.

A full scan of a big arena costs a second or more per push; an edit names a
handful of paths. A hinted push scans those paths (a folder with its whole
subtree) and compares them with the index rows at and below them, so nothing
outside them can look deleted; a new folder is scanned whole. Whatever a hint
cannot settle safely falls back to the full scan, which also stays the
periodic backstop: any delete or rename (a mass delete may reach the watcher
over several batches, and its hold must see all of it), Unicode names
(normalisation clashes are seen only by listing the folder), ignore files
(they change which paths are synced), stubs and ``.git`` folders (their rules
look at siblings), and any pause (only a full scan clears one). A hinted file
with other hard links brings in the other names the index knows for its inode:
a write through one name changes them all, and the watcher reports only one.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.engine.context import ArenaContext
from shoal.engine.folder import FolderMode
from shoal.reconcile.coalesce import Batch
from shoal.worktree.entries import StatKey
from shoal.worktree.ignore import ARENA_MARKER, SHOALIGNORE, IgnoreRules
from shoal.worktree.scan import ScanResult, compare, scan_paths

MAX_HINTED = 2000  # more paths than this are cheaper as one full scan
_STUB_SUFFIX = ".shoal"


@dataclass(frozen=True, slots=True)
class HintedScope:
    """A scan of the hinted paths, the index rows within them, and the arena's whole live count."""

    scan: ScanResult
    index_keys: dict[str, StatKey]
    indexed: int


def hinted_paths(batch: Batch) -> set[str]:
    paths = set(batch.paths) | set(batch.subtrees)
    for move in batch.moves:
        paths.update((move.src, move.dst))
    return paths


def hinted_scope(ctx: ArenaContext, batch: Batch, rules: IgnoreRules) -> HintedScope | None:
    """The scope of a push limited to ``batch``; None when only a full scan is safe."""
    paths = hinted_paths(batch) | {e.path for e in ctx.index.dirty()}
    if (
        not paths
        or len(paths) > MAX_HINTED
        or any(_needs_full_scan(p) for p in paths)
        # the full scan's root checks decide (a missing or unmounted folder pauses)
        or not (ctx.root.root / ARENA_MARKER).is_file()
        or ctx.registry.get(ctx.arena_id).paused_reason is not None
        or FolderMode.for_round(ctx) is not None  # stubs stand for files by their siblings' names
    ):
        return None
    scan = scan_paths(ctx.root, paths, ignore=rules.scanner_filter)
    if scan.root_missing:
        return None
    linked = {e.inode for e in scan.entries.values() if e.links > 1}
    if linked and (others := ctx.index.files_with_inodes(linked) - paths):
        # A write through one name of a hard link changed the others, and the watcher named one.
        paths |= others
        scan = scan_paths(ctx.root, paths, ignore=rules.scanner_filter)
    keys: dict[str, StatKey] = {}
    for path in sorted(paths):
        if path not in keys:
            keys.update((e.path, e.stat_key()) for e in ctx.index.entries(path))
    if compare(keys, scan).deleted:
        # A delete (or a rename's source) is judged by a full scan: the watcher may report a mass
        # delete over several batches, and the hold for mass deletes must see all of it at once.
        return None
    return HintedScope(scan, keys, ctx.index.count())


def _needs_full_scan(path: str) -> bool:
    parts = path.split("/")
    name = parts[-1]
    return (
        not path
        or not path.isascii()
        or name == SHOALIGNORE
        or name.endswith(_STUB_SUFFIX)
        or ".git" in parts
    )
