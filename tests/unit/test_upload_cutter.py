"""The file API's incremental cutter gives the manifest of cutting the whole file, however it is split."""

from __future__ import annotations

import io
import os
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from shoal.chunking.chunker import iter_chunks
from shoal.chunking.envelope import decode_plain
from shoal.chunking.hashing import FileHasher, chunk_id
from shoal.hub.files.cutter import Cutter
from shoal.model.manifest import ChunkRef, Manifest
from shoal.settings import MIB, ChunkingSettings


def whole(data: bytes) -> Manifest:
    hasher = FileHasher()
    hasher.update(data)
    refs = tuple(ChunkRef(chunk_id(c), len(c)) for c in iter_chunks(io.BytesIO(data), ChunkingSettings()))
    return Manifest(size=len(data), chunks=refs, file_hash=hasher.digest())


def fed(data: bytes, splits: list[int]) -> tuple[Manifest, dict[bytes, bytes]]:
    cutter = Cutter()
    blobs: dict[bytes, bytes] = {}
    with ThreadPoolExecutor(2) as pool:
        for start, end in zip([0, *splits], [*splits, len(data)], strict=True):
            buf, room = cutter.buffer(end - start)
            room[:] = data[start:end]
            blobs.update((bytes(cid), blob) for cid, _, blob in cutter.feed(buf, pool))
            assert cutter.carried <= ChunkingSettings().max_size
        tail, manifest = cutter.finish(pool)
    blobs.update((bytes(cid), blob) for cid, _, blob in tail)
    return manifest, blobs


@pytest.mark.parametrize("seed", range(6))
def test_any_split_gives_the_whole_file_manifest(seed: int) -> None:
    rng = random.Random(seed)
    # Random bytes with repeated runs, so both natural cuts and max-size cuts occur.
    block = os.urandom(3 * MIB)
    data = block + os.urandom(rng.randrange(1, 5 * MIB)) + block[: rng.randrange(1, 3 * MIB)] + bytes(9 * MIB)
    cuts = sorted({rng.randrange(0, len(data)) for _ in range(rng.randrange(0, 12))})
    if seed == 0:
        cuts = [0, 0, 1, 2, 255 * 1024, len(data)]  # empty pieces and tiny ones
    manifest, blobs = fed(data, cuts)
    assert manifest == whole(data)
    for ref in manifest.chunks:
        assert len(decode_plain(blobs[bytes(ref.id)], ref.id)) == ref.length


@pytest.mark.parametrize("size", [0, 1, 256 * 1024, 4 * MIB])
def test_small_and_empty_files(size: int) -> None:
    data = os.urandom(size)
    assert fed(data, [size // 2])[0] == whole(data)
    assert fed(data, [])[0] == whole(data)
