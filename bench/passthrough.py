"""A minimal, read-only pyfuse3 passthrough filesystem: the ceiling for any Python FUSE mount.

    .venv/bin/python bench/passthrough.py SOURCE_DIR MOUNTPOINT

Every request goes straight to the same call on SOURCE_DIR: no cache, no
checks, nothing but pyfuse3's own cost (asyncio mode, like shoal's mount).
``mount_bench.py`` measures it in the same run as the shoal mount.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import sys

import pyfuse3
import pyfuse3.asyncio


class Passthrough(pyfuse3.Operations):
    def __init__(self, source: str) -> None:
        super().__init__()
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: source}
        self.fds: dict[int, int] = {}

    def _attr(self, path: str) -> pyfuse3.EntryAttributes:
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from exc
        attr = pyfuse3.EntryAttributes()
        ino = pyfuse3.ROOT_INODE if path == self.paths[pyfuse3.ROOT_INODE] else st.st_ino
        self.paths.setdefault(ino, path)
        attr.st_ino = pyfuse3.InodeT(ino)
        attr.st_mode = pyfuse3.ModeT(st.st_mode)
        attr.st_nlink = st.st_nlink
        attr.st_uid, attr.st_gid = st.st_uid, st.st_gid
        attr.st_size = st.st_size
        attr.st_blksize = 128 * 1024
        attr.st_blocks = st.st_blocks
        attr.st_atime_ns, attr.st_mtime_ns, attr.st_ctime_ns = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
        attr.entry_timeout = attr.attr_timeout = 1.0
        return attr

    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._attr(os.path.join(self.paths[parent_inode], os.fsdecode(name)))

    async def getattr(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(self.paths[inode])

    async def forget(self, inode_list: object) -> None:
        return None

    async def readlink(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileNameT:
        return pyfuse3.FileNameT(os.fsencode(os.readlink(self.paths[inode])))

    async def opendir(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileHandleT:
        return pyfuse3.FileHandleT(inode)

    async def readdir(self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        base = self.paths[fh]
        names = sorted(os.listdir(base))
        for i in range(start_id, len(names)):
            attr = self._attr(os.path.join(base, names[i]))
            if not pyfuse3.readdir_reply(token, pyfuse3.FileNameT(os.fsencode(names[i])), attr, i + 1):
                return

    async def open(
        self, inode: pyfuse3.InodeT, flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        fd = os.open(self.paths[inode], os.O_RDONLY)
        self.fds[fd] = fd
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fd))

    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        return os.pread(fh, size, off)

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        os.close(self.fds.pop(fh))

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.paths[pyfuse3.ROOT_INODE])
        out = pyfuse3.StatvfsData()
        for name in (
            "f_bsize",
            "f_frsize",
            "f_blocks",
            "f_bfree",
            "f_bavail",
            "f_files",
            "f_ffree",
            "f_favail",
        ):
            setattr(out, name, getattr(st, name))
        out.f_namemax = st.f_namemax
        return out


async def _main(source: str, mountpoint: str) -> None:
    pyfuse3.asyncio.enable()
    pyfuse3.init(Passthrough(source), mountpoint, {"fsname=passthrough", "ro"})
    try:
        await pyfuse3.main()
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or not stat.S_ISDIR(os.stat(sys.argv[1]).st_mode):
        raise SystemExit(__doc__)
    asyncio.run(_main(os.path.abspath(sys.argv[1]), sys.argv[2]))
