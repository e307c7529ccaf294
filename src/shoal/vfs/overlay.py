"""Local content written through the filesystem: one temp file per file being written.

An overlay file lives in the device home (never in the arena), starts empty
(a new file, or ``O_TRUNC``) or as a copy of the current version (fetched
chunk by chunk, so memory stays one chunk), takes every write, and is handed
to the commit callback on close or fsync. Overlay files left by a killed
mount are removed when the next mount starts: their content was either
committed already or is lost with the process, like unsaved data of any
program killed mid-write.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from shoal.errors import DiskFullError, StorageError
from shoal.model.ids import ChunkId
from shoal.model.manifest import Manifest

_PREFIX = "w-"


def _translate(exc: OSError, what: str) -> StorageError:
    if exc.errno in (28, 122):  # ENOSPC, EDQUOT
        return DiskFullError(f"{what}: no space left on the device home's disk", hint="free some space")
    return StorageError(f"{what}: {exc.strerror}")


class Overlays:
    """The overlay folder of one mount and the open file descriptor of each overlay file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fds: dict[Path, int] = {}

    def start(self) -> None:
        """Create the folder, removing what a previous (killed) mount left."""
        try:
            if self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise _translate(exc, f"cannot prepare the overlay folder {self.folder}") from exc

    def create(self) -> Path:
        path = self.folder / f"{_PREFIX}{secrets.token_hex(8)}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _translate(exc, "cannot create an overlay file") from exc
        self._fds[path] = fd
        return path

    async def copy_of(self, manifest: Manifest, fetch: Callable[[ChunkId], Awaitable[bytes]]) -> Path:
        """A new overlay file holding the content of ``manifest``."""
        path = self.create()
        offset = 0
        try:
            for ref in manifest.chunks:
                data = await fetch(ref.id)
                self.write(path, offset, data)
                offset += len(data)
        except BaseException:
            self.discard(path)
            raise
        return path

    def fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            raise StorageError(f"overlay file {path} is not open (a bug in shoal)")
        return fd

    def read(self, path: Path, offset: int, size: int) -> bytes:
        try:
            return os.pread(self.fd(path), size, offset)
        except OSError as exc:
            raise _translate(exc, "cannot read an overlay file") from exc

    def write(self, path: Path, offset: int, data: bytes) -> int:
        try:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(self.fd(path), view[done:], offset + done)
            return done
        except OSError as exc:
            raise _translate(exc, "cannot write an overlay file") from exc

    def truncate(self, path: Path, size: int) -> None:
        try:
            os.ftruncate(self.fd(path), size)
        except OSError as exc:
            raise _translate(exc, "cannot truncate an overlay file") from exc

    def sync(self, path: Path) -> None:
        try:
            os.fsync(self.fd(path))
        except OSError as exc:
            raise _translate(exc, "cannot sync an overlay file") from exc

    def size(self, path: Path) -> int:
        return os.fstat(self.fd(path)).st_size

    def discard(self, path: Path) -> None:
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def close_all(self) -> None:
        for path in list(self._fds):
            self.discard(path)
