"""What the worktree knows about one path on disk, and the names it keeps for itself."""

from __future__ import annotations

import os
import stat as st
from dataclasses import dataclass, field

from shoal.reconcile.kinds import Kind

STUB_SUFFIX = ".shoal"
TEMP_PREFIX = ".shoal-tmp-"

# (kind, size, mtime_ns, inode, mode, symlink target): what the index remembers to spot a change.
StatKey = tuple[str, int, int, int, int, str | None]


def is_temp_name(name: str) -> bool:
    """True for the hidden temp files of atomic writes (never content, never synced)."""
    return name.rpartition("/")[2].startswith(TEMP_PREFIX)


@dataclass(frozen=True, slots=True)
class ScanEntry:
    path: str
    kind: Kind
    size: int
    mtime_ns: int
    inode: int
    mode: int  # permission bits only (st_mode & 0o7777)
    target: str | None = None  # symlinks only
    stub: bool = False  # stands for a file whose content is not here: its stub NAME.shoal is (worktree.stub)
    # Hard links to a file (a write through one name changes the others unseen); a hint, not part
    # of what the entry is: an unnamed file being written has none yet.
    links: int = field(default=1, compare=False)

    def stat_key(self) -> StatKey:
        return (self.kind.value, self.size, self.mtime_ns, self.inode, self.mode, self.target)


def entry_from_stat(path: str, info: os.stat_result, target: str | None = None) -> ScanEntry | None:
    """A ScanEntry for a regular file, folder or symlink; None for anything else (fifo, socket, device)."""
    mode = info.st_mode
    if st.S_ISREG(mode):
        kind = Kind.FILE
    elif st.S_ISDIR(mode):
        kind = Kind.DIR
    elif st.S_ISLNK(mode):
        kind = Kind.SYMLINK
    else:
        return None
    return ScanEntry(
        path=path,
        kind=kind,
        size=info.st_size if kind is Kind.FILE else 0,
        mtime_ns=info.st_mtime_ns,
        inode=info.st_ino,
        mode=st.S_IMODE(mode),
        target=target,
        links=info.st_nlink if kind is Kind.FILE else 1,
    )


def stat_changed(old: StatKey, new: ScanEntry) -> bool:
    """True if a path must be looked at again: for folders only kind and mode count,
    for symlinks kind and target, for files every field."""
    if old[0] != new.kind.value:
        return True
    if new.kind is Kind.DIR:
        return old[4] != new.mode
    if new.kind is Kind.SYMLINK:
        return old[5] != new.target
    return old != new.stat_key()
