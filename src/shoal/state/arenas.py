"""Arena registrations on this device: id, name, local root, hub URL, settings, pause state."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.errors import ConflictError, NotFoundError, UsageError
from shoal.state.db import DeviceDB


@dataclass(frozen=True, slots=True)
class ArenaRecord:
    arena_id: str
    name: str
    root: Path
    hub_url: str
    settings: dict[str, Any] = field(default_factory=dict)
    cursor: int = 0
    paused_reason: str | None = None


# Queries below append constant text only to this (hence the S608 waivers).
_SELECT = "SELECT arena_id, name, root, hub_url, settings, cursor, paused_reason FROM arenas"


def _record(row: tuple[Any, ...]) -> ArenaRecord:
    arena_id, name, root, hub_url, settings, cursor, paused = row
    return ArenaRecord(arena_id, name, Path(root), hub_url, json.loads(settings), cursor, paused)


class ArenaRegistry:
    def __init__(self, db: DeviceDB) -> None:
        self.db = db

    def add(
        self, arena_id: str, name: str, root: Path, hub_url: str, settings: dict[str, Any] | None = None
    ) -> ArenaRecord:
        """Register an arena joined at ``root``; a second arena at the same root or name is refused."""
        record = ArenaRecord(arena_id, name, Path(root).absolute(), hub_url, dict(settings or {}))
        with self.db.transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO arenas (arena_id, name, root, hub_url, settings, created_ns)"
                    " VALUES (?,?,?,?,?,?)",
                    (arena_id, name, str(record.root), hub_url, json.dumps(record.settings), time.time_ns()),
                )
            except sqlite3.IntegrityError as exc:
                raise ConflictError(
                    f"an arena with this id, name or folder is already joined here ({name!r}, {root})",
                    hint="see `shoal arena list`",
                ) from exc
        return record

    def get(self, arena_id: str) -> ArenaRecord:
        with self.db.reading() as conn:
            row = conn.execute(_SELECT + " WHERE arena_id = ?", (arena_id,)).fetchone()
        if row is None:
            raise NotFoundError(
                f"no arena {arena_id!r} is joined on this device", hint="see `shoal arena list`"
            )
        return _record(row)

    def by_name(self, name: str) -> ArenaRecord:
        with self.db.reading() as conn:
            row = conn.execute(_SELECT + " WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(
                f"no arena named {name!r} is joined on this device", hint="see `shoal arena list`"
            )
        return _record(row)

    def choose(self, name: str | None, here: Path | None = None) -> ArenaRecord:
        """The arena a command means: the one ``name`` names (or ids), else the one whose folder
        holds ``here`` (the current folder), else the only one joined."""
        if name is not None:
            try:
                return self.by_name(name)
            except NotFoundError:
                return self.get(name)
        joined = self.all()
        for record in joined:
            if here is not None and here.is_relative_to(record.root):
                return record
        if len(joined) == 1:
            return joined[0]
        if not joined:
            raise NotFoundError("no arena is joined on this device", hint="`shoal arena join NAME PATH`")
        names = ", ".join(r.name for r in joined)
        raise UsageError(
            f"{len(joined)} arenas are joined here ({names}); say which", hint="add the arena's name"
        )

    def all(self) -> list[ArenaRecord]:
        with self.db.reading() as conn:
            rows = conn.execute(_SELECT + " ORDER BY name").fetchall()
        return [_record(row) for row in rows]

    def update_settings(self, arena_id: str, settings: dict[str, Any]) -> None:
        with self.db.transaction() as conn:
            done = conn.execute(
                "UPDATE arenas SET settings = ? WHERE arena_id = ?", (json.dumps(settings), arena_id)
            ).rowcount
        if not done:
            raise NotFoundError(f"no arena {arena_id!r} is joined on this device")

    def set_paused(self, arena_id: str, reason: str | None) -> None:
        """Pause (with the reason shown by ``shoal status``) or resume (None) an arena."""
        with self.db.transaction() as conn:
            done = conn.execute(
                "UPDATE arenas SET paused_reason = ? WHERE arena_id = ?", (reason, arena_id)
            ).rowcount
        if not done:
            raise NotFoundError(f"no arena {arena_id!r} is joined on this device")

    def remove(self, arena_id: str) -> None:
        """Forget an arena and its index on this device (its files on disk are left alone)."""
        with self.db.transaction() as conn:
            done = conn.execute("DELETE FROM arenas WHERE arena_id = ?", (arena_id,)).rowcount
        if not done:
            raise NotFoundError(f"no arena {arena_id!r} is joined on this device")
