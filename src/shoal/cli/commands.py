"""Every command group, attached to the root app in one place."""

from __future__ import annotations

import typer

from shoal.cli import (
    arena_cmd,
    cache_cmd,
    daemon_cmd,
    device_cmd,
    flist_cmd,
    hub_cmd,
    hub_ops_cmd,
    key_cmd,
    login_cmd,
    mount_cmd,
    pack_cmd,
    store_cmd,
    sync_cmd,
)


def register(app: typer.Typer) -> None:
    """Attach command groups. Each group lives in its own module under shoal.cli."""
    pack_cmd.register(app)
    flist_cmd.register(app)
    store_cmd.register(app)
    key_cmd.register(app)
    login_cmd.register(app)
    sync_cmd.register(app, arena_cmd.arena_app)  # before arena_cmd attaches arena_app
    arena_cmd.register(app)
    device_cmd.register(app)
    daemon_cmd.register(app)
    mount_cmd.register(app)
    cache_cmd.register(app)
    assert hub_ops_cmd.quota_app is not None  # its commands attach themselves to hub_app
    app.add_typer(hub_cmd.hub_app, name="hub")
