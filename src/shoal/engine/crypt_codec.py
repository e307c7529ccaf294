"""The codec and sealer of an encrypted arena, built from its keychain.

Path keys are keyed BLAKE3-256 of the NFC path with epoch 0's path key, so
a path keeps its key across key epochs (the hub orders changes by it).
Records are the plain codec's bytes sealed with the record key and padded
(Padmé), so names, their lengths and the tree's shape stay inside; pull
checks that the sealed path matches the path key the hub filed it under.
"""

from __future__ import annotations

import unicodedata

from blake3 import blake3

from shoal.crypto.aead import ObjectType
from shoal.crypto.hierarchy import Keychain
from shoal.engine.records import EntryRecord, PlainCodec
from shoal.errors import CorruptChunkError
from shoal.state.arenas import ArenaRecord
from shoal.store.sealed import EncryptedSealer, Sealer

_RECORD_ID = b"entry-record/v1"


class EncryptedCodec:
    """Encrypted arenas: keyed path keys, sealed records, no clear path on the wire."""

    sends_paths = False

    def __init__(self, path_key: bytes, sealer: EncryptedSealer) -> None:
        self._path_key = path_key
        self._sealer = sealer
        self._plain = PlainCodec()

    def path_key(self, path: str) -> str:
        digest: str = blake3(
            unicodedata.normalize("NFC", path).encode("utf-8"), key=self._path_key
        ).hexdigest()
        return digest

    def encode(self, record: EntryRecord) -> bytes:
        return self._sealer.seal_record(ObjectType.RECORD, _RECORD_ID, self._plain.encode(record))

    def decode(self, data: bytes) -> EntryRecord:
        try:
            plain = self._sealer.open_record(ObjectType.RECORD, _RECORD_ID, data)
        except CorruptChunkError as exc:
            raise CorruptChunkError(
                "a change record on the hub failed authentication: it was damaged or tampered with",
                hint="nothing was written for it; restore the hub from a backup, or push the file again",
            ) from exc
        return self._plain.decode(plain)


def arena_crypto(keychain: Keychain) -> tuple[EncryptedCodec, EncryptedSealer]:
    """Codec and sealer of the arena ``keychain`` belongs to: new content under the newest epoch."""
    sealer = EncryptedSealer(keychain.current(), keychain.arena.encode("utf-8"), older_keys=keychain.older())
    return EncryptedCodec(keychain.first().path_key, sealer), sealer


def crypto_for(arena: ArenaRecord, keychain: Keychain | None) -> tuple[EncryptedCodec | None, Sealer | None]:
    """``ArenaSync``'s ``codec``/``sealer``: None for plain arenas (and locked ones, which it refuses)."""
    if not arena.settings.get("encrypted") or keychain is None:
        return None, None
    return arena_crypto(keychain)
