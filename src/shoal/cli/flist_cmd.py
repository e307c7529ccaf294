"""`shoal flist inspect|tree IMAGE`: look inside a packed image without its store."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import typer

from shoal.cli.console import human_bytes, out
from shoal.state.flist import EntryKind, FlistReader

flist_app = typer.Typer(
    help="Look inside a packed image (.flist) without touching its store.", no_args_is_help=True
)

IMAGE_ARG = typer.Argument(..., metavar="IMAGE", help="The .flist image written by `shoal pack`.")


@flist_app.command()
def inspect(image_path: Path = IMAGE_ARG) -> None:
    """Summarise an image: format, encryption, counts, sizes and chunk dedup."""
    with FlistReader(image_path) as image:
        counts = image.count()
        total = 0
        refs = 0
        unique: set[bytes] = set()
        for entry in image.entries():
            if entry.manifest is not None:
                total += entry.manifest.size
                refs += len(entry.manifest.chunks)
                unique.update(ref.id for ref in entry.manifest.chunks)
        created = image.meta.get("created_ns")
        when = (
            dt.datetime.fromtimestamp(int(created) / 1e9, dt.UTC).isoformat(timespec="seconds")
            if created
            else "?"
        )
        out.print(f"image        {image_path}")
        out.print(f"format       {image.meta.get('format')} v{image.meta.get('version')}")
        out.print(f"created      {when}")
        out.print(f"source       {image.meta.get('source', '?')}")
        out.print(f"encrypted    {'yes' if image.encrypted else 'no'}")
        out.print(
            f"entries      {counts.get(EntryKind.FILE, 0)} files, {counts.get(EntryKind.DIR, 0)} dirs,"
            f" {counts.get(EntryKind.SYMLINK, 0)} symlinks"
        )
        out.print(f"content      {human_bytes(total)} in {refs} chunk references ({len(unique)} unique)")


@flist_app.command()
def tree(image_path: Path = IMAGE_ARG) -> None:
    """List every entry of an image: mode, size, modification time and path."""
    with FlistReader(image_path) as image:
        for entry in image.entries():
            kind = {
                EntryKind.DIR: stat.S_IFDIR,
                EntryKind.FILE: stat.S_IFREG,
                EntryKind.SYMLINK: stat.S_IFLNK,
            }
            mode = stat.filemode(kind[entry.kind] | entry.mode)
            when = dt.datetime.fromtimestamp(entry.mtime_ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M")
            name = entry.path + ("/" if entry.kind is EntryKind.DIR else "")
            if entry.kind is EntryKind.SYMLINK:
                name += f" -> {entry.target}"
            out.print(f"{mode} {entry.size:>12} {when} {name!s}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(flist_app, name="flist")
