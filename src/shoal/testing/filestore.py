"""Test helpers that look inside a file store directory, whether a blob has its own file or is packed.

Tests that damage or lose a stored chunk on purpose use these instead of globbing for blob files,
which packs (``shoal.store.packs``) made incomplete.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from shoal.model.ids import ChunkId
from shoal.store.base import NAMESPACE_DIR, blob_key
from shoal.store.file import FileBlobStore
from shoal.store.packindex import INDEX_NAME
from shoal.store.packs import PACKS_DIR


@dataclass(frozen=True)
class StoredBlob:
    namespace: Path  # the directory of the (possibly scoped) store holding it
    cid: ChunkId
    size: int


def namespaces(root: Path) -> list[Path]:
    """``root`` and every scoped namespace below it."""
    found = [root]
    for scope in sorted((root / NAMESPACE_DIR).glob("*")) if (root / NAMESPACE_DIR).is_dir() else []:
        found.extend(namespaces(scope))
    return found


def stored_blobs(root: Path) -> list[StoredBlob]:
    """Every blob of the store at ``root``, in every namespace, packed or not."""

    async def listing() -> list[StoredBlob]:
        found = []
        for namespace in namespaces(root):
            store = FileBlobStore(namespace)
            try:
                async for cid in store.iterate():
                    found.append(StoredBlob(namespace, cid, await store.size(cid)))
            finally:
                await store.close()
        return found

    return asyncio.run(listing())


def delete_blob(blob: StoredBlob) -> None:
    """Lose a blob as a failing disk would, but cleanly: it is absent afterwards."""

    async def delete() -> None:
        store = FileBlobStore(blob.namespace)
        try:
            await store.delete(blob.cid)
        finally:
            await store.close()

    asyncio.run(delete())


def flip_last_byte(root: Path, cid: ChunkId) -> None:
    """Damage the stored bytes of ``cid`` (its last byte inverted) in whichever namespace holds it."""
    for namespace in namespaces(root):
        own = namespace / blob_key(cid)
        if own.is_file():
            _flip(own, own.stat().st_size - 1)
            return
        index = namespace / PACKS_DIR / INDEX_NAME
        if not index.is_file():
            continue
        with contextlib.closing(sqlite3.connect(index)) as db:
            row = db.execute(
                "SELECT name, offset, length FROM blobs JOIN packs ON pid = pack WHERE id = ?", (cid,)
            ).fetchone()
        if row is not None:
            name, offset, length = row
            _flip(namespace / PACKS_DIR / f"{name}.pack", offset + length - 1)
            return
    raise FileNotFoundError(f"chunk {cid.hex()} is not stored under {root}")


def _flip(path: Path, at: int) -> None:
    with path.open("r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
