"""What can go wrong in a filesystem operation, as error classes the adapters map (to errnos in ``mount``)."""

from __future__ import annotations

from shoal.errors import ConflictError, UsageError


class NotAFolderError(UsageError):
    title = "not a folder"


class IsAFolderError(UsageError):
    title = "is a folder"


class NotEmptyError(ConflictError):
    title = "folder not empty"


class ExistsError(ConflictError):
    title = "already exists"


class BadHandleError(UsageError):
    title = "no such open file"


class ReadOnlyError(UsageError):
    title = "read-only mount"
