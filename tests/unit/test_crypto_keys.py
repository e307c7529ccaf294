"""Device identity keys, signatures and key wrapping."""

from __future__ import annotations

import pytest

from shoal.crypto.keys import (
    DeviceKeys,
    unwrap_secret,
    verify_signature,
    wrap_for_device,
    wrap_secret,
)
from shoal.errors import FormatError, IntegrityError


def test_device_keys_round_trip_through_bytes() -> None:
    keys = DeviceKeys.generate()
    again = DeviceKeys.from_bytes(keys.to_bytes())
    assert again.signing_public == keys.signing_public
    assert again.exchange_public == keys.exchange_public
    assert len(keys.signing_public) == 32
    assert len(keys.exchange_public) == 32
    assert keys.signing_public != keys.exchange_public


def test_two_generated_devices_differ() -> None:
    a, b = DeviceKeys.generate(), DeviceKeys.generate()
    assert a.signing_public != b.signing_public
    assert a.exchange_public != b.exchange_public


def test_signature_verifies_and_rejects_other_message_or_key() -> None:
    keys = DeviceKeys.generate()
    sig = keys.sign(b"enroll me")
    assert len(sig) == 64
    verify_signature(keys.signing_public, b"enroll me", sig)
    with pytest.raises(IntegrityError):
        verify_signature(keys.signing_public, b"enroll you", sig)
    with pytest.raises(IntegrityError):
        verify_signature(DeviceKeys.generate().signing_public, b"enroll me", sig)


def test_restored_keys_sign_identically() -> None:
    keys = DeviceKeys.generate()
    restored = DeviceKeys.from_bytes(keys.to_bytes())
    assert restored.sign(b"m") == keys.sign(b"m")  # Ed25519 is deterministic


def test_damaged_key_bytes_are_refused() -> None:
    data = DeviceKeys.generate().to_bytes()
    with pytest.raises(FormatError):
        DeviceKeys.from_bytes(data[:-1])
    with pytest.raises(FormatError):
        DeviceKeys.from_bytes(b"XXXX" + data[4:])
    with pytest.raises(FormatError, match="version"):
        DeviceKeys.from_bytes(data[:4] + b"\x09" + data[5:])


def test_repr_does_not_show_secrets() -> None:
    keys = DeviceKeys.generate()
    assert keys.to_bytes()[5:].hex() not in repr(keys)


def test_sealed_box_wraps_for_one_device_only() -> None:
    alice, bob = DeviceKeys.generate(), DeviceKeys.generate()
    master = bytes(range(32))
    wrapped = wrap_for_device(master, alice.exchange_public)
    assert master not in wrapped
    assert alice.unwrap(wrapped) == master
    with pytest.raises(IntegrityError, match="another device"):
        bob.unwrap(wrapped)


def test_symmetric_wrap_binds_key_and_purpose() -> None:
    key, other = b"k" * 32, b"o" * 32
    wrapped = wrap_secret(b"s" * 32, key, "recovery")
    assert unwrap_secret(wrapped, key, "recovery") == b"s" * 32
    with pytest.raises(IntegrityError, match="passphrase or recovery words are wrong"):
        unwrap_secret(wrapped, other, "recovery")
    with pytest.raises(IntegrityError):
        unwrap_secret(wrapped, key, "passphrase")
    with pytest.raises(FormatError):
        unwrap_secret(b"\x07" + wrapped[1:], key, "recovery")
