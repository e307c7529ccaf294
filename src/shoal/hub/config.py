"""The hub's settings: one frozen value built by the CLI and passed to everything else."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from shoal.errors import ConfigError
from shoal.settings import MIB, default_hub_data_dir

DEFAULT_BIND_HOST = "127.0.0.1"
DEFAULT_BIND_PORT = 8787
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True, slots=True)
class HubLimits:
    """Bounds on what one request may ask of the hub."""

    max_request_bytes: int = 64 * MIB
    max_chunk_bytes: int = 16 * MIB
    max_batch_bytes: int = 64 * MIB
    max_batch_items: int = 1024
    max_changes_per_commit: int = 1000
    max_changes_page: int = 5000
    max_ws_message_bytes: int = 16 * MIB
    # Token buckets: API calls per tenant, and calls to /api/v1/auth/* per client address.
    # Generous defaults: a syncing device or the test suites never meet them.
    api_rate: float = 500.0
    api_burst: float = 5000.0
    auth_rate: float = 20.0
    auth_burst: float = 200.0


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Where the hub keeps its data, where it listens, and how long its credentials live (seconds)."""

    data_dir: Path
    db_url: str
    store_url: str
    bind_host: str = DEFAULT_BIND_HOST
    bind_port: int = DEFAULT_BIND_PORT
    public: bool = False
    access_ttl: float = 15 * 60
    refresh_ttl: float = 30 * 24 * 3600
    device_code_ttl: float = 10 * 60
    device_poll_interval: int = 5
    user_code_max_attempts: int = 5
    limits: HubLimits = HubLimits()

    @property
    def is_embedded_db(self) -> bool:
        return self.db_url.startswith("sqlite")


def normalise_db_url(url: str) -> str:
    """Accept the URLs people type and map them to the async drivers the hub uses."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    if url.startswith(("postgresql+psycopg://", "sqlite+aiosqlite:///")):
        return url
    raise ConfigError(
        f"unsupported database URL {redact_url(url)!r}",
        hint="use postgresql://USER@HOST:PORT/DB or sqlite:///PATH",
    )


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to print and log."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"invalid bind address {text!r}", hint="use HOST:PORT, e.g. 127.0.0.1:8787")
    host = host.strip("[]")
    number = int(port)
    if not 0 < number < 65536:
        raise ConfigError(f"invalid port {number} in {text!r}")
    return host, number


def build_settings(
    data_dir: Path | None = None,
    db_url: str | None = None,
    store_url: str | None = None,
    bind: str | None = None,
    *,
    public: bool = False,
    access_ttl: float | None = None,
    device_poll_interval: int | None = None,
) -> HubSettings:
    """Fill in the embedded defaults: SQLite at ``DIR/hub.db`` and chunks under ``DIR/chunks``."""
    root = (data_dir or default_hub_data_dir()).expanduser().absolute()
    db = normalise_db_url(db_url) if db_url else f"sqlite+aiosqlite:///{root / 'hub.db'}"
    store = store_url or (root / "chunks").as_uri()
    host, port = parse_bind(bind) if bind else (DEFAULT_BIND_HOST, DEFAULT_BIND_PORT)
    settings = HubSettings(
        data_dir=root, db_url=db, store_url=store, bind_host=host, bind_port=port, public=public
    )
    if access_ttl is not None:
        if access_ttl <= 0:
            raise ConfigError("the access token lifetime must be positive")
        settings = replace(settings, access_ttl=access_ttl)
    if device_poll_interval is not None:
        if device_poll_interval < 1:
            raise ConfigError("the device poll interval is at least 1 second")
        settings = replace(settings, device_poll_interval=device_poll_interval)
    return settings
