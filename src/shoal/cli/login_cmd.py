"""``shoal init``, ``shoal login``, ``shoal logout``, ``shoal whoami``: this device and its hub login."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import typer

from shoal.cli.console import err, out
from shoal.cli.home import Credentials, DeviceHome
from shoal.errors import NetworkError, ShoalError, UsageError
from shoal.net.auth import AuthClient
from shoal.net.http import HubSession, TokenSet

HomeOpt = typer.Option(
    None, "--home", envvar="SHOAL_HOME", help="Device home (default: $XDG_DATA_HOME/shoal)."
)


def _fingerprint(public: bytes) -> str:
    text = public.hex()
    return ":".join(text[i : i + 4] for i in range(0, 16, 4))


def init(
    home: Path | None = HomeOpt,
) -> None:
    """Create this device's identity keys (login does this too when needed)."""
    device_home = DeviceHome.resolve(home)
    keys, created = device_home.ensure_keys()
    verb = "created" if created else "already has"
    out.print(f"{device_home.root}: {verb} device keys (signing key {_fingerprint(keys.signing_public)})")


def _read_token_file(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise UsageError(f"cannot read the token file {path}: {exc.strerror}") from exc
    if not lines:
        raise UsageError(
            f"the token file {path} is empty", hint="put the token from `shoal hub token create` in it"
        )
    return lines[0]


async def _login_with_token(
    device_home: DeviceHome, hub_url: str, token: str, device_name: str
) -> Credentials:
    keys, _ = device_home.ensure_keys()
    async with HubSession(hub_url, TokenSet(token)) as session:
        client = AuthClient(session)
        me = await client.whoami()
        device_id, name = me.device_id, me.device_name
        if device_id is None:
            device = await client.register_device(device_name, keys.signing_public, keys.exchange_public)
            device_id, name = device.id, device.name
    return Credentials(
        hub_url=hub_url,
        access_token=token,
        refresh_token=None,
        expires_at=None,
        kind="pat",
        user=me.user,
        tenant=me.tenant,
        device_id=device_id,
        device_name=name,
    )


async def _login_with_device_code(
    device_home: DeviceHome, hub_url: str, device_name: str, tenant: str | None
) -> Credentials:
    keys, _ = device_home.ensure_keys()
    async with HubSession(hub_url) as session:
        client = AuthClient(session)
        code = await client.start_device_login(device_name, keys.signing_public, keys.exchange_public, tenant)
        err.print(
            f"To approve this device, open [bold]{code.verification_uri}[/] and enter the code "
            f"[bold]{code.user_code}[/]\n"
            f"  (or open {code.verification_uri_complete},\n"
            f"   or on the hub machine run: shoal hub approve {code.user_code} --user NAME)\n"
            f"Waiting for approval (the code expires in {code.expires_in // 60} minutes)..."
        )
        tokens = await client.wait_for_device_token(code)
        session.set_tokens(tokens)
        me = await client.whoami()
    return Credentials(
        hub_url=hub_url,
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_at=tokens.expires_at,
        kind="device",
        user=me.user,
        tenant=me.tenant,
        device_id=me.device_id,
        device_name=me.device_name,
    )


def login(
    hub: str = typer.Option(
        ..., "--hub", envvar="SHOAL_HUB", help="The hub's URL, e.g. http://127.0.0.1:8787."
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Log in with a personal access token read from this file (unattended)."
    ),
    tenant: str | None = typer.Option(None, "--tenant", help="A team to act in (default: your own tenant)."),
    name: str | None = typer.Option(None, "--name", help="This device's name (default: the host name)."),
    home: Path | None = HomeOpt,
) -> None:
    """Log this device in to a hub: by device code (approve on the hub), or with a token file."""
    device_home = DeviceHome.resolve(home)
    hub_url = hub.rstrip("/")
    if not hub_url.startswith(("http://", "https://")):
        raise UsageError(f"the hub URL {hub!r} must start with http:// or https://")
    device_name = name or socket.gethostname() or "device"
    if token_file is not None:
        if tenant is not None:
            raise UsageError("--tenant does not apply to a token: a token acts in the tenant it was made for")
        token = _read_token_file(token_file)
        creds = asyncio.run(_login_with_token(device_home, hub_url, token, device_name))
    else:
        creds = asyncio.run(_login_with_device_code(device_home, hub_url, device_name, tenant))
    previous = device_home.load_credentials()
    device_home.save_credentials(creds)
    if previous is not None and previous.kind == "device" and previous.refresh_token != creds.refresh_token:
        _revoke_quietly(previous)
    out.print(
        f"logged in to {creds.hub_url} as {creds.user} in {creds.tenant} "
        f"(device {creds.device_name} {creds.device_id})"
    )


def _revoke_quietly(old: Credentials) -> None:
    """End the login this one replaces, so its refresh token does not linger; failures only warn."""

    async def revoke() -> None:
        async with HubSession(old.hub_url, old.token_set()) as session:
            await AuthClient(session).logout()

    try:
        asyncio.run(revoke())
    except ShoalError as exc:
        err.print(f"[yellow]note:[/] the previous login at {old.hub_url} was not revoked ({exc.message})")


def logout(home: Path | None = HomeOpt) -> None:
    """Revoke this device's login on the hub and forget its tokens."""
    device_home = DeviceHome.resolve(home)
    creds = device_home.load_credentials()
    if creds is None:
        err.print("not logged in")
        return

    async def revoke() -> None:
        async with device_home.session() as session:
            await AuthClient(session).logout()

    try:
        asyncio.run(revoke())
    except NetworkError as exc:
        err.print(f"[yellow]warning:[/] could not reach the hub to revoke the login: {exc.message}")
    except ShoalError as exc:  # already revoked or expired: forgetting it is all that is left
        err.print(f"[yellow]note:[/] the hub did not accept the logout ({exc.message})")
    device_home.clear_credentials()
    out.print(f"logged out of {creds.hub_url}")


def whoami(
    home: Path | None = HomeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
) -> None:
    """Show who this device is logged in as (asks the hub, so a revoked login shows up)."""
    device_home = DeviceHome.resolve(home)
    creds = device_home.require_credentials()

    async def ask() -> str:
        async with device_home.session() as session:
            me = await AuthClient(session).whoami()
        if as_json:
            return me.model_dump_json()
        return (
            f"user:   {me.user}\ntenant: {me.tenant} ({me.tenant_kind})\n"
            f"device: {me.device_name or '-'} ({me.device_id or '-'})\nhub:    {creds.hub_url}\n"
            f"token:  {me.token_kind}, scopes {' '.join(me.scopes)}"
        )

    out.print(asyncio.run(ask()))


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)
