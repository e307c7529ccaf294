"""Fixtures shared by the ingest tests: the worker threads, and each kind of sealer."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from shoal.crypto.arena_keys import ArenaKeys
from shoal.store.sealed import EncryptedSealer, PlainSealer, Sealer


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


@pytest.fixture(params=["plain", "encrypted"])
def sealer(request: pytest.FixtureRequest) -> Sealer:
    """A plain arena's sealer, then an encrypted arena's (the test runs once with each)."""
    if request.param == "plain":
        return PlainSealer()
    return EncryptedSealer(ArenaKeys.derive(b"\x42" * 32), b"arena-1")
