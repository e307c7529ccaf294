"""Every command group, attached to the root app in one place."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach command groups. Each group lives in its own module under shoal.cli."""
    del app  # groups are added here as they are built
