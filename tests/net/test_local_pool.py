"""LocalPool and LocalConnection against a real TCP server on loopback."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from devtunnel.agent.local_pool import LocalPool
from devtunnel.values.target import parse_target
from tests.helpers import async_wait_for


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
async def echo_port() -> int:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield port
    server.close()
    await server.wait_closed()


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK") or not os.path.isdir("/proc/self/fd"), reason="Linux only")
async def test_connections_acknowledge_at_once_and_leave_no_descriptor_behind(echo_port: int) -> None:
    pool = LocalPool(parse_target(str(echo_port)))
    before = _open_fds()
    socks = []
    for i in range(20):
        conn = await pool.connect()
        assert conn._own_sock is not None  # the socket TCP_QUICKACK is set on
        socks.append(conn._own_sock)
        conn.write(b"ping %d" % i)
        assert await conn.read(5.0) == b"ping %d" % i  # data_received set TCP_QUICKACK without error
        assert conn._quickack is not None
        if i % 2:
            conn.abort()
        else:
            pool.give_back(conn)
    pool.close()
    # Every connection, and the duplicate descriptor each kept for its socket options, is closed.
    await async_wait_for(lambda: all(s.fileno() == -1 for s in socks), what="the duplicate descriptors to close")
    assert _open_fds() <= before
