"""Atomic, conflict-checked changes under an arena root.

A new file version is written to a hidden temp file in the destination's
folder (``.shoal-tmp-*``, skipped by the scanner), fsynced, given its mode and
mtime, and renamed into place; then the folder is fsynced. Right before the
rename the destination's stat is compared with the one the caller expected
(the index's): if the user changed the file meanwhile, :class:`ConflictError`
is raised and both the user's file and the temp file's content are left alone
for the engine to keep as a conflict. Where the destination is expected to be
absent the rename uses ``RENAME_NOREPLACE``, so even a file created in the
last microsecond is never clobbered. Deletes re-check the same way.

A kill between write and rename leaves only a temp file, which the scanner
lists in ``ScanResult.temp_files`` for :func:`remove_temp`.

A new file (``unnamed=True``, where nothing is expected at the path) is
written to an unnamed ``O_TMPFILE`` inode instead and linked into place
(``linkat``, which like ``RENAME_NOREPLACE`` never replaces an existing
name): a kill leaves nothing behind, and a folder watcher sees one created
name rather than a temp file's creation, writes, rename pair and close.
Those events made a daemon's own initial pull several times slower (its
watcher library pairs renames by a linear search). Filesystems without
``O_TMPFILE``, or a system without ``/proc``, get the named temp file; a
system that refuses the link itself turns unnamed files off for the process
and the refused file takes the careful path (a ConflictError for it).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import secrets
from collections.abc import Iterable
from types import TracebackType

from shoal.errors import ConflictError, StorageError
from shoal.reconcile.kinds import Kind
from shoal.worktree.entries import (
    TEMP_PREFIX,
    ScanEntry,
    StatKey,
    entry_from_stat,
    is_temp_name,
    stat_changed,
)
from shoal.worktree.paths import ArenaRoot, translate_os_error

_RENAME_NOREPLACE = 1
_MODE_MASK = 0o777  # setuid/setgid/sticky bits never come from another device
_libc = ctypes.CDLL(None, use_errno=True)  # the program's own symbols, libc's among them
_renameat2 = getattr(_libc, "renameat2", None)


def _rename_noreplace(dir_fd: int, src: str, dst: str) -> None:
    if _renameat2 is None:  # pragma: no cover  (glibc < 2.28)
        if _lstat(dir_fd, dst) is not None:
            raise FileExistsError(errno.EEXIST, "destination exists", dst)
        os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    res = _renameat2(dir_fd, os.fsencode(src), dir_fd, os.fsencode(dst), _RENAME_NOREPLACE)
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _current(dir_fd: int, name: str, path: str) -> ScanEntry | None:
    info = _lstat(dir_fd, name)
    if info is None:
        return None
    target = os.readlink(name, dir_fd=dir_fd) if (info.st_mode & 0o170000) == 0o120000 else None
    return entry_from_stat(path, info, target)


def _check_expected(dir_fd: int, name: str, path: str, expected: StatKey | None) -> ScanEntry | None:
    now = _current(dir_fd, name, path)
    if expected is None:
        if now is not None:
            raise ConflictError(
                f"{path!r} appeared on disk while shoal was about to write it; nothing was overwritten"
            )
        return None
    if now is None or stat_changed(expected, now):
        what = "was deleted" if now is None else "changed"
        raise ConflictError(f"{path!r} {what} on disk since shoal last looked; it was left as it is")
    return now


def sync_filesystem(root: ArenaRoot) -> None:
    """Make everything written on the arena's filesystem durable: syncfs(2), os.sync() without it.

    Flushing a batch of temp files this way costs about one fsync instead of one per file."""
    try:
        fd = os.open(root.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise translate_os_error(exc, "opening the arena folder to sync it") from exc
    try:
        syncfs = getattr(_libc, "syncfs", None)
        if syncfs is None:  # pragma: no cover  (a libc without syncfs)
            os.sync()
        elif syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise StorageError(f"syncing the arena's filesystem failed: {os.strerror(err)}")
    finally:
        os.close(fd)


_PROC_FD = "/proc/self/fd"
_TMPFILE_FLAGS = os.O_WRONLY | getattr(os, "O_TMPFILE", 0) | os.O_CLOEXEC
# Where the filesystem cannot make an unnamed file: fall back to a named temp file.
_NO_TMPFILE = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT})
# linkat refusing the unnamed file itself (not the folder being gone, which the careful path handles
# too): permission, a missing or foreign /proc entry, or a filesystem that cannot link it.
_LINK_REFUSED = frozenset(
    {errno.EPERM, errno.EACCES, errno.ENOENT, errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL}
)


@functools.cache
def _can_link_unnamed(proc_fd: str) -> bool:
    return hasattr(os, "O_TMPFILE") and os.path.isdir(proc_fd)


class _Unnamed:
    """Set off for the rest of the process when the system refuses to link an unnamed file."""

    refused = False


def _open_unnamed(dir_fd: int) -> int | None:
    """An unnamed file in the folder (O_TMPFILE), or None where that is not available."""
    if _Unnamed.refused or not _can_link_unnamed(_PROC_FD):
        return None
    try:
        return os.open(".", _TMPFILE_FLAGS, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _NO_TMPFILE:
            return None
        raise


def _temp_name() -> str:
    return f"{TEMP_PREFIX}{secrets.token_hex(8)}"


def _fsync_dir(dir_fd: int) -> None:
    os.fsync(dir_fd)


class AtomicFile:
    """Write one file version: ``with AtomicFile(root, path) as f: f.write(b); f.commit(...)``.

    Leaving the block without a successful :meth:`commit` removes the temp file.
    A commit refused with ConflictError leaves both the user's file and the
    pending content intact; :meth:`retarget` then :meth:`commit` keeps the
    latter under another name (the conflict copy).
    """

    def __init__(
        self, root: ArenaRoot, path: str, *, create_parents: bool = True, unnamed: bool = False
    ) -> None:
        """``unnamed``: the caller expects nothing at ``path`` (a new file); write it unnamed and
        link it into place where the filesystem allows (see the module's note)."""
        self.root = root
        self.path = path
        self._parent = root.open_parent(path, create=create_parents)
        self._dir_fd, self._name = self._parent.__enter__()
        self._temp: str | None = None
        try:
            self._fd: int | None = _open_unnamed(self._dir_fd) if unnamed else None
            if self._fd is None:
                self._temp = _temp_name()
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                self._fd = os.open(self._temp, flags, 0o600, dir_fd=self._dir_fd)
        except OSError as exc:
            self._parent.__exit__(None, None, None)
            raise translate_os_error(exc, f"creating a temp file for {path!r}") from exc
        self._done = False

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._done:
            self.abort()

    def write(self, data: bytes | memoryview) -> None:
        assert self._fd is not None, "write after commit or abort"
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            self.abort()
            raise translate_os_error(exc, f"writing {self.path!r}") from exc

    def commit(
        self,
        *,
        expected: StatKey | None,
        mode: int = 0o644,
        mtime_ns: int | None = None,
        synced: bool = False,
    ) -> ScanEntry:
        """Make the new version visible at the path, unless the path no longer matches ``expected``
        (None: the path must not exist). Returns the new file's entry, for the index.

        ``synced``: the caller made this temp's data durable already (one :func:`sync_filesystem`
        for a batch of files) and syncs again after the renames, so the two fsyncs are skipped."""
        fd = self._fd
        assert fd is not None, "commit after commit or abort"
        try:
            os.fchmod(fd, mode & _MODE_MASK)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            if not synced:
                os.fsync(fd)
            info = os.fstat(fd)
        except OSError as exc:
            self.abort()
            raise translate_os_error(exc, f"writing {self.path!r}") from exc
        try:
            _check_expected(self._dir_fd, self._name, self.path, expected)
            if self._temp is None and expected is None:
                self._link(fd, self._name)
            else:
                if self._temp is None:  # an unnamed file replacing one: it needs a name to rename
                    self._temp = _temp_name()
                    self._link(fd, self._temp)
                if expected is None:
                    _rename_noreplace(self._dir_fd, self._temp, self._name)
                else:
                    os.rename(self._temp, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            if not synced:
                _fsync_dir(self._dir_fd)
        except FileExistsError:
            raise ConflictError(
                f"{self.path!r} appeared on disk while shoal was about to write it; nothing was overwritten"
            ) from None
        except OSError as exc:
            self.abort()
            raise translate_os_error(exc, f"renaming {self.path!r} into place") from exc
        self._close(remove=False)
        entry = entry_from_stat(self.path, info)
        assert entry is not None
        return entry

    def _link(self, fd: int, name: str) -> None:
        """Give the unnamed file ``name`` (FileExistsError if something has it). Where the system
        refuses the link itself (a sandbox denying it, ``/proc`` not what it seems), unnamed files
        are turned off for this process and ConflictError sends this one down the careful path,
        which writes it again under a temp name."""
        try:
            os.link(f"{_PROC_FD}/{fd}", name, dst_dir_fd=self._dir_fd, follow_symlinks=True)
        except FileExistsError:
            raise
        except OSError as exc:
            vanished = exc.errno == errno.ENOENT and os.path.lexists(f"{_PROC_FD}/{fd}")
            if exc.errno not in _LINK_REFUSED or vanished:  # vanished: the folder, as for a rename
                raise
            _Unnamed.refused = True
            raise ConflictError(
                f"{self.path!r}: this system refused to link a new file into place"
                f" ({exc.strerror}); it is written again with a temp file"
            ) from exc

    def retarget(self, path: str) -> None:
        """Aim the pending content at another name in the same folder (after a ConflictError,
        the engine keeps it as the conflict copy without fetching it again)."""
        head, _, name = path.rpartition("/")
        if head != self.path.rpartition("/")[0]:
            raise ConflictError(
                f"{path!r} is not in the folder of {self.path!r}; cannot move the new content there"
            )
        assert not self._done, "retarget after commit or abort"
        self.root.disk_path(path)  # validates the name
        self.path, self._name = path, name

    def abort(self) -> None:
        self._close(remove=True)

    def _close(self, *, remove: bool) -> None:
        if self._done:
            return
        self._done = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if remove and self._temp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp, dir_fd=self._dir_fd)
        self._parent.__exit__(None, None, None)


def write_file(
    root: ArenaRoot,
    path: str,
    chunks: Iterable[bytes],
    *,
    expected: StatKey | None,
    mode: int = 0o644,
    mtime_ns: int | None = None,
) -> ScanEntry:
    """Write ``chunks`` as the new content of ``path`` atomically; see :class:`AtomicFile`."""
    with AtomicFile(root, path) as f:
        for chunk in chunks:
            f.write(chunk)
        return f.commit(expected=expected, mode=mode, mtime_ns=mtime_ns)


def make_dir(root: ArenaRoot, path: str, *, mode: int = 0o755) -> ScanEntry:
    """Create a folder (and its parents); an existing folder is fine, anything else there is a conflict."""
    with root.open_parent(path, create=True) as (dir_fd, name):
        try:
            os.mkdir(name, mode & _MODE_MASK, dir_fd=dir_fd)
            os.chmod(name, mode & _MODE_MASK, dir_fd=dir_fd, follow_symlinks=False)
            _fsync_dir(dir_fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise translate_os_error(exc, f"creating the folder {path!r}") from exc
        now = _current(dir_fd, name, path)
    if now is None or now.kind is not Kind.DIR:
        raise ConflictError(f"{path!r} exists on disk and is not a folder; it was left as it is")
    return now


def make_symlink(
    root: ArenaRoot, path: str, target: str, *, expected: StatKey | None, mtime_ns: int | None = None
) -> ScanEntry:
    """Create or retarget a symlink atomically. The target is stored as given and never followed."""
    with root.open_parent(path, create=True) as (dir_fd, name):
        temp = _temp_name()
        try:
            os.symlink(target, temp, dir_fd=dir_fd)
            if mtime_ns is not None:
                os.utime(temp, ns=(mtime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
            info = os.stat(temp, dir_fd=dir_fd, follow_symlinks=False)
            _check_expected(dir_fd, name, path, expected)
            if expected is None:
                _rename_noreplace(dir_fd, temp, name)
            else:
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            _fsync_dir(dir_fd)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=dir_fd)
            if isinstance(exc, FileExistsError):
                raise ConflictError(f"{path!r} appeared on disk; nothing was overwritten") from None
            if isinstance(exc, OSError):
                raise translate_os_error(exc, f"creating the symlink {path!r}") from exc
            raise
    entry = entry_from_stat(path, info, target)
    assert entry is not None
    return entry


def delete(root: ArenaRoot, path: str, *, expected: StatKey) -> bool:
    """Remove a file, symlink or empty folder only if it still matches ``expected``.

    Returns False if it was already gone. A changed entry, or a folder that is
    not empty, raises ConflictError and stays.
    """
    with root.open_parent(path) as (dir_fd, name):
        now = _current(dir_fd, name, path)
        if now is None:
            return False
        if stat_changed(expected, now):
            raise ConflictError(f"{path!r} changed on disk since shoal last looked; it was not deleted")
        try:
            if now.kind is Kind.DIR:
                os.rmdir(name, dir_fd=dir_fd)
            else:
                os.unlink(name, dir_fd=dir_fd)
            _fsync_dir(dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise ConflictError(f"the folder {path!r} is not empty; it was not deleted") from exc
            raise translate_os_error(exc, f"deleting {path!r}") from exc
    return True


def rename(root: ArenaRoot, src: str, dst: str, *, expected: StatKey) -> ScanEntry:
    """Move ``src`` to ``dst`` (which must not exist) if ``src`` still matches ``expected``."""
    with (
        root.open_parent(src) as (src_fd, src_name),
        root.open_parent(dst, create=True) as (dst_fd, dst_name),
    ):
        now = _current(src_fd, src_name, src)
        if now is None or stat_changed(expected, now):
            raise ConflictError(f"{src!r} changed on disk since shoal last looked; it was not moved")
        try:
            if _renameat2 is not None:
                res = _renameat2(
                    src_fd, os.fsencode(src_name), dst_fd, os.fsencode(dst_name), _RENAME_NOREPLACE
                )
                if res != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err), dst)
            else:  # pragma: no cover
                if _lstat(dst_fd, dst_name) is not None:
                    raise FileExistsError(errno.EEXIST, "exists", dst)
                os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            _fsync_dir(dst_fd)
            _fsync_dir(src_fd)
        except FileExistsError:
            raise ConflictError(f"{dst!r} already exists; {src!r} was not moved onto it") from None
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise ConflictError(f"{dst!r} already exists; {src!r} was not moved onto it") from None
            raise translate_os_error(exc, f"moving {src!r} to {dst!r}") from exc
    info = root.lstat(dst)
    if info is None:
        raise StorageError(f"{dst!r} vanished right after it was moved there")
    moved = entry_from_stat(dst, info, now.target)
    assert moved is not None
    return moved


def remove_temp(root: ArenaRoot, path: str) -> None:
    """Remove a leftover temp file the scanner reported (only names with the temp prefix)."""
    if not is_temp_name(path):
        raise StorageError(f"{path!r} is not a shoal temp file; refusing to remove it")
    with root.open_parent(path) as (dir_fd, name), contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
