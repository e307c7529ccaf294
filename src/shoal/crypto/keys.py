"""Device identity keys (Ed25519 signing, X25519 key exchange) and key wrapping.

A device holds one :class:`DeviceKeys`. Arena keys reach it wrapped in a
sealed box for its X25519 public key (:func:`wrap_for_device`); keys derived
from a passphrase or a recovery mnemonic wrap secrets symmetrically
(:func:`wrap_secret`), with the purpose bound as associated data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nacl.exceptions
import nacl.public
import nacl.signing

from shoal.crypto.aead import KEY_BYTES, RandomSource, open_aead, seal_aead
from shoal.errors import CorruptChunkError, FormatError, IntegrityError

DEVICE_KEYS_FORMAT = 1
_DEVICE_KEYS_MAGIC = b"SHDK"
_SEED_BYTES = 32
_DEVICE_KEYS_LEN = len(_DEVICE_KEYS_MAGIC) + 1 + 2 * _SEED_BYTES
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

_WRAP_FORMAT = 1
_WRAP_DOMAIN = b"shoal/wrap/v1"


@dataclass(frozen=True)
class DeviceKeys:
    """A device's two private keys. ``to_bytes`` holds secrets: store it only in protected files."""

    _signing: nacl.signing.SigningKey = field(repr=False)
    _exchange: nacl.public.PrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> DeviceKeys:
        return cls(nacl.signing.SigningKey.generate(), nacl.public.PrivateKey.generate())

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceKeys:
        if len(data) != _DEVICE_KEYS_LEN or not data.startswith(_DEVICE_KEYS_MAGIC):
            raise FormatError("not a shoal device key file", hint="the device key file is damaged")
        version = data[len(_DEVICE_KEYS_MAGIC)]
        if version != DEVICE_KEYS_FORMAT:
            raise FormatError(f"device keys have unknown format version {version}", hint="upgrade shoal")
        start = len(_DEVICE_KEYS_MAGIC) + 1
        signing_seed = data[start : start + _SEED_BYTES]
        exchange_secret = data[start + _SEED_BYTES :]
        return cls(nacl.signing.SigningKey(signing_seed), nacl.public.PrivateKey(exchange_secret))

    def to_bytes(self) -> bytes:
        return _DEVICE_KEYS_MAGIC + bytes([DEVICE_KEYS_FORMAT]) + bytes(self._signing) + bytes(self._exchange)

    @property
    def signing_public(self) -> bytes:
        """The Ed25519 verify key, 32 bytes."""
        return bytes(self._signing.verify_key)

    @property
    def exchange_public(self) -> bytes:
        """The X25519 public key, 32 bytes: what others wrap arena keys for."""
        return bytes(self._exchange.public_key)

    def sign(self, message: bytes) -> bytes:
        """A detached 64-byte Ed25519 signature of ``message``."""
        signature: bytes = self._signing.sign(message).signature
        return signature

    def unwrap(self, wrapped: bytes) -> bytes:
        """Open a sealed box made by :func:`wrap_for_device` for this device."""
        try:
            opened: bytes = nacl.public.SealedBox(self._exchange).decrypt(wrapped)
        except nacl.exceptions.CryptoError as exc:
            raise IntegrityError(
                "a wrapped key could not be opened with this device's key",
                hint="it was wrapped for another device, or it is damaged",
            ) from exc
        return opened


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Check a detached Ed25519 signature; raise IntegrityError when it does not match."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        raise IntegrityError("invalid signature or public key length")
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise IntegrityError("signature does not match the message and key") from exc


def wrap_for_device(secret: bytes, exchange_public: bytes) -> bytes:
    """Seal ``secret`` (e.g. an arena master key) so only the holder of ``exchange_public`` opens it."""
    if len(exchange_public) != PUBLIC_KEY_BYTES:
        raise FormatError(f"an X25519 public key is {PUBLIC_KEY_BYTES} bytes, got {len(exchange_public)}")
    sealed: bytes = nacl.public.SealedBox(nacl.public.PublicKey(exchange_public)).encrypt(secret)
    return sealed


def wrap_secret(
    secret: bytes, wrapping_key: bytes, purpose: str, *, random: RandomSource | None = None
) -> bytes:
    """Encrypt ``secret`` with a symmetric key (from a passphrase or recovery key), binding ``purpose``."""
    if len(wrapping_key) != KEY_BYTES:
        raise FormatError(f"a wrapping key is {KEY_BYTES} bytes, got {len(wrapping_key)}")
    header = bytes([_WRAP_FORMAT])
    return header + seal_aead(wrapping_key, secret, _wrap_ad(header, purpose), random=random)


def unwrap_secret(wrapped: bytes, wrapping_key: bytes, purpose: str) -> bytes:
    """Reverse :func:`wrap_secret`; a wrong key or purpose raises IntegrityError."""
    if not wrapped or wrapped[0] != _WRAP_FORMAT:
        raise FormatError("not a shoal wrapped key, or written by a newer shoal")
    header = wrapped[:1]
    try:
        return open_aead(wrapping_key, wrapped[1:], _wrap_ad(header, purpose), what=f"wrapped {purpose} key")
    except CorruptChunkError as exc:
        raise IntegrityError(
            f"the {purpose} key could not be unwrapped",
            hint="the passphrase or recovery words are wrong, or the wrapped key is damaged",
        ) from exc


def _wrap_ad(header: bytes, purpose: str) -> bytes:
    return _WRAP_DOMAIN + b"\x00" + header + purpose.encode("utf-8")
