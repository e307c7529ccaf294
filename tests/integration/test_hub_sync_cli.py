"""``shoal arena …`` as a user runs it: logged in with a token file, against a real hub process."""

from __future__ import annotations

import json
from pathlib import Path

from shoal.cli.exit_codes import CONFLICT, NOT_FOUND
from shoal.testing.hubproc import HubProcess, run_shoal


def test_arena_commands_create_list_rename_delete_undelete(hub_sqlite: HubProcess, tmp_path: Path) -> None:
    hub = hub_sqlite
    hub.add_user("carol")
    token_file = tmp_path / "token"
    token_file.write_text(hub.create_token("carol") + "\n")
    run_shoal("login", "--hub", hub.base_url, "--token-file", str(token_file), "--name", "laptop")

    created = run_shoal("arena", "create", "Photos", "--conflict-policy", "lww", "--keep-days", "7", "--json")
    arena = json.loads(created.stdout)
    assert (arena["name"], arena["conflict_policy"], arena["keep_days"], arena["encrypted"]) == (
        "Photos",
        "lww",
        7,
        False,
    )
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse battery staple\n")
    run_shoal(
        "arena",
        "create",
        "Vault",
        "--encrypted",
        "--passphrase-file",
        str(passphrase),
        "--kdf-cost",
        "minimum",
    )
    clash = run_shoal("arena", "create", "Photos", check=False)
    assert clash.returncode == CONFLICT
    assert "already exists" in clash.stderr

    listed = run_shoal("arena", "list").stdout
    assert "Photos" in listed
    assert "Vault\t" in listed
    assert "encrypted" in listed

    run_shoal("arena", "rename", "Photos", "Pictures")
    run_shoal("arena", "delete", arena["id"])
    assert "Pictures" not in run_shoal("arena", "list").stdout
    assert "Pictures" in run_shoal("arena", "list", "--deleted").stdout
    back = json.loads(run_shoal("arena", "undelete", "Pictures", "--json").stdout)
    assert back["id"] == arena["id"]
    assert back["deleted_at"] is None

    missing = run_shoal("arena", "delete", "nope", check=False)
    assert missing.returncode == NOT_FOUND
    assert "no arena named 'nope'" in missing.stderr
