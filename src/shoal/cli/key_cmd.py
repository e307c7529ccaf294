"""`shoal key generate FILE`: a key for encrypted images."""

from __future__ import annotations

from pathlib import Path

import typer

from shoal.cli.console import err, out
from shoal.cli.keyfile import write_new_key_file

key_app = typer.Typer(help="Keys for encrypted images.", no_args_is_help=True)


@key_app.command()
def generate(
    path: Path = typer.Argument(..., help="Where to write the new key (mode 0600, never overwritten)."),
) -> None:
    """Write a new random 256-bit key and show its 24 recovery words once.

    Keep the words somewhere safe and offline: with neither the key file nor the
    words, encrypted images cannot be restored by anyone.
    """
    words = write_new_key_file(path)
    out.print(f"wrote a new key to {path}")
    err.print("[bold yellow]Recovery words (shown once; write them down, they restore the key):[/]")
    out.print(" ".join(words))


def register(app: typer.Typer) -> None:
    app.add_typer(key_app, name="key")
