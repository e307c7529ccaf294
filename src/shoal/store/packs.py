"""Pack files of one file-store namespace: ``<root>/packs/<32 hex>.pack`` plus ``index.sqlite``.

Write order (``docs/dev/stores.md``): the pack goes to a ``.tmp-…`` name, is fsynced, renamed and
the directory fsynced, and only then does one index transaction name its blobs. A crash before
the commit leaves a pack nothing names, which ``sweep`` removes once it is old enough. Reads
pread the exact range the index gives; a pack that vanished under a reader (a concurrent
compaction) is looked up once more. Every method blocks: call them from worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from shoal.errors import DiskFullError, FormatError, StorageError
from shoal.model.ids import ChunkId
from shoal.store.packfile import (
    ENTRY_SIZE,
    FOOTER_SIZE,
    HEADER_SIZE,
    PACK_SUFFIX,
    PackEntry,
    decode_trailer,
    encode_pack,
    footer_count,
)
from shoal.store.packindex import INDEX_NAME, Location, PackIndex, PackUsage, UncertainCommitError

PACKS_DIR = "packs"
TEMP_PREFIX = ".tmp-"
DAMAGED_SUFFIX = ".damaged"
# A pack is rewritten once more than this share of its bytes belongs to deleted blobs.
COMPACT_DEAD_SHARE = 0.5
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_log = logging.getLogger(__name__)
_IOV_MAX = 1024
T = TypeVar("T")

ErrorFactory = Callable[[str, Path | str, OSError], StorageError]


class PackSet:
    """The packs of one namespace directory."""

    def __init__(
        self, root: Path, make_dirs: Callable[[Path], None], fsync_dir: Callable[[Path], None]
    ) -> None:
        self.directory = root / PACKS_DIR
        self._root = root
        self._make_dirs = make_dirs
        self._fsync_dir = fsync_dir
        self._index = PackIndex(self.directory, self._read_all_trailers)
        self._dir_ready = False

    def close(self) -> None:
        self._index.close()

    def is_open(self) -> bool:
        return self._index.is_open()

    def close_if_idle(self) -> bool:
        return self._index.close_if_idle()

    # -- reads -------------------------------------------------------------------------------

    def _active(self) -> bool:
        """Whether this namespace has packs at all (old stores and tiny writes never make any)."""
        return self._index.exists() or self.directory.is_dir()

    def read(self, cid: ChunkId) -> bytes | None:
        """The packed blob's bytes, or None if no pack holds it."""
        if not self._active():
            return None
        place = self._locate(cid)
        if place is None:
            return None
        try:
            return self._pread(place)
        except FileNotFoundError:
            again = self._locate(cid)  # moved by a concurrent compaction, or deleted
            if again is None:
                return None
            if again == place:
                raise self._damaged(place.pack, "is missing") from None
            try:
                return self._pread(again)
            except FileNotFoundError:
                raise self._damaged(again.pack, "is missing") from None

    def read_many(self, ids: list[ChunkId]) -> dict[ChunkId, bytes]:
        """The packed blobs among ``ids``: one index query, and each pack opened once."""
        if not ids or not self._active():
            return {}
        places = self._guard("look up chunks in", lambda: self._index.locate_many(ids))
        by_pack: dict[str, list[tuple[ChunkId, Location]]] = {}
        for cid, place in places.items():
            by_pack.setdefault(place.pack, []).append((cid, place))
        found: dict[ChunkId, bytes] = {}
        for pack, wanted in by_pack.items():
            wanted.sort(key=lambda item: item[1].offset)
            try:
                read = self._pread_ranges(pack, [place for _, place in wanted])
                found.update(zip([cid for cid, _ in wanted], read, strict=True))
            except FileNotFoundError:  # compacted or deleted meanwhile: look each one up again
                for cid, _place in wanted:
                    again = self.read(cid)
                    if again is not None:
                        found[cid] = again
        return found

    def _pread_ranges(self, pack: str, places: list[Location]) -> list[bytes]:
        """The bytes at ``places`` in one pack (in that order), read through one descriptor."""
        path = self._pack_path(pack)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self._error("read", path, exc) from exc
        try:
            return [self._pread_at(fd, path, place) for place in places]
        finally:
            os.close(fd)

    def _pread(self, place: Location) -> bytes:
        return self._pread_ranges(place.pack, [place])[0]

    def size(self, cid: ChunkId) -> int | None:
        if not self._active():
            return None
        place = self._locate(cid)
        return None if place is None else place.length

    def present(self, ids: list[ChunkId]) -> set[ChunkId]:
        if not ids or not self._active():
            return set()
        return self._guard("look up chunks in", lambda: self._index.present(ids))

    def ids_after(self, after: bytes, limit: int) -> list[ChunkId]:
        """A page of the packed ids, in order: those after ``after``, at most ``limit``."""
        if not self._active():
            return []
        return self._guard("list", lambda: self._index.ids_after(after, limit))

    def _locate(self, cid: ChunkId) -> Location | None:
        return self._guard("look up a chunk in", lambda: self._index.locate(cid))

    def _pread_at(self, fd: int, path: Path, place: Location) -> bytes:
        try:
            data = os.pread(fd, place.length, place.offset)
        except OSError as exc:
            raise self._error("read", path, exc) from exc
        if len(data) != place.length:
            raise self._damaged(place.pack, f"is truncated (wanted {place.length} bytes at {place.offset})")
        return data

    # -- writes ------------------------------------------------------------------------------

    def write(self, blobs: Sequence[tuple[ChunkId, bytes]]) -> None:
        """Store ``blobs`` in one new pack, durably, then index them. Ids already packed are skipped."""
        if self._active():
            known = self.present([cid for cid, _ in blobs])
            blobs = [(cid, data) for cid, data in blobs if cid not in known]
        if not blobs:
            return
        name, entries = self._write_pack(blobs)
        self._commit(name, entries)

    def _write_pack(self, blobs: Sequence[tuple[ChunkId, bytes]]) -> tuple[str, list[PackEntry]]:
        if not self._dir_ready:
            self._make_dirs(self.directory)
            # Made before the first pack, so a new index is not "rebuilt" from the pack being written.
            self._guard("open", self._index.prepare)
            self._dir_ready = True
        buffers, entries = encode_pack(blobs)
        name = secrets.token_hex(16)
        final = self._pack_path(name)
        temp = f"{self.directory}/{TEMP_PREFIX}{name}{PACK_SUFFIX}"
        try:
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:  # the packs directory was removed since we made it
                self._make_dirs(self.directory)
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, buffers)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, final)
        except OSError as exc:
            _unlink_quietly(temp)
            raise self._error("write", final, exc) from exc
        self._fsync_dir(self.directory)
        return name, entries

    def _commit(self, name: str, entries: list[PackEntry]) -> None:
        path = self._pack_path(name)
        try:
            usage = self._index.add_pack(name, entries, path.exists)
        except FileNotFoundError:
            raise StorageError(
                f"pack {path} was removed before it was indexed (a sweep with a too short age?)",
                hint="retry the write; keep sweep_temp's older_than at minutes or more",
            ) from None
        except UncertainCommitError as exc:
            raise self._index_error("index", exc) from exc  # the pack stays; sweep decides later
        except BaseException as exc:
            _unlink_quietly(path)  # rolled back, never named by the index: nobody else can use it
            if isinstance(exc, sqlite3.Error):
                raise self._index_error("index", exc) from exc
            raise
        if usage.blobs == 0:
            _unlink_quietly(path)  # every blob was already packed elsewhere meanwhile

    def delete(self, cid: ChunkId) -> bool:
        """Forget a packed blob (True if one was packed); unlink or rewrite its pack as it empties."""
        if not self._active():
            return False
        removed = self._guard("delete a chunk from", lambda: self._index.remove(cid))
        if removed is None:
            return False
        pack, usage = removed
        if usage.blobs <= 0:
            _unlink_quietly(self._pack_path(pack))
        elif usage.size - usage.live > COMPACT_DEAD_SHARE * usage.size:
            self.compact(pack)
        return True

    def compact(self, pack: str) -> None:
        """Copy ``pack``'s live blobs into a new pack, point the index at it, unlink the old one."""
        path = self._pack_path(pack)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # compacted by another process meanwhile
        except OSError as exc:
            raise self._error("read", path, exc) from exc
        try:
            listed = _trailer_of(fd)
            live = self._guard("read", lambda: self._index.live_entries(pack, listed))
            blobs = [(e.cid, os.pread(fd, e.length, e.offset)) for e in live]
        except FormatError as exc:
            raise self._damaged(pack, f"has a damaged trailer ({exc.message})") from exc
        except OSError as exc:
            raise self._error("read", path, exc) from exc
        finally:
            os.close(fd)
        if not live:
            return
        if any(len(data) != e.length for (_, data), e in zip(blobs, live, strict=True)):
            raise self._damaged(pack, "is truncated")
        name, entries = self._write_pack(blobs)
        new_path = self._pack_path(name)
        try:
            moved = self._index.move(pack, name, entries, sum(e.length for e in entries))
        except UncertainCommitError as exc:
            raise self._index_error("index", exc) from exc  # both packs stay; sweep decides later
        except BaseException as exc:
            _unlink_quietly(new_path)  # rolled back: only the old pack is named
            if isinstance(exc, sqlite3.Error):
                raise self._index_error("index", exc) from exc
            raise
        if moved is not None:
            _unlink_quietly(path)
        if moved is None or moved.blobs == 0:
            _unlink_quietly(new_path)  # nothing names the copy

    # -- maintenance -------------------------------------------------------------------------

    def sweep(self, cutoff: float) -> int:
        """Remove temp packs and packs no index row names, when last modified before ``cutoff``."""
        try:
            with os.scandir(self.directory) as entries:
                old = [
                    e.name
                    for e in entries
                    if e.name.endswith(PACK_SUFFIX) and e.stat(follow_symlinks=False).st_mtime < cutoff
                ]
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise self._error("list", self.directory, exc) from exc
        removed = 0
        for name in old:
            if name.startswith(TEMP_PREFIX):
                _unlink_quietly(self.directory / name)
                removed += 1
        candidates = [n.removesuffix(PACK_SUFFIX) for n in old if not n.startswith(TEMP_PREFIX)]
        if candidates:
            removed += self._guard(
                "sweep",
                lambda: self._index.drop_unreferenced(
                    candidates, lambda p: _unlink_quietly(self._pack_path(p))
                ),
            )
        return removed

    def usage(self) -> dict[str, PackUsage]:
        if not self._active():
            return {}
        return self._guard("read", self._index.usage)

    def _read_all_trailers(self) -> list[tuple[str, list[PackEntry]]]:
        """Every pack's entries, for rebuilding a missing index; damaged packs are set aside."""
        found = []
        try:
            with os.scandir(self.directory) as entries:
                names = sorted(e.name for e in entries if e.name.endswith(PACK_SUFFIX))
        except FileNotFoundError:
            return []
        for name in names:
            if name.startswith(TEMP_PREFIX):
                continue
            path = self.directory / name
            try:
                found.append((name.removesuffix(PACK_SUFFIX), _read_trailer(path)))
            except FormatError as exc:
                _log.warning(
                    "pack %s is damaged (%s); renamed to %s", path, exc.message, name + DAMAGED_SUFFIX
                )
                with contextlib.suppress(OSError):
                    os.rename(path, str(path) + DAMAGED_SUFFIX)
        if names:
            _log.warning("rebuilt the pack index %s from %d packs", self.directory / INDEX_NAME, len(found))
        return found

    # -- helpers -----------------------------------------------------------------------------

    def _pack_path(self, name: str) -> Path:
        return self.directory / f"{name}{PACK_SUFFIX}"

    def _guard(self, action: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except sqlite3.Error as exc:
            raise self._index_error(action, exc) from exc

    def _index_error(self, action: str, exc: sqlite3.Error) -> StorageError:
        text = str(exc)
        if "full" in text:
            return DiskFullError(
                f"no space left to {action} the pack index of the store at {self._root}",
                hint="free space on that disk (nothing partial was kept), then retry",
            )
        return StorageError(
            f"could not {action} the pack index {self._index.path}: {text}",
            hint=f"if the index is damaged, delete {INDEX_NAME}* in {self.directory}: packs rebuild it",
        )

    def _damaged(self, pack: str, what: str) -> StorageError:
        return StorageError(f"pack {self._pack_path(pack)} {what} in the store at {self._root}")

    def _error(self, action: str, path: Path | str, exc: OSError) -> StorageError:
        if exc.errno in _NO_SPACE:
            return DiskFullError(
                f"no space left to write new chunks to the store at {self._root}",
                hint="free space on that disk (nothing partial was kept), then retry",
            )
        return StorageError(f"could not {action} {path} in the store at {self._root}: {exc.strerror or exc}")


def _read_trailer(path: Path) -> list[PackEntry]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return _trailer_of(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise FormatError(f"cannot read: {exc.strerror or exc}") from exc


def _trailer_of(fd: int) -> list[PackEntry]:
    """The entries an open pack's trailer lists (``FormatError`` if it is not a whole pack)."""
    size = os.fstat(fd).st_size
    header = os.pread(fd, HEADER_SIZE, 0)
    count = footer_count(os.pread(fd, FOOTER_SIZE, max(0, size - FOOTER_SIZE)))
    if count < 0:
        raise FormatError("pack file has no trailer (bad end magic)")
    want = min(size, FOOTER_SIZE + count * ENTRY_SIZE)
    return decode_trailer(header, os.pread(fd, want, size - want), size)


def _write_all(fd: int, buffers: list[bytes]) -> None:
    """``writev`` of up to ``_IOV_MAX`` buffers at a time, resumed after any short write."""
    pending = [memoryview(b) for b in buffers if b]
    first = 0
    while first < len(pending):
        written = os.writev(fd, pending[first : first + _IOV_MAX])
        while written:
            head = pending[first]
            if written >= len(head):
                written -= len(head)
                first += 1
            else:
                pending[first] = head[written:]
                written = 0


def _unlink_quietly(path: Path | str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
