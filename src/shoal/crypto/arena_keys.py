"""The working keys of one encrypted arena, derived from its 256-bit master key.

The full hierarchy (epochs started by revocation, enrollment) comes later;
the epoch number already travels in every sealed envelope so that a reader
picks the right keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.crypto import aead
from shoal.crypto.kdf import MASTER_KEY_BYTES, Purpose, derive_gear_seed, derive_key


@dataclass(frozen=True, slots=True)
class ArenaKeys:
    epoch: int
    id_key: bytes = field(repr=False)  # keys BLAKE3 chunk ids and whole-file hashes
    gear_seed: int = field(repr=False)  # FastCDC gear table seed
    content_key: bytes = field(repr=False)  # seals chunks
    record_key: bytes = field(repr=False)  # seals manifests and change records
    path_key: bytes = field(repr=False)  # keys BLAKE3 of normalised paths (the hub's path keys)

    @classmethod
    def derive(cls, master: bytes, epoch: int = 0) -> ArenaKeys:
        return cls(
            epoch=epoch,
            id_key=derive_key(master, Purpose.CHUNK_ID),
            gear_seed=derive_gear_seed(master),
            content_key=derive_key(master, Purpose.CONTENT),
            record_key=derive_key(master, Purpose.RECORD),
            path_key=derive_key(master, Purpose.PATH),
        )


def new_master_key(random: aead.RandomSource | None = None) -> bytes:
    """A fresh random arena master key."""
    return (random or aead.default_random)(MASTER_KEY_BYTES)
