"""The control socket: a JSON-lines server for the daemon and a small blocking client for the CLI."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from shoal.daemon.paths import bind_unix, connect_unix
from shoal.daemon.protocol import MAX_LINE, Request, decode_answer, decode_request, encode_error, encode_ok
from shoal.errors import FormatError, NetworkError, ShoalError

Handler = Callable[[Request], Awaitable[dict[str, Any]]]


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        sock = bind_unix(self.path)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(encode_error(FormatError("the control request is longer than 1 MiB")))
                    break
                if not line:
                    break
                try:
                    answer = encode_ok(await self._handler(decode_request(line)))
                except ShoalError as exc:
                    answer = encode_error(exc)
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


def call(path: Path, request: Request, *, timeout: float = 10.0) -> dict[str, Any]:
    """Send one request and return the result (blocking); NetworkError when no daemon answers."""
    with connect_unix(path, timeout) as sock:
        try:
            sock.sendall(request.encode())
            buffer = bytearray()
            while not buffer.endswith(b"\n"):
                piece = sock.recv(65536)
                if not piece:
                    break
                buffer += piece
                if len(buffer) > MAX_LINE * 16:
                    raise FormatError("the daemon's answer is too long")
        except OSError as exc:
            raise NetworkError(f"the daemon on {path} did not answer: {exc}") from exc
    if not buffer:
        raise NetworkError(f"the daemon on {path} closed the connection without answering")
    return decode_answer(bytes(buffer))
