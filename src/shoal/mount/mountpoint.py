"""Mount points: refuse a busy one, clean a stale one, unmount.

A mount whose process was killed stays in the mount table and answers every
call with ENOTCONN ("Transport endpoint is not connected"); it never looks
empty, so nothing reads it as deletions. The next ``shoal mount`` on that
folder detects it and detaches it with ``fusermount3 -u`` before mounting.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

from shoal.errors import ConflictError, NotFoundError, StorageError, UsageError

FUSERMOUNT = "fusermount3"


def is_mounted(path: Path) -> bool:
    """True if ``path`` is a mount point in this process's mount table (live or stale)."""
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as table:
            for line in table:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == target:
                    return True
    except OSError:
        return os.path.ismount(path)
    return False


def device_of(path: Path) -> str | None:
    """The ``major:minor`` of the mount at ``path`` (already resolved: nothing here calls into the
    mount, which may be this process's own and not yet served)."""
    target = str(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as table:
            found = None
            for line in table:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == target:
                    found = fields[2]  # the last one listed is the one on top
            return found
    except OSError:
        return None


def raise_readahead(path: Path, kib: int) -> bool:
    """Let the kernel read ahead ``kib`` KiB in the mount at ``path`` (resolved, see :func:`device_of`);
    FUSE mounts get 128 KiB, in 128 KiB requests.

    Only root may write ``/sys/class/bdi/*/read_ahead_kb``; elsewhere the mount keeps the default.
    """
    device = device_of(path)
    if device is None:
        return False
    try:
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w", encoding="ascii") as setting:
            setting.write(str(kib))
    except OSError:
        return False
    return True


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def is_stale(path: Path) -> bool:
    """True if ``path`` is a FUSE mount whose server is gone (ENOTCONN)."""
    try:
        os.statvfs(path)  # statfs always reaches the server; stat may be answered from the kernel's cache
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def _fusermount(path: Path, *, lazy: bool = False) -> None:
    tool = shutil.which(FUSERMOUNT)
    if tool is None:
        raise StorageError(f"{FUSERMOUNT} is not installed", hint="install the fuse3 package")
    args = [tool, "-u", "-z", str(path)] if lazy else [tool, "-u", str(path)]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:
        message = done.stderr.strip() or f"{FUSERMOUNT} exited with {done.returncode}"
        if "busy" in message.lower():
            raise ConflictError(
                f"cannot unmount {path}: it is busy ({message})",
                hint="close the programs using files in it (see `fuser -m DIR`), then try again",
            )
        raise StorageError(f"cannot unmount {path}: {message}")


def prepare(path: Path) -> Path:
    """Check ``path`` can be mounted on, detaching a stale mount a killed process left there."""
    path = path.expanduser().absolute()
    if is_stale(path):
        _fusermount(path, lazy=True)
    if is_mounted(path):
        raise ConflictError(f"{path} is already mounted", hint=f"unmount it first with `shoal umount {path}`")
    if not path.exists():
        raise NotFoundError(f"the mount point {path} does not exist", hint="create the folder first")
    if not path.is_dir():
        raise UsageError(f"the mount point {path} is not a folder")
    return path


def unmount(path: Path) -> None:
    """Unmount a shoal mount (a stale one too)."""
    path = path.expanduser().absolute()
    if not is_mounted(path):
        raise NotFoundError(f"nothing is mounted at {path}")
    _fusermount(path, lazy=is_stale(path))
