"""The ``shoal`` command: one typer app, one module per command group."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from shoal import __version__, errors
from shoal.cli import commands
from shoal.cli.console import err
from shoal.cli.exit_codes import INTERRUPTED, USAGE, exit_code_for

app = typer.Typer(
    name="shoal",
    help=(
        "Self-hosted, end-to-end encrypted file sync with on-demand hydration.\n\n"
        "Getting started: run `shoal hub serve` on the machine that keeps the data and add a user "
        "with `shoal hub user add NAME`; then on each device `shoal login --hub URL`, "
        "`shoal arena create NAME` (once), `shoal arena join NAME DIR` and `shoal daemon`. "
        "Every command has --help with examples; docs/cli.md has them all."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shoal {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Self-hosted, end-to-end encrypted file sync with on-demand hydration."""


def report(exc: errors.ShoalError) -> int:
    """Print a ShoalError the way every command does, and return its exit code."""
    err.print(f"[bold red]error:[/] {escape(exc.title)}: {escape(exc.message)}")
    if exc.hint:
        err.print(f"[yellow]hint:[/] {escape(exc.hint)}")
    if isinstance(exc, errors.PartialFailureError):
        for failure in exc.failures[:20]:
            err.print(f"  - {failure}", markup=False)
        if len(exc.failures) > 20:
            err.print(f"  ... and {len(exc.failures) - 20} more")
    return exit_code_for(exc)


def main(argv: list[str] | None = None) -> None:
    try:
        commands.register(app, sys.argv[1:] if argv is None else argv)  # imports the command's modules
        # Not standalone, typer answers Ctrl-C (and an explicit exit) with the exit code, not a raise.
        code = app(args=argv, standalone_mode=False)
    except errors.ShoalError as exc:
        sys.exit(report(exc))
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(INTERRUPTED)
    except typer.TyperException as exc:
        # Usage errors arrive here in non-standalone mode: typer's bundled click's exceptions derive
        # from it (the separately installed click is never imported: 20 ms of every command).
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {exc}", markup=False)
        sys.exit(int(getattr(exc, "exit_code", USAGE)))
    if isinstance(code, int) and not isinstance(code, bool) and code:
        if code == INTERRUPTED:
            err.print("interrupted")
        sys.exit(code)
