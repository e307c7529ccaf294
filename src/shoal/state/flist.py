"""The flist: an SQLite image of a directory tree whose file contents live as chunks in a store.

Format version 1 (documented in docs/formats.md):

    meta(key TEXT PRIMARY KEY, value TEXT)
        format          "shoal-flist"
        version         "1"
        created_ns      creation time, ns since the epoch
        source          the packed directory, as given
        encrypted       "1" when chunk ids are keyed and chunks sealed
        key_check       for encrypted images: hex of a keyed hash that tells a wrong key apart
        chunking        "min,avg,max,seed-is-keyed" sizes used to cut the files
    entries(path TEXT PRIMARY KEY, kind TEXT, mode INTEGER, mtime_ns INTEGER,
            size INTEGER, target TEXT, manifest BLOB, ctime_ns INTEGER, inode INTEGER)

``path`` is an arena-style relative path (validated on read: nothing from an
image can name a place outside the destination). ``manifest`` is a
``shoal.model.Manifest`` encoding for files, NULL otherwise; ``target`` is a
symlink's target. ``ctime_ns`` and ``inode`` are the source file's, kept
only so that the next pack of the same folder can skip files whose stat is
unchanged (restore ignores them). The image is written to a temp file and renamed into place,
so a killed pack never leaves a half image under the final name.
"""

from __future__ import annotations

import enum
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from shoal.errors import FormatError, NotFoundError, StorageError, UnsupportedVersionError
from shoal.model import Manifest, validate_path

FLIST_FORMAT = "shoal-flist"
FLIST_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    path TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('dir', 'file', 'symlink')),
    mode INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    target TEXT,
    manifest BLOB,
    ctime_ns INTEGER,
    inode INTEGER
);
"""


class EntryKind(enum.StrEnum):
    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"


@dataclass(frozen=True, slots=True)
class FlistEntry:
    path: str
    kind: EntryKind
    mode: int
    mtime_ns: int
    size: int = 0
    target: str | None = None
    manifest: Manifest | None = None
    ctime_ns: int | None = None
    inode: int | None = None


@dataclass(frozen=True, slots=True)
class StatKey:
    """What a file's stat must still say for an earlier pack's chunk list to be reused."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int


class FlistWriter:
    """Builds an image in ``PATH.tmp-<pid>`` and renames it to ``PATH`` on :meth:`commit`."""

    def __init__(self, path: Path) -> None:
        if not path.parent.is_dir():
            raise NotFoundError(
                f"cannot write the image {path}: the folder {path.parent} does not exist",
                hint="create it first, or give another path to -o",
            )
        self.path = path
        self._tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self._tmp.unlink(missing_ok=True)
        try:
            self._db = sqlite3.connect(self._tmp)
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot create the image {path}: {exc}") from exc
        self.set_meta("format", FLIST_FORMAT)
        self.set_meta("version", str(FLIST_VERSION))

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file this writer creates or replaces: the image, and its temporary file and
        SQLite's journal beside it while it is built."""
        return (self.path, self._tmp, self._tmp.with_name(self._tmp.name + "-journal"))

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def add(self, entry: FlistEntry) -> None:
        self.add_many([entry])

    def add_many(self, entries: Iterable[FlistEntry]) -> None:
        """Add entries in one statement (a pack of many small files adds thousands)."""
        self._db.executemany(
            "INSERT INTO entries (path, kind, mode, mtime_ns, size, target, manifest, ctime_ns, inode)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    entry.path,
                    entry.kind.value,
                    entry.mode,
                    entry.mtime_ns,
                    entry.size,
                    entry.target,
                    entry.manifest.encode() if entry.manifest is not None else None,
                    entry.ctime_ns,
                    entry.inode,
                )
                for entry in entries
            ),
        )

    def commit(self) -> None:
        try:
            self._db.commit()
            self._db.close()
            with open(self._tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(self._tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot write the image {self.path}: {exc}") from exc

    def abort(self) -> None:
        self._db.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> FlistWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class FlistReader:
    """Reads an image, refusing unknown formats and entries whose paths are unsafe."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise NotFoundError(f"no image at {path}", hint="give the .flist file written by `shoal pack`")
        self.path = path
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.Error as exc:
            raise FormatError(f"{path} is not a shoal image: {exc}") from exc
        self.meta: dict[str, str] = dict(rows)
        if self.meta.get("format") != FLIST_FORMAT:
            raise FormatError(f"{path} is not a shoal image")
        version = int(self.meta.get("version", "0"))
        if version > FLIST_VERSION:
            raise UnsupportedVersionError(
                f"{path} has image format {version}; this shoal reads up to {FLIST_VERSION}",
                hint="upgrade shoal to read this image",
            )

    @property
    def encrypted(self) -> bool:
        return self.meta.get("encrypted") == "1"

    def count(self) -> dict[EntryKind, int]:
        rows = self._db.execute("SELECT kind, COUNT(*) FROM entries GROUP BY kind").fetchall()
        return {EntryKind(kind): n for kind, n in rows}

    def entries(self) -> Iterator[FlistEntry]:
        """Every entry in path order (parents before children), each path validated."""
        cursor = self._db.execute(
            "SELECT path, kind, mode, mtime_ns, size, target, manifest FROM entries ORDER BY path"
        )
        for path, kind, mode, mtime_ns, size, target, manifest in cursor:
            validate_path(path)
            try:
                entry_kind = EntryKind(kind)
            except ValueError as exc:
                raise FormatError(f"image entry {path!r} has an unknown kind {kind!r}") from exc
            yield FlistEntry(
                path=path,
                kind=entry_kind,
                mode=int(mode),
                mtime_ns=int(mtime_ns),
                size=int(size),
                target=target,
                manifest=Manifest.decode(manifest) if manifest is not None else None,
            )

    def stat_cache(self) -> dict[str, tuple[StatKey, bytes]]:
        """Each file's recorded stat and encoded manifest, for skipping unchanged files on the next pack."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(entries)")}
        if not {"ctime_ns", "inode"} <= columns:
            return {}  # an image written before stat caching: every file is read again
        rows = self._db.execute(
            "SELECT path, size, mtime_ns, ctime_ns, inode, manifest FROM entries"
            " WHERE kind = 'file' AND ctime_ns IS NOT NULL AND inode IS NOT NULL AND manifest IS NOT NULL"
        )
        return {
            path: (StatKey(size, mtime_ns, ctime_ns, inode), manifest)
            for path, size, mtime_ns, ctime_ns, inode, manifest in rows
        }

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> FlistReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
