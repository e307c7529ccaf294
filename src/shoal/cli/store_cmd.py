"""`shoal store check URL`: verify every chunk of a store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from shoal.cli.console import err, out
from shoal.cli.keyfile import IMAGE_CONTEXT, image_keys, read_key_file
from shoal.cli.pack_cmd import STORE_HELP
from shoal.engine.check import CheckReport, check_store
from shoal.errors import IntegrityError, NotFoundError
from shoal.model.ids import ChunkId
from shoal.state.flist import FlistReader
from shoal.store.file import FileBlobStore
from shoal.store.sealed import EncryptedSealer, PlainSealer
from shoal.store.url import open_blob_store

store_app = typer.Typer(help="Inspect and verify chunk stores.", no_args_is_help=True)


def _referenced(images: list[Path]) -> list[tuple[str, ChunkId]]:
    refs: list[tuple[str, ChunkId]] = []
    for path in images:
        with FlistReader(path) as image:
            for entry in image.entries():
                if entry.manifest is not None:
                    refs.extend((f"{path.name}: {entry.path}", ref.id) for ref in entry.manifest.chunks)
    return refs


async def _check(url: str, key_file: Path | None, images: list[Path]) -> CheckReport:
    blobs = open_blob_store(url)
    if isinstance(blobs, FileBlobStore) and not blobs.root.is_dir():
        # Listing a missing directory finds no chunk, and "0 verified" would pass a mistyped path.
        raise NotFoundError(
            f"no store at {blobs.root}", hint="check the store URL, and that the disk holding it is mounted"
        )
    encrypted = EncryptedSealer(image_keys(read_key_file(key_file)), IMAGE_CONTEXT) if key_file else None
    try:
        return await check_store(blobs, PlainSealer(), encrypted, referenced=_referenced(images))
    finally:
        await blobs.close()


@store_app.command()
def check(
    url: str = typer.Argument(..., help=STORE_HELP),
    encrypt_key_file: Path | None = typer.Option(
        None,
        "--encrypt-key-file",
        help="Key of encrypted chunks; without it they are checked for structure only.",
    ),
    image: list[Path] = typer.Option(
        [], "--image", help="Also check that every chunk this image names is present (repeatable)."
    ),
) -> None:
    """Read and verify every chunk (its id, or its AEAD tag); list damaged and missing ones.

    Exits 0 when everything verified, 4 when any chunk is damaged or missing.
    """
    report = asyncio.run(_check(url, encrypt_key_file, image))
    out.print(f"checked {report.chunks} chunks: {report.verified} verified", end="")
    if report.unverifiable:
        out.print(
            f", {report.unverifiable} encrypted (structure only: pass --encrypt-key-file to verify)", end=""
        )
    out.print()
    for line in report.damaged:
        err.print(f"damaged: {line}", markup=False)
    for line in report.missing:
        err.print(f"missing: {line}", markup=False)
    if report.damaged or report.missing:
        raise IntegrityError(
            f"{len(report.damaged)} damaged and {len(report.missing)} missing chunks in {url}",
            hint="files that need them cannot be restored from this store; pack their source again",
        )


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")
