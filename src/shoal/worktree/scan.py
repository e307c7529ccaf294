"""Fast scanning of an arena root and the by-stat comparison with the index.

The scanner walks with ``os.scandir`` on directory file descriptors opened
with ``O_NOFOLLOW``: symlinks are recorded (with their target) and never
followed, so a symlink loop or a link to ``/`` costs nothing and leaks nothing.
Folders it cannot read, and names that cannot be arena paths, are reported;
their paths are neither synced nor treated as deleted.

Comparing against the index by stat (kind, size, mtime_ns, inode, mode,
symlink target) tells which files must be re-chunked: unchanged files cost one
``lstat`` each.
"""

from __future__ import annotations

import os
import stat as st
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from shoal.errors import ShoalError
from shoal.reconcile.kinds import Kind
from shoal.worktree.entries import ScanEntry, StatKey, entry_from_stat, is_temp_name, stat_changed
from shoal.worktree.paths import ArenaRoot, BadName, join, name_from_disk

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
IgnoreFn = Callable[[str, bool], bool]


@dataclass(frozen=True, slots=True)
class ScanProblem:
    path: str  # arena-relative, printable
    reason: str


@dataclass(slots=True)
class ScanResult:
    entries: dict[str, ScanEntry] = field(default_factory=dict)
    problems: list[ScanProblem] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)  # folders whose content is unknown
    ignored: set[str] = field(default_factory=set)  # paths skipped by the ignore rules (not descended)
    temp_files: list[str] = field(default_factory=list)  # leftovers of interrupted atomic writes
    collisions: set[str] = field(default_factory=set)  # skipped, content unknown (name clash, unreadable)
    root_missing: bool = False


def _valid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _normalisation_clashes(names: Iterable[str]) -> set[str]:
    """Names of one folder that are equal in NFC (``é`` written two ways): neither can be synced."""
    by_key: dict[str, list[str]] = {}
    for name in names:
        if name.isascii() or not _valid_utf8(name):
            continue
        by_key.setdefault(unicodedata.normalize("NFC", name), []).append(name)
    clashing: set[str] = set()
    for group in by_key.values():
        if len(group) > 1:
            clashing.update(group)
    return clashing


class _Walker:
    def __init__(self, result: ScanResult, ignore: IgnoreFn | None) -> None:
        self.result = result
        self.ignore = ignore

    def walk(self, fd: int, prefix: str) -> None:
        stack: list[tuple[int, str]] = [(fd, prefix)]
        while stack:
            dir_fd, dir_path = stack.pop()
            try:
                for name, child in self._list(dir_fd, dir_path):
                    try:
                        stack.append((os.open(name, _DIR_FLAGS, dir_fd=dir_fd), child))
                    except OSError as exc:
                        self.unreadable(child, exc)
            finally:
                os.close(dir_fd)

    def _list(self, dir_fd: int, dir_path: str) -> list[tuple[str, str]]:
        result = self.result
        subdirs: list[tuple[str, str]] = []
        try:
            it = os.scandir(dir_fd)
        except OSError as exc:
            self.unreadable(dir_path, exc)
            return subdirs
        with it:
            items = list(it)
        clashing = _normalisation_clashes(item.name for item in items)
        for item in items:
            raw = item.name
            name = name_from_disk(os.fsencode(raw))
            if isinstance(name, BadName):
                shown = join(dir_path, name.shown())
                result.problems.append(ScanProblem(shown, name.reason))
                continue
            path = join(dir_path, name)
            if is_temp_name(name):
                result.temp_files.append(path)
                continue
            if raw in clashing:
                result.collisions.add(path)
                result.problems.append(
                    ScanProblem(path, "another name in this folder is the same after Unicode normalisation")
                )
                continue
            entry = self._entry(dir_fd, raw, path, item)
            if entry is None:
                continue
            result.entries[path] = entry
            if entry.kind is Kind.DIR:
                subdirs.append((raw, path))
        return subdirs

    def _entry(self, dir_fd: int, raw: str, path: str, item: os.DirEntry[str]) -> ScanEntry | None:
        result = self.result
        try:
            info = item.stat(follow_symlinks=False)
            target = os.readlink(raw, dir_fd=dir_fd) if st.S_ISLNK(info.st_mode) else None
        except FileNotFoundError:
            return None  # vanished while scanning: the next event or scan sees it
        except OSError as exc:
            result.problems.append(ScanProblem(path, exc.strerror or str(exc)))
            result.collisions.add(path)  # unknown, so never judged deleted
            return None
        if target is not None and not _valid_utf8(target):
            result.problems.append(ScanProblem(path, "the symlink's target is not valid UTF-8 (skipped)"))
            result.collisions.add(path)
            return None
        if self.ignore is not None and self.ignore(path, st.S_ISDIR(info.st_mode)):
            result.ignored.add(path)
            return None
        entry = entry_from_stat(path, info, target)
        if entry is None:
            result.problems.append(ScanProblem(path, "not a file, folder or symlink (skipped)"))
        return entry

    def unreadable(self, path: str, exc: OSError) -> None:
        self.result.unreadable.add(path)
        self.result.problems.append(
            ScanProblem(path or ".", f"cannot read this folder: {exc.strerror or exc}")
        )


def scan_tree(root: ArenaRoot, *, under: str = "", ignore: IgnoreFn | None = None) -> ScanResult:
    """Scan the whole root, or the subtree ``under`` (which is included itself)."""
    result = ScanResult()
    try:
        root_fd = os.open(root.root, _DIR_FLAGS)
    except FileNotFoundError:
        result.root_missing = True
        return result
    except OSError as exc:
        result.unreadable.add("")
        result.problems.append(ScanProblem(".", f"cannot open the arena root: {exc.strerror or exc}"))
        return result
    if under:
        os.close(root_fd)
        _scan_subtree(root, under, _Walker(result, ignore))
    else:
        _Walker(result, ignore).walk(root_fd, "")
    return result


def scan_paths(root: ArenaRoot, paths: Iterable[str], *, ignore: IgnoreFn | None = None) -> ScanResult:
    """Scan only ``paths`` (a folder with its whole subtree): the watcher's hints. A path that
    vanished is simply absent; one below an ignored folder is reported ignored; temp names are
    left to the full scan. The caller judges deletions only within these paths."""
    result = ScanResult()
    if not os.path.isdir(root.root):
        result.root_missing = True
        return result
    walker = _Walker(result, ignore)
    done: list[str] = []
    for path in sorted(set(paths)):  # a folder before what it holds, which its walk then covers
        if (done and _is_under(path, done[-1:])) or is_temp_name(path.rpartition("/")[2]):
            continue
        parts = path.split("/")
        if ignore is not None and any(ignore("/".join(parts[:i]), True) for i in range(1, len(parts))):
            result.ignored.add(path)
            continue
        _scan_subtree(root, path, walker)
        done.append(path)
    return result


def _scan_subtree(root: ArenaRoot, under: str, walker: _Walker) -> None:
    result = walker.result
    try:
        info = root.lstat(under)
    except ShoalError:  # an unsafe or unreadable parent means: content unknown
        result.unreadable.add(under)
        return
    if info is None:
        return
    if walker.ignore is not None and walker.ignore(under, st.S_ISDIR(info.st_mode)):
        result.ignored.add(under)
        return
    with root.open_parent(under) as (fd, name):
        target = os.readlink(name, dir_fd=fd) if st.S_ISLNK(info.st_mode) else None
        entry = entry_from_stat(under, info, target)
        if entry is None or entry.kind is not Kind.DIR:
            if entry is not None:
                result.entries[under] = entry
            return
        result.entries[under] = entry
        try:
            sub_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            walker.unreadable(under, exc)
            return
    walker.walk(sub_fd, under)


def _is_under(path: str, prefixes: Iterable[str]) -> bool:
    return any(not prefix or path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


@dataclass(slots=True)
class ScanDiff:
    new: list[ScanEntry] = field(default_factory=list)
    changed: list[ScanEntry] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0


def compare(index: Mapping[str, StatKey], scan: ScanResult, *, under: str = "") -> ScanDiff:
    """New, changed and deleted paths of ``scan`` against the index's stat keys.

    Paths under unreadable folders, ignored paths, and everything when the root
    is missing are never reported deleted: unknown is not deleted.
    """
    diff = ScanDiff()
    for path, entry in scan.entries.items():
        old = index.get(path)
        if old is None:
            diff.new.append(entry)
        elif stat_changed(old, entry):
            diff.changed.append(entry)
        else:
            diff.unchanged += 1
    if scan.root_missing:
        return diff
    unknown = scan.unreadable | scan.ignored | scan.collisions
    for path in index:
        if path in scan.entries:
            continue
        if under and not _is_under(path, (under,)):
            continue
        if unknown and _is_under(path, unknown):
            continue
        diff.deleted.append(path)
    return diff
