"""The client's keep-alive check: a connection the server closed is not reused (real sockets, no mocks)."""

from __future__ import annotations

import asyncio
import socket

from shoal.net.http import HubSession
from shoal.net.sockets import socket_readable

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def test_socket_readable_on_data_and_on_eof() -> None:
    left, right = socket.socketpair()
    try:
        assert not socket_readable(left)
        right.sendall(b"x")
        assert socket_readable(left)
        assert left.recv(1) == b"x"
        right.close()
        assert socket_readable(left)  # EOF waiting
    finally:
        left.close()
        right.close()
    assert socket_readable(None)


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def scenario() -> list[int]:
        connections: list[int] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(len(connections) + 1)
            await reader.readuntil(b"\r\n\r\n")
            writer.write(ANSWER)  # keep-alive by default in HTTP/1.1 ...
            await writer.drain()
            writer.close()  # ... but this server hangs up once it answered
            await writer.wait_closed()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with HubSession(f"http://127.0.0.1:{port}") as session:
                for _ in range(3):
                    assert await session.get_json("/health") == {}
                    await asyncio.sleep(0.05)  # the close reaches the client while the connection idles
        finally:
            server.close()
            await server.wait_closed()
        return connections

    assert asyncio.run(scenario()) == [1, 2, 3]
