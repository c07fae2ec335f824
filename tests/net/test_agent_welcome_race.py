"""What a relay sends together with its WELCOME is judged as what follows it.

A request a rule answered at the relay reaches the agent as a notice (a REQUEST with the
``devtunnel-rule`` header) only to be recorded. When one came in the WELCOME's own read (a busy
relay, a tunnel restarting under traffic), the agent dispatched it before it had read from the
WELCOME that the relay enforces rules: the notice went to the local service as a request, the
one the rule had refused (its client got the rule's 403).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.tunnel import AgentTunnel
from devtunnel.capture.model import Exchange
from devtunnel.protocol.events import StreamReset
from devtunnel.protocol.handshake import RULES_ACK
from devtunnel.protocol.relay_side import RelayConnection
from devtunnel.protocol.notice import RULE_HEADER
from devtunnel.rules import parse_rules
from devtunnel.rules.model import WIRE_VERSION
from tests.helpers import async_wait_for
from tests.net.api_fixtures import echo_service
from tests.net.tunnel_fixtures import read_hello


Script = Callable[[ServerConnection, RelayConnection], Awaitable[None]]


@asynccontextmanager
async def guarded_agent(script: Script, records: list[Exchange]) -> AsyncIterator[tuple[Any, list[object]]]:
    """An agent tunnel with a ``deny`` rule on ``/admin`` (to a local echo service), connected to a
    relay that reads its HELLO, then runs ``script``, then reads what the agent sends (resets
    included). Yields the local service's record of requests and those events."""
    events: list[object] = []

    async def relay(ws: ServerConnection) -> None:
        conn = RelayConnection()
        await read_hello(ws, conn)
        await script(ws, conn)
        async for message in ws:
            events.extend(conn.receive_data(message))  # type: ignore[arg-type]
            if conn.wants_to_send:
                await ws.send(conn.data_to_send())

    rules = parse_rules([{"match": "path:/admin", "action": "deny"}], "test")
    with echo_service() as (target, seen):
        async with serve(relay, "127.0.0.1", 0, max_size=None, compression=None) as srv:
            port = srv.sockets[0].getsockname()[1]
            tunnel = AgentTunnel(TunnelConfig(target=target, name="guarded", rules=rules),
                                 relay_url=f"ws://127.0.0.1:{port}/_devtunnel/connect",
                                 sink=lambda ex, final: records.append(ex) if final else None, on_change=lambda info: None)
            await tunnel.start()
            try:
                yield seen, events
            finally:
                await tunnel.stop()


def _welcome(conn: RelayConnection) -> None:
    conn.send_welcome("guarded", "http://guarded.localhost", {RULES_ACK: WIRE_VERSION})


async def test_a_rules_notice_in_the_welcomes_message_is_recorded_and_never_forwarded() -> None:
    records: list[Exchange] = []

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        _welcome(conn)
        sid = conn.open_request(b"POST", b"/admin/delete", b"1.1",
                                ((b"Host", b"guarded.localhost"), (b"Content-Length", b"4"),
                                 (RULE_HEADER, b"tunnel;1;deny;403;10;all")), end_stream=False)
        conn.send_data(sid, b"body", end_stream=True)
        await ws.send(conn.data_to_send())  # one message: the WELCOME and the notice

    async with guarded_agent(script, records) as (seen, _):
        await async_wait_for(lambda: records, what="the notice recorded")
    [record] = records
    assert record.rule is not None and (record.rule.index, record.rule.action) == (1, "deny")
    assert record.response is not None and record.response.status == 403
    assert record.request.body == b"body"
    assert seen.requests == [], "the request the rule refused reached the local service"


@pytest.mark.parametrize(("target", "headers"), [
    (b"/x\r\nX-Evil: 1", ((b"Host", b"guarded.localhost"),)),
    (b"http://127.0.0.1:1/abs", ((b"Host", b"guarded.localhost"),)),
    (b"/ok", ((b"Host", b"guarded.localhost"), (b"Bad Name", b"v\r\nInjected: 1"))),
])
async def test_a_rules_notice_with_a_head_no_request_may_have_is_not_recorded(
        target: bytes, headers: tuple[tuple[bytes, bytes], ...], caplog: pytest.LogCaptureFixture) -> None:
    """A hostile relay's notice was recorded as it came: a raw export of it wrote the injected
    header lines, a curl export sent to the absolute target's host."""
    records: list[Exchange] = []

    async def script(ws: ServerConnection, conn: RelayConnection) -> None:
        _welcome(conn)
        await ws.send(conn.data_to_send())
        for path, fields in ((target, headers), (b"/fine", ((b"Host", b"guarded.localhost"),))):
            conn.open_request(b"GET", path, b"1.1", (*fields, (RULE_HEADER, b"tunnel;1;deny;403;10;all")), end_stream=True)
        await ws.send(conn.data_to_send())

    async with guarded_agent(script, records) as (seen, events):
        def both_reset() -> bool:
            return sum(isinstance(e, StreamReset) for e in events) == 2

        await async_wait_for(lambda: records and records[-1].request.target == b"/fine" and both_reset(),
                             what="the good notice recorded, both reset")
    assert seen.requests == []
    assert records[-1].request.target == b"/fine"
    for record in records:  # not recorded, or recorded without the field no line can hold
        assert b"\r" not in record.request.target and not record.request.target.startswith(b"http")
        assert all(b" " not in n and b"\r" not in v and b"\n" not in v for n, v in record.request.headers.fields)
    if target != b"/ok":
        assert [r.request.target for r in records] == [b"/fine"]
        assert "with a head no request may have" in caplog.text
