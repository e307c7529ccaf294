"""Key derivation: HKDF-SHA256 subkeys of a master key, and Argon2id for passphrases.

One master key, one subkey per purpose: each purpose has its own ``info``
label, so no two purposes ever share key material. The Argon2id cost is a
parameter (tests pass :data:`TEST_COST`); the cost used must be stored next
to whatever the derived key wraps, so it can be raised later.
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass

import nacl.exceptions
import nacl.pwhash.argon2id
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shoal.errors import FormatError, UsageError

MASTER_KEY_BYTES = 32
SALT_BYTES = nacl.pwhash.argon2id.SALTBYTES
_GEAR_SEED_MAX = 2**63 - 1  # what pyfastcdc accepts (see shoal.chunking.chunker)


class Purpose(enum.Enum):
    """HKDF ``info`` labels. Never change one: it would change every derived key."""

    CHUNK_ID = b"shoal/v1/chunk-id"
    GEAR_SEED = b"shoal/v1/gear-seed"
    CONTENT = b"shoal/v1/content"
    RECORD = b"shoal/v1/record"
    PATH = b"shoal/v1/path"


def derive_key(master: bytes, purpose: Purpose, length: int = 32) -> bytes:
    """HKDF-SHA256 of a uniformly random master key (no salt needed), labelled by purpose."""
    if len(master) != MASTER_KEY_BYTES:
        raise FormatError(f"a master key is {MASTER_KEY_BYTES} bytes, got {len(master)}")
    return HKDF(algorithm=SHA256(), length=length, salt=None, info=purpose.value).derive(master)


def derive_gear_seed(master: bytes) -> int:
    """A non-zero FastCDC gear seed in pyfastcdc's accepted range (0 would mean the public table)."""
    seed = int.from_bytes(derive_key(master, Purpose.GEAR_SEED, 8), "big") & _GEAR_SEED_MAX
    return seed or 1


@dataclass(frozen=True, slots=True)
class Argon2Cost:
    """Argon2id work factors: passes over memory, and memory in bytes."""

    opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
    memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_MODERATE


INTERACTIVE_COST = Argon2Cost()
TEST_COST = Argon2Cost(opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN, memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN)


def derive_from_passphrase(passphrase: str, salt: bytes, cost: Argon2Cost = INTERACTIVE_COST) -> bytes:
    """A 32-byte key from a passphrase (NFC-normalised, so every platform types the same bytes)."""
    if len(salt) != SALT_BYTES:
        raise FormatError(f"an Argon2id salt is {SALT_BYTES} bytes, got {len(salt)}")
    if not passphrase:
        raise UsageError("the passphrase is empty", hint="choose a passphrase of several words")
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    try:
        key: bytes = nacl.pwhash.argon2id.kdf(
            MASTER_KEY_BYTES, secret, salt, opslimit=cost.opslimit, memlimit=cost.memlimit
        )
    except (nacl.exceptions.ValueError, nacl.exceptions.RuntimeError) as exc:
        raise UsageError(f"invalid Argon2id cost {cost}: {exc}") from exc
    return key
