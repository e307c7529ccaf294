"""File API operations that combine the database, the staging area and the blob store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from shoal.errors import StorageError
from shoal.hub.context import HubContext
from shoal.hub.errors import PayloadTooLargeError
from shoal.hub.files.schemas import FileMeta, Kind, ListItem, Residency
from shoal.hub.files.tree import Entry
from shoal.hub.files.uploads import part_path


def _kind(kind: str) -> Kind:
    return "file" if kind == "file" else "dir" if kind == "dir" else "symlink"


def file_meta(entry: Entry, acked: list[str]) -> FileMeta:
    body = entry.body
    manifest = entry.manifest() if entry.is_file else None
    return FileMeta(
        path=entry.path,
        kind=_kind(body.kind),
        seq=entry.seq,
        size=manifest.size if manifest is not None else 0,
        hash=manifest.file_hash.hex() if manifest is not None else None,
        mode=body.mode,
        mtime_ns=body.mtime_ns,
        device=entry.device,
        time=entry.created_at,
        chunks=len(manifest.chunks) if manifest is not None else 0,
        target=body.target,
        residency=Residency(on_hub=True, acked_by=acked),
    )


def list_item(folder: str, name: str, entry: Entry | None) -> ListItem:
    path = f"{folder}/{name}" if folder else name
    if entry is None:
        return ListItem(name=name, path=path, kind="dir", seq=None)
    kind = entry.body.kind
    return ListItem(
        name=name,
        path=path,
        kind=_kind(kind),
        size=entry.body.size if kind == "file" else 0,
        seq=entry.seq,
        mtime_ns=entry.body.mtime_ns,
    )


def _write_part(tmp: Path, final: Path, data: list[bytes]) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("wb") as out:
        for piece in data:
            out.write(piece)
    os.replace(tmp, final)


async def receive_part(
    ctx: HubContext, upload_id: str, number: int, body: AsyncIterator[bytes], limit: int
) -> int:
    """Stage one part from the request stream (whole or not at all); returns its size."""
    final = part_path(ctx, upload_id, number)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{id(body)}.tmp")
    buffered: list[bytes] = []
    total = 0
    try:
        async for piece in body:
            total += len(piece)
            if total > limit:
                raise PayloadTooLargeError(
                    f"a part is at most {limit} bytes", hint="split the file into more parts"
                )
            buffered.append(piece)
        await asyncio.to_thread(_write_part, tmp, final, buffered)
    except OSError as exc:
        raise StorageError(f"could not stage part {number} of upload {upload_id}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return total
