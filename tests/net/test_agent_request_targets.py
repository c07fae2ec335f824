"""The agent checks every request a relay sends it, whatever the relay checked.

A scripted relay (a real websockets server speaking the tunnel protocol) sends targets that
are not a path, heads that would add lines to the request, and two Host headers, as HTTP
requests and as WebSocket handshakes. The agent answers each with 400 itself: its local
service and a second service on another port get nothing, and nothing is logged as an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from devtunnel.capture.model import Exchange
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.tunnel import AgentTunnel
from devtunnel.protocol.relay_side import RelayConnection
from devtunnel.protocol.events import DataReceived, ResponseReceived
from tests.helpers import async_wait_for
from tests.net.head_fixtures import recording_service
from tests.net.tunnel_fixtures import read_hello

HOST = (b"Host", b"victim.localhost")


async def run_agent_against(relay: Any, victim_port: int, records: list[Exchange], relay_done: asyncio.Event,
                            expected: Callable[[], int]) -> None:
    """Serve ``relay`` (a scripted relay's handler) and run a real tunnel named victim to
    ``victim_port`` against it until the relay is done and ``expected()`` exchanges are recorded."""
    async with serve(relay, "127.0.0.1", 0) as server:
        tunnel = AgentTunnel(
            TunnelConfig(target=str(victim_port), name="victim"),
            relay_url=f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/_devtunnel/connect",
            sink=lambda ex, final: records.append(ex) if final else None,
            on_change=lambda info: None,
        )
        await tunnel.start()
        try:
            await asyncio.wait_for(relay_done.wait(), 20)
            await async_wait_for(lambda: len(records) == expected(), what="every exchange to be recorded")
        finally:
            await tunnel.stop()


def refused_heads(port: int) -> list[tuple[bytes, bytes, tuple[tuple[bytes, bytes], ...], bool]]:
    """(method, target, headers, websocket) of requests the agent must refuse."""
    hostile = [
        b"*@127.0.0.1:%d/internal-admin?secret=1" % port,
        b"@127.0.0.1:%d/x" % port,
        b"http://127.0.0.1:%d/x" % port,
        b"127.0.0.1:%d" % port,
        b"*",
        b"",
        b"/x HTTP/1.1\r\nHost: admin.internal\r\n\r\nGET /smuggled",
        b"/a b",
    ]
    heads = [(b"GET", target, (HOST,), websocket) for target in hostile for websocket in (False, True)]
    heads += [
        (b"CONNECT", b"127.0.0.1:%d" % port, (HOST,), False),
        (b"GET /x HTTP/1.1\r\nX:", b"/x", (HOST,), False),
        (b"GET", b"/x", (HOST, (b"Host", b"admin.internal")), False),
        (b"GET", b"/x", (HOST, (b"Host", b"admin.internal")), True),
        (b"GET", b"/ws", (HOST, (b"Content-Length", b"5")), True),
    ]
    return heads


async def test_a_relay_cannot_make_the_agent_send_anything_but_a_path(caplog: pytest.LogCaptureFixture) -> None:
    answers: dict[int, tuple[int, dict[bytes, bytes], bytes]] = {}
    opened: dict[int, tuple[bytes, bytes, bool]] = {}
    allowed: list[int] = []
    relay_done = asyncio.Event()
    records: list[Exchange] = []

    with recording_service(b"victim") as (victim_port, victim), recording_service(b"SECRET") as (second_port, second):

        async def relay(ws: ServerConnection) -> None:
            conn = RelayConnection()
            await read_hello(ws, conn)
            conn.send_welcome("victim", "http://victim.localhost", {})
            heads: dict[int, tuple[int, dict[bytes, bytes]]] = {}
            bodies: dict[int, bytes] = {}

            def request(method: bytes, target: bytes, headers: Any, websocket: bool = False, body: bytes = b"") -> int:
                sid = conn.open_request(method, target, b"1.1", headers, end_stream=not body,
                                        websocket=websocket)
                if body:
                    conn.send_data(sid, body, end_stream=True)
                opened[sid] = (method, target, websocket)
                return sid

            async def until_answered(sids: list[int]) -> None:
                await ws.send(conn.data_to_send())
                async for message in ws:
                    for event in conn.receive_data(message):  # type: ignore[arg-type]
                        if isinstance(event, ResponseReceived):
                            heads[event.stream_id] = (event.status, {n.lower(): v for n, v in event.headers})
                            if event.end_stream:
                                answers[event.stream_id] = (*heads[event.stream_id], b"")
                        elif isinstance(event, DataReceived):
                            bodies[event.stream_id] = bodies.get(event.stream_id, b"") + bytes(event.data)
                            if event.end_stream:
                                answers[event.stream_id] = (*heads[event.stream_id], bodies[event.stream_id])
                    if conn.wants_to_send:
                        await ws.send(conn.data_to_send())
                    if all(sid in answers for sid in sids):
                        return

            # A kept-alive local connection first: a request is written to it at once on arrival.
            await until_answered([request(b"GET", b"/warm", (HOST,))])
            refused = [request(m, t, h, w) for m, t, h, w in refused_heads(second_port)]
            refused.append(request(b"POST", b"*@127.0.0.1:%d/hook" % second_port, (HOST, (b"Content-Length", b"5")),
                                   body=b"hello"))
            allowed[:] = [
                request(b"GET", b"//127.0.0.1:%d/x" % second_port, (HOST,)),
                request(b"GET", b"/ws?room=1", (HOST, (b"X-Evil", b"a\r\nInjected: 1"), (b"X:Y", b"v")),
                        websocket=True),
                request(b"OPTIONS", b"*", (HOST,)),
                request(b"GET", b"/after", (HOST,)),
            ]
            await until_answered(refused + allowed)
            relay_done.set()
            await ws.wait_closed()

        await run_agent_against(relay, victim_port, records, relay_done, lambda: len(opened))

        _, seen, raw = victim.snapshot()
        assert second.snapshot()[0] == 0, "the second service got a connection"

    for sid, (method, target, websocket) in opened.items():
        status, headers, body = answers[sid]
        if sid in allowed or target == b"/warm":
            assert status == 200 and body == b"victim", (target, status, body)
            continue
        assert status == 400, (method, target, websocket, status)
        assert headers[b"x-devtunnel-error"] == b"bad_request"
        assert body.startswith(b"devtunnel refused to forward this request: "), body
    # Only paths reach the local service, on its own address; WebSocket handshakes included.
    assert [(r.method, r.target) for r in seen] == [
        (b"GET", b"/warm"),
        (b"GET", b"//127.0.0.1:%d/x" % second_port),
        (b"GET", b"/ws?room=1"),
        (b"OPTIONS", b"*"),
        (b"GET", b"/after"),
    ]
    handshake = seen[2]
    assert handshake.header(b"authorization") == [] and handshake.header(b"host") == [b"victim.localhost"]
    assert b"admin.internal" not in raw and b"smuggled" not in raw and b"SECRET" not in raw
    assert b"Injected" not in raw and b"X:Y" not in raw  # a header cannot add lines to the handshake either
    refused_records = [ex for ex in records if ex.error == "bad_request"]
    assert len(refused_records) == len(opened) - 5
    assert all(ex.status == 400 for ex in refused_records)
    assert not [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]


async def test_a_relay_cannot_smuggle_a_request_in_a_body_nor_end_one_short(caplog: pytest.LogCaptureFixture) -> None:
    # The agent writes a body with a Content-Length as it comes. Before, bytes past that length
    # reached the local service as a request of their own (never checked: any target or Host),
    # and a body that ended short (or never came) left the service waiting for bytes it then took
    # from the next request on the kept-alive connection, or answered 504 after a minute.
    smuggled = b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: admin.internal\r\n\r\n"
    cases = [
        (b"/long", ((b"Content-Length", b"5"),), b"hello" + smuggled, b"more body than its Content-Length of 5 bytes"),
        (b"/zero", ((b"Content-Length", b"0"),), smuggled, b"more body than its Content-Length of 0 bytes"),
        (b"/short", ((b"Content-Length", b"40"),), b"hi", b"ended the body after 2 of the 40 bytes"),
        (b"/none", ((b"Content-Length", b"40"),), b"", b"declares a body of 40 bytes (Content-Length) but carries none"),
        (b"/two", ((b"Content-Length", b"2"), (b"content-length", b"2")), b"hi", b"more than one Content-Length"),
        (b"/list", ((b"Content-Length", b"2, 2"),), b"hi", b"the Content-Length '2, 2' is not a number of bytes"),
        (b"/sign", ((b"Content-Length", b"+2"),), b"hi", b"the Content-Length '+2' is not a number of bytes"),
    ]
    answers: dict[int, tuple[int, bytes]] = {}
    records: list[Exchange] = []
    relay_done = asyncio.Event()

    with recording_service(b"victim") as (victim_port, victim):

        async def relay(ws: ServerConnection) -> None:
            conn = RelayConnection()
            await read_hello(ws, conn)
            conn.send_welcome("victim", "http://victim.localhost", {})
            statuses: dict[int, int] = {}
            bodies: dict[int, bytes] = {}

            async def exchange(target: bytes, fields: Any, body: bytes, *, ended: bool = False) -> int:
                sid = conn.open_request(b"POST", target, b"1.1", (HOST, *fields), end_stream=ended)
                if not ended:
                    conn.send_data(sid, body, end_stream=True)
                await ws.send(conn.data_to_send())
                async for message in ws:
                    for event in conn.receive_data(message):  # type: ignore[arg-type]
                        if isinstance(event, ResponseReceived):
                            statuses[event.stream_id] = event.status
                        elif isinstance(event, DataReceived):
                            bodies[event.stream_id] = bodies.get(event.stream_id, b"") + bytes(event.data)
                        if getattr(event, "end_stream", False):
                            answers[event.stream_id] = (statuses[event.stream_id], bodies.get(event.stream_id, b""))  # type: ignore[attr-defined]
                    if conn.wants_to_send:
                        await ws.send(conn.data_to_send())
                    if sid in answers:
                        return sid
                return sid

            # Each after a request that left a kept-alive local connection: the next is written to it.
            for target, fields, body, _ in cases:
                await exchange(b"/warm", ((b"Content-Length", b"2"),), b"ok")
                await exchange(target, fields, body, ended=not body)
            await exchange(b"/after", ((b"Content-Length", b"5"),), b"hello")
            relay_done.set()
            await ws.wait_closed()

        # (a request left waiting took 60 s)
        await run_agent_against(relay, victim_port, records, relay_done, lambda: len(answers))
        _, seen, raw = victim.snapshot()

    refused = [answers[sid] for sid in sorted(answers)][1:-1:2]
    for (target, _, _, why), (status, body) in zip(cases, refused, strict=True):
        if target == b"/zero" and status == 200:
            continue  # its head is a whole request: the service may answer it before the body comes
        assert status == 400 and why in body, (target, status, body)
    # Only whole requests the agent wrote reach the service: none of the smuggled bytes.
    assert [r.target for r in seen if r.target not in (b"/warm", b"/zero")] == [b"/after"]
    assert seen[-1].body == b"hello"
    assert b"admin.internal" not in raw and b"127.0.0.1:1" not in raw
    assert all(ex.error == "bad_request" for ex in records if ex.status == 400)
    assert not [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]
