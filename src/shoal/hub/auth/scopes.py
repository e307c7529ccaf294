"""What a token may do. Device logins get every scope but ``admin``; a personal token gets what it asks."""

from __future__ import annotations

from shoal.errors import UsageError

SYNC_READ = "sync:read"
SYNC_WRITE = "sync:write"
ARENAS_ADMIN = "arenas:admin"
FILES_READ = "files:read"
FILES_WRITE = "files:write"
ADMIN = "admin"

ALL_SCOPES = frozenset({SYNC_READ, SYNC_WRITE, ARENAS_ADMIN, FILES_READ, FILES_WRITE, ADMIN})
DEVICE_SCOPES = ALL_SCOPES - {ADMIN}


def parse_scopes(text: str) -> frozenset[str]:
    """``"sync:read,files:read"`` (commas or spaces) into a set, refusing unknown names."""
    wanted = frozenset(s for s in text.replace(",", " ").split() if s)
    unknown = wanted - ALL_SCOPES
    if unknown:
        raise UsageError(
            f"unknown scope {', '.join(sorted(unknown))}",
            hint=f"scopes are {', '.join(sorted(ALL_SCOPES))}",
        )
    if not wanted:
        raise UsageError("no scope given", hint=f"choose from {', '.join(sorted(ALL_SCOPES))}")
    return wanted


def format_scopes(scopes: frozenset[str]) -> str:
    return " ".join(sorted(scopes))
