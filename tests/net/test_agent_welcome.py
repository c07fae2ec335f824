"""The agent takes a relay's WELCOME only for the tunnel that asked: the name it asked for, a URL of it.

A scripted relay (a real websockets server speaking the tunnel protocol with the protocol's own
encoder) answers each HELLO with whatever WELCOME the test chooses. The agent service runs with
its API on loopback, as a user (or the inspector) drives it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from devtunnel.agent.service import AgentService
from devtunnel.commands.output import EscapingFormatter
from devtunnel.api.app import serve_api
from devtunnel.protocol.events import DataReceived, ResponseReceived
from devtunnel.protocol.relay_side import RelayConnection
from tests.helpers import async_wait_for
from tests.net.api_fixtures import Seen, echo_service
from tests.net.tunnel_fixtures import read_hello

pytestmark = pytest.mark.timeout(60)

Answer = Callable[[str], tuple[str, str]]
"""The WELCOME (name, url) the scripted relay gives to a HELLO asking for a name."""


@dataclass
class ScriptedRelay:
    """Welcomes every agent as ``answer`` says, keeps its connection, and opens requests on it."""

    answer: Answer
    port: int = 0
    links: dict[str, tuple[ServerConnection, RelayConnection]] = field(default_factory=dict)
    """The connections by the name their HELLO asked for."""
    _answers: dict[int, asyncio.Future[tuple[int, bytes]]] = field(default_factory=dict)

    async def handler(self, ws: ServerConnection) -> None:
        conn = RelayConnection()
        hello = await read_hello(ws, conn)
        asked = hello.name or "" if hello is not None else ""
        name, url = self.answer(asked)
        conn.send_welcome(name, url, {})
        await ws.send(conn.data_to_send())
        self.links[asked] = (ws, conn)
        status, body = 0, b""
        try:
            async for message in ws:
                for event in conn.receive_data(message):  # type: ignore[arg-type]
                    if isinstance(event, ResponseReceived):
                        status = event.status
                    elif isinstance(event, DataReceived):
                        body += bytes(event.data)
                    if getattr(event, "end_stream", False) and event.stream_id in self._answers:  # type: ignore[attr-defined]
                        self._answers.pop(event.stream_id).set_result((status, body))  # type: ignore[attr-defined]
                        status, body = 0, b""
                if conn.wants_to_send:
                    await ws.send(conn.data_to_send())
        except ConnectionClosed:
            pass

    async def get(self, asked: str, path: bytes) -> tuple[int, bytes]:
        """A public GET on the connection of the agent that asked for ``asked``: (status, body)."""
        ws, conn = self.links[asked]
        sid = conn.open_request(b"GET", path, b"1.1", ((b"Host", f"{asked}.localhost".encode()),), end_stream=True)
        answer = self._answers[sid] = asyncio.get_running_loop().create_future()
        await ws.send(conn.data_to_send())
        return await asyncio.wait_for(answer, 10)


@dataclass
class Running:
    relay: ScriptedRelay
    service: AgentService
    client: httpx.AsyncClient
    target: str
    seen: Seen

    async def start(self, name: str) -> httpx.Response:
        return await self.client.post("/api/tunnels", json={"addr": self.target, "name": name, "proto": "http"})

    async def names(self) -> list[tuple[str, str]]:
        listed = (await self.client.get("/api/tunnels")).json()["tunnels"]
        return [(t["name"], t["public_url"]) for t in listed]


@asynccontextmanager
async def agent_with_relay(answer: Answer) -> AsyncIterator[Running]:
    """An agent service (with its API) whose tunnels all go to a scripted relay answering as ``answer`` says."""
    relay = ScriptedRelay(answer)
    async with serve(relay.handler, "127.0.0.1", 0, compression=None) as server:
        relay.port = server.sockets[0].getsockname()[1]
        service = AgentService(relay=f"ws://127.0.0.1:{relay.port}", token="t")
        with echo_service() as (target, seen):
            api, port = await serve_api(service, port=0)
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
                    yield Running(relay, service, client, target, seen)
            finally:
                await api.stop()
                await asyncio.wait_for(service.stop(), 30)


def _own(name: str) -> tuple[str, str]:
    return name, f"http://{name}.localhost"


async def test_a_relay_answering_with_another_tunnels_name_cannot_hide_that_tunnel() -> None:
    # Before, the agent took the WELCOME's name as its tunnel's new name and the service re-keyed
    # its tunnels by it: the second tunnel, renamed "first", replaced the first one in the
    # service, so the API listed one "first" (the impostor) and the real one ran on unseen,
    # beyond the reach of GET/DELETE /api/tunnels/first.
    async with agent_with_relay(lambda asked: _own("first")) as agent:
        assert (await agent.start("first")).status_code == 201
        resp = await agent.start("second")
        assert resp.status_code == 502, resp.text
        msg = resp.json()["msg"]
        assert "'second'" in msg and "'first'" in msg and "Traceback" not in msg
        assert await agent.names() == [("first", "http://first.localhost")]
        # The first tunnel still carries its traffic.
        status, body = await agent.relay.get("first", b"/still-here")
        assert status == 200 and b"/still-here" in body
        assert agent.seen.requests[-1][1] == "/still-here"
        assert (await agent.client.delete("/api/tunnels/first")).status_code == 204
        assert await agent.names() == []


async def test_a_relay_answering_with_another_tunnels_url_is_refused() -> None:
    async with agent_with_relay(lambda asked: (asked, "http://first.localhost")) as agent:
        assert (await agent.start("first")).status_code == 201
        resp = await agent.start("second")
        assert resp.status_code == 502, resp.text
        assert "'http://first.localhost'" in resp.json()["msg"]
        assert await agent.names() == [("first", "http://first.localhost")]


@pytest.mark.parametrize(
    "url",
    [
        "http://second.localhost/\x1b]0;pwned\x07\x1b[2J",
        "http://second.localhost/\u202etxt.exe",
        "http://second.localhost/a b",
        "javascript://second.localhost/%0aalert(1)",
        "http://user@second.localhost",
        "second.localhost",
        "http://second.localhost:99999",
        "http://second.localhost/" + "x" * 3000,
    ],
)
async def test_a_welcome_url_that_is_not_a_plain_http_url_never_reaches_the_api_or_the_log(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="devtunnel")
    async with agent_with_relay(lambda asked: (asked, url)) as agent:
        resp = await agent.start("second")
        assert resp.status_code == 502, resp.text
        msg = resp.json()["msg"]
        assert "is not a public URL" in msg
        # The log as the agent writes it (its records keep the relay's text as sent: the
        # formatter escapes each line once).
        logged = "\n".join(EscapingFormatter().format(record) for record in caplog.records)
        assert "is not a public URL" in logged
        for bad in ("\x1b", "\x07", "\u202e", "x" * 300):
            assert bad not in msg and bad not in logged
        assert "\\\\" not in msg and "\\\\" not in logged  # escaped once: never \\x1b
        assert await agent.names() == []


async def test_a_welcome_with_a_name_that_is_not_a_name_is_refused_and_escaped() -> None:
    async with agent_with_relay(lambda asked: ("\x1b[2Jfirst", "http://first.localhost")) as agent:
        resp = await agent.start("second")
        assert resp.status_code == 502, resp.text
        msg = resp.json()["msg"]
        assert "\x1b" not in msg and "\\x1b[2Jfirst" in msg
        assert await agent.names() == []


async def test_an_honest_welcome_is_taken() -> None:
    async with agent_with_relay(_own) as agent:
        assert (await agent.start("first")).status_code == 201
        assert (await agent.start("second")).status_code == 201
        assert await agent.names() == [_own("first"), _own("second")]
        await async_wait_for(lambda: "second" in agent.relay.links, what="the second connection")
        status, _ = await agent.relay.get("second", b"/two")
        assert status == 200
