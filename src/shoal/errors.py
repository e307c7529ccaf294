"""The one error tree of shoal.

Every failure a user can meet is a subclass of :class:`ShoalError`, carrying a
short ``title`` (what happened) and a ``hint`` (what to do about it). Foreign
errors (OSError, sqlite3, httpx, obstore) are translated once, at the edge of
the package that met them. Only ``shoal.cli`` turns these into exit codes,
only ``shoal.mount``/``shoal.webdav`` into errnos, only ``shoal.hub`` into
HTTP statuses.

    ShoalError
    ├── UsageError               bad arguments or configuration
    │   └── ConfigError          a settings file or value is invalid
    ├── NotFoundError            an arena, path, version, chunk or device does not exist
    │   └── ChunkMissingError    a chunk a manifest names is not in the store
    ├── UnsafePathError          a path would leave its root, or is not a valid name
    ├── IntegrityError           stored or received bytes failed verification
    │   ├── CorruptChunkError    a chunk's id or AEAD tag does not match its bytes
    │   └── ChangedWhileReadingError  a file changed while it was being read
    ├── FormatError              an encoded object is malformed
    │   └── UnsupportedVersionError  written by a newer (or unknown) format version
    ├── StorageError             a store or local disk operation failed
    │   └── DiskFullError        no space left to write
    ├── NetworkError             the hub could not be reached or answered badly
    ├── AuthError                not logged in, token expired or revoked, no permission
    ├── ConflictError            the operation collides with a concurrent change
    ├── LockedError              the arena's keys are not available on this device
    ├── QuotaExceededError       the tenant's storage quota would be exceeded
    ├── RateLimitedError         too many requests; retry later
    ├── PausedError              the arena is paused for safety (see the message)
    └── PartialFailureError      some items failed, the rest succeeded
"""

from __future__ import annotations


class ShoalError(Exception):
    """Base of every error shoal raises on purpose."""

    title: str = "shoal failed"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(ShoalError):
    title = "invalid usage"


class ConfigError(UsageError):
    title = "invalid configuration"


class NotFoundError(ShoalError):
    title = "not found"


class ChunkMissingError(NotFoundError):
    title = "chunk missing"


class CursorExpiredError(NotFoundError):
    """The hub compacted its log below the device's cursor: the device must read the arena again."""

    title = "cursor expired"


class UnsafePathError(ShoalError):
    title = "unsafe path"


class IntegrityError(ShoalError):
    title = "integrity check failed"


class CorruptChunkError(IntegrityError):
    title = "corrupt chunk"


class ChangedWhileReadingError(IntegrityError):
    title = "file changed while reading"


class FormatError(ShoalError):
    title = "malformed data"


class UnsupportedVersionError(FormatError):
    title = "unsupported format version"


class StorageError(ShoalError):
    title = "storage failure"


class DiskFullError(StorageError):
    title = "disk full"


class NetworkError(ShoalError):
    title = "network failure"


class AuthError(ShoalError):
    title = "not authorised"


class ConflictError(ShoalError):
    title = "conflict"


class LockedError(ShoalError):
    title = "arena locked"


class QuotaExceededError(ShoalError):
    title = "quota exceeded"


class RateLimitedError(ShoalError):
    title = "rate limited"

    def __init__(self, message: str, *, retry_after: float = 1.0, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class PausedError(ShoalError):
    title = "arena paused"


class PartialFailureError(ShoalError):
    title = "partly failed"

    def __init__(self, message: str, *, failures: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.failures = failures
