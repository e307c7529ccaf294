"""Arena paths ↔ disk paths under one root, never leaving it.

Every operation that touches a path below the root walks its parent folders
one component at a time with ``O_NOFOLLOW | O_DIRECTORY`` (:meth:`ArenaRoot.open_parent`),
so a symlink planted anywhere in the path cannot redirect a write or a delete
outside the arena, even if it appears between a check and the use.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from shoal.errors import DiskFullError, NotFoundError, StorageError, UnsafePathError
from shoal.model.paths import validate_path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class BadName:
    """A name found on disk that cannot be an arena path; reported to the user, never synced."""

    disk_path: bytes
    reason: str

    def shown(self) -> str:
        return os.fsdecode(self.disk_path).encode("utf-8", "backslashreplace").decode("utf-8")


def name_from_disk(name: bytes) -> str | BadName:
    """Decode one directory entry name; undecodable bytes or forbidden names become a BadName."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return BadName(name, "the name is not valid UTF-8")
    if "/" in text or text in ("", ".", ".."):
        return BadName(name, "the name is not allowed in an arena")
    try:
        validate_path(text)
    except UnsafePathError as exc:
        return BadName(name, exc.message)
    return text  # kept as written on disk (not NFC-folded) so it can be opened again


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def translate_os_error(exc: OSError, what: str) -> Exception:
    """One place turning an OSError met under the root into the error tree."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"no space left while {what}", hint="free some disk space, then sync again")
    if exc.errno == errno.ENOENT:
        return NotFoundError(f"{what}: {exc.strerror}")
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return UnsafePathError(f"{what}: a symlink or file is in the way ({exc.strerror})")
    return StorageError(f"{what}: {exc.strerror or exc}")


class ArenaRoot:
    """The folder on disk that holds one arena."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(os.path.abspath(root))

    def __repr__(self) -> str:
        return f"ArenaRoot({str(self.root)!r})"

    def disk_path(self, path: str) -> Path:
        """The disk path of an arena path (validated; symlinks in it are checked on use, not here)."""
        validate_path(path)
        return self.root.joinpath(*path.split("/"))

    def arena_path(self, disk: Path | str | bytes) -> str:
        """The arena path of a disk path below the root; UnsafePathError if it is not below it."""
        raw = os.fsencode(disk)
        root = os.fsencode(self.root)
        absolute = os.path.abspath(raw)
        if not absolute.startswith(root + b"/"):
            raise UnsafePathError(f"{os.fsdecode(raw)!r} is not inside the arena root {str(self.root)!r}")
        parts = absolute[len(root) + 1 :].split(b"/")
        names = []
        for part in parts:
            name = name_from_disk(part)
            if isinstance(name, BadName):
                raise UnsafePathError(f"{name.shown()!r}: {name.reason}")
            names.append(name)
        return "/".join(names)

    def open_root(self) -> int:
        try:
            return os.open(self.root, _DIR_FLAGS)
        except OSError as exc:
            raise translate_os_error(exc, f"opening the arena root {str(self.root)!r}") from exc

    @contextmanager
    def open_parent(self, path: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
        """Yield ``(dir_fd, last_name)`` for ``path``, walking parents without following symlinks.

        With ``create`` missing parent folders are made (mode 0o777 & umask).
        """
        validate_path(path)
        parts = path.split("/")
        fd = self.open_root()
        try:
            for name in parts[:-1]:
                nxt = self._step(fd, name, path, create=create)
                os.close(fd)
                fd = nxt
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def _step(self, fd: int, name: str, path: str, *, create: bool) -> int:
        try:
            nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise NotFoundError(f"{path!r}: its folder {name!r} does not exist") from None
            try:
                os.mkdir(name, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise translate_os_error(exc, f"creating the folder of {path!r}") from exc
            return self._step(fd, name, path, create=False)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePathError(
                    f"{path!r}: {name!r} is a symlink or a file, not a folder",
                    hint="shoal never follows symlinks out of the arena",
                ) from exc
            raise translate_os_error(exc, f"opening the folder of {path!r}") from exc
        return nxt

    def lstat(self, path: str) -> os.stat_result | None:
        """``lstat`` of an arena path through safe parents; None if it does not exist."""
        try:
            with self.open_parent(path) as (fd, name):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except NotFoundError:
            return None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise translate_os_error(exc, f"reading {path!r}") from exc


class FolderCache(ArenaRoot):
    """The same root, keeping each folder it opens open until :meth:`close`, for one short batch.

    Writing a batch of pulled files walked each file's folders from the root
    twice (to look at the path, then to write it): about ten ``openat`` and
    ten ``close`` per file, most of the kernel time of an initial pull. Here
    each folder is walked once, as safely (``O_NOFOLLOW`` at each step). A
    kept folder descriptor follows its folder if it is renamed meanwhile, as
    the descriptor a single write holds from its temp file to its rename
    always did; so keep the batch short (the files of one durability batch).
    Safe to use from several threads.
    """

    def __init__(self, root: ArenaRoot) -> None:
        super().__init__(root.root)
        self._folders: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def open_parent(self, path: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
        validate_path(path)
        parent, _, name = path.rpartition("/")
        yield self._folder(parent, path, create), name

    def _folder(self, folder: str, path: str, create: bool) -> int:
        with self._lock:
            known = self._folders.get(folder)
        if known is not None:
            return known
        if folder:
            above, _, name = folder.rpartition("/")
            fd = self._step(self._folder(above, path, create), name, path, create=create)
        else:
            fd = self.open_root()
        with self._lock:
            kept = self._folders.setdefault(folder, fd)
        if kept != fd:  # another thread opened it first
            os.close(fd)
        return kept

    def close(self) -> None:
        with self._lock:
            folders, self._folders = list(self._folders.values()), {}
        for fd in folders:
            os.close(fd)

    def __enter__(self) -> FolderCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
