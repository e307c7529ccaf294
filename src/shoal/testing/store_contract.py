"""The conformance suite every ``BlobStore`` runs.

Subclass :class:`BlobStoreContract` in a test module and provide an ``open_store`` fixture: a
zero-argument callable returning a store on one fresh, empty namespace that is the same for
every call within a test (a new handle each call, or the same object for in-memory stores)::

    class TestFileStore(BlobStoreContract):
        @pytest.fixture
        def open_store(self, tmp_path):
            return lambda: FileBlobStore(tmp_path / "blobs")
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import blake3
import pytest

from shoal.errors import ChunkMissingError, FormatError, ShoalError, UsageError
from shoal.model.ids import ChunkId
from shoal.store.base import BlobStore

StoreOpener = Callable[[], BlobStore]
T = TypeVar("T")


def blob(content: bytes) -> tuple[ChunkId, bytes]:
    """A content-addressed blob: (BLAKE3 of content, content)."""
    return ChunkId(blake3.blake3(content).digest()), content


def random_blobs(count: int, size: int = 1000) -> list[tuple[ChunkId, bytes]]:
    return [blob(os.urandom(size)) for _ in range(count)]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def collect(store: BlobStore) -> list[ChunkId]:
    return [cid async for cid in store.iterate()]


async def using(open_store: StoreOpener, body: Callable[[BlobStore], Awaitable[T]]) -> T:
    store = open_store()
    try:
        return await body(store)
    finally:
        await store.close()


class BlobStoreContract:
    """The checks; each test runs on a fresh namespace given by ``open_store``."""

    @pytest.fixture
    def open_store(self) -> StoreOpener:
        raise NotImplementedError("a BlobStoreContract subclass must provide an open_store fixture")

    def test_round_trip(self, open_store: StoreOpener) -> None:
        blobs = [*random_blobs(5), blob(b""), blob(b"\x00" * 3)]

        async def body(store: BlobStore) -> None:
            await store.put_many(blobs)
            for cid, content in blobs:
                assert await store.get(cid) == content
                assert await store.size(cid) == len(content)

        run(using(open_store, body))

    def test_visible_to_a_second_handle(self, open_store: StoreOpener) -> None:
        blobs = random_blobs(3)
        run(using(open_store, lambda s: s.put_many(blobs)))

        async def body(store: BlobStore) -> None:
            assert await store.has_many(cid for cid, _ in blobs) == {cid for cid, _ in blobs}
            for cid, content in blobs:
                assert await store.get(cid) == content

        run(using(open_store, body))

    def test_put_is_idempotent(self, open_store: StoreOpener) -> None:
        cid, content = blob(b"the same bytes, twice")

        async def body(store: BlobStore) -> None:
            await store.put_many([(cid, content)])
            await store.put_many([(cid, content), (cid, content)])
            assert await store.get(cid) == content
            assert await collect(store) == [cid]

        run(using(open_store, body))

    def test_has_many_returns_the_present_subset(self, open_store: StoreOpener) -> None:
        stored = random_blobs(7)
        absent = random_blobs(5)

        async def body(store: BlobStore) -> None:
            assert await store.has_many([]) == set()
            assert await store.has_many(cid for cid, _ in stored) == set()
            await store.put_many(stored)
            asked = [cid for cid, _ in stored[:4]] + [cid for cid, _ in absent] + [stored[0][0]]
            assert await store.has_many(asked) == {cid for cid, _ in stored[:4]}

        run(using(open_store, body))

    def test_get_many_answers_the_present_ids(self, open_store: StoreOpener) -> None:
        first, second = random_blobs(6), random_blobs(5)  # two groups: two packs where stores pack
        alone = blob(os.urandom(300_000))  # too large to pack
        absent = blob(b"never stored")

        async def body(store: BlobStore) -> None:
            assert await store.get_many([]) == {}
            await store.put_many(first)
            await store.put_many([*second, alone])
            asked = [second[0], absent, alone, *first[::-1], second[4], first[2]]
            expected = {cid: content for cid, content in asked if cid != absent[0]}
            assert await store.get_many(cid for cid, _ in asked) == expected

        run(using(open_store, body))

    def test_missing_chunk_names_its_id(self, open_store: StoreOpener) -> None:
        cid, _ = blob(b"never stored")

        async def body(store: BlobStore) -> None:
            with pytest.raises(ChunkMissingError, match=cid.hex()):
                await store.get(cid)
            with pytest.raises(ChunkMissingError, match=cid.hex()):
                await store.size(cid)

        run(using(open_store, body))

    def test_delete_is_idempotent(self, open_store: StoreOpener) -> None:
        (cid, content), (other, other_content) = random_blobs(2)

        async def body(store: BlobStore) -> None:
            await store.put_many([(cid, content), (other, other_content)])
            await store.delete(cid)
            await store.delete(cid)
            await store.delete(blob(b"never stored")[0])
            assert await store.has_many([cid, other]) == {other}
            with pytest.raises(ChunkMissingError):
                await store.get(cid)
            assert await store.get(other) == other_content

        run(using(open_store, body))

    def test_deleting_most_of_a_batch_keeps_the_rest(self, open_store: StoreOpener) -> None:
        blobs = random_blobs(40, size=200)
        kept, dropped = blobs[::4], [b for i, b in enumerate(blobs) if i % 4]

        async def delete_most(store: BlobStore) -> None:
            await store.put_many(blobs)
            for cid, _ in dropped:
                await store.delete(cid)

        async def check(store: BlobStore) -> None:
            assert await store.has_many(cid for cid, _ in blobs) == {cid for cid, _ in kept}
            assert sorted(await collect(store)) == sorted(cid for cid, _ in kept)
            for cid, content in kept:
                assert await store.get(cid) == content
            with pytest.raises(ChunkMissingError):
                await store.get(dropped[0][0])
            for cid, _ in kept:
                await store.delete(cid)
            assert await collect(store) == []

        run(using(open_store, delete_most))
        run(using(open_store, check))

    def test_iterate_lists_each_id_once(self, open_store: StoreOpener) -> None:
        blobs = random_blobs(40, size=64)

        async def body(store: BlobStore) -> None:
            assert await collect(store) == []
            await store.put_many(blobs[:30])
            await store.put_many(blobs[20:])
            listed = await collect(store)
            assert sorted(listed) == sorted(cid for cid, _ in blobs)

        run(using(open_store, body))

    def test_scoped_stores_are_isolated_for_batches(self, open_store: StoreOpener) -> None:
        parent, tenant_a, tenant_b = (random_blobs(12, size=300) for _ in range(3))

        async def body(store: BlobStore) -> None:
            views = (store, store.scoped("tenant-a"), store.scoped("tenant-b"))
            for view, own in zip(views, (parent, tenant_a, tenant_b), strict=True):
                await view.put_many(own)
            everything = [cid for cid, _ in parent + tenant_a + tenant_b]
            for view, own in zip(views, (parent, tenant_a, tenant_b), strict=True):
                assert sorted(await collect(view)) == sorted(cid for cid, _ in own)
                assert await view.has_many(everything) == {cid for cid, _ in own}
                for cid, content in own:
                    assert await view.get(cid) == content
            with pytest.raises(ChunkMissingError):
                await views[2].get(tenant_a[0][0])
            await views[2].delete(tenant_a[0][0])
            await views[0].delete(tenant_a[1][0])
            assert await views[1].get(tenant_a[0][0]) == tenant_a[0][1]
            assert await views[1].get(tenant_a[1][0]) == tenant_a[1][1]

        run(using(open_store, body))

    def test_scoped_stores_are_isolated(self, open_store: StoreOpener) -> None:
        parent_blob, a_blob, b_blob, nested_blob = random_blobs(4)

        async def body(store: BlobStore) -> None:
            tenant_a, tenant_b = store.scoped("tenant-a"), store.scoped("tenant-b")
            nested = store.scoped("tenant-a/sub-1")
            await store.put_many([parent_blob])
            await tenant_a.put_many([a_blob])
            await tenant_b.put_many([b_blob])
            await nested.put_many([nested_blob])
            everything = [parent_blob[0], a_blob[0], b_blob[0], nested_blob[0]]
            for view, own in (
                (store, parent_blob),
                (tenant_a, a_blob),
                (tenant_b, b_blob),
                (nested, nested_blob),
            ):
                assert await collect(view) == [own[0]]
                assert await view.has_many(everything) == {own[0]}
                assert await view.get(own[0]) == own[1]
            with pytest.raises(ChunkMissingError):
                await tenant_b.get(a_blob[0])
            await tenant_b.delete(a_blob[0])
            assert await tenant_a.get(a_blob[0]) == a_blob[1]
            # The same scope opened again is the same namespace.
            assert await store.scoped("tenant-a").get(a_blob[0]) == a_blob[1]

        run(using(open_store, body))

    @pytest.mark.parametrize(
        "prefix", ["../x", "..", "", "a//b", "/abs", "A", "a b", "x/../../y", "ns/.", "é"]
    )
    def test_bad_scope_is_refused(self, open_store: StoreOpener, prefix: str) -> None:
        store = open_store()
        with pytest.raises(UsageError, match="invalid store scope"):
            store.scoped(prefix)
        run(store.close())

    def test_concurrent_puts_of_one_id(self, open_store: StoreOpener) -> None:
        cid, content = blob(os.urandom(300_000))

        async def body(store: BlobStore) -> None:
            others = [open_store() for _ in range(3)]
            try:
                writers = [s.put_many([(cid, content)]) for s in [store, *others] for _ in range(3)]
                await asyncio.gather(*writers)
            finally:
                for other in others:
                    await other.close()
            assert await store.get(cid) == content
            assert await collect(store) == [cid]

        run(using(open_store, body))

    def test_large_blob(self, open_store: StoreOpener) -> None:
        cid, content = blob(os.urandom(4 * 1024 * 1024 + 17))

        async def body(store: BlobStore) -> None:
            await store.put_many([(cid, content)])
            assert await store.size(cid) == len(content)
            assert await store.get(cid) == content

        run(using(open_store, body))

    def test_many_blobs_in_one_batch(self, open_store: StoreOpener) -> None:
        blobs = random_blobs(300, size=100)

        async def body(store: BlobStore) -> None:
            await store.put_many(blobs)
            assert await store.has_many(cid for cid, _ in blobs) == {cid for cid, _ in blobs}
            assert len(await collect(store)) == 300

        run(using(open_store, body))

    def test_url_is_shown_without_secrets(self, open_store: StoreOpener) -> None:
        store = open_store()
        assert "secret" not in store.url.lower()
        assert isinstance(store.url, str)
        assert store.url
        run(store.close())

    def test_malformed_id_is_refused(self, open_store: StoreOpener) -> None:
        short = ChunkId(b"../../etc/passwd")

        async def body(store: BlobStore) -> None:
            with pytest.raises(FormatError):
                await store.put_many([(short, b"x")])
            with pytest.raises(FormatError):
                await store.get(short)
            assert await collect(store) == []

        run(using(open_store, body))

    def test_errors_are_shoal_errors(self, open_store: StoreOpener) -> None:
        async def body(store: BlobStore) -> None:
            with pytest.raises(ShoalError):
                await store.get(blob(b"absent")[0])

        run(using(open_store, body))
