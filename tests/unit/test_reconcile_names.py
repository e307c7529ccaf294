"""Conflict copy names: Syncthing's shape, one name per conflict on every device."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import UnsafePathError, UsageError
from shoal.model.paths import MAX_NAME_BYTES, validate_path
from shoal.reconcile import conflict_copy_name, is_conflict_copy, short_device_id, split_extension

WHEN = datetime(2026, 11, 22, 1, 2, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("report.txt", "report.sync-conflict-20261122-010203-ABC1234.txt"),
        ("docs/a.tar.gz", "docs/a.tar.sync-conflict-20261122-010203-ABC1234.gz"),
        (".bashrc", ".bashrc.sync-conflict-20261122-010203-ABC1234"),
        ("Makefile", "Makefile.sync-conflict-20261122-010203-ABC1234"),
        ("dir.d/README", "dir.d/README.sync-conflict-20261122-010203-ABC1234"),
        (".config.json", ".config.sync-conflict-20261122-010203-ABC1234.json"),
        ("trailing.", "trailing..sync-conflict-20261122-010203-ABC1234"),
        ("..hidden", "..hidden.sync-conflict-20261122-010203-ABC1234"),
        ("été/café.odt", "été/café.sync-conflict-20261122-010203-ABC1234.odt"),
    ],
)
def test_conflict_copy_names_follow_syncthing(path: str, expected: str) -> None:
    assert conflict_copy_name(path, WHEN, "ABC1234") == expected
    assert is_conflict_copy(expected)
    assert not is_conflict_copy(path)


def test_time_is_written_in_utc_whatever_zone_it_came_in() -> None:
    paris = WHEN.astimezone(timezone(timedelta(hours=1)))
    assert conflict_copy_name("a.txt", paris, "X") == conflict_copy_name("a.txt", WHEN, "X")
    naive = WHEN.replace(tzinfo=None)
    assert conflict_copy_name("a.txt", naive, "X") == conflict_copy_name("a.txt", WHEN, "X")


def test_long_names_are_shortened_in_the_stem_and_stay_valid() -> None:
    name = "é" * 127 + ".txt"  # 258 bytes: already at the limit before the marker
    copy = conflict_copy_name(f"d/{name}", WHEN, "ABC1234")
    validate_path(copy)
    last = copy.rpartition("/")[2]
    assert len(last.encode()) <= MAX_NAME_BYTES
    assert last.endswith(".sync-conflict-20261122-010203-ABC1234.txt")
    assert is_conflict_copy(copy)


def test_bad_device_short_is_refused() -> None:
    with pytest.raises(UsageError):
        conflict_copy_name("a", WHEN, "no/slash")
    with pytest.raises(UsageError):
        short_device_id("---")


def test_short_device_id_is_seven_upper_alnum() -> None:
    assert short_device_id("p4x7-qq2r-zz91") == "P4X7QQ2"


def test_is_conflict_copy_looks_only_at_the_name() -> None:
    assert not is_conflict_copy("x.sync-conflict-20261122-010203-ABC/inner.txt")
    assert not is_conflict_copy("notes.sync-conflict-2026-010203-ABC.txt")


def test_split_extension_examples() -> None:
    assert split_extension("a.tar.gz") == ("a.tar", ".gz")
    assert split_extension(".env") == (".env", "")
    assert split_extension("plain") == ("plain", "")


@given(st.text(st.characters(exclude_characters="/\x00", exclude_categories=["Cs"]), min_size=1))
def test_every_valid_name_gets_a_valid_recognisable_copy(name: str) -> None:
    try:
        validate_path(name)
    except UnsafePathError:
        return
    copy = conflict_copy_name(name, WHEN, "DEV1")
    validate_path(copy)
    assert is_conflict_copy(copy)
    assert copy != name
