"""The arena key hierarchy: keychains by epoch, envelopes, the escrow kit and its failure messages."""

from __future__ import annotations

import random as stdlib_random

import pytest

from shoal.crypto.aead import RandomSource
from shoal.crypto.hierarchy import (
    EscrowKit,
    Keychain,
    create_escrow,
    escrow_from_passphrase,
    escrow_from_recovery_words,
    fingerprint,
    open_keychain,
    seal_keychain,
)
from shoal.crypto.kdf import TEST_COST
from shoal.crypto.keys import DeviceKeys
from shoal.crypto.mnemonic import key_to_words
from shoal.errors import AuthError, FormatError, IntegrityError, UsageError


def _random(seed: int = 1) -> RandomSource:
    return stdlib_random.Random(seed).randbytes


def test_keychain_round_trips_and_keeps_old_epochs() -> None:
    chain = Keychain.new("arena-a", _random())
    later = chain.next_epoch(_random(2)).next_epoch(_random(3))
    assert later.epoch == 2
    assert later.masters[0] == chain.masters[0]
    parsed = Keychain.from_bytes(later.to_bytes(), arena="arena-a")
    assert parsed == later
    assert [k.epoch for k in parsed.older()] == [0, 1]
    assert parsed.current().content_key != parsed.first().content_key
    assert parsed.first().path_key == chain.current().path_key


def test_keychain_refuses_another_arena_and_damage() -> None:
    data = Keychain.new("arena-a", _random()).to_bytes()
    with pytest.raises(IntegrityError, match="belongs to arena arena-a"):
        Keychain.from_bytes(data, arena="arena-b")
    with pytest.raises(FormatError, match="truncated"):
        Keychain.from_bytes(data[:-1], arena="arena-a")
    with pytest.raises(FormatError, match="trailing"):
        Keychain.from_bytes(data + b"\0", arena="arena-a")


def test_envelope_opens_only_for_its_device() -> None:
    alice, bob = DeviceKeys.generate(), DeviceKeys.generate()
    chain = Keychain.new("arena-a", _random())
    envelope = seal_keychain(chain, alice.exchange_public)
    assert open_keychain(envelope, alice, arena="arena-a") == chain
    with pytest.raises(IntegrityError, match="could not be opened"):
        open_keychain(envelope, bob, arena="arena-a")
    assert chain.masters[0][1] not in envelope


def test_escrow_unlocks_by_passphrase_and_by_recovery_words() -> None:
    chain = Keychain.new("arena-a", _random())
    made = create_escrow("arena-a", "correct horse battery", TEST_COST, _random(5))
    kit = EscrowKit.from_bytes(made.kit.to_bytes())
    assert kit == made.kit
    envelope = seal_keychain(chain, kit.public)
    by_pass = escrow_from_passphrase(kit, "correct horse battery", arena="arena-a")
    assert open_keychain(envelope, by_pass, arena="arena-a") == chain
    by_words = escrow_from_recovery_words(kit, "  ".join(made.recovery_words).upper(), arena="arena-a")
    assert open_keychain(envelope, by_words, arena="arena-a") == chain
    assert len(made.recovery_words) == 24


def test_wrong_secrets_give_clear_messages() -> None:
    made = create_escrow("arena-a", "correct horse battery", TEST_COST, _random(5))
    with pytest.raises(AuthError, match="passphrase does not unlock arena arena-a"):
        escrow_from_passphrase(made.kit, "wrong horse", arena="arena-a")
    with pytest.raises(AuthError, match="passphrase"):
        escrow_from_passphrase(made.kit, "correct horse battery", arena="arena-b")
    other_words = " ".join(key_to_words(bytes(32)))
    with pytest.raises(AuthError, match="recovery phrase does not unlock"):
        escrow_from_recovery_words(made.kit, other_words, arena="arena-a")
    words = list(made.recovery_words)
    with pytest.raises(UsageError, match="24 words, but 23"):
        escrow_from_recovery_words(made.kit, " ".join(words[:-1]), arena="arena-a")
    typo = [*words[:3], words[3] + "x", *words[4:]]
    with pytest.raises(UsageError, match="word 4"):
        escrow_from_recovery_words(made.kit, " ".join(typo), arena="arena-a")
    swapped = [words[1], words[0], *words[2:]]
    if swapped != words:
        with pytest.raises((UsageError, AuthError)):
            escrow_from_recovery_words(made.kit, " ".join(swapped), arena="arena-a")


def test_escrow_kit_holds_no_plain_secret() -> None:
    made = create_escrow("arena-a", "correct horse battery", TEST_COST, _random(5))
    blob = made.kit.to_bytes()
    assert bytes(made.private) not in blob
    assert b"correct horse" not in blob
    with pytest.raises(FormatError):
        EscrowKit.from_bytes(blob[:-3])


def test_fingerprint_is_short_and_stable() -> None:
    key = DeviceKeys.generate().exchange_public
    assert fingerprint(key) == fingerprint(key)
    assert len(fingerprint(key).split("-")) == 5
