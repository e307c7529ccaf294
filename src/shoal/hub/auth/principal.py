"""Who is calling: the result of checking a bearer token."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller acting in one tenant. ``device_id`` is the device's public id, if any."""

    tenant_id: int
    user_id: int
    device_id: str | None
    scopes: frozenset[str]
    token_id: int
    family_id: int = 0
    token_kind: str = "access"  # noqa: S105 - a kind, not a secret

    def has(self, scope: str) -> bool:
        return scope in self.scopes
