"""What ``shoal status`` shows per arena, as values that cross the control socket as JSON."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from shoal.errors import FormatError


class ArenaState(enum.StrEnum):
    STARTING = "starting"
    UP_TO_DATE = "up-to-date"
    SYNCING = "syncing"
    OFFLINE = "offline"  # the hub is unreachable; local changes wait and are retried with backoff
    PAUSED = "paused"  # by the user, or for safety (root missing or emptied); ``reason`` says which
    ERROR = "error"  # the last attempt failed for a reason other than the network; retried with backoff
    STOPPED = "stopped"  # no daemon runs; read from the device's state


@dataclass(frozen=True, slots=True)
class ArenaStatus:
    arena_id: str
    name: str
    root: str
    state: ArenaState
    reason: str | None = None  # why paused, offline or failing, in words
    hint: str | None = None
    syncing: int = 0  # paths in the batch being synced now
    pending: int = 0  # local changes not yet committed to the hub
    conflicts: int = 0
    cursor: int = 0
    last_synced: float | None = None  # Unix time of the last successful round
    retry_in: float | None = None  # seconds until the next attempt after a failure
    watch: str = ""  # inotify | polling | stopped | paused for a large pull
    watch_warning: str | None = None
    unsyncable: int = 0  # paths found that cannot be synced (`shoal status --ignored` lists them)

    def summary(self) -> str:
        """One line for people: up to date / syncing N files / offline / paused (why) / N conflicts."""
        if self.state is ArenaState.UP_TO_DATE:
            text = f"up to date; {self.reason}" if self.reason else "up to date"
        elif self.state is ArenaState.SYNCING:
            count = self.syncing or self.pending
            text = f"syncing {count} file{'s' if count != 1 else ''}" if count else "syncing"
        elif self.state is ArenaState.OFFLINE:
            text = "offline"
            if self.pending:
                text += f", {self.pending} local change{'s' if self.pending != 1 else ''} queued"
        elif self.state is ArenaState.PAUSED:
            text = f"paused ({self.reason})" if self.reason else "paused"
        elif self.state is ArenaState.ERROR:
            text = f"error: {self.reason}" if self.reason else "error"
        elif self.state is ArenaState.STOPPED:
            text = "not syncing (no daemon runs)"
            if self.pending:
                text += f", {self.pending} local change{'s' if self.pending != 1 else ''} not yet synced"
            if self.reason:
                text += f"; {self.reason}"
        else:
            text = "starting"
        if self.conflicts:
            text += f", {self.conflicts} conflict{'s' if self.conflicts != 1 else ''}"
        if self.unsyncable:
            text += f", {self.unsyncable} path{'s' if self.unsyncable != 1 else ''} cannot be synced"
        return text

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["summary"] = self.summary()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArenaStatus:
        try:
            fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            fields["state"] = ArenaState(fields["state"])
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"the daemon sent an arena status this shoal cannot read: {exc}") from exc


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    running: bool
    pid: int | None = None
    hub_url: str | None = None
    arenas: list[ArenaStatus] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "pid": self.pid,
            "hub_url": self.hub_url,
            "arenas": [a.to_json() for a in self.arenas],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DaemonStatus:
        try:
            arenas = [ArenaStatus.from_json(a) for a in data.get("arenas", [])]
            return cls(bool(data["running"]), data.get("pid"), data.get("hub_url"), arenas)
        except (KeyError, TypeError, AttributeError) as exc:
            raise FormatError(f"the daemon sent a status this shoal cannot read: {exc}") from exc
