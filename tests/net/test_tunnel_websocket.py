"""End to end WebSocket: public client -> relay -> agent -> local websockets echo server."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request as WsRequest

from tests.helpers import async_wait_for
from tests.net.tunnel_fixtures import Harness, local_websocket, relay_and_agent


@pytest.fixture
def echo() -> Iterator[tuple[int, list[WsRequest]]]:
    with local_websocket() as served:
        yield served


@pytest.fixture
async def harness(tmp_path: Path, echo: tuple[int, list[WsRequest]]) -> AsyncIterator[Harness]:
    async with relay_and_agent(tmp_path) as h:
        await h.start(str(echo[0]), name="ws")
        yield h


def url(harness: Harness, path: str = "/chat") -> str:
    return f"ws://{harness.host('ws')}{path}"


def opts(harness: Harness, **extra: object) -> dict[str, object]:
    # The URL names the tunnel's host; the socket goes to the relay on 127.0.0.1.
    return {"additional_headers": extra.pop("headers", None), "host": "127.0.0.1", "port": harness.relay.port,
            "proxy": None, "compression": None, "max_size": None, **extra}


async def test_text_and_binary_messages_echo_through_the_tunnel(harness: Harness) -> None:
    async with connect(url(harness), **opts(harness)) as ws:  # type: ignore[arg-type]
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        binary = bytes(range(256)) * 10
        await ws.send(binary)
        assert await ws.recv() == binary


async def test_large_binary_message_beyond_the_window_arrives_whole(harness: Harness) -> None:
    big = bytes(range(256)) * (12 * 4096)  # 12 MiB: more than one flow-control window
    async with connect(url(harness), **opts(harness)) as ws:  # type: ignore[arg-type]
        await ws.send(big)
        assert await ws.recv() == big
        assert harness.relay.held_responses == 0  # its fragments, gathered by the relay, were let go


async def test_local_close_code_reaches_the_public_client(harness: Harness) -> None:
    async with connect(url(harness), **opts(harness)) as ws:  # type: ignore[arg-type]
        await ws.send("close:4001")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 4001
    assert ws.close_reason == "bye"


async def test_client_close_code_reaches_the_local_service_and_is_recorded(harness: Harness) -> None:
    async with connect(url(harness), **opts(harness)) as ws:  # type: ignore[arg-type]
        await ws.send("one")
        assert await ws.recv() == "one"
        await ws.close(4100, "done here")
    [ex] = await harness.exchanges(1)
    assert ex.websocket and ex.status == 101
    assert ex.ws_close_code == 4100
    assert [(m.sender, m.opcode, m.payload) for m in ex.ws_messages] == [("client", 1, b"one"), ("server", 1, b"one")]


async def test_subprotocol_and_headers_reach_the_local_service(harness: Harness, echo: tuple[int, list[WsRequest]]) -> None:
    async with connect(url(harness, "/chat?room=1"), subprotocols=["chat.v1"],  # type: ignore[list-item]
                       **opts(harness, headers={"Authorization": "Bearer abc", "Cookie": "k=v"})) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "chat.v1"
        await ws.send("ping")
        assert await ws.recv() == "ping"
    request = echo[1][-1]
    assert request.path == "/chat?room=1"
    assert request.headers["Authorization"] == "Bearer abc"
    assert request.headers["Cookie"] == "k=v"
    assert request.headers["Sec-WebSocket-Protocol"] == "chat.v1"
    assert "Sec-WebSocket-Extensions" not in request.headers  # compression stays off


async def test_local_rejection_status_reaches_the_public_client(harness: Harness) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url(harness, "/reject"), **opts(harness)):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403
    assert info.value.response.headers["X-Why"] == "nope"
    [ex] = await harness.exchanges(1)
    assert ex.status == 403 and ex.response is not None and ex.response.body == b"go away!"


async def test_refused_local_websocket_service_gets_502(tmp_path: Path) -> None:
    from tests.helpers import free_port

    async with relay_and_agent(tmp_path) as h:
        await h.start(str(free_port()), name="ws")
        with pytest.raises(InvalidStatus) as info:
            async with connect(url(h), **opts(h)):  # type: ignore[arg-type]
                pass
    assert info.value.response.status_code == 502
    assert info.value.response.headers["X-Devtunnel-Error"] == "local_refused"


async def test_a_refused_websocket_says_when_the_service_listens_on_ipv6_loopback(tmp_path: Path) -> None:
    # As for HTTP (tests/net/test_agent_command.py): the port answers on [::1] only.
    listener = socket.socket(socket.AF_INET6)
    listener.bind(("::1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        async with relay_and_agent(tmp_path) as h:
            await h.start(str(port), name="ws")
            with pytest.raises(InvalidStatus) as info:
                async with connect(url(h), **opts(h)):  # type: ignore[arg-type]
                    pass
    finally:
        listener.close()
    assert info.value.response.status_code == 502
    body = (info.value.response.body or b"").decode()
    assert f"listens on [::1]:{port}" in body and f"http://[::1]:{port}" in body, body


@pytest.mark.parametrize("mode", ["preserve", "rewrite"])
async def test_handshake_host_is_preserved_or_rewritten(tmp_path: Path, echo: tuple[int, list[WsRequest]], mode: str) -> None:
    async with relay_and_agent(tmp_path) as h:
        await h.start(str(echo[0]), name="hosted", host_header=mode)
        public = h.host("hosted")
        async with connect(f"ws://{public}/x", host="127.0.0.1", port=h.relay.port, proxy=None,
                           additional_headers={"Origin": f"http://{public}"}) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
    request = echo[1][-1]
    assert request.headers.get_all("Host") == [public if mode == "preserve" else f"127.0.0.1:{echo[0]}"]
    assert request.headers["Origin"] == f"http://{public}"


async def test_recorded_websocket_payloads_stop_at_the_body_cap_but_keep_real_sizes(
    tmp_path: Path, echo: tuple[int, list[WsRequest]]
) -> None:
    async with relay_and_agent(tmp_path, body_cap=10) as h:
        await h.start(str(echo[0]), name="capped")
        async with connect(f"ws://{h.host('capped')}/x", host="127.0.0.1", port=h.relay.port, proxy=None) as ws:
            await ws.send("a" * 25)
            assert await ws.recv() == "a" * 25
            await ws.send(b"\x00" * 3)
            assert await ws.recv() == b"\x00" * 3
        [ex] = await h.exchanges(1)
    assert [(m.sender, m.opcode, m.payload, m.size) for m in ex.ws_messages] == [
        ("client", 1, b"a" * 10, 25), ("server", 1, b"", 25), ("client", 2, b"", 3), ("server", 2, b"", 3),
    ]


async def test_a_websocket_message_larger_than_sqlite_takes_is_stored_cut_with_its_session(
    tmp_path: Path, echo: tuple[int, list[WsRequest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A message over SQLite's largest value (1,000,000,000 bytes; lowered here on every connection,
    # rather than sending a gigabyte) failed the session's every write: "dropped exchange ID: string
    # or blob too big", the session and all its messages gone from the list.
    limit = 1_000_000
    connect_sqlite = sqlite3.connect

    def lowered(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect_sqlite(*args, **kwargs)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)
        return conn

    monkeypatch.setattr(sqlite3, "connect", lowered)
    big = bytes(range(256)) * 6000  # 1,536,000 bytes
    async with relay_and_agent(tmp_path) as h:
        await h.start(str(echo[0]), name="ws")
        async with connect(url(h), **opts(h)) as ws:  # type: ignore[arg-type]
            await ws.send("before")
            assert await ws.recv() == "before"
            await ws.send(big)
            assert await ws.recv() == big
            await ws.send("after")
            assert await ws.recv() == "after"
        [ex] = await h.exchanges(1)
    assert ex.ws_close_code == 1000
    kept = [(m.sender, m.opcode, m.payload, m.size) for m in ex.ws_messages]
    assert kept[:2] == [("client", 1, b"before", 6), ("server", 1, b"before", 6)]
    assert kept[-2:] == [("client", 1, b"after", 5), ("server", 1, b"after", 5)]
    for sender, m in zip(["client", "server"], ex.ws_messages[2:4], strict=True):
        assert (m.sender, m.opcode, m.size) == (sender, 2, len(big))
        assert 0 < len(m.payload) < limit and big.startswith(m.payload)  # cut, its real size kept
    assert len(ex.ws_messages) == 6


async def test_a_client_gone_without_a_close_frame_is_recorded_so_and_the_service_gets_1011(tmp_path: Path) -> None:
    closes: list[int | None] = []
    with local_websocket(closes=closes) as (port, _):
        async with relay_and_agent(tmp_path) as h:
            await h.start(str(port), name="ws")
            ws = await connect(url(h), **opts(h))  # type: ignore[arg-type]
            await ws.send("one")
            assert await ws.recv() == "one"
            ws.transport.abort()  # no close frame: the connection is just lost
            [ex] = await h.exchanges(1)
            await async_wait_for(lambda: closes, what="the service's session to end")
    assert closes == [1011]  # (it was told 1000, a normal close, before)
    assert ex.ws_close_code == 1006
    assert ex.error == "client_gone"
    assert ex.error_message == "the public client's connection was lost without a close frame"


async def test_the_record_keeps_the_clients_close_code_when_the_service_answers_with_another(tmp_path: Path) -> None:
    closes: list[int | None] = []
    with local_websocket(closes=closes, answer_close=1000) as (port, _):
        async with relay_and_agent(tmp_path) as h:
            await h.start(str(port), name="ws")
            async with connect(url(h), **opts(h)) as ws:  # type: ignore[arg-type]
                await ws.send("one")
                assert await ws.recv() == "one"
                await ws.close(4100, "done here")
            [ex] = await h.exchanges(1)
    assert closes == [4100]
    assert ex.ws_close_code == 4100  # (1000 before: the service's answer)
    assert ex.error is None


async def test_a_service_gone_without_a_close_frame_is_recorded_as_a_local_error(harness: Harness) -> None:
    async with connect(url(harness), **opts(harness)) as ws:  # type: ignore[arg-type]
        await ws.send("one")
        assert await ws.recv() == "one"
        await ws.send("vanish")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1011
    [ex] = await harness.exchanges(1)
    assert ex.ws_close_code == 1006
    assert ex.error == "local_error"  # (no error before)
    assert ex.error_message == "the local service's connection was lost without a close frame"
