"""What a relay says (a GOAWAY's reason, the name it answered with) reaches the agent's log and
API cut to a bound and escaped once.

A scripted relay (a real websockets server speaking the tunnel protocol with the protocol's own
encoder) answers each connection of the agent as the test says: a GOAWAY refusing it, or a
WELCOME, then maybe a GOAWAY. The agent service runs with its API on loopback, as a user (or the
inspector) drives it; the log is read as the agent writes it (``EscapingFormatter``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from devtunnel.agent.service import AgentService
from devtunnel.agent.tunnel import Backoff
from devtunnel.api.app import serve_api
from devtunnel.commands.output import EscapingFormatter
from devtunnel.protocol import frames
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.relay_side import RelayConnection
from tests.helpers import async_wait_for
from tests.net.api_fixtures import echo_service
from tests.net.tunnel_fixtures import read_hello

pytestmark = pytest.mark.timeout(60)

HOSTILE = "\x1b]0;owned\x07\x1b[2J\u202e"
LONG = 100_000  # characters of filler after the start of a long reason
MAX_RELAY_TEXT = 200  # characters of a relay's text the agent keeps (relay_signals.MAX_RELAY_TEXT)


@dataclass(frozen=True)
class Answer:
    """How the relay answers one connection: a WELCOME (for ``name``, or the name asked for), a
    GOAWAY instead (``refuse``), or a WELCOME then a GOAWAY (``then``)."""

    name: str | None = None
    refuse: tuple[ErrorCode, str] | None = None
    then: tuple[ErrorCode, str] | None = None


@dataclass
class ScriptedRelay:
    answers: Callable[[int], Answer]
    connections: int = 0
    open: list[ServerConnection] = field(default_factory=list)

    async def handler(self, ws: ServerConnection) -> None:
        conn = RelayConnection()
        hello = await read_hello(ws, conn)
        asked = hello.name or "" if hello is not None else ""
        answer = self.answers(self.connections)
        self.connections += 1
        if answer.refuse is not None:
            conn.send_goaway(*answer.refuse)
        else:
            conn.send_welcome(answer.name if answer.name is not None else asked, f"http://{asked}.localhost", {})
            if answer.then is not None:
                conn.send_goaway(*answer.then)
        await ws.send(conn.data_to_send())
        if answer.refuse is not None or answer.then is not None:
            await ws.close()  # as a relay does after a GOAWAY
            return
        self.open.append(ws)
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass


@dataclass
class Running:
    relay: ScriptedRelay
    client: httpx.AsyncClient
    target: str

    async def start(self, name: str) -> httpx.Response:
        return await self.client.post("/api/tunnels", json={"addr": self.target, "name": name, "proto": "http"})

    async def tunnel(self, name: str) -> dict[str, Any]:
        return (await self.client.get(f"/api/tunnels/{name}")).json()  # type: ignore[no-any-return]


@asynccontextmanager
async def agent_with_relay(answers: Callable[[int], Answer]) -> AsyncIterator[Running]:
    relay = ScriptedRelay(answers)
    async with serve(relay.handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        service = AgentService(relay=f"ws://127.0.0.1:{port}", token="t", backoff=Backoff(base=0.05))
        with echo_service() as (target, _):
            api, api_port = await serve_api(service, port=0)
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=15) as client:
                    yield Running(relay, client, target)
            finally:
                await api.stop()
                await asyncio.wait_for(service.stop(), 30)


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The agent's log lines as it writes them."""
    formatter = EscapingFormatter()
    return [formatter.format(record) for record in caplog.records]


def long_reason(start: str) -> str:
    return start + HOSTILE + "r" * LONG


def assert_cut_and_escaped_once(text: str, start: str) -> None:
    """``text`` quotes ``long_reason(start)`` cut to its first ``MAX_RELAY_TEXT`` characters with a
    note of how many more there were, each control character escaped once."""
    cut = len(long_reason(start)) - MAX_RELAY_TEXT
    assert f"{start}\\x1b]0;owned\\x07\\x1b[2J\\u202e" in text, text[:400]
    assert f"rrr… ({cut} more characters)" in text, text[-200:]
    assert len(text) < MAX_RELAY_TEXT + 300, len(text)
    assert "\x1b" not in text and "\u202e" not in text and "\\\\" not in text, text[:400]


async def test_a_refusal_with_a_reason_of_100_000_characters_is_cut_in_the_api_and_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devtunnel")
    async with agent_with_relay(lambda n: Answer(refuse=(ErrorCode.AUTH_FAILED, long_reason("bad token ")))) as agent:
        resp = await agent.start("shop")
        assert resp.status_code == 502, resp.text[:400]
        msg = resp.json()["msg"]
        assert msg.startswith("the relay refused the token: ")
        assert_cut_and_escaped_once(msg, "bad token ")
    lines = [line for line in logged(caplog) if "bad token" in line]
    assert lines
    for line in lines:
        assert_cut_and_escaped_once(line, "bad token ")


async def test_goaway_reasons_of_an_online_tunnel_are_cut_in_its_error_and_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    """The relay goes away (the agent reconnects: its error says why meanwhile), then ends the
    tunnel for good (its error says why): each reason 100,000 characters long."""
    caplog.set_level(logging.INFO, logger="devtunnel")
    second = asyncio.Event()

    def answers(n: int) -> Answer:
        if n == 0:
            return Answer(then=(ErrorCode.SHUTTING_DOWN, long_reason("brb ")))
        second.set()
        return Answer()  # online again, until the test says

    async with agent_with_relay(answers) as agent:
        assert (await agent.start("shop")).status_code == 201
        # The reconnection waits at most 50 ms (Backoff): wait for the error it had meanwhile in the log.
        await async_wait_for(lambda: second.is_set() and agent.relay.open, what="the second connection")
        going = [line for line in logged(caplog) if "brb " in line]
        assert any("the relay is going away: brb " in line for line in going), going
        for line in going:
            assert_cut_and_escaped_once(line, "brb ")
        # Now a GOAWAY after which reconnecting cannot help: the tunnel fails with the reason.
        ws = agent.relay.open[-1]
        await ws.send(_goaway_frame(ErrorCode.NO_ERROR, long_reason("closing ")))
        await ws.close()  # as a relay does after a GOAWAY
        await _until(agent, "shop", "failed")
        error = (await agent.tunnel("shop"))["error"]
        assert error.startswith("the relay ended the tunnel: closing ")
        assert_cut_and_escaped_once(error, "closing ")
    for line in [line for line in logged(caplog) if "closing " in line]:
        assert_cut_and_escaped_once(line, "closing ")


def _goaway_frame(code: ErrorCode, reason: str) -> bytes:
    return frames.frame(frames.GOAWAY, 0, 0, frames.U32.pack(code) + reason.encode())


async def _until(agent: Running, name: str, state: str) -> None:
    async def poll() -> None:
        while (await agent.tunnel(name))["state"] != state:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), 15)


async def test_a_welcome_refused_on_reconnecting_is_escaped_once_in_the_tunnels_error(
        caplog: pytest.LogCaptureFixture) -> None:
    """The tunnel was online; on reconnecting the relay answers with another name holding
    control characters: the tunnel fails, and its error quotes that name escaped once."""
    caplog.set_level(logging.INFO, logger="devtunnel")
    async with agent_with_relay(lambda n: Answer() if n == 0 else Answer(name="x" + HOSTILE)) as agent:
        assert (await agent.start("shop")).status_code == 201
        await async_wait_for(lambda: agent.relay.open, what="the tunnel online")
        await agent.relay.open[0].close()
        await _until(agent, "shop", "failed")
        error = (await agent.tunnel("shop"))["error"]
        assert "with the name 'x\\x1b]0;owned\\x07\\x1b[2J\\u202e'" in error, error
        assert "\x1b" not in error and "\\\\" not in error, error
    lines = [line for line in logged(caplog) if "with the name" in line]
    assert lines
    for line in lines:
        assert "with the name 'x\\x1b]0;owned\\x07\\x1b[2J\\u202e'" in line, line
        assert "\x1b" not in line and "\\\\" not in line, line


async def test_a_relay_going_away_is_one_log_line_until_the_tunnel_is_back(caplog: pytest.LogCaptureFixture) -> None:
    # The GOAWAY was logged as it came and again as the reason the tunnel went offline: two
    # lines saying the same for one outage (README: one line when offline, one when back).
    caplog.set_level(logging.INFO, logger="devtunnel")
    second = asyncio.Event()

    def answers(n: int) -> Answer:
        if n == 0:
            return Answer(then=(ErrorCode.SHUTTING_DOWN, "restarting"))
        second.set()
        return Answer()

    async with agent_with_relay(answers) as agent:
        assert (await agent.start("shop")).status_code == 201
        await async_wait_for(lambda: second.is_set() and agent.relay.open, what="the second connection")
        await _until(agent, "shop", "online")
        await async_wait_for(lambda: any("back online" in line for line in logged(caplog)), what="the back-online line")
    going = [line for line in logged(caplog) if "restarting" in line]
    assert len(going) == 1, going
    assert "the relay is going away: restarting; reconnecting in" in going[0]
