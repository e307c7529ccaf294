"""The file store's group commit: concurrent small puts share one write-and-sync."""

from __future__ import annotations

import asyncio
from pathlib import Path

from shoal.errors import StorageError
from shoal.model.ids import ChunkId
from shoal.store.file import TEMP_PREFIX, FileBlobStore
from shoal.testing.store_contract import blob, random_blobs, run


def _temp_files(root: Path) -> list[Path]:
    return list(root.rglob(f"{TEMP_PREFIX}*"))


def _calls(count: int, per_call: int) -> list[list[tuple[ChunkId, bytes]]]:
    blobs = random_blobs(count * per_call, size=3000)
    return [blobs[i * per_call : (i + 1) * per_call] for i in range(count)]


def test_concurrent_small_puts_are_all_stored_whole(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    calls = _calls(60, 3)

    async def put_all() -> None:
        await asyncio.gather(*(store.put_many(call) for call in calls))

    run(put_all())
    reopened = FileBlobStore(tmp_path)
    for call in calls:
        for cid, content in call:
            assert run(reopened.get(cid)) == content
    assert _temp_files(tmp_path) == []


def test_a_failed_write_fails_its_caller_and_no_call_returns_before_its_blobs_are_stored(
    tmp_path: Path,
) -> None:
    store = FileBlobStore(tmp_path, packs=False)  # a pack would not need the blocked shard
    calls = _calls(40, 2)
    bad_id, bad_content = blob(b"this chunk's shard directory is a file")
    (tmp_path / bad_id.hex()[:2]).write_bytes(b"in the way")
    calls = [call for call in calls if all(cid.hex()[:2] != bad_id.hex()[:2] for cid, _ in call)]
    calls.insert(len(calls) // 2, [(bad_id, bad_content)])

    async def put_all() -> list[BaseException | None]:
        return await asyncio.gather(*(store.put_many(call) for call in calls), return_exceptions=True)

    outcomes = run(put_all())
    assert isinstance(outcomes[len(calls) // 2], StorageError)
    # Calls that shared the failed group fail with it; any that returned have their blobs.
    assert all(outcome is None or isinstance(outcome, StorageError) for outcome in outcomes)
    reopened = FileBlobStore(tmp_path, packs=False)
    succeeded = [call for call, outcome in zip(calls, outcomes, strict=True) if outcome is None]
    for call in succeeded:
        for cid, content in call:
            assert run(reopened.get(cid)) == content
    assert (tmp_path / bad_id.hex()[:2]).read_bytes() == b"in the way"
    assert _temp_files(tmp_path) == []
    retry = next(call for call, outcome in zip(calls, outcomes, strict=True) if outcome is not None)
    if retry[0][0] != bad_id:  # the store keeps working after a failed group
        run(store.put_many(retry))
        assert all(run(reopened.get(cid)) == content for cid, content in retry)


def test_a_cancelled_caller_does_not_stop_the_others(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    calls = _calls(30, 2)

    async def put_and_cancel_one() -> None:
        tasks = [asyncio.create_task(store.put_many(call)) for call in calls]
        await asyncio.sleep(0)
        tasks[5].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[5], asyncio.CancelledError)
        assert all(r is None for i, r in enumerate(results) if i != 5)

    run(put_and_cancel_one())
    reopened = FileBlobStore(tmp_path)
    for i, call in enumerate(calls):
        if i != 5:
            for cid, content in call:
                assert run(reopened.get(cid)) == content
    assert _temp_files(tmp_path) == []


def test_the_store_can_be_used_from_one_event_loop_after_another(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    first, second = _calls(2, 10)
    run(store.put_many(first))
    run(store.put_many(second))
    for cid, content in first + second:
        assert run(store.get(cid)) == content
