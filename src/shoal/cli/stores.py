"""Opening a verified chunk store from a URL and an optional key, for the image commands."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shoal.cli.keyfile import IMAGE_CONTEXT, image_keys, key_check, read_key_file
from shoal.errors import LockedError, UsageError
from shoal.state.flist import FlistReader
from shoal.store.sealed import EncryptedSealer, PlainSealer, SealedChunkStore, Sealer
from shoal.store.url import open_blob_store


def make_sealer(key_file: Path | None) -> tuple[Sealer, dict[str, str]]:
    """The sealer for a new image, and the image metadata that lets unpack check the key."""
    if key_file is None:
        return PlainSealer(), {"encrypted": "0"}
    keys = image_keys(read_key_file(key_file))
    meta = {"encrypted": "1", "context": IMAGE_CONTEXT.decode(), "key_check": key_check(keys)}
    return EncryptedSealer(keys, IMAGE_CONTEXT), meta


def open_chunk_store(url: str, sealer: Sealer, executor: ThreadPoolExecutor) -> SealedChunkStore:
    return SealedChunkStore(open_blob_store(url), sealer, executor=executor)


def sealer_for_image(image: FlistReader, key_file: Path | None) -> Sealer:
    """The sealer an image was packed with, refusing a missing or wrong key up front."""
    if not image.encrypted:
        if key_file is not None:
            raise UsageError(f"{image.path} is not encrypted", hint="leave out --encrypt-key-file")
        return PlainSealer()
    if key_file is None:
        raise LockedError(
            f"{image.path} is encrypted", hint="pass the key it was packed with: --encrypt-key-file F"
        )
    keys = image_keys(read_key_file(key_file))
    if key_check(keys) != image.meta.get("key_check"):
        raise LockedError(f"{key_file} is not the key {image.path} was packed with")
    return EncryptedSealer(keys, IMAGE_CONTEXT)
