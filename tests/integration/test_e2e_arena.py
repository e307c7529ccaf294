"""Encrypted arenas end to end, as users run them: create, sync, enroll three ways, revoke, tamper.

Real hub processes on 127.0.0.1, the real command line per device. After
syncing a corpus whose names and contents carry marker strings, the hub's
whole data dir (database and blobs) is searched: no marker, no stored size
that gives a plaintext or compressed size away.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import obstore
import pytest
import zstandard
from mnemonic import Mnemonic
from obstore.store import S3Store

from shoal.chunking.envelope import ENCRYPTED_HEADER_BYTES
from shoal.cli.exit_codes import AUTH, LOCKED, USAGE
from shoal.cli.home import DeviceHome
from shoal.crypto.aead import OVERHEAD
from shoal.crypto.keys import DeviceKeys
from shoal.crypto.padding import padme
from shoal.engine.crypt_codec import arena_crypto
from shoal.engine.keyring import KeychainCache
from shoal.errors import LockedError
from shoal.state.arenas import ArenaRegistry
from shoal.testing.devices import Device, snapshot
from shoal.testing.filestore import stored_blobs
from shoal.testing.hubproc import HubProcess, running_hub, shoal_env
from shoal.testing.s3server import TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY, S3TestServer

pytestmark = pytest.mark.slow  # every step is a fresh CLI process

MARKERS = (b"QUOKKAMARKER", b"NARWHALSECRET", b"AXOLOTLNAME")
PASSPHRASE = "correct horse battery staple"


def _corpus(root: Path) -> dict[str, bytes]:
    """Names and contents with markers; sizes chosen to be no page or bucket size."""
    files = {
        "AXOLOTLNAME-taxes/QUOKKAMARKER-plan.txt": b"NARWHALSECRET budget line\n" * 411,
        "AXOLOTLNAME-taxes/notes.md": b"QUOKKAMARKER " + os.urandom(9001),
        "photos/NARWHALSECRET.raw": os.urandom(70_001),
        "tiny.txt": b"QUOKKAMARKER\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _device(hub: HubProcess, base: Path, name: str, arena: str = "Vault") -> Device:
    device = Device(name, base / f"{name}-home", base / name, hub, arena)
    asyncio.run(device.login(hub.create_token("alice")))
    return device


def _stored_files(data_dir: Path) -> Iterator[Path]:
    for folder, _dirs, names in os.walk(data_dir):
        for name in names:
            yield Path(folder) / name


def _db_path(hub: HubProcess) -> Path:
    found = [p for p in _stored_files(hub.data_dir) if p.suffix == ".db"]
    assert len(found) == 1, found
    return found[0]


def _records(hub: HubProcess) -> list[tuple[int, bytes]]:
    with sqlite3.connect(_db_path(hub)) as conn:
        return [(int(s), bytes(r)) for s, r in conn.execute("SELECT seq, record FROM changes ORDER BY seq")]


def _chunk_blobs(hub: HubProcess) -> list[Path]:
    return [
        p
        for p in _stored_files(hub.data_dir)
        if ".db" not in p.name and p.stat().st_size > ENCRYPTED_HEADER_BYTES + OVERHEAD
    ]


def _is_padded(stored_size: int) -> bool:
    body = stored_size - ENCRYPTED_HEADER_BYTES - OVERHEAD
    return body > 0 and padme(body) == body


def _check_hub_learns_nothing(hub: HubProcess, files: dict[str, bytes]) -> None:
    for path in _stored_files(hub.data_dir):
        data = path.read_bytes()
        for marker in MARKERS:
            assert marker not in data, f"{marker!r} found in {path}"
    revealing = set()
    for data in files.values():
        revealing |= {len(data), len(zstandard.ZstdCompressor(level=3).compress(data))}
    # Every stored chunk, whether in a file of its own or in a pack file.
    blobs = [b for b in stored_blobs(hub.data_dir / "chunks") if b.size > ENCRYPTED_HEADER_BYTES + OVERHEAD]
    assert blobs
    for blob in blobs:
        name, size = blob.cid.hex(), blob.size
        assert size not in revealing, f"stored object {name} is {size} bytes, a plaintext size"
        assert _is_padded(size), f"stored object {name} ({size} bytes) is not padded to a bucket"
    for seq, record in _records(hub):
        assert _is_padded(len(record)), f"record {seq} ({len(record)} bytes) is not padded"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    with running_hub(tmp_path / "hub") as running:
        running.add_user("alice")
        yield running


def _create_vault(laptop: Device, tmp_path: Path) -> list[str]:
    pass_file = tmp_path / "passphrase"
    pass_file.write_text(PASSPHRASE + "\n")
    created = laptop.cli(
        "arena", "create", "Vault", "--encrypted", "--passphrase-file", str(pass_file),
        "--kdf-cost", "minimum", "--json",
    )  # fmt: skip
    assert "RECOVERY WORDS" in created.stderr
    arena = json.loads(created.stdout)
    assert arena["encrypted"] is True
    words: list[str] = arena["recovery_words"].split()
    assert len(words) == 24
    return words


def test_encrypted_arena_end_to_end(hub: HubProcess, tmp_path: Path) -> None:
    laptop = _device(hub, tmp_path, "laptop")
    desktop = _device(hub, tmp_path, "desktop")
    phone = _device(hub, tmp_path, "phone")
    words = _create_vault(laptop, tmp_path)
    assert "encrypted, unlocked" in laptop.cli("arena", "list").stdout
    assert "encrypted, locked" in desktop.cli("arena", "list").stdout
    assert [a["unlocked"] for a in json.loads(laptop.cli("arena", "list", "--json").stdout)] == [True]

    assert "to sync it" in laptop.cli("arena", "join", "Vault", str(laptop.root)).stdout
    files = _corpus(laptop.root)
    assert "pushed" in laptop.cli("sync", "--once", "Vault").stdout
    _check_hub_learns_nothing(hub, files)

    # A device without the key sees "locked", not garbage.
    joined = desktop.cli("arena", "join", "Vault", str(desktop.root)).stdout
    assert "stays empty until this device" in joined
    assert "shoal device enroll --arena Vault" in joined
    locked = desktop.cli("sync", "--once", "Vault", check=False)
    assert locked.returncode == LOCKED
    assert "holds no key" in locked.stderr
    assert snapshot(desktop.root) == {}

    # Wrong passphrase: a clear message, nothing written here or on the hub.
    before = _envelope_rows(hub)
    wrong = tmp_path / "wrong"
    wrong.write_text("correct horse battery stapler\n")
    refused = desktop.cli("device", "enroll", "--passphrase-file", str(wrong), check=False)
    assert refused.returncode == AUTH
    assert "passphrase does not unlock" in refused.stderr
    assert not (desktop.home / "keys").exists()
    assert _envelope_rows(hub) == before

    right = tmp_path / "right"
    right.write_text(PASSPHRASE + "\n")
    assert (
        "unlocked with the passphrase: Vault"
        in desktop.cli("device", "enroll", "--passphrase-file", str(right)).stdout
    )
    desktop.cli("sync", "--once", "Vault")
    assert snapshot(desktop.root, mtimes=False) == snapshot(laptop.root, mtimes=False)

    # Recovery words: truncated, typo (checksum), another key's words, then the right ones.
    phrase_file = tmp_path / "phrase"
    bad_phrases = {
        "24 words, but 23": " ".join(words[:-1]),
        "word 5": " ".join([*words[:4], words[4] + "q", *words[5:]]),
        "do not add up": " ".join([*words[:23], _other_valid_last_word(words)]),
    }
    before = _envelope_rows(hub)
    for message, phrase in bad_phrases.items():
        phrase_file.write_text(phrase + "\n")
        result = phone.cli("device", "enroll", "--recovery-words-file", str(phrase_file), check=False)
        assert result.returncode in (USAGE, AUTH), result.stderr
        assert message in result.stderr
        assert not (phone.home / "keys").exists()
    assert _envelope_rows(hub) == before
    phrase_file.write_text("\n".join(words).upper() + "\n")
    assert (
        "unlocked with the recovery words"
        in phone.cli("device", "enroll", "--recovery-words-file", str(phrase_file)).stdout
    )
    phone.cli("arena", "join", "Vault", str(phone.root))
    phone.cli("sync", "--once", "Vault")
    assert snapshot(phone.root, mtimes=False) == snapshot(laptop.root, mtimes=False)

    # Approval: the code carries no secret; the approving device wraps the keys for the new one.
    tablet = _device(hub, tmp_path, "tablet")
    shown = tablet.cli("device", "enroll", "--wait", "0").stdout
    code = shown.split("enrollment code: ")[1].split()[0]
    assert code.replace("-", "").isalnum()
    assert len(code) == 9
    approved = laptop.cli("device", "approve", code, "--yes")
    assert "approved tablet for Vault" in approved.stdout
    tablet.cli("arena", "join", "Vault", str(tablet.root))
    tablet.cli("sync", "--once", "Vault")
    assert snapshot(tablet.root, mtimes=False) == snapshot(laptop.root, mtimes=False)

    # Revoke the phone: its logins end at once, and the arena moves to epoch 1 without it.
    phone_cache = KeychainCache(phone.home / "keys", _device_keys(phone))
    listed = laptop.cli("device", "list").stdout
    assert phone.device_id in listed
    revoked = laptop.cli("device", "revoke", phone.device_id)
    assert "new key epoch for: Vault" in revoked.stdout
    assert "revoked" in laptop.cli("device", "list").stdout
    denied = phone.cli("sync", "--once", "Vault", check=False)
    assert denied.returncode == AUTH, denied.stderr

    (laptop.root / "AXOLOTLNAME-taxes" / "after-rotation.txt").write_bytes(b"NARWHALSECRET new " * 50)
    laptop.cli("sync", "--once", "Vault")
    for device in (desktop, tablet):
        device.cli("sync", "--once", "Vault")
        assert snapshot(device.root, mtimes=False) == snapshot(laptop.root, mtimes=False)
    _check_hub_learns_nothing(hub, {**files, "x": b"NARWHALSECRET new " * 50})

    # A device enrolled after the rotation (recovery words: the escrow envelope of epoch 1) reads
    # content of both epochs.
    spare = _device(hub, tmp_path, "spare")
    spare.cli("device", "enroll", "--recovery-words-file", str(phrase_file))
    spare.cli("arena", "join", "Vault", str(spare.root))
    spare.cli("sync", "--once", "Vault")
    assert snapshot(spare.root, mtimes=False) == snapshot(laptop.root, mtimes=False)

    # The revoked phone still holds epoch 0 only: the new record does not open for it.
    old_chain = phone_cache.load(_arena_id(laptop))
    assert old_chain is not None
    assert old_chain.epoch == 0
    codec, _sealer = arena_crypto(old_chain)
    newest = _records(hub)[-1][1]
    with pytest.raises(LockedError, match="key epoch 1"):
        codec.decode(newest)


def test_tampering_on_the_hub_is_detected_and_nothing_wrong_is_written(
    hub: HubProcess, tmp_path: Path
) -> None:
    laptop = _device(hub, tmp_path, "laptop")
    _create_vault(laptop, tmp_path)
    laptop.cli("arena", "join", "Vault", str(laptop.root))
    victim = b"chunk victim " * 300
    (laptop.root / "chunk.txt").write_bytes(victim)
    laptop.cli("sync", "--once", "Vault")
    desktop = _device(hub, tmp_path, "desktop")
    desktop.cli("device", "enroll", "--passphrase-file", str(tmp_path / "passphrase"))
    desktop.cli("arena", "join", "Vault", str(desktop.root))

    # A flipped bit in a stored chunk: the file is reported by name and not written.
    (chunk_blob,) = _chunk_blobs(hub)
    original = chunk_blob.read_bytes()
    _flip_last_byte(chunk_blob)
    result = desktop.cli("sync", "--once", "Vault", check=False)
    output = result.stdout + result.stderr
    assert "chunk.txt" in output
    assert "failed authentication" in output
    assert not (desktop.root / "chunk.txt").exists()
    chunk_blob.write_bytes(original)
    desktop.cli("sync", "--once", "Vault")
    assert (desktop.root / "chunk.txt").read_bytes() == victim

    # A damaged record (it holds the name and the manifest): refused, nothing written.
    (laptop.root / "record.txt").write_bytes(b"record victim " * 300)
    laptop.cli("sync", "--once", "Vault")
    seq, record = _records(hub)[-1]
    _set_record(hub, seq, record[:-1] + bytes([record[-1] ^ 1]))
    result = desktop.cli("sync", "--once", "Vault", check=False)
    assert result.returncode != 0
    assert "change record on the hub failed authentication" in result.stderr
    assert not (desktop.root / "record.txt").exists()

    # An authentic record filed under another path's key (a splice): refused too.
    _set_record(hub, seq, _records(hub)[0][1])
    result = desktop.cli("sync", "--once", "Vault", check=False)
    assert result.returncode != 0
    assert "does not match its path key" in result.stderr
    assert not (desktop.root / "record.txt").exists()
    assert (desktop.root / "chunk.txt").read_bytes() == victim

    _set_record(hub, seq, record)
    desktop.cli("sync", "--once", "Vault")
    assert (desktop.root / "record.txt").read_bytes() == b"record victim " * 300


def _set_record(hub: HubProcess, seq: int, record: bytes) -> None:
    with sqlite3.connect(_db_path(hub)) as conn:
        conn.execute("UPDATE changes SET record = ? WHERE seq = ?", (record, seq))


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def _envelope_rows(hub: HubProcess) -> list[tuple[object, ...]]:
    with sqlite3.connect(_db_path(hub)) as conn:
        return list(conn.execute("SELECT arena_id, epoch, recipient FROM arena_envelopes ORDER BY 1, 2, 3"))


def _device_keys(device: Device) -> DeviceKeys:
    keys = DeviceHome(device.home).load_keys()
    assert keys is not None
    return keys


def _arena_id(device: Device) -> str:
    db = device.open_db()
    try:
        return ArenaRegistry(db).by_name("Vault").arena_id
    finally:
        db.close()


def _other_valid_last_word(words: list[str]) -> str:
    """A last word that is a real BIP-39 word but breaks the checksum."""
    bip = Mnemonic("english")
    for candidate in bip.wordlist:
        if candidate != words[-1] and not bip.check(" ".join([*words[:23], candidate])):
            return candidate
    raise AssertionError("no checksum-breaking word found")


def _bucket_objects(server: S3TestServer, bucket: str) -> dict[str, bytes]:
    store = S3Store(
        bucket,
        config={
            "endpoint": server.endpoint,
            "region": TEST_REGION,
            "access_key_id": TEST_ACCESS_KEY,
            "secret_access_key": TEST_SECRET_KEY,
            "virtual_hosted_style_request": False,
        },
        client_options={"allow_http": True},
    )
    found = {}
    for batch in obstore.list(store):
        for meta in batch:
            found[meta["path"]] = bytes(obstore.get(store, meta["path"]).bytes())
    return found


def test_s3_bucket_and_database_hold_no_name_content_or_size(s3_server: S3TestServer, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket()
    with running_hub(tmp_path / "hub", store_url=s3_server.url(bucket)) as hub:
        hub.add_user("alice")
        laptop = _device(hub, tmp_path, "laptop")
        _create_vault(laptop, tmp_path)
        laptop.cli("arena", "join", "Vault", str(laptop.root))
        files = _corpus(laptop.root)
        laptop.cli("sync", "--once", "Vault")
        # Rename to a longer name: the new record's size stays a padding bucket, content is not re-sent.
        objects_before = _bucket_objects(s3_server, bucket)
        (laptop.root / "tiny.txt").rename(laptop.root / "tiny-with-a-much-longer-QUOKKAMARKER-name.txt")
        laptop.cli("sync", "--once", "Vault")
        objects = _bucket_objects(s3_server, bucket)
        assert objects.keys() == objects_before.keys()

    revealing = set()
    for data in files.values():
        revealing |= {len(data), len(zstandard.ZstdCompressor(level=3).compress(data))}
    assert len(objects) == len(files)
    for key, blob in objects.items():
        for marker in MARKERS:
            assert marker not in blob
            assert marker.decode() not in key
        assert len(blob) not in revealing
        assert _is_padded(len(blob)), f"{key} ({len(blob)} bytes) is not padded"
    for path in _stored_files(hub.data_dir):
        data = path.read_bytes()
        for marker in MARKERS:
            assert marker not in data, f"{marker!r} found in {path}"
    records = _records(hub)
    assert len(records) >= len(files) + 1
    for seq, record in records:
        assert _is_padded(len(record)), f"record {seq} ({len(record)} bytes) is not padded"


def test_a_running_daemon_seals_new_content_under_the_epoch_a_revocation_starts(
    hub: HubProcess, tmp_path: Path
) -> None:
    laptop = _device(hub, tmp_path, "laptop")
    desktop = _device(hub, tmp_path, "desktop")
    phone = _device(hub, tmp_path, "phone")
    _create_vault(laptop, tmp_path)
    laptop.cli("arena", "join", "Vault", str(laptop.root))
    (laptop.root / "before.txt").write_bytes(b"written before the revocation")
    laptop.cli("sync", "--once", "Vault")
    secret = tmp_path / "passphrase"
    for device in (desktop, phone):
        device.cli("device", "enroll", "--passphrase-file", str(secret))
        device.cli("arena", "join", "Vault", str(device.root))
        device.cli("sync", "--once", "Vault")
    phone_chain = KeychainCache(phone.home / "keys", _device_keys(phone)).load(_arena_id(laptop))
    assert phone_chain is not None
    assert phone_chain.epoch == 0

    log = (tmp_path / "desktop-daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "shoal", "daemon", "--foreground", "--debounce", "0.05"],
        stdout=log,
        stderr=log,
        env=shoal_env(desktop.env),
    )
    try:
        _wait_for((desktop.home / "daemon.sock").exists, "the desktop's daemon starts", tmp_path)
        assert "new key epoch for: Vault" in laptop.cli("device", "revoke", phone.device_id).stdout
        seq_before = _records(hub)[-1][0]
        (desktop.root / "after.txt").write_bytes(b"written by the running daemon after the revocation")
        _wait_for(lambda: _records(hub)[-1][0] > seq_before, "the daemon pushes after.txt", tmp_path)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        log.close()

    # The phone's epoch-0 keys do not open what the daemon wrote after the revocation.
    codec, _sealer = arena_crypto(phone_chain)
    with pytest.raises(LockedError, match="key epoch 1"):
        codec.decode(_records(hub)[-1][1])
    laptop.cli("sync", "--once", "Vault")
    assert (laptop.root / "after.txt").read_bytes() == b"written by the running daemon after the revocation"


def _wait_for(check: Callable[[], bool], what: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + 30
    while not check():
        if time.monotonic() > deadline:
            log = (tmp_path / "desktop-daemon.log").read_text(errors="replace")[-4000:]
            raise AssertionError(f"gave up waiting: {what}\n{log}")
        time.sleep(0.05)


def test_an_encrypted_arena_joined_on_demand_holds_stubs_and_hydrates(
    hub: HubProcess, tmp_path: Path
) -> None:
    laptop = _device(hub, tmp_path, "laptop")
    desktop = _device(hub, tmp_path, "desktop")
    _create_vault(laptop, tmp_path)
    laptop.cli("arena", "join", "Vault", str(laptop.root))
    files = _corpus(laptop.root)
    laptop.cli("sync", "--once", "Vault")
    right = tmp_path / "right"
    right.write_text(PASSPHRASE + "\n")
    desktop.cli("device", "enroll", "--passphrase-file", str(right))

    desktop.cli("arena", "join", "Vault", str(desktop.root), "--on-demand")
    desktop.cli("sync", "--once", "Vault")
    for rel, data in files.items():
        assert not (desktop.root / rel).exists()
        stub = json.loads((desktop.root / f"{rel}.shoal").read_bytes())
        assert (stub["path"], stub["size"]) == (rel, len(data))

    secret = "photos/NARWHALSECRET.raw"
    desktop.cli("hydrate", str(desktop.root / f"{secret}.shoal"))
    assert (desktop.root / secret).read_bytes() == files[secret]
    assert not (desktop.root / f"{secret}.shoal").exists()

    # An edit made next to stubs goes back through the hub, sealed, and reaches the laptop.
    (desktop.root / secret).write_bytes(b"QUOKKAMARKER edited " + files[secret])
    desktop.cli("sync", "--once", "Vault")
    laptop.cli("sync", "--once", "Vault")
    assert (laptop.root / secret).read_bytes() == b"QUOKKAMARKER edited " + files[secret]
    _check_hub_learns_nothing(hub, {**files, secret: b"QUOKKAMARKER edited " + files[secret]})

    desktop.cli("dehydrate", str(desktop.root / secret))
    assert not (desktop.root / secret).exists()
    # History through the stub's name, with sizes the hub never saw (read from the sealed records).
    listed = desktop.cli("versions", str(desktop.root / f"{secret}.shoal")).stdout.splitlines()
    sizes = [line.split("\t")[3] for line in listed[1:]]
    assert sizes == [str(len(files[secret]) + len(b"QUOKKAMARKER edited ")), str(len(files[secret]))]
    desktop.cli("hydrate", str(desktop.root))
    assert snapshot(desktop.root, mtimes=False) == snapshot(laptop.root, mtimes=False)
