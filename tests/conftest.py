"""Hermetic tests: no SHOAL_* from the developer's environment, every directory under tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal.testing.hubproc import (  # noqa: F401 - fixtures: real hub processes on 127.0.0.1
    hub,
    hub_db_url,
    hub_factory,
    hub_postgres,
    hub_sqlite,
)
from shoal.testing.postgres import pg_cluster, postgres_url  # noqa: F401 - fixtures: private PostgreSQL
from shoal.testing.s3server import s3_server, s3_url  # noqa: F401 - fixtures: moto S3 on 127.0.0.1


@pytest.fixture(autouse=True)
def _hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SHOAL_", "AWS_")):  # AWS_*: a developer's S3 setup must not leak in
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
