"""Key files for packed images: 64 hex digits, 24 BIP-39 words, or 32 raw bytes."""

from __future__ import annotations

import os
from pathlib import Path

from shoal.chunking.hashing import chunk_id
from shoal.crypto.arena_keys import ArenaKeys, new_master_key
from shoal.crypto.mnemonic import key_to_words, words_to_key
from shoal.errors import NotFoundError, StorageError, UsageError

KEY_BYTES = 32
# Encrypted images bind their chunks to this context: one key may serve several images safely.
IMAGE_CONTEXT = b"shoal-flist-v1"


def read_key_file(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError(
            f"no key file at {path}", hint="create one with `shoal key generate FILE`"
        ) from exc
    except OSError as exc:
        raise StorageError(f"cannot read the key file {path}: {exc.strerror or exc}") from exc
    if len(raw) == KEY_BYTES:
        # Raw bytes first: 64 hex digits or 24 words never fit in 32 bytes, and a random key holds
        # whitespace often enough (about one in two) that reading it as words refused it.
        return raw
    text = raw.decode("utf-8", errors="replace").strip()
    if len(text) == 2 * KEY_BYTES and all(c in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text)
    words = text.split()
    if len(words) > 1 and all(w.isalpha() for w in words):
        return words_to_key(text)
    raise UsageError(
        f"{path} does not hold a key",
        hint="a key file holds 64 hexadecimal digits, the 24 recovery words, or 32 raw bytes",
    )


def write_new_key_file(path: Path) -> list[str]:
    """Write a fresh key as hex with mode 0600 (refusing to overwrite); return its recovery words."""
    key = new_master_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise UsageError(
            f"{path} already exists", hint="choose a new file name; keys are never overwritten"
        ) from exc
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return key_to_words(key)


def image_keys(master: bytes) -> ArenaKeys:
    return ArenaKeys.derive(master)


def key_check(keys: ArenaKeys) -> str:
    """A value stored in encrypted images that tells a wrong key apart without revealing the key."""
    return chunk_id(b"shoal image key check", keys.id_key).hex()
