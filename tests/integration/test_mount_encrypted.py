"""`shoal mount` of an encrypted arena against a real hub: the bytes another device wrote, under
every key epoch this device holds; writes that reach the other device; a tampered chunk is EIO and
a log line, never wrong bytes; a device without the keys is told to enroll."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path

import httpx
import pytest
from test_mount_hub import CHUNK_ROUTE, chunk_gets, mounted

from shoal.cli.exit_codes import LOCKED
from shoal.model.ids import ChunkId
from shoal.model.manifest import ChunkRef, Manifest
from shoal.state.arenas import ArenaRegistry
from shoal.state.index import ArenaIndex
from shoal.testing.devices import Device
from shoal.testing.hubproc import HubProcess

pytestmark = [pytest.mark.fuse, pytest.mark.slow]  # every step is a fresh CLI process

MIB = 1 << 20
PASSPHRASE = "correct horse battery staple"


def _device(hub: HubProcess, base: Path, name: str) -> Device:
    device = Device(name, base / f"{name}-home", base / name, hub, "Vault")
    asyncio.run(device.login(hub.create_token("alice")))
    return device


def _vault(hub: HubProcess, tmp_path: Path) -> Device:
    """The laptop, which created the encrypted arena Vault and joined it."""
    hub.add_user("alice")
    laptop = _device(hub, tmp_path, "laptop")
    (tmp_path / "passphrase").write_text(PASSPHRASE + "\n")
    created = laptop.cli(
        "arena", "create", "Vault", "--encrypted", "--passphrase-file", str(tmp_path / "passphrase"),
        "--kdf-cost", "minimum", "--json",
    )  # fmt: skip
    assert json.loads(created.stdout)["encrypted"] is True
    laptop.cli("arena", "join", "Vault", str(laptop.root))
    return laptop


def _enrolled(hub: HubProcess, tmp_path: Path, name: str) -> Device:
    device = _device(hub, tmp_path, name)
    device.cli("device", "enroll", "--passphrase-file", str(tmp_path / "passphrase"))
    device.cli("arena", "join", "Vault", str(device.root))
    return device


def chunk_requests(hub: HubProcess) -> int:
    """Chunk downloads the hub answered, one at a time or batched."""
    text = httpx.get(hub.base_url + "/metrics", timeout=10).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("shoal_hub_requests_total{")
        and ("/chunks/fetch" in line or CHUNK_ROUTE.search(line))
    )


def _chunks_of(device: Device, path: str) -> list[ChunkRef]:
    db = device.open_db()
    try:
        record = ArenaRegistry(db).by_name("Vault")
        entry = ArenaIndex(db, record.arena_id).get(path)
        assert entry is not None
        assert entry.manifest is not None
        return list(Manifest.decode(entry.manifest).chunks)
    finally:
        db.close()


def _read_through(path: Path) -> int:
    """Read a file 1 MiB at a time, as a program streaming it would; returns the bytes read."""
    total = 0
    with path.open("rb") as f:
        while piece := f.read(MIB):
            total += len(piece)
    return total


def _stored(hub: HubProcess, cid: ChunkId) -> Path:
    (found,) = [p for p in hub.data_dir.rglob(cid.hex()) if p.is_file()]
    return found


def test_an_encrypted_arena_mounts_reads_every_epoch_and_writes_back(
    hub_sqlite: HubProcess, tmp_path: Path
) -> None:
    hub = hub_sqlite
    laptop = _vault(hub, tmp_path)
    old = os.urandom(3 * MIB + 17)  # several chunks, sealed under key epoch 0
    (laptop.root / "docs").mkdir()
    (laptop.root / "docs" / "old.bin").write_bytes(old)
    (laptop.root / "docs" / "note.txt").write_bytes(b"epoch zero\n")
    laptop.cli("sync", "--once", "Vault")
    desktop = _enrolled(hub, tmp_path, "desktop")

    # Revoking a device starts key epoch 1; the desktop is given it, and content after uses it.
    phone = _device(hub, tmp_path, "phone")
    assert "new key epoch for: Vault" in laptop.cli("device", "revoke", phone.device_id).stdout
    new = os.urandom(MIB + 3)
    (laptop.root / "new.bin").write_bytes(new)
    laptop.cli("sync", "--once", "Vault")
    desktop.cli("sync", "--once", "Vault")  # names and manifests into the desktop's index

    before = chunk_gets(hub)
    with mounted(desktop, tmp_path / "desktop-mnt", "--refresh", "0.2") as mnt:
        assert (mnt / "docs" / "old.bin").read_bytes() == old
        assert (mnt / "docs" / "note.txt").read_bytes() == b"epoch zero\n"
        assert (mnt / "new.bin").read_bytes() == new
        assert chunk_gets(hub) > before  # from the hub, not from the desktop's folder

        made = os.urandom(2 * MIB + 5)
        (mnt / "made-in-mount.bin").write_bytes(made)
        with (mnt / "docs" / "note.txt").open("r+b") as f:
            f.write(b"EPOCH")
        assert (mnt / "made-in-mount.bin").read_bytes() == made
    desktop.cli("sync", "--once", "Vault")
    laptop.cli("sync", "--once", "Vault")
    assert (laptop.root / "made-in-mount.bin").read_bytes() == made
    assert (laptop.root / "docs" / "note.txt").read_bytes() == b"EPOCH zero\n"

    # Mounted again: content of both epochs comes from the cache (checked with each epoch's id key).
    before = chunk_requests(hub)
    with mounted(desktop, tmp_path / "again-mnt") as mnt:
        assert (mnt / "docs" / "old.bin").read_bytes() == old
        assert (mnt / "new.bin").read_bytes() == new
    assert chunk_requests(hub) == before
    assert "failed its check" not in (tmp_path / "again-mnt.log").read_text()


def test_a_tampered_chunk_is_eio_and_a_log_line_never_wrong_bytes(
    hub_sqlite: HubProcess, tmp_path: Path
) -> None:
    hub = hub_sqlite
    laptop = _vault(hub, tmp_path)
    victim = os.urandom(8 * MIB + 1)
    (laptop.root / "victim.bin").write_bytes(victim)
    laptop.cli("sync", "--once", "Vault")
    desktop = _enrolled(hub, tmp_path, "desktop")
    desktop.cli("sync", "--once", "Vault")
    chunks = _chunks_of(desktop, "victim.bin")
    starts = list(itertools.accumulate((ref.length for ref in chunks), initial=0))

    # Damage a chunk in the middle: it arrives in a read-ahead batch, not as the first request.
    # It starts past the first MiB read below plus the kernel's 1 MiB read-ahead, so that read
    # never touches it (chunks are 256 KiB to 4 MiB, so one starts before 6 MiB).
    damaged_at = next(i for i, start in enumerate(starts[:-1]) if start >= 2 * MIB)
    blob = _stored(hub, chunks[damaged_at].id)
    original = blob.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x40
    blob.write_bytes(bytes(damaged))
    with mounted(desktop, tmp_path / "mnt") as mnt:
        for _ in range(2):  # refused every time: nothing damaged was cached
            with pytest.raises(OSError, match="Input/output error"):
                _read_through(mnt / "victim.bin")
        with (mnt / "victim.bin").open("rb") as f:
            assert f.read(MIB) == victim[:MIB]  # the chunks before it read, and are right
        blob.write_bytes(original)
        assert (mnt / "victim.bin").read_bytes() == victim
    log = (tmp_path / "mnt.log").read_text()
    assert "read of victim.bin failed (EIO)" in log
    assert "failed authentication" in log


def test_a_device_without_the_keys_is_told_to_enroll(hub_sqlite: HubProcess, tmp_path: Path) -> None:
    hub = hub_sqlite
    laptop = _vault(hub, tmp_path)
    (laptop.root / "secret.txt").write_bytes(b"not for the desktop")
    laptop.cli("sync", "--once", "Vault")
    desktop = _device(hub, tmp_path, "desktop")
    desktop.cli("arena", "join", "Vault", str(desktop.root))
    where = tmp_path / "mnt"
    where.mkdir()

    refused = desktop.cli("mount", "Vault", str(where), check=False)
    assert refused.returncode == LOCKED
    assert "holds no key for arena 'Vault'" in refused.stderr
    assert "shoal device enroll" in refused.stderr
    assert os.listdir(where) == []  # nothing was mounted

    hub.stop()  # offline, with no key cached here: the same answer, not an empty mount
    refused = desktop.cli("mount", "Vault", str(where), check=False)
    assert refused.returncode == LOCKED
    assert "shoal device enroll" in refused.stderr
    hub.start()
