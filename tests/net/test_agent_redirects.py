"""The agent follows no redirect: the token goes only to the relay URL given, a WebSocket only to the target.

``websockets`` follows a 3xx answer to an opening handshake to whatever host and port it names.
A relay answering the agent's connection with one got the agent's HELLO, token included, sent
to another address; a local app's redirect (an open redirect reached with a public path) sent
the public client's WebSocket handshake to another port of the machine.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.kit.procs import Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.head_fixtures import recording_service
from tests.net.tunnel_fixtures import raw_server, read_request_head, relay_and_agent

pytestmark = pytest.mark.timeout(90)


def redirecting_to(port: int) -> object:
    """A handler answering every request with 302 to ``ws://127.0.0.1:PORT/elsewhere``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request_head(reader)
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.1:%d/elsewhere\r\nContent-Length: 0\r\n\r\n" % port)
            await writer.drain()
        finally:
            writer.close()

    return handler


def test_a_relay_redirect_is_not_followed_and_the_token_goes_nowhere_else(
    env: dict[str, str], procs: list[Proc]
) -> None:
    with recording_service() as (other_port, other), raw_server(redirecting_to(other_port)) as relay_port:  # type: ignore[arg-type]
        agent = start(procs, env, "http", "9", "--relay", f"ws://127.0.0.1:{relay_port}/_devtunnel/connect",
                      "--token", "SECRET-TOKEN", "--no-tui", "--api-port", "0", "--no-record")
        line = agent.line(lambda l: "redirect" in l, lines="err")
        assert f"the relay at ws://127.0.0.1:{relay_port}/_devtunnel/connect answered with a redirect to" in line, line
        assert f"'ws://127.0.0.1:{other_port}/elsewhere', which devtunnel does not follow" in line, line
        assert agent.stop(signal.SIGINT) == 0
        connections, _, raw = other.snapshot()
    assert connections == 0 and b"SECRET-TOKEN" not in raw
    assert not any("Traceback" in l for l in agent.err)


async def test_a_local_apps_websocket_redirect_goes_to_the_public_client_not_to_another_port(tmp_path: Path) -> None:
    with recording_service() as (other_port, other), raw_server(redirecting_to(other_port)) as app_port:  # type: ignore[arg-type]
        async with relay_and_agent(tmp_path) as h:
            await h.start(str(app_port), name="ws")
            reader, writer = await asyncio.open_connection("127.0.0.1", h.relay.port)
            writer.write(
                b"GET /login?next=/chat HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % h.host("ws").encode()
            )
            head = await asyncio.wait_for(read_request_head(reader), 15)
            writer.close()
        connections = other.snapshot()[0]  # a followed redirect connects before the answer comes
    assert head.startswith(b"HTTP/1.1 302 "), head
    assert b"location: ws://127.0.0.1:%d/elsewhere" % other_port in head.lower(), head
    assert connections == 0
