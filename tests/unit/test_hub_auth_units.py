"""The hub's auth building blocks that need no hub process: codes, scopes, settings, errors, files."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa

from shoal import errors
from shoal.cli.home import Credentials, DeviceHome, write_private
from shoal.cli.hub_cmd import parse_duration
from shoal.hub.auth.device_flow import USER_CODE_ALPHABET, format_user_code, normalise_user_code
from shoal.hub.auth.scopes import ALL_SCOPES, DEVICE_SCOPES, parse_scopes
from shoal.hub.config import build_settings, normalise_db_url, parse_bind, redact_url
from shoal.hub.db.engine import open_database
from shoal.hub.db.migrate import discover, migrate
from shoal.hub.errors import STATUS_FOR, ForbiddenError, error_code, status_for
from shoal.net.http import ERROR_CLASSES


def test_user_codes_are_unambiguous_and_forgiving_to_type() -> None:
    assert not set("AEIOUY01") & set(USER_CODE_ALPHABET)
    assert format_user_code("BCDFGHJK") == "BCDF-GHJK"
    for typed in ("BCDF-GHJK", "bcdf-ghjk", "bcdfghjk", " BCDF GHJK "):
        assert normalise_user_code(typed) == "BCDFGHJK"
    for bad in ("BCDF-GHJ", "ABCD-EFGH", "BCDF-GHJK-L", "", "../../etc", "BCDF-GHJ1"):
        assert normalise_user_code(bad) is None


def test_scopes_parse_and_refuse_unknown_names() -> None:
    assert parse_scopes("sync:read, files:read") == {"sync:read", "files:read"}
    assert "admin" not in DEVICE_SCOPES
    assert DEVICE_SCOPES < ALL_SCOPES
    with pytest.raises(errors.UsageError, match="unknown scope"):
        parse_scopes("sync:read,root")
    with pytest.raises(errors.UsageError, match="no scope"):
        parse_scopes(" , ")


def test_durations() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("90m") == 5400
    assert parse_duration("never") is None
    for bad in ("30", "d", "-1d", "0d", "3y"):
        with pytest.raises(errors.UsageError):
            parse_duration(bad)


def test_settings_defaults_and_urls(tmp_path: Path) -> None:
    settings = build_settings(tmp_path / "hub")
    assert settings.db_url == f"sqlite+aiosqlite:///{tmp_path / 'hub' / 'hub.db'}"
    assert settings.store_url == (tmp_path / "hub" / "chunks").as_uri()
    assert (settings.bind_host, settings.bind_port) == ("127.0.0.1", 8787)
    assert normalise_db_url("postgresql://u:pw@db:5432/shoal") == "postgresql+psycopg://u:pw@db:5432/shoal"
    assert normalise_db_url("postgres://db/shoal") == "postgresql+psycopg://db/shoal"
    assert "pw" not in redact_url("postgresql+psycopg://u:pw@db/shoal")
    with pytest.raises(errors.ConfigError):
        normalise_db_url("mysql://db/shoal")
    assert parse_bind("[::1]:9000") == ("::1", 9000)
    with pytest.raises(errors.ConfigError):
        parse_bind("localhost")
    with pytest.raises(errors.ConfigError):
        build_settings(tmp_path, access_ttl=0)


def test_every_error_class_survives_the_wire() -> None:
    """The hub names an error by code; the client maps the code back to the same class."""
    classes = [c for c in ERROR_CLASSES.values() if c.__module__ == errors.__name__]
    assert errors.CorruptChunkError in classes
    for cls in classes:
        assert ERROR_CLASSES[error_code(cls)] is cls
    assert error_code(errors.NotFoundError) == "not_found"
    assert error_code(ForbiddenError) == "forbidden"
    assert status_for(ForbiddenError("no")) == 403
    assert status_for(errors.AuthError("no")) == 401
    assert status_for(errors.ChunkMissingError("gone")) == 404
    assert set(STATUS_FOR) >= {errors.NotFoundError, errors.AuthError, errors.RateLimitedError}


def test_private_files_are_0600_and_replaced_whole(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        target = tmp_path / "private" / "secret"
        write_private(target, b"one")
        write_private(target, b"two")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["secret"]


def test_device_home_keeps_keys_and_credentials(tmp_path: Path) -> None:
    home = DeviceHome(tmp_path / "device")
    keys, created = home.ensure_keys()
    again, created_again = home.ensure_keys()
    assert created
    assert not created_again
    assert again.signing_public == keys.signing_public
    assert home.load_credentials() is None
    creds = Credentials("http://127.0.0.1:1", "sha_a", "shr_b", 1.0, "device", "alice", "alice", "d1", "pc")
    home.save_credentials(creds)
    assert home.load_credentials() == creds
    assert stat.S_IMODE(home.credentials_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.root.stat().st_mode) == 0o700
    home.credentials_path.write_text(json.dumps({"v": 99}))
    with pytest.raises(errors.FormatError, match="format"):
        home.load_credentials()
    home.credentials_path.write_text("{not json")
    with pytest.raises(errors.FormatError, match="damaged"):
        home.load_credentials()
    home.clear_credentials()
    with pytest.raises(errors.ConfigError, match="not logged in"):
        home.require_credentials()


def test_device_home_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert DeviceHome.resolve().root == Path(os.environ["XDG_DATA_HOME"]) / "shoal"
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "elsewhere"))
    assert DeviceHome.resolve().root == tmp_path / "elsewhere"
    assert DeviceHome.resolve(tmp_path / "explicit").root == tmp_path / "explicit"


def test_sqlite_is_durable_and_migrations_refuse_a_newer_database(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
        try:
            applied = await migrate(db)
            assert applied == [m.version for m in discover()]
            assert await migrate(db) == []
            async with db.read() as conn:
                assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
                assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 2  # FULL
                assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            async with db.write() as conn:
                await conn.execute(
                    sa.text(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)"
                    )
                )
            with pytest.raises(errors.UnsupportedVersionError, match="newer"):
                await migrate(db)
        finally:
            await db.close()

    asyncio.run(scenario())


def test_migrations_are_numbered_and_described() -> None:
    found = discover()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "m0001_accounts"
    assert all(m.description for m in found)


def test_logs_never_carry_tokens() -> None:
    from shoal.hub.logging import redact

    secret = "sha_" + "x" * 43
    assert secret not in redact(f'"WebSocket /api/v1/arenas/a/ws?access_token={secret}" [accepted]')
    assert "shr_[redacted]" in redact("refresh shr_" + "y" * 43)
    assert redact("GET /health") == "GET /health"
