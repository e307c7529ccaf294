"""`shoal pack` and `shoal unpack`: a folder to an image plus chunks, and back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import typer

from shoal.cli.console import err, human_bytes, out
from shoal.cli.progress import byte_progress
from shoal.cli.stores import make_sealer, open_chunk_store, sealer_for_image
from shoal.engine.heap import gc_tuned_for_streaming, tune_heap_for_streaming
from shoal.engine.pack import PackReport, own_paths, pack_tree, walk_tree
from shoal.engine.sealpool import SealingPool, fork_workers
from shoal.engine.unpack import UnpackReport, unpack_tree
from shoal.errors import PartialFailureError, UsageError
from shoal.settings import ChunkingSettings, PipelineSettings
from shoal.state.flist import EntryKind, FlistReader, FlistWriter, StatKey
from shoal.store.file import FileBlobStore
from shoal.store.sealed import SealedChunkStore
from shoal.store.url import open_blob_store

STORE_HELP = "Chunk store URL: file:///abs/dir, a local directory, or s3://bucket/prefix?endpoint=URL"
KEY_HELP = "Encrypt with the key in this file (64 hex digits or 24 words; `shoal key generate F` makes one)"


def _print_pack_summary(report: PackReport, image: Path) -> None:
    ratio = "∞ (nothing new stored)" if report.bytes_stored == 0 else f"{report.dedup_ratio:.2f}"
    out.print(f"packed {image}")
    out.print(f"  files        {report.files} ({report.dirs} dirs, {report.symlinks} symlinks)")
    if report.unchanged:
        out.print(f"  unchanged    {report.unchanged} files, not read again (same stat as the parent image)")
    out.print(f"  bytes read   {human_bytes(report.bytes_read)}")
    out.print(f"  chunks       {report.chunks} ({report.new_chunks} new)")
    out.print(f"  bytes stored {human_bytes(report.bytes_stored)}")
    out.print(f"  dedup ratio  {ratio}")
    out.print(f"  time         {report.seconds:.2f} s ({report.mb_per_s:.1f} MB/s)")
    for item in report.left_out:
        out.print(f"  left out     {item}", markup=False)


def _written_inside(directory: Path, writer: FlistWriter, store_url: str) -> dict[str, str | None]:
    """What this pack writes inside the folder it packs, which the walk leaves out."""
    image, *working = writer.files
    written: dict[Path, str | None] = {image: "the image being written", **dict.fromkeys(working)}
    blobs = open_blob_store(store_url)  # touches nothing yet
    if isinstance(blobs, FileBlobStore):
        written[blobs.root] = "the chunk store"
    return own_paths(directory, written)


async def _run_pack(
    directory: Path,
    writer: FlistWriter,
    chunks: SealedChunkStore,
    pipeline: PipelineSettings,
    executor: ThreadPoolExecutor,
    pool: SealingPool,
    file_pool: SealingPool,
    progress: Callable[[int], None],
    parent: dict[str, tuple[StatKey, bytes]] | None,
    leave_out: dict[str, str | None],
) -> PackReport:
    try:
        return await pack_tree(
            directory,
            writer,
            chunks,
            ChunkingSettings(),
            pipeline,
            executor,
            parent=parent,
            progress=progress,
            pool=pool,
            file_pool=file_pool,
            leave_out=leave_out,
        )
    except BaseException:  # Ctrl-C or a failure: the workers give up their files in progress
        file_pool.stop()
        raise
    finally:
        # The workers first: this process's store handle, closing last, checkpoints the shared pack
        # index and removes its write-ahead log (two workers closing at once can each leave it).
        await asyncio.to_thread(file_pool.close)
        await asyncio.to_thread(pool.close)
        await chunks.close()


def pack(
    directory: Path = typer.Argument(..., help="The folder to pack.", exists=True, file_okay=False),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the image (IMAGE.flist)."),
    store: str = typer.Option(..., "--store", help=STORE_HELP),
    encrypt_key_file: Path | None = typer.Option(None, "--encrypt-key-file", help=KEY_HELP),
    parent: Path | None = typer.Option(
        None, "--parent", help="An earlier image of this folder (default: the existing OUTPUT, if any)."
    ),
    reread: bool = typer.Option(
        False, "--reread", help="Read every file, even those unchanged since the parent."
    ),
    workers: int = typer.Option(
        PipelineSettings().workers,
        "--workers",
        min=1,
        help="Worker processes and threads (default: one per core).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
) -> None:
    """Store a folder's files as deduplicated, compressed (and optionally encrypted) chunks.

    Writes IMAGE.flist, a small SQLite file describing the tree (folders, files,
    symlinks, modes, times) and each file's chunk list; the chunks go to the
    store. Packing again into the same store stores only new chunks, and
    files whose size, times and inode match the parent image are not read.

    Files that cannot be read, or that change while being read, are left out
    and listed; everything else is packed and the command exits with code 10.

    Example: shoal pack ~/photos -o photos.flist --store file:///backup/chunks
    """
    tune_heap_for_streaming()  # before any worker thread starts: fewer page faults per chunk
    sealer, meta = make_sealer(encrypt_key_file)
    pipeline = PipelineSettings(workers=workers)
    show_bar = not quiet and err.is_terminal
    pool = SealingPool(sealer, pipeline.workers)
    # Its progress goes to the bar once it shows; the bar's thread must not run yet.
    file_pool = SealingPool(
        sealer, pipeline.workers, store_url=store, leave_a_core=False, progress=_nothing if show_bar else None
    )
    # Before this process starts any thread, and before it loads a parent image's stat cache (which
    # can be large, and each worker would carry it).
    fork_workers(pool, file_pool)
    with pool, file_pool:
        stat_cache = (
            None if reread else _parent_stat_cache(parent or output, meta, explicit=parent is not None)
        )
        with FlistWriter(output) as writer:
            leave_out = _written_inside(directory, writer, store)
            total = None
            if show_bar:  # the sizing walk only feeds the progress bar
                found = walk_tree(directory, [], leave_out)
                total = sum(f.st.st_size for f in found if f.kind is EntryKind.FILE)
            with (
                byte_progress("packing", total, quiet=quiet) as progress,
                ThreadPoolExecutor(pipeline.workers, thread_name_prefix="shoal-pack") as executor,
            ):
                if file_pool.progress is not None:
                    file_pool.progress = progress
                chunks = open_chunk_store(store, sealer, executor)
                for key, value in {
                    **meta,
                    "created_ns": str(time.time_ns()),
                    "source": str(directory.absolute()),
                }.items():
                    writer.set_meta(key, value)
                with gc_tuned_for_streaming():
                    report = asyncio.run(
                        _run_pack(
                            directory,
                            writer,
                            chunks,
                            pipeline,
                            executor,
                            pool,
                            file_pool,
                            progress,
                            stat_cache,
                            leave_out,
                        )
                    )
    if not quiet:
        _print_pack_summary(report, output)
    if report.skipped:
        raise PartialFailureError(
            f"{len(report.skipped)} entries were left out of {output}",
            failures=report.skipped,
            hint="fix their permissions or stop what is writing to them, then pack again",
        )


def _nothing(_n: int) -> None:
    pass


def _parent_stat_cache(
    image_path: Path, meta: dict[str, str], *, explicit: bool
) -> dict[str, tuple[StatKey, bytes]] | None:
    """The parent image's stat cache, if it was packed with the same encryption and key."""
    if not explicit and not image_path.exists():
        return None
    with FlistReader(image_path) as image:
        same_keys = all(image.meta.get(k) == meta.get(k) for k in ("encrypted", "key_check"))
        if not same_keys:
            if explicit:
                raise UsageError(
                    f"{image_path} was packed with different encryption or another key",
                    hint="give a parent packed with the same --encrypt-key-file, or none",
                )
            return None
        return image.stat_cache()


async def _run_unpack(
    image: FlistReader, dest: Path, chunks: SealedChunkStore, progress: Callable[[int], None]
) -> UnpackReport:
    try:
        return await unpack_tree(image, dest, chunks, hash_key=chunks.sealer.id_key, progress=progress)
    finally:
        await chunks.close()


def unpack(
    image_path: Path = typer.Argument(..., metavar="IMAGE", help="The .flist image written by `shoal pack`."),
    dest: Path = typer.Argument(..., help="Where to restore the tree (absent or an empty folder)."),
    store: str = typer.Option(..., "--store", help=STORE_HELP),
    encrypt_key_file: Path | None = typer.Option(
        None, "--encrypt-key-file", help="The key an encrypted image was packed with."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
) -> None:
    """Restore a packed tree exactly: content, modes, times, symlinks and empty folders.

    Every chunk is verified before it is written; a file whose content fails
    verification is never written (it is listed and the exit code is 10).
    Entries that would land outside DEST are refused.

    Example: shoal unpack photos.flist ~/restored --store file:///backup/chunks
    """
    with FlistReader(image_path) as image:
        sealer = sealer_for_image(image, encrypt_key_file)
        total = sum(e.size for e in image.entries() if e.kind is EntryKind.FILE)
        with (
            ThreadPoolExecutor(PipelineSettings().workers, thread_name_prefix="shoal-unpack") as executor,
            byte_progress("unpacking", total, quiet=quiet) as progress,
        ):
            chunks = open_chunk_store(store, sealer, executor)
            report = asyncio.run(_run_unpack(image, dest, chunks, progress))
    if not quiet:
        out.print(
            f"unpacked {report.files} files ({human_bytes(report.bytes_written)}), {report.dirs} dirs,"
            f" {report.symlinks} symlinks into {dest}"
        )
    if report.failures:
        raise PartialFailureError(
            f"{len(report.failures)} entries of {image_path} were not restored",
            failures=report.failures,
            hint="run `shoal store check` on the store to see which chunks are damaged or missing",
        )


def register(app: typer.Typer) -> None:
    app.command()(pack)
    app.command()(unpack)
