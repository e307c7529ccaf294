"""``shoal device enroll|approve|list|revoke``: this household's devices and their keys to encrypted arenas.

A new device gets an arena's keys one of three ways: another device approves
it (``shoal device enroll`` shows a code and a fingerprint, ``shoal device
approve CODE`` on an enrolled device wraps the keys for it), the household
passphrase, or the 24 recovery words. The code carries no secret.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer

from shoal.cli.console import err, out
from shoal.cli.home import DeviceHome
from shoal.crypto.hierarchy import Keychain, escrow_from_passphrase, escrow_from_recovery_words, fingerprint
from shoal.engine.keyring import KeychainCache, Keyring, KeysClient
from shoal.errors import LockedError, StorageError, UsageError
from shoal.net.http import HubSession
from shoal.net.sync import SyncClient

T = TypeVar("T")

device_app = typer.Typer(
    help="Enroll, approve, list and revoke this household's devices.", no_args_is_help=True
)
HomeOpt = typer.Option(
    None, "--home", envvar="SHOAL_HOME", help="Device home (default: $XDG_DATA_HOME/shoal)."
)
ArenaOpt = typer.Option(None, "--arena", "-a", help="Only this encrypted arena (default: all of them).")


def open_keyring(home: DeviceHome, session: HubSession) -> Keyring:
    """This device's keyring on its hub: the cache under ``<home>/keys``, sealed with the device key."""
    creds = home.require_credentials()
    keys = home.load_keys()
    if keys is None or creds.device_id is None:
        raise LockedError(
            "this login has no device identity, so it cannot hold arena keys",
            hint="log in as a device with `shoal login --hub URL`",
        )
    return Keyring(KeysClient(session), KeychainCache(home.root / "keys", keys), creds.device_id)


def cached_keychain(home: DeviceHome, arena_id: str) -> Keychain | None:
    """The keychain cached on this device (no hub call); None when the arena is locked here."""
    keys = home.load_keys()
    if keys is None:
        return None
    return KeychainCache(home.root / "keys", keys).load(arena_id)


def read_secret_file(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StorageError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    secret = text.rstrip("\r\n")
    if not secret.strip():
        raise UsageError(f"the {what} file {path} is empty")
    return secret


def _run(home: Path | None, action: Callable[[DeviceHome, Keyring, SyncClient], Awaitable[T]]) -> T:
    device_home = DeviceHome.resolve(home)

    async def main() -> T:
        async with device_home.session() as session:
            return await action(device_home, open_keyring(device_home, session), SyncClient(session))

    return asyncio.run(main())


async def _encrypted_arenas(client: SyncClient, only: str | None) -> list[tuple[str, str]]:
    if only is not None:
        arena = await client.find_arena(only)
        if not arena.encrypted:
            raise UsageError(f"arena {arena.name!r} is plain; it has no keys")
        return [(arena.id, arena.name)]
    return [(a.id, a.name) for a in await client.list_arenas() if a.encrypted]


@device_app.command("enroll")
def enroll(
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="Unlock with the household passphrase read from this file."
    ),
    recovery_words_file: Path | None = typer.Option(
        None, "--recovery-words-file", help="Unlock with the 24 recovery words read from this file."
    ),
    arena: str | None = ArenaOpt,
    wait: float = typer.Option(
        600.0, "--wait", help="Seconds to wait for an approval (0: show the code only)."
    ),
    home: Path | None = HomeOpt,
) -> None:
    """Get the keys of encrypted arenas on this device: by passphrase, recovery words, or approval."""
    if passphrase_file is not None and recovery_words_file is not None:
        raise UsageError("give --passphrase-file or --recovery-words-file, not both")
    secret_kind = "passphrase" if passphrase_file else "recovery words" if recovery_words_file else None
    secret = None
    if passphrase_file is not None:
        secret = read_secret_file(passphrase_file, "passphrase")
    elif recovery_words_file is not None:
        secret = read_secret_file(recovery_words_file, "recovery words")

    async def with_secret(_home: DeviceHome, keyring: Keyring, client: SyncClient) -> list[str]:
        assert secret is not None
        arenas = await _encrypted_arenas(client, arena)
        if not arenas:
            raise UsageError("there are no encrypted arenas to enroll in")
        kits = {arena_id: await keyring.client.kit(arena_id) for arena_id, _ in arenas}
        # Every secret is checked before anything is written, here or on the hub.
        unlock = escrow_from_passphrase if passphrase_file is not None else escrow_from_recovery_words
        escrows = {arena_id: unlock(kits[arena_id], secret, arena=arena_id) for arena_id, _ in arenas}
        for arena_id, _ in arenas:
            await keyring.enroll_with_escrow(arena_id, escrows[arena_id])
        return [name for _, name in arenas]

    async def by_approval(_home: DeviceHome, keyring: Keyring, client: SyncClient) -> list[str]:
        code, expires = await keyring.client.start_enrollment()
        out.print(f"enrollment code: {code[:4]}-{code[4:]}")
        out.print(f"this device's key fingerprint: {fingerprint(keyring.device_keys.exchange_public)}")
        out.print(
            "on an enrolled device run `shoal device approve CODE` and check that it shows this fingerprint"
        )
        if wait <= 0:
            return []
        deadline = time.monotonic() + min(wait, max(0.0, expires - time.time()))
        while True:
            arenas = await _encrypted_arenas(client, arena)
            done = []
            for arena_id, name in arenas:
                try:
                    await keyring.unlock(arena_id)
                    done.append(name)
                except LockedError:
                    pass
            if done or time.monotonic() > deadline:
                break
            await asyncio.sleep(2.0)
        if not done:
            raise LockedError("no device approved this one in time", hint="run `shoal device enroll` again")
        return done

    names = _run(home, with_secret if secret is not None else by_approval)
    if names:
        how = f" with the {secret_kind}" if secret_kind else ""
        out.print(f"unlocked{how}: {', '.join(names)}")


@device_app.command("approve")
def approve(
    code: str = typer.Argument(..., help="The code `shoal device enroll` shows on the new device."),
    arena: str | None = ArenaOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask to confirm the fingerprint."),
    home: Path | None = HomeOpt,
) -> None:
    """Give a new device the keys of the encrypted arenas this device holds."""

    async def action(_home: DeviceHome, keyring: Keyring, client: SyncClient) -> tuple[str, list[str]]:
        pending = await keyring.client.find_enrollment(code)
        err.print(f"device {pending.name} ({pending.device}), key fingerprint {pending.fingerprint}")
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError("confirm the fingerprint with --yes when not on a terminal")
            if not typer.confirm("does the new device show this same fingerprint?", default=False):
                raise UsageError("not approved: the fingerprints differ or you said no")
        arenas = await _encrypted_arenas(client, arena)
        held = []
        for arena_id, name in arenas:
            if keyring.cached(arena_id) is not None:
                held.append((arena_id, name))
        if not held:
            raise LockedError("this device holds no arena keys to give", hint="enroll this device first")
        await keyring.approve(pending, [arena_id for arena_id, _ in held])
        return pending.name, [name for _, name in held]

    name, names = _run(home, action)
    out.print(f"approved {name} for {', '.join(names)}")


@device_app.command("list")
def list_(home: Path | None = HomeOpt) -> None:
    """The household's devices: id, name, user, key fingerprint, state."""
    device_home = DeviceHome.resolve(home)
    me = device_home.require_credentials().device_id

    async def main() -> list[dict[str, object]]:
        async with device_home.session() as session:
            body = await session.get_json("/api/v1/devices")
        devices: list[dict[str, object]] = body["devices"]
        return devices

    for d in asyncio.run(main()):
        key = base64.urlsafe_b64decode(str(d["exchange_public"]).replace("+", "-").replace("/", "_"))
        state = "revoked" if d["revoked"] else "active"
        mark = "\tthis device" if d["id"] == me else ""
        typer.echo(f"{d['id']}\t{d['name']}\t{d['user']}\t{fingerprint(key)}\t{state}{mark}")


@device_app.command("revoke")
def revoke(
    device_id: str = typer.Argument(..., help="The id shown by `shoal device list`."),
    home: Path | None = HomeOpt,
) -> None:
    """Revoke a device: its logins end at once; each encrypted arena starts a key epoch it never gets."""

    async def action(_home: DeviceHome, keyring: Keyring, client: SyncClient) -> list[str]:
        if device_id == keyring.device:
            raise UsageError("a device cannot revoke itself", hint="revoke it from another enrolled device")
        await keyring.client.revoke_device(device_id)
        rotated = []
        for arena_id, name in await _encrypted_arenas(client, None):
            if keyring.cached(arena_id) is None:
                err.print(f"arena {name}: this device holds no key, so another device must rotate it")
                continue
            await keyring.rotate(arena_id, os.urandom, exclude=frozenset({device_id}))
            rotated.append(name)
        return rotated

    rotated = _run(home, action)
    out.print(f"revoked device {device_id}; its logins have ended")
    if rotated:
        out.print(f"new key epoch for: {', '.join(rotated)}")
        out.print(
            "every other device seals new content under it from its next sync (a running daemon: its "
            "next round); content already written stays readable with the old epoch's keys"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(device_app, name="device")
