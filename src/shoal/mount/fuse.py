"""The FUSE adapter: pyfuse3 (asyncio mode) requests translated to ``shoal.vfs`` calls.

Nothing here decides what the arena looks like; it converts types, turns
``ShoalError`` into errnos (``shoal.mount.errnos``), logs why content could
not be served, and exposes residency as the xattr ``user.shoal.residency``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import stat
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pyfuse3
import pyfuse3.asyncio

from shoal.errors import ShoalError
from shoal.mount.errnos import CONTENT_ERRORS, errno_for
from shoal.mount.mountpoint import raise_readahead
from shoal.reconcile.kinds import Kind
from shoal.vfs.fs import ArenaFS, Attr
from shoal.vfs.residency import parse_residency, residency_of, set_residency

log = logging.getLogger(__name__)

RESIDENCY_XATTR = b"user.shoal.residency"
USER_XATTRS = b"user."
ATTR_TIMEOUT = 1.0  # seconds the kernel may trust names and attributes without asking again
T = TypeVar("T")

_KIND_BITS = {Kind.FILE: stat.S_IFREG, Kind.DIR: stat.S_IFDIR, Kind.SYMLINK: stat.S_IFLNK}


def entry_attributes(attr: Attr, uid: int, gid: int) -> pyfuse3.EntryAttributes:
    out = pyfuse3.EntryAttributes()
    out.st_ino = pyfuse3.InodeT(attr.ino)
    out.generation = 0
    out.entry_timeout = ATTR_TIMEOUT
    out.attr_timeout = ATTR_TIMEOUT
    out.st_mode = pyfuse3.ModeT(_KIND_BITS[attr.kind] | attr.mode)
    out.st_nlink = attr.nlink
    out.st_uid = uid
    out.st_gid = gid
    out.st_rdev = 0
    out.st_size = attr.size
    out.st_blksize = 128 * 1024
    out.st_blocks = (attr.size + 511) // 512
    out.st_atime_ns = attr.mtime_ns
    out.st_mtime_ns = attr.mtime_ns
    out.st_ctime_ns = attr.mtime_ns
    return out


def _absent_xattr(name: bytes) -> int:
    """ENODATA for a ``user.`` name shoal does not have; EOPNOTSUPP for any other namespace.

    ``ls -l`` asks every file for ``security.selinux`` and ``system.nfs4_acl``. "Not supported"
    makes it stop asking for the rest of the filesystem (it remembers such answers per device),
    where "no data" costs one round trip per file and name. ENOSYS would stop the kernel asking
    for any name at all, ``user.shoal.residency`` included, until the next mount.
    """
    return pyfuse3.ENOATTR if name.startswith(USER_XATTRS) else errno.EOPNOTSUPP


class ShoalOperations(pyfuse3.Operations):
    """One mounted arena. ``fs`` holds everything; this class only translates."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, fs: ArenaFS, mountpoint: Path | None = None) -> None:
        super().__init__()
        self.fs = fs
        self.mountpoint = mountpoint  # resolved; its read-ahead is raised once the kernel is answered
        self.uid = os.getuid()
        self.gid = os.getgid()
        self._dirs: dict[int, list[tuple[bytes, Attr]]] = {}
        self._next_dir = 1

    def init(self) -> None:
        # The kernel sets a mount's read-ahead from the reply to this INIT request (at most 128 KiB):
        # raise it right after the reply is written, which happens before the loop's next callback.
        if self.mountpoint is not None:
            asyncio.get_running_loop().call_soon(_raise_readahead, self.mountpoint)

    async def _run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except ShoalError as exc:
            code = errno_for(exc)
            if isinstance(exc, CONTENT_ERRORS):
                log.warning("%s failed (%s): %s", what, errno.errorcode.get(code, code), exc)
            else:
                log.debug("%s: %s", what, exc)
            raise pyfuse3.FUSEError(code) from exc

    def _attrs(self, attr: Attr) -> pyfuse3.EntryAttributes:
        return entry_attributes(attr, self.uid, self.gid)

    # -- names and attributes -----------------------------------------------------------------

    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if name == b".":
            return await self.getattr(parent_inode, ctx)

        async def call() -> Attr:
            return self.fs.lookup(parent_inode, name)

        return self._attrs(await self._run(f"lookup {name!r}", call))

    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        return None  # inode numbers stay bound to their paths for the life of the mount

    async def getattr(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        async def call() -> Attr:
            return self.fs.getattr(inode)

        return self._attrs(await self._run("getattr", call))

    async def setattr(
        self,
        inode: pyfuse3.InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: pyfuse3.FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        size = attr.st_size if fields.update_size else None
        mode = stat.S_IMODE(attr.st_mode) if fields.update_mode else None
        mtime = attr.st_mtime_ns if fields.update_mtime else None
        return self._attrs(
            await self._run(
                f"setattr {self.fs.path_of(inode)}",
                lambda: self.fs.setattr(inode, size=size, mode=mode, mtime_ns=mtime),
            )
        )

    async def readlink(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileNameT:
        async def call() -> str:
            return self.fs.readlink(inode)

        return pyfuse3.FileNameT(os.fsencode(await self._run("readlink", call)))

    async def opendir(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileHandleT:
        async def call() -> list[tuple[str, Attr]]:
            return self.fs.readdir(inode)

        listing = await self._run("opendir", call)
        fh = self._next_dir
        self._next_dir += 1
        self._dirs[fh] = [(name.encode("utf-8"), attr) for name, attr in listing]
        return pyfuse3.FileHandleT(fh)

    async def readdir(self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._dirs.get(fh, [])
        for i in range(start_id, len(listing)):
            name, attr = listing[i]
            if not pyfuse3.readdir_reply(token, pyfuse3.FileNameT(name), self._attrs(attr), i + 1):
                return

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        self._dirs.pop(fh, None)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        stats = self.fs.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = stats.block_size
        out.f_frsize = stats.block_size
        out.f_blocks = stats.blocks
        out.f_bfree = stats.blocks_free
        out.f_bavail = stats.blocks_free
        out.f_files = stats.files
        out.f_ffree = 1 << 20
        out.f_favail = 1 << 20
        out.f_namemax = stats.name_max
        return out

    # -- content ------------------------------------------------------------------------------

    async def open(
        self, inode: pyfuse3.InodeT, flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        write = (flags & os.O_ACCMODE) != os.O_RDONLY
        truncate = bool(flags & os.O_TRUNC)
        fh = await self._run(
            f"open {self.fs.path_of(inode)}", lambda: self.fs.open(inode, write=write, truncate=truncate)
        )
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh))

    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        return await self._run(f"read of {self._path_of_handle(fh)}", lambda: self.fs.read(fh, off, size))

    def _path_of_handle(self, fh: int) -> str:
        return self.fs.handle_path(fh)

    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        return await self._run(f"write to {self._path_of_handle(fh)}", lambda: self.fs.write(fh, off, buf))

    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        await self._run(f"close of {self._path_of_handle(fh)}", lambda: self.fs.flush(fh))

    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        await self._run(f"fsync of {self._path_of_handle(fh)}", lambda: self.fs.fsync(fh))

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        await self._run(f"release of {self._path_of_handle(fh)}", lambda: self.fs.release(fh))

    async def create(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: int,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, attr = await self._run(
            f"create {name!r}", lambda: self.fs.create(parent_inode, name, stat.S_IMODE(mode) & ~ctx.umask)
        )
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh)), self._attrs(attr)

    # -- namespace changes --------------------------------------------------------------------

    async def mkdir(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(
            await self._run(
                f"mkdir {name!r}", lambda: self.fs.mkdir(parent_inode, name, stat.S_IMODE(mode) & ~ctx.umask)
            )
        )

    async def symlink(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        target: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(
            await self._run(f"symlink {name!r}", lambda: self.fs.symlink(parent_inode, name, target))
        )

    async def unlink(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        await self._run(f"unlink {name!r}", lambda: self.fs.unlink(parent_inode, name))

    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        await self._run(f"rmdir {name!r}", lambda: self.fs.rmdir(parent_inode, name))

    async def rename(
        self,
        parent_inode_old: pyfuse3.InodeT,
        name_old: pyfuse3.FileNameT,
        parent_inode_new: pyfuse3.InodeT,
        name_new: pyfuse3.FileNameT,
        flags: pyfuse3.FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        replace = not flags & pyfuse3.RENAME_NOREPLACE
        await self._run(
            f"rename {name_old!r}",
            lambda: self.fs.rename(parent_inode_old, name_old, parent_inode_new, name_new, replace=replace),
        )

    async def link(
        self,
        inode: pyfuse3.InodeT,
        new_parent_inode: pyfuse3.InodeT,
        new_name: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)  # hard links do not sync

    # -- residency as an xattr ----------------------------------------------------------------

    async def getxattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> bytes:
        if name != RESIDENCY_XATTR:
            raise pyfuse3.FUSEError(_absent_xattr(name))

        async def call() -> bytes:
            return residency_of(self.fs, inode).value.encode()

        return await self._run("getxattr", call)

    async def setxattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        if name != RESIDENCY_XATTR:
            raise pyfuse3.FUSEError(errno.ENOTSUP)

        async def call() -> None:
            await set_residency(self.fs, inode, parse_residency(value.decode("utf-8", "replace")))

        await self._run(f"set residency of {self.fs.path_of(inode)}", call)

    async def listxattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> Sequence[pyfuse3.XAttrNameT]:
        return [pyfuse3.XAttrNameT(RESIDENCY_XATTR)]

    async def removexattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        raise pyfuse3.FUSEError(errno.ENOTSUP)


MOUNT_OPTIONS = frozenset({"fsname=shoal", "subtype=shoal", "default_permissions"})
# Kernel read-ahead of a mount: 1 MiB makes a sequential reader's requests 1 MiB instead of 128 KiB
# (an eighth of the round trips) and keeps the next one coming while a chunk is fetched.
READAHEAD_KIB = 1024


async def serve(
    fs: ArenaFS,
    mountpoint: Path,
    *,
    ready: Callable[[], None] | None = None,
    refresh_every: float | None = None,
) -> None:
    """Mount ``fs`` at ``mountpoint`` and serve until unmounted or sent SIGTERM/SIGINT.

    With ``refresh_every``, the index is checked that often and the namespace reloaded when the
    engine moved the arena's cursor (remote changes applied).
    """
    pyfuse3.asyncio.enable()
    # Resolved before mounting: afterwards a stat of the mount point would wait on this very process.
    ops = ShoalOperations(fs, Path(os.path.realpath(mountpoint)))
    options = set(MOUNT_OPTIONS) | ({"ro"} if fs.read_only else set())
    pyfuse3.init(ops, str(mountpoint), options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, pyfuse3.terminate)
    watcher = loop.create_task(_follow_index(fs, refresh_every)) if refresh_every else None
    unmounted = False
    try:
        if ready is not None:
            ready()
        await pyfuse3.main()
        pyfuse3.close(unmount=True)
        unmounted = True
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if not unmounted:
            pyfuse3.close(unmount=True)
        await fs.aclose()
        await fs.chunks.aclose()


def _raise_readahead(mountpoint: Path) -> None:
    if not raise_readahead(mountpoint, READAHEAD_KIB):
        log.info("mount: kept the kernel's default read-ahead (raising it needs root)")


async def _follow_index(fs: ArenaFS, every: float) -> None:
    seen = await asyncio.to_thread(lambda: fs.index.cursor)
    while True:
        await asyncio.sleep(every)
        try:
            cursor = await asyncio.to_thread(lambda: fs.index.cursor)
            if cursor != seen:
                seen = cursor
                fs.refresh()
                log.info("mount: took the index at cursor %d", cursor)
        except ShoalError as exc:
            log.warning("mount: cannot read the index (%s); names may be out of date", exc)
