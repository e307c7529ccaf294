"""Engine building blocks that need no hub: records, the journal payload, conflict-copy names,
which log entries a later change supersedes, and which version a restore picks."""

from __future__ import annotations

import pytest

from shoal.engine.history import pick_version
from shoal.engine.journal import CommitBatch
from shoal.engine.pull import _superseded, original_of
from shoal.engine.records import EntryRecord, PlainCodec, RecordKind
from shoal.errors import FormatError, NotFoundError, UnsafePathError, UnsupportedVersionError
from shoal.model.codec import pack_record
from shoal.model.ids import ChunkId
from shoal.model.manifest import ChunkRef, Manifest
from shoal.model.vv import VersionVector
from shoal.net.schemas_sync import ChangeEntry, ChangeIn, VersionEntry, plain_path_key
from shoal.reconcile.kinds import Kind
from shoal.state.index import IndexEntry

CID = ChunkId(bytes(range(32)))
MANIFEST = Manifest(size=5, chunks=(ChunkRef(CID, 5),), file_hash=b"h" * 32).encode()


def test_a_file_record_round_trips_and_names_its_chunks() -> None:
    codec = PlainCodec()
    record = EntryRecord(RecordKind.FILE, "docs/ü.txt", "dev1", 5, 0o755, 123, manifest=MANIFEST)
    back = codec.decode(codec.encode(record))
    assert back == record
    assert back.chunk_ids() == [CID.hex()]
    assert back.content_key() == b"h" * 32
    assert codec.path_key("docs/ü.txt") == plain_path_key("docs/ü.txt")


def test_symlink_tombstone_and_rename_records_round_trip() -> None:
    codec = PlainCodec()
    for record in (
        EntryRecord(RecordKind.SYMLINK, "l", "d", target="../../etc/passwd"),
        EntryRecord(RecordKind.TOMBSTONE, "gone", "d", mtime_ns=9),
        EntryRecord(RecordKind.DIR, "folder", "d", mode=0o700),
        EntryRecord(RecordKind.FILE, "new", "d", 5, manifest=MANIFEST, from_path="old"),
    ):
        assert codec.decode(codec.encode(record)) == record
    assert codec.decode(codec.encode(EntryRecord(RecordKind.TOMBSTONE, "x", "d"))).deleted


def test_records_from_the_wire_are_checked() -> None:
    codec = PlainCodec()
    with pytest.raises(UnsafePathError):
        codec.decode(
            pack_record("entry", 1, {"kind": "file", "path": "../x", "device": "d", "manifest": MANIFEST})
        )
    with pytest.raises(FormatError, match="no manifest"):
        codec.decode(pack_record("entry", 1, {"kind": "file", "path": "x", "device": "d"}))
    with pytest.raises(FormatError):
        codec.decode(pack_record("entry", 1, {"kind": "fifo", "path": "x", "device": "d"}))
    with pytest.raises(UnsupportedVersionError, match="upgrade"):
        codec.decode(pack_record("entry", 2, {"kind": "dir", "path": "x", "device": "d"}))
    with pytest.raises(FormatError):
        codec.decode(b"\x00garbage")


def test_the_record_carries_size_where_the_hub_reads_it() -> None:
    from shoal.hub.sync.commit import record_size

    record = EntryRecord(RecordKind.FILE, "a", "d", 5, manifest=MANIFEST)
    assert record_size(PlainCodec().encode(record)) == 5


def test_a_journalled_batch_round_trips() -> None:
    change = ChangeIn(
        op="delete", path_key=plain_path_key("a"), path="a", vv={"d": 2}, base_vv={"d": 1}, device="d"
    )
    entry = IndexEntry(
        "a", Kind.FILE, vv=VersionVector({"d": 2}), deleted=True, origin="d", manifest=MANIFEST
    )
    batch = CommitBatch("c-key-12345678", [change], [entry])
    assert CommitBatch.decode(batch.encode()) == batch
    with pytest.raises(FormatError):
        CommitBatch.decode(b"\x81\xa1v\x09")


def test_original_of_a_conflict_copy() -> None:
    assert original_of("docs/report.sync-conflict-20260101-120000-ABCDEF1.txt") == "docs/report.txt"
    assert original_of("Makefile.sync-conflict-20260101-120000-X") == "Makefile"


def _entry(seq: int, key: str, op: str = "put", conflict: int | None = None) -> ChangeEntry:
    return ChangeEntry(
        seq=seq,
        op=op,
        path_key=key * 64,
        record=b"",
        chunks=[],
        base_vv={},
        vv={"d": seq},  # type: ignore[arg-type]
        device="d",
        conflict_with=conflict,
        time=0.0,
    )


def test_a_later_clean_change_supersedes_earlier_ones_but_never_a_race() -> None:
    entries = [_entry(1, "a"), _entry(2, "b"), _entry(3, "a"), _entry(4, "c"), _entry(5, "c", conflict=4)]
    assert _superseded(entries) == {0}
    renamed = [_entry(1, "a"), _entry(2, "a", op="rename"), _entry(3, "a")]
    assert _superseded(renamed) == set()


def _version(seq: int, deleted: bool = False) -> VersionEntry:
    return VersionEntry(seq=seq, op="delete" if deleted else "put", time=0.0, device="d", deleted=deleted)


def test_restore_picks_the_version_before_the_current_one_or_before_a_delete() -> None:
    assert pick_version([_version(5), _version(3), _version(1)], None).seq == 3
    assert pick_version([_version(6, deleted=True), _version(5), _version(3)], None).seq == 5
    assert pick_version([_version(5)], None).seq == 5
    assert pick_version([_version(5), _version(3)], 5).seq == 5
    with pytest.raises(NotFoundError):
        pick_version([_version(5)], 4)
    with pytest.raises(NotFoundError):
        pick_version([_version(2, deleted=True)], None)
