"""The device home: this installation's identity keys and its login, in private files.

Where: ``--home``, else ``$SHOAL_HOME``, else ``$XDG_DATA_HOME/shoal``
(``~/.local/share/shoal``). The directory is mode 0700; ``device.key`` and
``credentials.json`` are mode 0600 and replaced atomically (temp file,
fsync, rename, fsync of the directory), so a crash never leaves half a token
and a rotated refresh token is never lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from shoal.crypto.keys import DeviceKeys
from shoal.errors import ConfigError, FormatError, StorageError
from shoal.net.http import HubSession, TokenSet
from shoal.settings import xdg_data_home

CREDENTIALS_FORMAT = 1
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def resolve_home(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit.expanduser().absolute()
    env = os.environ.get("SHOAL_HOME")
    if env:
        return Path(env).expanduser().absolute()
    return xdg_data_home() / "shoal"


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, readable and writable by the owner only."""
    directory = path.parent
    try:
        directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        temp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # whatever the umask said
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(temp, path)
        except OSError:
            temp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc


@dataclass(frozen=True, slots=True)
class Credentials:
    """This device's login at one hub. ``kind`` is ``device`` (device-code login) or ``pat``."""

    hub_url: str
    access_token: str
    refresh_token: str | None
    expires_at: float | None
    kind: str
    user: str
    tenant: str
    device_id: str | None
    device_name: str | None
    v: int = CREDENTIALS_FORMAT

    def token_set(self) -> TokenSet:
        return TokenSet(self.access_token, self.refresh_token, self.expires_at)


class DeviceHome:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.identity_path = root / "device.key"
        self.credentials_path = root / "credentials.json"

    @classmethod
    def resolve(cls, explicit: Path | None = None) -> DeviceHome:
        return cls(resolve_home(explicit))

    # -- identity --------------------------------------------------------------------------

    def _ensure_root(self) -> None:
        """The home directory exists and only its owner may enter it."""
        try:
            self.root.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
            if stat.S_IMODE(self.root.stat().st_mode) != PRIVATE_DIR_MODE:
                self.root.chmod(PRIVATE_DIR_MODE)
        except OSError as exc:
            raise StorageError(f"cannot prepare the device home {self.root}: {exc.strerror}") from exc

    def load_keys(self) -> DeviceKeys | None:
        try:
            data = self.identity_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read the device key {self.identity_path}: {exc.strerror}") from exc
        return DeviceKeys.from_bytes(data)

    def ensure_keys(self) -> tuple[DeviceKeys, bool]:
        """This device's keys, generated on first use; the flag says whether they are new."""
        keys = self.load_keys()
        if keys is not None:
            return keys, False
        keys = DeviceKeys.generate()
        self._ensure_root()
        write_private(self.identity_path, keys.to_bytes())
        return keys, True

    # -- login -----------------------------------------------------------------------------

    def load_credentials(self) -> Credentials | None:
        try:
            raw = self.credentials_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {self.credentials_path}: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
            if data.get("v") != CREDENTIALS_FORMAT:
                raise FormatError(
                    f"{self.credentials_path} has format {data.get('v')!r}, expected {CREDENTIALS_FORMAT}",
                    hint="log in again with `shoal login`",
                )
            return Credentials(**data)
        except (ValueError, TypeError, AttributeError) as exc:
            raise FormatError(
                f"{self.credentials_path} is damaged", hint="log in again with `shoal login`"
            ) from exc

    def require_credentials(self) -> Credentials:
        creds = self.load_credentials()
        if creds is None:
            raise ConfigError("this device is not logged in to a hub", hint="run `shoal login --hub URL`")
        return creds

    def save_credentials(self, creds: Credentials) -> None:
        self._ensure_root()
        write_private(self.credentials_path, json.dumps(asdict(creds), indent=2).encode() + b"\n")

    def clear_credentials(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.credentials_path.unlink()

    def session(self) -> HubSession:
        """A session on the logged-in hub, sharing token rotations with this device's other processes."""
        creds = self.require_credentials()
        return HubSession(creds.hub_url, creds.token_set(), store=CredentialStore(self, creds))


class CredentialStore:
    """The :class:`~shoal.net.http.TokenStore` of a device home: ``credentials.json`` under a ``flock``."""

    def __init__(self, home: DeviceHome, creds: Credentials) -> None:
        self.home = home
        self.creds = creds
        self.lock_path = home.root / ".credentials.lock"

    def load(self) -> TokenSet | None:
        current = self.home.load_credentials()
        if current is None or current.hub_url != self.creds.hub_url:
            return None
        return current.token_set()

    def save(self, tokens: TokenSet | None) -> None:
        if tokens is None:
            self.home.clear_credentials()
            return
        current = self.home.load_credentials() or self.creds
        fields = asdict(current)
        fields.update(
            access_token=tokens.access_token, refresh_token=tokens.refresh_token, expires_at=tokens.expires_at
        )
        self.home.save_credentials(Credentials(**fields))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        except OSError as exc:
            raise StorageError(f"cannot open {self.lock_path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
