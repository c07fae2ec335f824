"""The agent's session against a scripted relay (a real websockets server speaking the protocol).

For what a relay may send that ours does not: a stream reset in the very message that opened
it, before the agent's task for it ever ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from devtunnel.capture.model import Exchange
from devtunnel.errors import NameInUseError
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.info import TunnelInfo, TunnelState
from devtunnel.agent.tunnel import AgentTunnel, Backoff
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.relay_side import RelayConnection
from devtunnel.protocol import events as protocol_events
from devtunnel.protocol.events import DataReceived, Hello, ResponseReceived
from tests.helpers import async_wait_for
from tests.net.tunnel_fixtures import read_hello


async def _accept(ws: ServerConnection) -> RelayConnection:
    """The relay's side of the handshake: read up to the agent's HELLO and queue the WELCOME."""
    conn = RelayConnection()
    await read_hello(ws, conn)
    conn.send_welcome("scripted", "http://scripted.localhost", {})
    return conn


def _tunnel(local: asyncio.Server, relay: Server, **options: Any) -> AgentTunnel:
    """An agent tunnel from the scripted relay to the local service."""
    return AgentTunnel(
        TunnelConfig(target=str(local.sockets[0].getsockname()[1]), name="scripted"),
        relay_url=f"ws://127.0.0.1:{relay.sockets[0].getsockname()[1]}/_devtunnel/connect",
        **{"sink": None, "on_change": lambda info: None, **options},
    )


async def _local_service(seen: list[bytes]) -> asyncio.Server:
    """Answers every request with 200 ``ok`` on a kept-alive connection."""

    async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                seen.append(head.split(b" ", 2)[1])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve_one, "127.0.0.1", 0)


def test_the_events_the_session_dispatches_by_exact_type_have_no_subclasses() -> None:
    # Session._dispatch tells the frequent events apart by ``type(event) is ...``: a subclass
    # would fall through to the isinstance checks below and be lost.
    exact = (protocol_events.RequestReceived, protocol_events.DataReceived,
             protocol_events.WebSocketMessageReceived, protocol_events.WebSocketClosed)
    for cls in exact:
        assert cls.__subclasses__() == [], cls


async def test_a_stream_reset_in_the_message_that_opened_it_costs_that_stream_only() -> None:
    seen: list[bytes] = []
    answers: dict[int, tuple[int, bytes]] = {}
    relay_done = asyncio.Event()

    async def relay(ws: ServerConnection) -> None:
        conn = await _accept(ws)
        await ws.send(conn.data_to_send())
        statuses: dict[int, int] = {}
        bodies: dict[int, bytes] = {}

        def request(path: bytes) -> int:
            return conn.open_request(b"GET", path, b"1.1", ((b"Host", b"scripted.localhost"),), end_stream=True)

        async def exchange(sid: int) -> None:
            async for message in ws:
                for event in conn.receive_data(message):  # type: ignore[arg-type]
                    if isinstance(event, ResponseReceived):
                        statuses[event.stream_id] = event.status
                    elif isinstance(event, DataReceived):
                        bodies[event.stream_id] = bodies.get(event.stream_id, b"") + bytes(event.data)
                        if event.end_stream:
                            answers[event.stream_id] = (statuses[event.stream_id], bodies[event.stream_id])
                await ws.send(conn.data_to_send())
                if sid in answers:
                    return

        warm = request(b"/warm")  # leaves a kept-alive local connection in the agent's pool
        await ws.send(conn.data_to_send())
        await exchange(warm)
        doomed = request(b"/doomed")  # no body, a kept-alive connection: answered without a task
        upload = conn.open_request(b"POST", b"/upload", b"1.1", ((b"Host", b"scripted.localhost"),), end_stream=False)
        conn.reset_stream(doomed, ErrorCode.CANCEL, "the public client went away")
        conn.reset_stream(upload, ErrorCode.CANCEL, "the public client went away")
        await ws.send(conn.data_to_send())  # opened and reset in one message
        after = request(b"/after")
        await ws.send(conn.data_to_send())
        await exchange(after)
        relay_done.set()
        await ws.wait_closed()

    records: list[Exchange] = []
    local = await _local_service(seen)
    async with serve(relay, "127.0.0.1", 0) as server:
        tunnel = _tunnel(local, server, sink=lambda ex, final: records.append(ex) if final else None)
        await tunnel.start()
        try:
            await asyncio.wait_for(relay_done.wait(), 10)
            await async_wait_for(lambda: len(records) == 4, what="the four exchanges to be recorded")
            session = tunnel._session
            assert session is not None and session.streams == {} and session.tasks == {} and session.quick == {}
        finally:
            await tunnel.stop()
    local.close()
    await local.wait_closed()

    assert sorted(answers.values()) == [(200, b"ok"), (200, b"ok")]  # /warm and /after answered
    by_target = {ex.request.target: ex for ex in records}
    doomed_ex = by_target[b"/doomed"]
    assert doomed_ex.error == "client_gone" and doomed_ex.response is None
    assert doomed_ex.error_message == "the public client went away before the response ended"
    upload_ex = by_target[b"/upload"]  # its task was cancelled before it first ran
    assert upload_ex.error == "client_gone" and upload_ex.response is None
    assert "before the request was forwarded" in upload_ex.error_message
    assert by_target[b"/after"].status == 200 and by_target[b"/after"].error is None
    assert b"/after" in seen


async def test_a_defect_while_handling_a_relay_message_ends_that_connection_and_the_tunnel_reconnects(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The defect is made in what the session calls on the tunnel (an interpreted class): a
    # patched method of the session itself would not be seen where it runs compiled
    # (devtunnel/native.py).
    original = AgentTunnel.pool_changed
    broken = [True]

    def pool_changed(self: AgentTunnel, members: int) -> None:
        if broken[0]:
            broken[0] = False
            raise RuntimeError("a defect")
        original(self, members)

    monkeypatch.setattr(AgentTunnel, "pool_changed", pool_changed)
    connections: list[int] = []
    answered = asyncio.Event()
    seen: list[bytes] = []

    async def relay(ws: ServerConnection) -> None:
        connections.append(1)
        conn = await _accept(ws)
        conn.send_pool(2)  # the same message: the request after it is lost with the connection
        conn.open_request(b"GET", b"/try", b"1.1", ((b"Host", b"scripted.localhost"),), end_stream=True)
        await ws.send(conn.data_to_send())
        async for message in ws:
            for event in conn.receive_data(message):  # type: ignore[arg-type]
                if isinstance(event, ResponseReceived) and event.status == 200:
                    answered.set()
            if conn.wants_to_send:
                await ws.send(conn.data_to_send())

    local = await _local_service(seen)
    async with serve(relay, "127.0.0.1", 0) as server:
        tunnel = _tunnel(local, server, backoff=Backoff(base=0.01))
        await tunnel.start()
        try:
            await asyncio.wait_for(answered.wait(), 10)  # on the second connection
        finally:
            await tunnel.stop()
    local.close()
    await local.wait_closed()
    assert len(connections) == 2 and seen == [b"/try"]
    assert "failed to handle a message from the relay" in caplog.text


def _fragmenting_relay(answered: asyncio.Event, ended: asyncio.Event) -> Callable[[ServerConnection], Awaitable[None]]:
    """Sends a request as one message in three frames; after the answer, a text message."""

    async def relay(ws: ServerConnection) -> None:
        conn = await _accept(ws)
        await ws.send(conn.data_to_send())
        conn.open_request(b"GET", b"/frag", b"1.1", ((b"Host", b"scripted.localhost"),), end_stream=True)
        data = conn.data_to_send()
        await ws.send([data[:5], data[5:11], data[11:]])  # the agent must join the frames
        async for message in ws:
            if isinstance(message, bytes) and any(
                isinstance(e, ResponseReceived) and e.status == 200 for e in conn.receive_data(message)
            ):
                answered.set()
                await ws.send("not the tunnel protocol")
                await ws.wait_closed()
                ended.set()
                return

    return relay


async def test_a_message_in_several_websocket_frames_is_joined_and_text_ends_the_connection() -> None:
    seen: list[bytes] = []
    answered, ended = asyncio.Event(), asyncio.Event()
    infos: list[object] = []
    local = await _local_service(seen)
    relay = _fragmenting_relay(answered, ended)
    async with serve(relay, "127.0.0.1", 0) as server:
        tunnel = _tunnel(local, server, on_change=infos.append, backoff=Backoff(base=5.0))
        await tunnel.start()
        try:
            await asyncio.wait_for(answered.wait(), 10)
            await asyncio.wait_for(ended.wait(), 10)  # the agent closed the connection
            await async_wait_for(lambda: tunnel.info().error is not None, what="the tunnel to note why")
            assert "sent text where the tunnel protocol was expected" in (tunnel.info().error or "")
        finally:
            await tunnel.stop()
    local.close()
    await local.wait_closed()
    assert seen == [b"/frag"]


def _name_relay(hellos: list[Hello], refuse_from: int) -> Callable[[ServerConnection], Awaitable[None]]:
    """Welcomes each connection and closes it at once, until connection ``refuse_from``
    (0-based); from then on refuses the name with NAME_IN_USE."""

    async def relay(ws: ServerConnection) -> None:
        conn = RelayConnection()
        async for message in ws:
            hello = next((e for e in conn.receive_data(message) if isinstance(e, Hello)), None)  # type: ignore[arg-type]
            if hello is None:
                continue
            hellos.append(hello)
            if len(hellos) > refuse_from:
                conn.send_goaway(ErrorCode.NAME_IN_USE, "tunnel name 'scripted' is in use by another agent that is online")
            else:
                conn.send_welcome("scripted", "http://scripted.localhost", {})
            await ws.send(conn.data_to_send())
            await ws.close()
            return

    return relay


async def test_every_hello_of_a_tunnel_carries_its_own_instance_id() -> None:
    hellos: list[Hello] = []
    local = await _local_service([])
    async with serve(_name_relay(hellos, refuse_from=99), "127.0.0.1", 0) as server:
        first = _tunnel(local, server, backoff=Backoff(base=0.01, cap=0.05))
        other = _tunnel(local, server)
        try:
            await first.start()
            await async_wait_for(lambda: len(hellos) >= 3, what="the tunnel to reconnect twice")
            await first.stop()
            before = len(hellos)
            await other.start()
            await async_wait_for(lambda: len(hellos) > before, what="the other tunnel's HELLO")
        finally:
            await first.stop()
            await other.stop()
    local.close()
    await local.wait_closed()
    assert len(first.instance) >= 16 and first.instance != other.instance
    assert [h.instance for h in hellos[:before]] == [first.instance] * before
    assert hellos[before].instance == other.instance


async def test_a_name_in_use_on_the_first_connection_fails_saying_how_to_pick_another() -> None:
    hellos: list[Hello] = []
    local = await _local_service([])
    async with serve(_name_relay(hellos, refuse_from=0), "127.0.0.1", 0) as server:
        tunnel = _tunnel(local, server)
        try:
            with pytest.raises(NameInUseError) as caught:
                await tunnel.start()
        finally:
            await tunnel.stop()
    local.close()
    await local.wait_closed()
    message = str(caught.value)
    assert "'scripted' is in use by another agent that is online" in message
    assert "--name" in message and "random" in message
    assert len(hellos) == 1  # not retried: the name was never ours


async def test_a_tunnel_that_was_online_keeps_retrying_while_its_name_is_in_use() -> None:
    hellos: list[Hello] = []
    infos: list[TunnelInfo] = []
    local = await _local_service([])
    async with serve(_name_relay(hellos, refuse_from=1), "127.0.0.1", 0) as server:
        tunnel = _tunnel(local, server, on_change=infos.append, backoff=Backoff(base=0.01, cap=0.05))
        await tunnel.start()
        try:
            await async_wait_for(lambda: len(hellos) >= 4, what="retries after name in use")
            assert tunnel.state is TunnelState.RECONNECTING
            assert "in use" in (tunnel.info().error or "")
        finally:
            await tunnel.stop()
    local.close()
    await local.wait_closed()
    assert TunnelState.FAILED not in {i.state for i in infos}


async def test_a_tunnel_displaced_by_the_relay_reconnects_instead_of_stopping() -> None:
    connections: list[int] = []

    async def relay(ws: ServerConnection) -> None:
        connections.append(1)
        conn = await _accept(ws)
        if len(connections) == 1:  # found stale: the relay gave the name to another connection
            conn.send_goaway(ErrorCode.NAME_IN_USE, "it did not answer within 2 s; another agent took the name")
        await ws.send(conn.data_to_send())
        await ws.close()

    infos: list[TunnelInfo] = []
    local = await _local_service([])
    async with serve(relay, "127.0.0.1", 0) as server:
        tunnel = _tunnel(local, server, on_change=infos.append, backoff=Backoff(base=0.01, cap=0.05))
        await tunnel.start()
        try:
            await async_wait_for(lambda: len(connections) >= 2, what="a reconnection")
        finally:
            await tunnel.stop()
    local.close()
    await local.wait_closed()
    states = [i.state for i in infos]
    assert TunnelState.FAILED not in states and TunnelState.RECONNECTING in states
    errors = [i.error for i in infos if i.state is TunnelState.RECONNECTING]
    assert any("the relay gave the name to another connection" in (e or "") for e in errors)
