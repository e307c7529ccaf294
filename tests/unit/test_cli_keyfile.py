"""Key files: 64 hex digits, the 24 recovery words, or 32 raw bytes, whatever those bytes are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal.cli.keyfile import read_key_file
from shoal.crypto.mnemonic import key_to_words
from shoal.errors import UsageError


def test_every_form_of_one_key_reads_the_same(tmp_path: Path) -> None:
    key = os.urandom(32)
    forms = {
        "hex": key.hex() + "\n",
        "HEX": "  " + key.hex().upper() + "  \n",
        "words": " ".join(key_to_words(key)) + "\n",
        "words on lines": "\n".join(key_to_words(key)),
    }
    for name, text in forms.items():
        (tmp_path / name).write_text(text)
        assert read_key_file(tmp_path / name) == key, name
    (tmp_path / "raw").write_bytes(key)
    assert read_key_file(tmp_path / "raw") == key


@pytest.mark.parametrize(
    "raw",
    [
        b" \n" * 16,  # whitespace only
        b"ab cd " + bytes(range(200, 226)),  # looks like two words, then binary
        b"\t" + os.urandom(30) + b"\n",  # whitespace at both ends
        b"0123456789abcdef0123456789abcdef",  # hex digits, but only 32 of them
    ],
)
def test_32_raw_bytes_are_a_key_even_when_they_look_like_text(tmp_path: Path, raw: bytes) -> None:
    assert len(raw) == 32
    (tmp_path / "k").write_bytes(raw)
    assert read_key_file(tmp_path / "k") == raw


@pytest.mark.parametrize("raw", [b"\x81\x82 \x83" + bytes(27), b"0123456789abcdef" * 3, b""])
def test_anything_else_is_refused_with_the_three_forms(tmp_path: Path, raw: bytes) -> None:
    (tmp_path / "k").write_bytes(raw)
    with pytest.raises(UsageError) as caught:
        read_key_file(tmp_path / "k")
    assert "does not hold a key" in caught.value.message
    assert "32 raw bytes" in (caught.value.hint or "")


def test_words_that_are_not_the_recovery_words_say_so(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("correct horse battery staple\n")
    with pytest.raises(UsageError) as caught:
        read_key_file(tmp_path / "k")
    assert "24 words" in caught.value.message
