"""The push journal's payload: a commit batch and the index rows it produces, written before the
commit is sent, so a killed push is replayed under the same idempotency key and lands once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from shoal.errors import FormatError
from shoal.model.vv import VersionVector
from shoal.net.schemas_sync import ChangeIn
from shoal.reconcile.kinds import Kind
from shoal.state.index import IndexEntry

JOURNAL_FORMAT = 1


@dataclass(frozen=True, slots=True)
class CommitBatch:
    key: str  # the idempotency key
    changes: list[ChangeIn]
    after: list[IndexEntry]  # index rows once the hub has the commit

    def encode(self) -> bytes:
        body = {
            "v": JOURNAL_FORMAT,
            "key": self.key,
            "changes": [c.model_dump(mode="json") for c in self.changes],
            "after": [_entry_dict(e) for e in self.after],
        }
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        return packed

    @classmethod
    def decode(cls, data: bytes) -> CommitBatch:
        try:
            body = msgpack.unpackb(data, raw=False)
            if body.get("v") != JOURNAL_FORMAT:
                raise FormatError(f"push journal entry has format {body.get('v')!r}")
            return cls(
                key=str(body["key"]),
                changes=[ChangeIn.model_validate(c) for c in body["changes"]],
                after=[_entry_from(d) for d in body["after"]],
            )
        except (ValueError, KeyError, TypeError, AttributeError, msgpack.ExtraData) as exc:
            raise FormatError(f"damaged push journal entry: {exc}") from exc


def _entry_dict(e: IndexEntry) -> dict[str, Any]:
    return {
        "path": e.path,
        "kind": e.kind.value,
        "size": e.size,
        "mtime_ns": e.mtime_ns,
        "inode": e.inode,
        "mode": e.mode,
        "target": e.target,
        "manifest": e.manifest,
        "vv": e.vv.to_dict(),
        "deleted": e.deleted,
        "origin": e.origin,
        "own_vv": None if e.own_vv is None else e.own_vv.to_dict(),
    }


def _entry_from(d: dict[str, Any]) -> IndexEntry:
    return IndexEntry(
        path=d["path"],
        kind=Kind(d["kind"]),
        size=d["size"],
        mtime_ns=d["mtime_ns"],
        inode=d["inode"],
        mode=d["mode"],
        target=d["target"],
        manifest=d["manifest"],
        vv=VersionVector(d["vv"]),
        deleted=d["deleted"],
        origin=d["origin"],
        own_vv=None if d.get("own_vv") is None else VersionVector(d["own_vv"]),
    )
