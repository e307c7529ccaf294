"""AEAD binding, Padmé padding, key derivation and recovery words."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings

from shoal.crypto import aead
from shoal.crypto.aead import ObjectType, associated_data, open_aead, seal_aead, seal_aead_in_place
from shoal.crypto.arena_keys import ArenaKeys, new_master_key
from shoal.crypto.kdf import TEST_COST, Argon2Cost, Purpose, derive_from_passphrase, derive_key
from shoal.crypto.mnemonic import key_to_words, words_to_key
from shoal.crypto.padding import pad, padme, unpad
from shoal.errors import CorruptChunkError, FormatError, UsageError

KEY = b"K" * 32


def _ad(object_id: bytes, object_type: ObjectType = ObjectType.CHUNK, context: bytes = b"arena-1") -> bytes:
    return associated_data(header=b"\x01\x02", context=context, object_type=object_type, object_id=object_id)


def test_seal_open_round_trip_and_ciphertext_hides_plaintext() -> None:
    message = b"secret words " * 100
    sealed = seal_aead(KEY, message, _ad(b"id1"))
    assert b"secret words" not in sealed
    assert len(sealed) == len(message) + aead.OVERHEAD
    assert open_aead(KEY, sealed, _ad(b"id1"), what="chunk") == message


def test_nonces_never_repeat_over_many_seals() -> None:
    nonces = {seal_aead(KEY, b"same", _ad(b"x"))[: aead.NONCE_BYTES] for _ in range(5000)}
    assert len(nonces) == 5000


def test_injected_random_source_is_used() -> None:
    sealed = seal_aead(KEY, b"m", _ad(b"x"), random=lambda n: b"\x07" * n)
    assert sealed[: aead.NONCE_BYTES] == b"\x07" * aead.NONCE_BYTES
    with pytest.raises(FormatError):
        seal_aead(KEY, b"m", _ad(b"x"), random=lambda n: b"short")


@pytest.mark.parametrize(
    "wrong_ad",
    [
        _ad(b"id2"),
        _ad(b"id1", ObjectType.MANIFEST),
        _ad(b"id1", context=b"arena-2"),
        associated_data(
            header=b"\x01\x00", context=b"arena-1", object_type=ObjectType.CHUNK, object_id=b"id1"
        ),
    ],
)
def test_any_change_of_bound_data_fails_the_tag(wrong_ad: bytes) -> None:
    sealed = seal_aead(KEY, b"payload", _ad(b"id1"))
    with pytest.raises(CorruptChunkError, match="failed authentication"):
        open_aead(KEY, sealed, wrong_ad, what="chunk")


def test_associated_data_fields_cannot_be_shifted() -> None:
    a = associated_data(header=b"ab", context=b"c", object_type=ObjectType.CHUNK, object_id=b"")
    b = associated_data(header=b"a", context=b"bc", object_type=ObjectType.CHUNK, object_id=b"")
    assert a != b


def test_flipped_truncated_or_wrong_key_fails() -> None:
    sealed = seal_aead(KEY, b"payload" * 50, _ad(b"id1"))
    flipped = bytearray(sealed)
    flipped[40] ^= 0x80
    for bad in (bytes(flipped), sealed[:-1], sealed[:10], b""):
        with pytest.raises(CorruptChunkError):
            open_aead(KEY, bad, _ad(b"id1"), what="chunk")
    with pytest.raises(CorruptChunkError):
        open_aead(b"L" * 32, sealed, _ad(b"id1"), what="chunk")
    with pytest.raises(FormatError):
        seal_aead(b"short", b"m", b"")


@pytest.mark.parametrize("n", [0, 1, 2, 3, 9, 100, 1000, 4095, 4096, 65_537, 1_000_000, 4 * 1024 * 1024])
def test_padme_bounds(n: int) -> None:
    bucket = padme(n)
    assert bucket >= n
    assert bucket - n <= max(0.12 * n, 1)


def test_padme_buckets_are_few() -> None:
    buckets = {padme(n) for n in range(1_000_000, 1_100_000)}
    assert len(buckets) < 100


@pytest.mark.parametrize("payload", [b"", b"x", os.urandom(1000), bytes(70_000)])
def test_pad_round_trip(payload: bytes) -> None:
    padded = pad(payload)
    assert len(padded) == padme(len(payload) + 4)
    assert unpad(padded) == payload


def test_unpad_refuses_bad_lengths_and_padding() -> None:
    padded = bytearray(pad(b"a" * 1000))
    with pytest.raises(CorruptChunkError):
        unpad(bytes(padded[:-1]))
    with pytest.raises(CorruptChunkError):
        unpad(b"\xff\xff\xff\xff" + bytes(padded[4:]))
    if len(padded) > 1004:
        padded[-1] = 1
        with pytest.raises(CorruptChunkError):
            unpad(bytes(padded))
    with pytest.raises(CorruptChunkError):
        unpad(b"\x00")


def test_subkeys_differ_per_purpose_and_per_master() -> None:
    master = new_master_key()
    keys = {derive_key(master, p) for p in Purpose}
    assert len(keys) == len(Purpose)
    assert derive_key(master, Purpose.CONTENT) == derive_key(master, Purpose.CONTENT)
    assert derive_key(new_master_key(), Purpose.CONTENT) != derive_key(master, Purpose.CONTENT)
    with pytest.raises(FormatError):
        derive_key(b"short", Purpose.CONTENT)


def test_arena_keys_are_distinct_and_seed_fits_the_chunker() -> None:
    keys = ArenaKeys.derive(new_master_key(random=lambda n: b"\x01" * n), epoch=3)
    assert keys.epoch == 3
    assert len({keys.id_key, keys.content_key, keys.record_key, keys.path_key}) == 4
    assert 0 < keys.gear_seed < 2**63
    assert keys.content_key.hex() not in repr(keys)
    assert ArenaKeys.derive(b"\x01" * 32, epoch=3) == keys


def test_passphrase_derivation_is_deterministic_per_salt() -> None:
    salt = b"s" * 16
    key = derive_from_passphrase("correct horse", salt, TEST_COST)
    assert len(key) == 32
    assert derive_from_passphrase("correct horse", salt, TEST_COST) == key
    assert derive_from_passphrase("correct horse", b"t" * 16, TEST_COST) != key
    assert derive_from_passphrase("correct horsf", salt, TEST_COST) != key
    # NFC normalisation: a decomposed é is the same passphrase
    assert derive_from_passphrase("caf\u00e9", salt, TEST_COST) == derive_from_passphrase(
        "cafe\u0301", salt, TEST_COST
    )


def test_passphrase_errors() -> None:
    with pytest.raises(UsageError, match="empty"):
        derive_from_passphrase("", b"s" * 16, TEST_COST)
    with pytest.raises(FormatError, match="salt"):
        derive_from_passphrase("x", b"s", TEST_COST)
    with pytest.raises(UsageError, match="cost"):
        derive_from_passphrase("x", b"s" * 16, Argon2Cost(opslimit=0, memlimit=1))


def test_recovery_words_round_trip() -> None:
    key = os.urandom(32)
    words = key_to_words(key)
    assert len(words) == 24
    assert words_to_key(" ".join(words)) == key
    assert words_to_key("  " + "\n".join(w.upper() for w in words) + " ") == key


def test_wrong_word_count() -> None:
    words = key_to_words(os.urandom(32))
    with pytest.raises(UsageError, match="24 words, but 23 were given"):
        words_to_key(" ".join(words[:-1]))


def test_unknown_word_suggests_the_closest() -> None:
    words = key_to_words(bytes(32))  # 23 x "abandon" + "art"
    words[4] = "abandom"
    with pytest.raises(UsageError, match="word 5, 'abandom'") as info:
        words_to_key(" ".join(words))
    assert info.value.hint is not None
    assert "'abandon'" in info.value.hint


def test_checksum_mismatch_says_typo() -> None:
    words = key_to_words(bytes(32))
    words[0] = "ability"  # a valid word in the wrong place
    with pytest.raises(UsageError, match="checksum") as info:
        words_to_key(" ".join(words))
    assert info.value.hint is not None
    assert "mistyped" in info.value.hint


def test_key_to_words_checks_length() -> None:
    with pytest.raises(FormatError):
        key_to_words(b"short")


# Large payloads are sealed (seal_aead) and opened through OpenSSL (cryptography), small ones and
# those sealed in place through libsodium: all must be the same XChaCha20-Poly1305-IETF bytes.
@pytest.mark.parametrize("size", [0, 1, 32 * 1024 - 1, 32 * 1024, 32 * 1024 + 1, 1024 * 1024 + 7])
def test_every_cipher_path_agrees_with_libsodium(size: int) -> None:
    key, nonce, ad = os.urandom(32), os.urandom(24), os.urandom(57)
    plaintext = os.urandom(size)
    reference = nonce + bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)
    assert seal_aead(key, plaintext, ad, random=lambda n: nonce[:n]) == reference
    buf = bytearray(24 + size + 16)
    buf[24 : 24 + size] = plaintext
    seal_aead_in_place(key, buf, 0, ad, random=lambda n: nonce[:n])
    assert bytes(buf) == reference
    assert open_aead(key, reference, ad, what="chunk x") == plaintext


@settings(max_examples=25, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), nonce=st.binary(min_size=24, max_size=24))
def test_the_subkey_path_matches_libsodium_for_any_key_and_nonce(key: bytes, nonce: bytes) -> None:
    plaintext = bytes(range(256)) * 200  # past the size from which OpenSSL seals
    reference = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, b"ad", nonce, key)
    assert seal_aead(key, plaintext, b"ad", random=lambda n: nonce[:n]) == nonce + reference


@pytest.mark.parametrize("where", ["ciphertext", "tag", "nonce", "associated data"])
def test_a_large_sealed_payload_that_was_tampered_with_fails(where: str) -> None:
    key, ad = os.urandom(32), b"chunk 1234"
    sealed = bytearray(seal_aead(key, os.urandom(100_000), ad))
    if where == "ciphertext":
        sealed[5000] ^= 1
    elif where == "tag":
        sealed[-1] ^= 0x80
    elif where == "nonce":
        sealed[3] ^= 1
    else:
        ad = b"chunk 1235"
    with pytest.raises(CorruptChunkError, match="chunk 1234 failed authentication"):
        open_aead(key, bytes(sealed), ad, what="chunk 1234")
