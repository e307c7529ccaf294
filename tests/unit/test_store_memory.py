"""The in-memory test store keeps the same contract as the real backends."""

from __future__ import annotations

import pytest

from shoal.testing.memory_store import MemoryBlobStore
from shoal.testing.store_contract import BlobStoreContract, StoreOpener


class TestMemoryStoreContract(BlobStoreContract):
    @pytest.fixture
    def open_store(self) -> StoreOpener:
        store = MemoryBlobStore()
        return lambda: store
