"""File API answers built from tree entries: a file's metadata and a listing's items."""

from __future__ import annotations

from shoal.hub.files.schemas import FileMeta, Kind, ListItem, Residency
from shoal.hub.files.tree import Entry


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
