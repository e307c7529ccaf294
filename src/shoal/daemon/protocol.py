"""The control protocol on the daemon's Unix socket, version 1: one JSON object per line.

    request   {"v": 1, "cmd": "status" | "pause" | "resume" | "sync-now" | "leave", "arena": NAME?}
    answer    {"v": 1, "ok": true, "result": {...}}
              {"v": 1, "ok": false, "error": {"code", "title", "message", "hint"}}

A connection may carry several requests, answered in order. A request with
another ``v`` is refused with ``unsupported_version``, so an old CLI and a
newer daemon (or the reverse) say so instead of guessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shoal import errors
from shoal.errors import FormatError, ShoalError, UnsupportedVersionError

PROTOCOL_VERSION = 1
MAX_LINE = 1024 * 1024
COMMANDS = ("status", "pause", "resume", "sync-now", "leave")


@dataclass(frozen=True, slots=True)
class Request:
    cmd: str
    arena: str | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {"v": PROTOCOL_VERSION, "cmd": self.cmd}
        if self.arena is not None:
            body["arena"] = self.arena
        return json.dumps(body).encode() + b"\n"


def decode_request(line: bytes) -> Request:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise FormatError(f"the control request is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise FormatError("the control request must be a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise UnsupportedVersionError(
            f"control protocol version {data.get('v')!r} is not {PROTOCOL_VERSION}",
            hint="the daemon and this command come from different shoal versions; restart the daemon",
        )
    cmd = data.get("cmd")
    if cmd not in COMMANDS:
        raise FormatError(f"unknown control command {cmd!r}; known: {', '.join(COMMANDS)}")
    arena = data.get("arena")
    if arena is not None and not isinstance(arena, str):
        raise FormatError("the control request's arena must be a string")
    return Request(cmd, arena)


def encode_ok(result: dict[str, Any]) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, "ok": True, "result": result}).encode() + b"\n"


def encode_error(exc: ShoalError) -> bytes:
    body = {
        "code": type(exc).__name__,
        "title": exc.title,
        "message": exc.message,
        "hint": exc.hint,
    }
    return json.dumps({"v": PROTOCOL_VERSION, "ok": False, "error": body}).encode() + b"\n"


def decode_answer(line: bytes) -> dict[str, Any]:
    """The result of an answer line; an error answer is raised as the ShoalError it names."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise FormatError(f"the daemon's answer is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("v") != PROTOCOL_VERSION:
        raise UnsupportedVersionError(
            "the daemon speaks another control protocol version",
            hint="restart the daemon so it runs the same shoal as this command",
        )
    if data.get("ok"):
        result = data.get("result")
        return result if isinstance(result, dict) else {}
    error = data.get("error") or {}
    cls = getattr(errors, str(error.get("code")), None)
    if not (isinstance(cls, type) and issubclass(cls, ShoalError)):
        cls = ShoalError
    raise cls(str(error.get("message") or "the daemon refused the request"), hint=error.get("hint"))
