"""ShoalError → errno: the one table the FUSE adapter uses.

Content that cannot be served (a chunk missing or corrupt, the hub away) is
EIO with a log line saying why; it is never zeros and never "no such file".
"""

from __future__ import annotations

import errno

from shoal import errors
from shoal.vfs import errors as vfs_errors

# Most specific first: the first class an error is an instance of decides.
ERRNO_TABLE: tuple[tuple[type[errors.ShoalError], int], ...] = (
    (errors.ChunkMissingError, errno.EIO),
    (vfs_errors.NotAFolderError, errno.ENOTDIR),
    (vfs_errors.IsAFolderError, errno.EISDIR),
    (vfs_errors.NotEmptyError, errno.ENOTEMPTY),
    (vfs_errors.ExistsError, errno.EEXIST),
    (vfs_errors.BadHandleError, errno.EBADF),
    (vfs_errors.ReadOnlyError, errno.EROFS),
    (errors.NotFoundError, errno.ENOENT),
    (errors.UnsafePathError, errno.EINVAL),
    (errors.DiskFullError, errno.ENOSPC),
    (errors.QuotaExceededError, errno.EDQUOT),
    (errors.IntegrityError, errno.EIO),
    (errors.NetworkError, errno.EIO),
    (errors.LockedError, errno.EACCES),
    (errors.AuthError, errno.EACCES),
    (errors.UsageError, errno.EINVAL),
    (errors.ConflictError, errno.EBUSY),
)

# Errors that mean "the content could not be served": worth a warning in the log.
CONTENT_ERRORS = (errors.ChunkMissingError, errors.IntegrityError, errors.NetworkError, errors.StorageError)


def errno_for(exc: errors.ShoalError) -> int:
    for cls, code in ERRNO_TABLE:
        if isinstance(exc, cls):
            return code
    return errno.EIO
