"""Every command group, attached to the root app in one place.

Command modules pull in heavy libraries (the hub's web stack, SQLAlchemy,
pyfuse3), so only the group a command line names is imported; `shoal --help`
and unknown commands load them all. ``COMMAND_GROUPS`` must list every
top-level command name (a test compares it with what the groups register).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import typer


def _pack(app: typer.Typer) -> None:
    # Alone: typer prepares every option of every command it is given before running one, and
    # `shoal pack` is timed against restic from its first millisecond.
    from shoal.cli import pack_cmd

    pack_cmd.register(app)


def _images(app: typer.Typer) -> None:
    from shoal.cli import flist_cmd, key_cmd, store_cmd

    flist_cmd.register(app)
    store_cmd.register(app)
    key_cmd.register(app)


def _login(app: typer.Typer) -> None:
    from shoal.cli import login_cmd

    login_cmd.register(app)


def _sync(app: typer.Typer) -> None:
    from shoal.cli import arena_cmd, sync_cmd

    sync_cmd.register(app, arena_cmd.arena_app)  # before arena_cmd attaches arena_app
    arena_cmd.register(app)


def _residency(app: typer.Typer) -> None:
    from shoal.cli import residency_cmd

    residency_cmd.register(app)


def _device(app: typer.Typer) -> None:
    from shoal.cli import device_cmd

    device_cmd.register(app)


def _daemon(app: typer.Typer) -> None:
    from shoal.cli import daemon_cmd

    daemon_cmd.register(app)


def _mount(app: typer.Typer) -> None:
    from shoal.cli import cache_cmd, mount_cmd

    mount_cmd.register(app)
    cache_cmd.register(app)


def _hub(app: typer.Typer) -> None:
    from shoal.cli import hub_cmd, hub_ops_cmd

    assert hub_ops_cmd.quota_app is not None  # its commands attach themselves to hub_app
    app.add_typer(hub_cmd.hub_app, name="hub")


COMMAND_GROUPS: dict[str, Callable[[typer.Typer], None]] = {
    **dict.fromkeys(["pack", "unpack"], _pack),
    **dict.fromkeys(["flist", "store", "key"], _images),
    **dict.fromkeys(["init", "login", "logout", "whoami"], _login),
    **dict.fromkeys(["arena", "sync", "conflicts", "log", "versions", "restore"], _sync),
    **dict.fromkeys(["pin", "unpin", "hydrate", "dehydrate"], _residency),
    "device": _device,
    **dict.fromkeys(["daemon", "status", "pause", "resume"], _daemon),
    **dict.fromkeys(["mount", "umount", "cache"], _mount),
    "hub": _hub,
}


def register(app: typer.Typer, argv: Sequence[str] | None = None) -> None:
    """Attach the group ``argv`` names, or every group when it names none we know."""
    first = next((arg for arg in argv or () if not arg.startswith("-")), None)
    if first is None and "--version" in (argv or ()):
        return
    if first in COMMAND_GROUPS:
        COMMAND_GROUPS[first](app)
    else:
        for attach in dict.fromkeys(COMMAND_GROUPS.values()):
            attach(app)
    _reflow_help(app)


def _reflow_help(app: typer.Typer) -> None:
    """Give each command the help of its docstring with the source's line breaks taken out.

    typer keeps every line break of a docstring's later paragraphs, so a line wrapped at 100
    columns in the source broke again mid-sentence on an 80-column terminal. Paragraphs with
    indented or bulleted lines (examples, lists) keep their lines."""
    for command in app.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = reflow(command.callback.__doc__)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


def reflow(doc: str) -> str:
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(
        paragraph
        if any(line.startswith((" ", "-", "*", "$")) for line in paragraph.splitlines())
        else " ".join(line.strip() for line in paragraph.splitlines())
        for paragraph in paragraphs
    )
