"""XChaCha20-Poly1305-IETF with a random 24-byte nonce and explicit associated data.

The associated data binds what a sealed object *is*: a domain string, the
envelope header, the arena (or other context) id, the object type and the
object id. A sealed chunk moved under another id, or a manifest presented as
a chunk, fails its tag. A failed tag is always an error, never garbage.

Randomness comes from ``random`` when given, else from :data:`default_random`
(``os.urandom``), which tests may replace.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl import bindings
from nacl._sodium import ffi as _ffi  # PyNaCl's own cffi handle to libsodium: lets us seal in place
from nacl._sodium import lib as _lib
from nacl.exceptions import CryptoError

from shoal.errors import CorruptChunkError, FormatError

KEY_BYTES = 32
NONCE_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
TAG_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
OVERHEAD = NONCE_BYTES + TAG_BYTES

RandomSource = Callable[[int], bytes]
default_random: RandomSource = os.urandom

# From this many bytes on, seal_aead and open_aead let OpenSSL's ChaCha20-Poly1305 (through
# cryptography, which releases the GIL) do the work: 3.8 GB/s against libsodium's 1.7 GB/s on a
# megabyte here, but ~6 µs more per call, more than a 16 KiB payload takes in all.
OPENSSL_FROM = 32 * 1024
_SIGMA = struct.unpack("<4I", b"expand 32-byte k")

_AD_DOMAIN = b"shoal/aead/v1"


class ObjectType(enum.IntEnum):
    """What a sealed payload is; part of the associated data so types cannot be swapped."""

    CHUNK = 1
    MANIFEST = 2
    RECORD = 3


def associated_data(*, header: bytes, context: bytes, object_type: ObjectType, object_id: bytes) -> bytes:
    """Length-prefixed fields, so no two different field tuples encode to the same bytes.

    ``header`` is the envelope header, which carries the key epoch.
    """
    return associated_data_prefix(header, context) + associated_data_suffix(object_type, object_id)


def associated_data_prefix(header: bytes, context: bytes) -> bytes:
    """The fields of :func:`associated_data` that one sealer repeats for every object: compute once."""
    return _fields(_AD_DOMAIN, header, context)


def associated_data_suffix(object_type: ObjectType, object_id: bytes) -> bytes:
    """The per-object fields of :func:`associated_data`; append to :func:`associated_data_prefix`."""
    return _TYPE_FIELDS[object_type] + _fields(object_id)


def _fields(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">H", len(p)) + p for p in parts)


_TYPE_FIELDS = {t: _fields(bytes([t])) for t in ObjectType}


def seal_aead(
    key: bytes, plaintext: bytes, ad: bytes, *, prefix: bytes = b"", random: RandomSource | None = None
) -> bytes:
    """Return ``prefix || nonce || ciphertext || tag`` (the prefix saves the caller a copy)."""
    _check_key(key)
    nonce = (random or default_random)(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise FormatError(f"random source returned {len(nonce)} bytes, expected {NONCE_BYTES}")
    if len(plaintext) >= OPENSSL_FROM:
        cipher, ietf_nonce = _ietf(key, nonce)
        return b"".join((prefix, nonce, cipher.encrypt(ietf_nonce, plaintext, ad)))
    sealed: bytes = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)
    return b"".join((prefix, nonce, sealed))


def seal_aead_in_place(
    key: bytes, buf: bytearray, offset: int, ad: bytes, *, random: RandomSource | None = None
) -> None:
    """Seal ``buf`` laid out as ``prefix | nonce | plaintext | tag`` (nonce at ``offset``), in place.

    The caller writes the plaintext into the buffer and leaves room for the
    nonce and the tag; this fills them in and encrypts the plaintext where it
    lies, with libsodium. The result is byte for byte what :func:`seal_aead`
    returns for the same nonce, without the copies that path makes (its output
    buffer, the join). Below ``OPENSSL_FROM`` bytes that is the faster way;
    above it, OpenSSL's faster cipher outweighs the copies.
    """
    _check_key(key)
    start = offset + NONCE_BYTES
    length = len(buf) - start - TAG_BYTES
    if offset < 0 or length < 0:
        raise FormatError(f"a {len(buf)}-byte buffer cannot hold a nonce and tag at offset {offset}")
    nonce = (random or default_random)(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise FormatError(f"random source returned {len(nonce)} bytes, expected {NONCE_BYTES}")
    buf[offset:start] = nonce
    out_len = _ffi.new("unsigned long long *")
    with _ffi.from_buffer(buf) as raw:
        # libsodium's XChaCha20-Poly1305 XORs the key stream block by block, then MACs the
        # ciphertext, so encrypting in place (c == m) is safe; the GIL is released meanwhile.
        failed = _lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
            raw + start, out_len, raw + start, length, ad, len(ad), _ffi.NULL, raw + offset, key
        )
    if failed or out_len[0] != length + TAG_BYTES:
        raise CryptoError("encryption failed")


def open_aead(key: bytes, blob: bytes | memoryview, ad: bytes, *, what: str) -> bytes:
    """Verify and decrypt ``nonce || ciphertext || tag``; ``what`` names the object in the error."""
    _check_key(key)
    if len(blob) < OVERHEAD:
        raise CorruptChunkError(f"{what} is truncated: {len(blob)} bytes cannot hold a nonce and tag")
    nonce = bytes(blob[:NONCE_BYTES])
    try:
        if len(blob) - OVERHEAD >= OPENSSL_FROM:
            cipher, ietf_nonce = _ietf(key, nonce)
            return cipher.decrypt(ietf_nonce, memoryview(blob)[NONCE_BYTES:], ad)
        opened: bytes = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            bytes(blob[NONCE_BYTES:]), ad, nonce, key
        )
    except (CryptoError, InvalidTag) as exc:
        raise CorruptChunkError(
            f"{what} failed authentication: it is damaged, was swapped for another object, "
            "or belongs to another arena or key",
            hint="the stored copy is unusable; restore it from another device or an older version",
        ) from exc
    return opened


def _ietf(key: bytes, nonce: bytes) -> tuple[ChaCha20Poly1305, bytes]:
    """XChaCha20-Poly1305-IETF as its specification (draft-irtf-cfrg-xchacha) builds it, and as
    libsodium does: ChaCha20-Poly1305-IETF under the HChaCha20 subkey of the key and the nonce's
    first 16 bytes, with four zero bytes and the nonce's last 8 as its 12-byte nonce. The tests
    check that both paths give the same bytes."""
    return ChaCha20Poly1305(_hchacha20(key, nonce[:16])), bytes(4) + nonce[16:]


def _hchacha20(key: bytes, block_input: bytes) -> bytes:
    """HChaCha20: words 0-3 and 12-15 of the ChaCha20 state after its 20 rounds, without the final
    addition of the initial state. A ChaCha20 key-stream block is exactly that sum, and
    cryptography's ChaCha20 takes its 16-byte nonce as words 12-15 (counter, then nonce), so
    subtracting the initial words from one block of key stream leaves the rounds' output."""
    stream = Cipher(algorithms.ChaCha20(key, block_input), mode=None).encryptor().update(bytes(64))
    block = struct.unpack("<16I", stream)
    initial = (*_SIGMA, *struct.unpack("<8I", key), *struct.unpack("<4I", block_input))
    words = ((block[i] - initial[i]) & 0xFFFFFFFF for i in (0, 1, 2, 3, 12, 13, 14, 15))
    return struct.pack("<8I", *words)


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise FormatError(f"an AEAD key is {KEY_BYTES} bytes, got {len(key)}")
