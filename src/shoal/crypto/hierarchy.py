"""The key hierarchy of an encrypted arena: keychains, envelopes, the escrow kit.

- A **keychain** lists the arena's master keys, one per key epoch (epoch 0
  at creation, one more per revocation). Holding the keychain of epoch N
  means holding every master up to N, so old content stays readable.
- An **envelope** is a keychain in a sealed box for one X25519 public key:
  an enrolled device's, or the arena's escrow key.
- The **escrow kit** holds the escrow private key twice: wrapped with an
  Argon2id key from the household passphrase, and with the recovery key
  (shown once as 24 BIP-39 words). The escrow public key travels in the
  clear, so a device that revokes another wraps the next epoch for escrow
  without knowing the passphrase.

Everything is pure: randomness is passed in (sealed boxes draw their
ephemeral key from libsodium). Only envelopes and the kit reach the hub.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import nacl.public

from shoal.crypto import aead
from shoal.crypto.arena_keys import ArenaKeys
from shoal.crypto.kdf import MASTER_KEY_BYTES, SALT_BYTES, Argon2Cost, derive_from_passphrase
from shoal.crypto.keys import PUBLIC_KEY_BYTES, DeviceKeys, unwrap_secret, wrap_for_device, wrap_secret
from shoal.crypto.mnemonic import key_to_words, words_to_key
from shoal.errors import AuthError, FormatError, IntegrityError

KEYCHAIN_FORMAT = 1
ESCROW_FORMAT = 1
_KEYCHAIN_MAGIC = b"SHKC"
_ESCROW_MAGIC = b"SHES"
_EPOCH = struct.Struct(">I")
_COST = struct.Struct(">IQ")
_LEN = struct.Struct(">I")
MAX_EPOCHS = 100_000


@dataclass(frozen=True, slots=True)
class Keychain:
    """The master keys of one arena, by epoch, ascending; the last one seals new content."""

    arena: str
    masters: tuple[tuple[int, bytes], ...] = field(repr=False)

    def __post_init__(self) -> None:
        epochs = [epoch for epoch, _ in self.masters]
        if not epochs or epochs != list(range(len(epochs))):
            raise FormatError(f"a keychain holds epochs 0..N in order, got {epochs[:10]}")
        if any(len(master) != MASTER_KEY_BYTES for _, master in self.masters):
            raise FormatError("a keychain holds 32-byte master keys")

    @classmethod
    def new(cls, arena: str, random: aead.RandomSource) -> Keychain:
        """A fresh keychain at epoch 0."""
        return cls(arena, ((0, _random_bytes(random, MASTER_KEY_BYTES)),))

    @property
    def epoch(self) -> int:
        return self.masters[-1][0]

    def current(self) -> ArenaKeys:
        epoch, master = self.masters[-1]
        return ArenaKeys.derive(master, epoch)

    def older(self) -> list[ArenaKeys]:
        return [ArenaKeys.derive(master, epoch) for epoch, master in self.masters[:-1]]

    def first(self) -> ArenaKeys:
        """Epoch 0: chunk ids, gear seed and path keys stay the same for the arena's life."""
        epoch, master = self.masters[0]
        return ArenaKeys.derive(master, epoch)

    def next_epoch(self, random: aead.RandomSource) -> Keychain:
        """This keychain plus a new random master: what a revocation hands the remaining devices."""
        if len(self.masters) >= MAX_EPOCHS:
            raise FormatError(f"arena {self.arena} has reached {MAX_EPOCHS} key epochs")
        return Keychain(
            self.arena, (*self.masters, (self.epoch + 1, _random_bytes(random, MASTER_KEY_BYTES)))
        )

    def to_bytes(self) -> bytes:
        arena = self.arena.encode("utf-8")
        parts = [_KEYCHAIN_MAGIC, bytes([KEYCHAIN_FORMAT]), _LEN.pack(len(arena)), arena]
        parts.append(_LEN.pack(len(self.masters)))
        for epoch, master in self.masters:
            parts += [_EPOCH.pack(epoch), master]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, *, arena: str) -> Keychain:
        """Parse a keychain and check that it belongs to ``arena`` (envelopes cannot be moved)."""
        reader = _Reader(data, "keychain")
        if reader.take(4) != _KEYCHAIN_MAGIC:
            raise FormatError("not a shoal keychain")
        version = reader.take(1)[0]
        if version != KEYCHAIN_FORMAT:
            raise FormatError(f"keychain format {version} is unknown", hint="upgrade shoal")
        found = reader.take(reader.length()).decode("utf-8", "replace")
        count = reader.length()
        if count > MAX_EPOCHS:
            raise FormatError("keychain lists too many epochs")
        masters = tuple(
            (_EPOCH.unpack(reader.take(4))[0], reader.take(MASTER_KEY_BYTES)) for _ in range(count)
        )
        reader.end()
        if found != arena:
            raise IntegrityError(
                f"the key envelope given for arena {arena} belongs to arena {found}",
                hint="the hub served another arena's keys; report this to its operator",
            )
        return cls(found, masters)


def seal_keychain(keychain: Keychain, exchange_public: bytes) -> bytes:
    """An envelope: ``keychain`` in a sealed box only the holder of ``exchange_public`` opens."""
    return wrap_for_device(keychain.to_bytes(), exchange_public)


def open_keychain(envelope: bytes, opener: DeviceKeys | nacl.public.PrivateKey, *, arena: str) -> Keychain:
    """Open an envelope with a device's keys or the escrow private key."""
    if isinstance(opener, DeviceKeys):
        plain = opener.unwrap(envelope)
    else:
        try:
            plain = nacl.public.SealedBox(opener).decrypt(envelope)
        except Exception as exc:  # nacl raises CryptoError or ValueError for damaged boxes
            raise IntegrityError(
                f"the escrow envelope of arena {arena} could not be opened", hint="it is damaged"
            ) from exc
    return Keychain.from_bytes(plain, arena=arena)


def fingerprint(public_key: bytes) -> str:
    """A short, readable digest of a public key, compared by eye when approving a device."""
    digest = hashlib.blake2b(public_key, digest_size=10).hexdigest()
    return "-".join(digest[i : i + 4] for i in range(0, 20, 4))


@dataclass(frozen=True, slots=True)
class EscrowKit:
    """The escrow key pair of one arena: public in clear, private wrapped twice. Safe to store on the hub."""

    public: bytes
    salt: bytes
    cost: Argon2Cost
    by_passphrase: bytes = field(repr=False)
    by_recovery: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        return b"".join(
            (
                _ESCROW_MAGIC,
                bytes([ESCROW_FORMAT]),
                self.public,
                self.salt,
                _COST.pack(self.cost.opslimit, self.cost.memlimit),
                _LEN.pack(len(self.by_passphrase)),
                self.by_passphrase,
                _LEN.pack(len(self.by_recovery)),
                self.by_recovery,
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> EscrowKit:
        reader = _Reader(data, "escrow kit")
        if reader.take(4) != _ESCROW_MAGIC:
            raise FormatError("not a shoal escrow kit")
        version = reader.take(1)[0]
        if version != ESCROW_FORMAT:
            raise FormatError(f"escrow kit format {version} is unknown", hint="upgrade shoal")
        public = reader.take(PUBLIC_KEY_BYTES)
        salt = reader.take(SALT_BYTES)
        ops, mem = _COST.unpack(reader.take(_COST.size))
        by_passphrase = reader.take(reader.length())
        by_recovery = reader.take(reader.length())
        reader.end()
        return cls(public, salt, Argon2Cost(ops, mem), by_passphrase, by_recovery)


@dataclass(frozen=True, slots=True)
class NewEscrow:
    """What creating an arena's escrow yields: the kit for the hub, the words for the person (once)."""

    kit: EscrowKit
    recovery_words: list[str] = field(repr=False)
    private: nacl.public.PrivateKey = field(repr=False)


def create_escrow(arena: str, passphrase: str, cost: Argon2Cost, random: aead.RandomSource) -> NewEscrow:
    """A new escrow key pair, wrapped with the passphrase (Argon2id at ``cost``) and a new recovery key."""
    private = nacl.public.PrivateKey(_random_bytes(random, 32))
    salt = _random_bytes(random, SALT_BYTES)
    recovery_key = _random_bytes(random, 32)
    secret = bytes(private)
    kit = EscrowKit(
        public=bytes(private.public_key),
        salt=salt,
        cost=cost,
        by_passphrase=wrap_secret(
            secret,
            derive_from_passphrase(passphrase, salt, cost),
            _purpose("passphrase", arena),
            random=random,
        ),
        by_recovery=wrap_secret(secret, recovery_key, _purpose("recovery", arena), random=random),
    )
    return NewEscrow(kit, key_to_words(recovery_key), private)


def escrow_from_passphrase(kit: EscrowKit, passphrase: str, *, arena: str) -> nacl.public.PrivateKey:
    """The escrow private key; AuthError when the passphrase is wrong."""
    key = derive_from_passphrase(passphrase, kit.salt, kit.cost)
    return _unwrap_escrow(kit, kit.by_passphrase, key, "passphrase", arena)


def escrow_from_recovery_words(kit: EscrowKit, words: str, *, arena: str) -> nacl.public.PrivateKey:
    """The escrow private key; UsageError for malformed words, AuthError for another arena's words."""
    return _unwrap_escrow(kit, kit.by_recovery, words_to_key(words), "recovery", arena)


def _unwrap_escrow(
    kit: EscrowKit, wrapped: bytes, key: bytes, kind: str, arena: str
) -> nacl.public.PrivateKey:
    try:
        secret = unwrap_secret(wrapped, key, _purpose(kind, arena))
    except IntegrityError as exc:
        what = "passphrase" if kind == "passphrase" else "recovery phrase"
        raise AuthError(
            f"the {what} does not unlock arena {arena}",
            hint="check it and try again; nothing was written",
        ) from exc
    private = nacl.public.PrivateKey(secret)
    if bytes(private.public_key) != kit.public:
        raise IntegrityError(f"the escrow kit of arena {arena} is inconsistent", hint="it was tampered with")
    return private


def _purpose(kind: str, arena: str) -> str:
    return f"escrow-{kind}:{arena}"


def _random_bytes(random: aead.RandomSource, n: int) -> bytes:
    data = random(n)
    if len(data) != n:
        raise FormatError(f"random source returned {len(data)} bytes, expected {n}")
    return data


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise FormatError(f"the {self.what} is truncated")
        piece = self.data[self.pos : self.pos + n]
        self.pos += n
        return piece

    def length(self) -> int:
        value: int = _LEN.unpack(self.take(4))[0]
        return value

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FormatError(f"the {self.what} has trailing bytes")
