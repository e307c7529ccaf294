"""Recovery keys as 24 BIP-39 words (english list), with errors a person can act on."""

from __future__ import annotations

import difflib
import unicodedata
from functools import lru_cache

from mnemonic import Mnemonic

from shoal.errors import FormatError, UsageError

KEY_BYTES = 32
WORD_COUNT = 24


@lru_cache(maxsize=1)
def _bip39() -> Mnemonic:
    return Mnemonic("english")


@lru_cache(maxsize=1)
def _words() -> frozenset[str]:
    return frozenset(_bip39().wordlist)


def key_to_words(key: bytes) -> list[str]:
    """The 24 words that encode a 256-bit key (the last word carries a checksum)."""
    if len(key) != KEY_BYTES:
        raise FormatError(f"a recovery key is {KEY_BYTES} bytes, got {len(key)}")
    words: str = _bip39().to_mnemonic(key)
    return words.split()


def words_to_key(text: str) -> bytes:
    """Decode the words a person typed: case, extra spaces and line breaks do not matter."""
    words = unicodedata.normalize("NFKD", text).lower().split()
    if len(words) != WORD_COUNT:
        raise UsageError(
            f"a recovery key has {WORD_COUNT} words, but {len(words)} were given",
            hint="type all 24 words in order, separated by spaces",
        )
    for position, word in enumerate(words, start=1):
        if word not in _words():
            raise UsageError(f"word {position}, {word!r}, is not a recovery word", hint=_suggest(word))
    phrase = " ".join(words)
    if not _bip39().check(phrase):
        raise UsageError(
            "the recovery words do not add up (checksum mismatch)",
            hint="every word is valid, so one is probably mistyped or two are swapped; check them in order",
        )
    return bytes(_bip39().to_entropy(words))


def _suggest(word: str) -> str:
    close = difflib.get_close_matches(word, _bip39().wordlist, n=3, cutoff=0.6)
    by_prefix = [w for w in _bip39().wordlist if len(word) >= 3 and w.startswith(word[:4])]
    candidates = list(dict.fromkeys(by_prefix[:1] + close))[:3]
    if not candidates:
        return "check the spelling against the words you wrote down"
    return "did you mean " + " or ".join(repr(c) for c in candidates) + "?"
