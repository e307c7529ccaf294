"""The one table from error class to process exit code.

Scripts depend on these numbers: they are pinned by a test and documented in
``docs/cli.md``. The most specific class in the table wins.
"""

from __future__ import annotations

from shoal import errors

OK = 0
FAILURE = 1  # any ShoalError without a more specific entry below
USAGE = 2  # also what click/typer use for bad arguments
NOT_FOUND = 3
INTEGRITY = 4
AUTH = 5
NETWORK = 6
CONFLICT = 7
LOCKED = 8
QUOTA = 9
PARTIAL = 10
UNSAFE_PATH = 11
STORAGE = 12
FORMAT = 13
RATE_LIMITED = 14
PAUSED = 15
INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

EXIT_CODES: dict[type[errors.ShoalError], int] = {
    errors.ShoalError: FAILURE,
    errors.UsageError: USAGE,
    errors.NotFoundError: NOT_FOUND,
    errors.IntegrityError: INTEGRITY,
    errors.AuthError: AUTH,
    errors.NetworkError: NETWORK,
    errors.ConflictError: CONFLICT,
    errors.LockedError: LOCKED,
    errors.QuotaExceededError: QUOTA,
    errors.PartialFailureError: PARTIAL,
    errors.UnsafePathError: UNSAFE_PATH,
    errors.StorageError: STORAGE,
    errors.FormatError: FORMAT,
    errors.RateLimitedError: RATE_LIMITED,
    errors.PausedError: PAUSED,
}


def exit_code_for(exc: errors.ShoalError) -> int:
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return FAILURE
