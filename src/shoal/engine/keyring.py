"""The device side of arena keys: unlock, enroll, approve, rotate, and a local cache of keychains.

A keychain unlocked once is cached in ``<device home>/keys/<arena>.keychain``,
sealed to this device's own X25519 key, so opening it needs the device key
file too. Every unlock checks the hub's newest envelope first: a device
that misses a key epoch learns it from the hub, not from garbage.

Order of effects: secrets are checked (passphrase, words, envelopes) before
anything is written, locally or on the hub.
"""

from __future__ import annotations

import base64
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nacl.public

from shoal.crypto.aead import RandomSource
from shoal.crypto.hierarchy import (
    EscrowKit,
    Keychain,
    NewEscrow,
    create_escrow,
    escrow_from_passphrase,
    escrow_from_recovery_words,
    fingerprint,
    open_keychain,
    seal_keychain,
)
from shoal.crypto.kdf import Argon2Cost
from shoal.crypto.keys import DeviceKeys
from shoal.errors import FormatError, IntegrityError, LockedError, StorageError
from shoal.net.sync import HubTransport

ESCROW = "escrow"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise FormatError("the hub answered a key request with a malformed body")
    try:
        # pydantic writes the URL-safe alphabet; accept either.
        return base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except ValueError as exc:
        raise FormatError("the hub answered a key request with invalid base64") from exc


@dataclass(frozen=True, slots=True)
class PendingDevice:
    """A device waiting for approval, as the hub names it (compare the fingerprint on both screens)."""

    device: str
    name: str
    exchange_public: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.exchange_public)


@dataclass(frozen=True, slots=True)
class Holder:
    device: str
    name: str
    exchange_public: bytes
    revoked: bool


class KeysClient:
    """The hub's key endpoints (``docs/protocol.md``, keys)."""

    def __init__(self, session: HubTransport) -> None:
        self.session = session

    async def _json(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        response = await self.session.request(method, "/api/v1" + path, json=body, params=params)
        return response.json()

    async def init(self, arena: str, kit: bytes, envelopes: dict[str, bytes]) -> None:
        body = {"kit": _b64(kit), "envelopes": {k: _b64(v) for k, v in envelopes.items()}}
        await self._json("PUT", f"/arenas/{quote(arena, safe='')}/keys", body)

    async def add(self, arena: str, epoch: int, envelopes: dict[str, bytes], *, rotate: bool = False) -> None:
        body = {
            "epoch": epoch,
            "envelopes": {k: _b64(v) for k, v in envelopes.items()},
            "mode": "rotate" if rotate else "add",
        }
        await self._json("POST", f"/arenas/{quote(arena, safe='')}/keys/envelopes", body)

    async def kit(self, arena: str) -> EscrowKit:
        data = await self._json("GET", f"/arenas/{quote(arena, safe='')}/keys/escrow")
        return EscrowKit.from_bytes(_unb64(data.get("kit")))

    async def envelope(self, arena: str, *, escrow: bool = False) -> tuple[int, int, bytes]:
        """(epoch of the envelope, the arena's current epoch, the envelope)."""
        params = {"escrow": "true"} if escrow else None
        data = await self._json("GET", f"/arenas/{quote(arena, safe='')}/keys/envelope", params=params)
        return int(data["epoch"]), int(data["current_epoch"]), _unb64(data.get("envelope"))

    async def holders(self, arena: str) -> list[Holder]:
        data = await self._json("GET", f"/arenas/{quote(arena, safe='')}/keys/recipients")
        return [
            Holder(d["id"], d["name"], _unb64(d["exchange_public"]), bool(d["revoked"]))
            for d in data["devices"]
        ]

    async def start_enrollment(self) -> tuple[str, float]:
        data = await self._json("POST", "/keys/enrollments")
        return str(data["code"]), float(data["expires_at"])

    async def find_enrollment(self, code: str) -> PendingDevice:
        data = await self._json("GET", f"/keys/enrollments/{quote(code, safe='')}")
        return PendingDevice(str(data["device"]), str(data["name"]), _unb64(data["exchange_public"]))

    async def revoke_device(self, device: str) -> None:
        await self._json("POST", f"/keys/devices/{quote(device, safe='')}/revoke")


class KeychainCache:
    """Unlocked keychains on this device, each sealed to the device's own key, mode 0600."""

    def __init__(self, directory: Path, device_keys: DeviceKeys) -> None:
        self.directory = directory
        self.device_keys = device_keys

    def _path(self, arena: str) -> Path:
        if not arena or "/" in arena or arena.startswith("."):
            raise FormatError(f"invalid arena id {arena!r}")
        return self.directory / f"{arena}.keychain"

    def load(self, arena: str) -> Keychain | None:
        try:
            sealed = self._path(arena).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read the key cache of arena {arena}: {exc.strerror}") from exc
        return open_keychain(sealed, self.device_keys, arena=arena)

    def save(self, keychain: Keychain) -> None:
        path = self._path(keychain.arena)
        data = seal_keychain(keychain, self.device_keys.exchange_public)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StorageError(f"cannot write the key cache {path}: {exc.strerror}") from exc

    def forget(self, arena: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(arena).unlink()


class Keyring:
    """One device's keys for the encrypted arenas of one hub."""

    def __init__(self, client: KeysClient, cache: KeychainCache, device: str) -> None:
        self.client = client
        self.cache = cache
        self.device = device

    @property
    def device_keys(self) -> DeviceKeys:
        return self.cache.device_keys

    def cached(self, arena: str) -> Keychain | None:
        """The cached keychain, without asking the hub (None: locked on this device)."""
        return self.cache.load(arena)

    async def create(self, arena: str, passphrase: str, cost: Argon2Cost, random: RandomSource) -> list[str]:
        """Keys for a new encrypted arena; returns the 24 recovery words (show them once)."""
        keychain = Keychain.new(arena, random)
        made: NewEscrow = create_escrow(arena, passphrase, cost, random)
        envelopes = {
            self.device: seal_keychain(keychain, self.device_keys.exchange_public),
            ESCROW: seal_keychain(keychain, made.kit.public),
        }
        await self.client.init(arena, made.kit.to_bytes(), envelopes)
        self.cache.save(keychain)
        return made.recovery_words

    async def unlock(self, arena: str) -> Keychain:
        """This device's newest keychain from the hub (LockedError when it holds none), cached."""
        epoch, current, envelope = await self.client.envelope(arena)
        keychain = open_keychain(envelope, self.device_keys, arena=arena)
        if keychain.epoch != epoch:
            raise IntegrityError(
                f"the key envelope of arena {arena} does not hold the epoch it was filed under"
            )
        if epoch < current:
            raise LockedError(
                f"arena {arena} is at key epoch {current}, and this device was only given epoch {epoch}",
                hint="ask an enrolled device to approve this one again (`shoal device approve`)",
            )
        self.cache.save(keychain)
        return keychain

    async def unlock_with_passphrase(self, arena: str, passphrase: str) -> Keychain:
        kit = await self.client.kit(arena)
        return await self.enroll_with_escrow(arena, escrow_from_passphrase(kit, passphrase, arena=arena))

    async def unlock_with_recovery_words(self, arena: str, words: str) -> Keychain:
        kit = await self.client.kit(arena)
        return await self.enroll_with_escrow(arena, escrow_from_recovery_words(kit, words, arena=arena))

    async def enroll_with_escrow(self, arena: str, escrow: nacl.public.PrivateKey) -> Keychain:
        """Open the escrow envelope with the escrow key, then file this device's own envelope."""
        epoch, _current, envelope = await self.client.envelope(arena, escrow=True)
        keychain = open_keychain(envelope, escrow, arena=arena)
        if keychain.epoch != epoch:
            raise IntegrityError(
                f"the escrow envelope of arena {arena} does not hold the epoch it was filed under"
            )
        await self.client.add(
            arena, epoch, {self.device: seal_keychain(keychain, self.device_keys.exchange_public)}
        )
        self.cache.save(keychain)
        return keychain

    async def approve(self, pending: PendingDevice, arenas: list[str]) -> list[str]:
        """Wrap the current keychain of each arena for ``pending``; returns the arenas done."""
        done = []
        for arena in arenas:
            keychain = await self.unlock(arena)
            await self.client.add(
                arena, keychain.epoch, {pending.device: seal_keychain(keychain, pending.exchange_public)}
            )
            done.append(arena)
        return done

    async def rotate(
        self, arena: str, random: RandomSource, *, exclude: frozenset[str] = frozenset()
    ) -> Keychain:
        """Start the next key epoch, wrapped for the remaining active holders and the escrow key only."""
        keychain = (await self.unlock(arena)).next_epoch(random)
        kit = await self.client.kit(arena)
        envelopes = {ESCROW: seal_keychain(keychain, kit.public)}
        for holder in await self.client.holders(arena):
            if not holder.revoked and holder.device not in exclude:
                envelopes[holder.device] = seal_keychain(keychain, holder.exchange_public)
        envelopes[self.device] = seal_keychain(keychain, self.device_keys.exchange_public)
        await self.client.add(arena, keychain.epoch, envelopes, rotate=True)
        self.cache.save(keychain)
        return keychain
