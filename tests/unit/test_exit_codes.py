"""The exit-code table is an interface: scripts depend on these numbers."""

from __future__ import annotations

from shoal import errors
from shoal.cli.exit_codes import EXIT_CODES, exit_code_for

PINNED = {
    errors.ShoalError: 1,
    errors.UsageError: 2,
    errors.NotFoundError: 3,
    errors.IntegrityError: 4,
    errors.AuthError: 5,
    errors.NetworkError: 6,
    errors.ConflictError: 7,
    errors.LockedError: 8,
    errors.QuotaExceededError: 9,
    errors.PartialFailureError: 10,
    errors.UnsafePathError: 11,
    errors.StorageError: 12,
    errors.FormatError: 13,
    errors.RateLimitedError: 14,
    errors.PausedError: 15,
}


def test_table_is_pinned() -> None:
    assert EXIT_CODES == PINNED


def test_subclasses_take_their_parents_code() -> None:
    assert exit_code_for(errors.CorruptChunkError("x")) == 4
    assert exit_code_for(errors.ChunkMissingError("x")) == 3
    assert exit_code_for(errors.ConfigError("x")) == 2
    assert exit_code_for(errors.UnsupportedVersionError("x")) == 13
    assert exit_code_for(errors.DiskFullError("x")) == 12


def test_every_error_class_has_a_code() -> None:
    def walk(cls: type[errors.ShoalError]) -> list[type[errors.ShoalError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in walk(sub))]

    for cls in walk(errors.ShoalError):
        exc = cls.__new__(cls)
        assert exit_code_for(exc) >= 1
