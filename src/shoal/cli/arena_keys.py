"""The encrypted side of ``shoal arena create|list``: passphrase, keys on the hub, recovery words, locks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from shoal.cli.console import err
from shoal.cli.device_cmd import open_keyring, read_secret_file
from shoal.cli.home import DeviceHome
from shoal.crypto.hierarchy import Keychain
from shoal.crypto.kdf import INTERACTIVE_COST, TEST_COST, Argon2Cost
from shoal.engine.keyring import KeychainCache
from shoal.errors import ShoalError, UsageError
from shoal.net.schemas_sync import Arena, ConflictPolicy
from shoal.net.sync import SyncClient

MIN_PASSPHRASE = 8
_COSTS = {"moderate": INTERACTIVE_COST, "minimum": TEST_COST}

WARNING = (
    "RECOVERY WORDS: write these 24 words down and keep them somewhere safe, away from this computer.\n"
    "They are shown only this once. With the passphrase forgotten and every device lost, they are the\n"
    "only way back into this arena: nobody, not even the hub's operator, can recover it without them."
)


@dataclass(frozen=True, slots=True)
class CreatedArena:
    arena: Arena
    words: list[str]


def ask_new_passphrase(passphrase_file: Path | None) -> str:
    """The new household passphrase: from the file, or typed twice on a terminal."""
    if passphrase_file is not None:
        passphrase = read_secret_file(passphrase_file, "passphrase")
    elif sys.stdin.isatty():
        passphrase = typer.prompt("household passphrase", hide_input=True, confirmation_prompt=True)
    else:
        raise UsageError(
            "an encrypted arena needs a passphrase",
            hint="type it on a terminal, or give --passphrase-file FILE",
        )
    if len(passphrase) < MIN_PASSPHRASE:
        raise UsageError(
            f"the passphrase is shorter than {MIN_PASSPHRASE} characters",
            hint="choose a passphrase of several words",
        )
    return passphrase


def create_encrypted(
    home: Path | None,
    name: str,
    policy: ConflictPolicy,
    keep_days: int,
    keep_versions: int,
    passphrase: str,
    kdf_cost: str,
) -> CreatedArena:
    """Create the arena on the hub, then its keys; an arena whose keys failed is deleted again."""
    if kdf_cost not in _COSTS:
        raise UsageError(f"unknown --kdf-cost {kdf_cost!r}", hint="use moderate or minimum")
    cost: Argon2Cost = _COSTS[kdf_cost]
    device_home = DeviceHome.resolve(home)

    async def main() -> CreatedArena:
        async with device_home.session() as session:
            keyring = open_keyring(device_home, session)
            client = SyncClient(session)
            arena = await client.create_arena(
                name, encrypted=True, conflict_policy=policy, keep_days=keep_days, keep_versions=keep_versions
            )
            try:
                words = await keyring.create(arena.id, passphrase, cost, os.urandom)
            except (ShoalError, OSError):
                with contextlib.suppress(ShoalError):
                    await client.delete_arena(arena.id)
                raise
            return CreatedArena(arena, words)

    return asyncio.run(main())


def show_recovery_words(arena: Arena, words: list[str], as_json: bool) -> None:
    if as_json:
        body = arena.model_dump(mode="json")
        body["recovery_words"] = " ".join(words)
        typer.echo(json.dumps(body))
        err.print(WARNING)
        return
    typer.echo(f"created encrypted arena {arena.name} ({arena.id})")
    typer.echo(WARNING)
    for row in range(0, len(words), 6):
        typer.echo("  " + "  ".join(f"{row + i + 1:2}. {w:<9}" for i, w in enumerate(words[row : row + 6])))


def unlocked_here(home: DeviceHome, arena_ids: list[str]) -> frozenset[str]:
    """The encrypted arenas whose keys this device has cached (the others show as locked)."""
    keys = home.load_keys()
    if keys is None:
        return frozenset()
    cache = KeychainCache(home.root / "keys", keys)
    found: set[str] = set()
    for arena_id in arena_ids:
        with contextlib.suppress(ShoalError):
            chain: Keychain | None = cache.load(arena_id)
            if chain is not None:
                found.add(arena_id)
    return frozenset(found)
