"""A peer's bad input costs the relay's log a line and a summary, never a line each, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import signal

import pytest
import websockets

from devtunnel.relay.server import Relay
from devtunnel.values.relay_url import CONNECT_PATH
from devtunnel.relay.log import PeerErrorLog
from devtunnel.protocol import frames
from devtunnel.protocol.events import GoAway, WebSocketClosed
from tests.helpers import async_wait_for, free_port
from tests.kit.procs import DEVTUNNEL, Proc, procs  # noqa: F401 (a fixture)
from tests.net._relay_agent import AgentRequest, ScriptedAgent, connect_agent, running_relay

BAD = b"\x00BAD\r\n\r\n"
FLOOD = 500


def relay_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Our lines, and uvicorn's warnings (its INFO chatter is silenced by ``devtunnel relay``)."""
    return [r for r in caplog.records if r.name.startswith("devtunnel") or r.levelno >= logging.WARNING]


def summarised(records: list[logging.LogRecord], what: str) -> int:
    """The occurrences the summary lines about ``what`` count."""
    total = 0
    for record in records:
        match = re.fullmatch(rf"(\d+) more {what} in the last [\d.]+ s", record.getMessage())
        if match:
            total += int(match[1])
    return total


async def send_bad(port: int, payload: bytes = BAD) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        async with asyncio.timeout(10):
            return await reader.read(-1)
    finally:
        writer.close()


async def flood(port: int, count: int = FLOOD, payload: bytes = BAD) -> list[bytes]:
    """``count`` bad requests, each on its own connection, 50 at a time."""
    answers: list[bytes] = []
    for start in range(0, count, 50):
        answers += await asyncio.gather(*(send_bad(port, payload) for _ in range(min(50, count - start))))
    return answers


async def test_a_flood_of_invalid_requests_gives_one_line_then_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running_relay(log_interval=0.5) as relay:
        answers = await flood(relay.port)
        assert all(a.startswith(b"HTTP/1.1 400 ") for a in answers)  # every one still answered
        await async_wait_for(
            lambda: summarised(relay_records(caplog), "invalid HTTP requests") == FLOOD - 1,
            what="the summaries to count every request",
        )
    records = relay_records(caplog)
    assert records[0].getMessage() == "invalid HTTP request from 127.0.0.1: Invalid method encountered"
    assert len(records) <= 4, [r.getMessage() for r in records]  # the first, then one per 0.5 s at most
    assert not any(r.exc_info for r in records)


def test_the_relay_command_writes_a_few_lines_for_a_flood_of_invalid_requests(procs: list[Proc]) -> None:
    port = free_port()
    proc = Proc([*DEVTUNNEL, "relay", "--listen", f"127.0.0.1:{port}", "--token", "good"])
    procs.append(proc)
    assert proc.line(lambda l: True).startswith("Relay listening on")
    asyncio.run(flood(port))
    proc.stop(signal.SIGINT)
    err = "\n".join(proc.err)
    lines = err.splitlines()
    assert len(lines) <= 3, lines
    assert lines[0].endswith("devtunnel.relay invalid HTTP request from 127.0.0.1: Invalid method encountered")
    counts = [int(m[1]) for line in lines if (m := re.search(r" (\d+) more invalid HTTP requests in the last 10 s$", line))]
    assert sum(counts) == FLOOD - 1  # written when due, or when the relay stops
    assert "Traceback" not in err


async def test_invalid_utf8_text_before_login_closes_with_1007_and_no_traceback(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(20):
        async with websockets.connect(f"ws://127.0.0.1:{relay.port}{CONNECT_PATH}", ping_interval=None) as ws:
            await ws.send(b"\xff\xfe not UTF-8", text=True)
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1007
        assert closed.value.rcvd.reason == "text message is not valid UTF-8"
    records = relay_records(caplog)
    assert [r.getMessage() for r in records] == [
        "WebSocket peer 127.0.0.1 sent a text message that is not UTF-8; closed with 1007"
    ]
    assert not any(r.exc_info for r in caplog.records)
    assert relay.tunnels == []


async def test_invalid_utf8_from_a_public_websocket_client_reaches_the_agent_as_1007(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    closes: list[WebSocketClosed] = []

    async def accept(request: AgentRequest) -> None:
        request.respond(101, [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")])
        while True:
            event = await request.inbox.get()
            if isinstance(event, WebSocketClosed):
                closes.append(event)
                return

    agent = await connect_agent(relay, handler=accept)
    try:
        async with websockets.connect(
            f"ws://demo.localhost:{relay.port}/chat", host="127.0.0.1", ping_interval=None
        ) as ws:
            await ws.send(b"caf\xc3", text=True)  # cut inside a character
            with pytest.raises(websockets.ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), 10)
        await async_wait_for(lambda: closes, what="the agent to hear of the close")
        assert closes[0].code == 1007
    finally:
        await agent.close()
    assert not any(r.exc_info for r in caplog.records)


async def test_text_split_over_fragments_is_judged_as_a_whole(relay: Relay) -> None:
    received: list[bytes] = []

    async def accept(request: AgentRequest) -> None:
        request.respond(101, [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")])
        while True:
            event = await request.inbox.get()
            if isinstance(event, WebSocketClosed):
                return
            received.append(event.data)

    agent = await connect_agent(relay, handler=accept)
    try:
        async with websockets.connect(
            f"ws://demo.localhost:{relay.port}/chat", host="127.0.0.1", ping_interval=None
        ) as ws:
            await ws.send([b"caf\xc3", b"\xa9"], text=True)  # "café", the é split across two frames
            await async_wait_for(lambda: received, what="the message to reach the agent")
    finally:
        await agent.close()
    assert b"".join(received) == "café".encode()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_peer_error_log_writes_the_first_line_and_a_summary_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="test.peers")
    clock = Clock()
    peers = PeerErrorLog(logging.getLogger("test.peers"), 10.0, clock)
    for n in range(100):
        peers.log("invalid-http", logging.WARNING, "invalid HTTP request from %s", f"10.0.0.{n}")
    peers.log("agent-refused", logging.INFO, "agent %s refused: %s", "10.0.0.1:5", "token refused")
    peers.flush()  # not due yet
    clock.now = 10.0
    peers.flush()
    peers.log("agent-refused", logging.INFO, "agent %s refused: %s", "10.0.0.1:6", "token refused")
    peers.close()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "invalid HTTP request from 10.0.0.0"),
        (logging.INFO, "agent 10.0.0.1:5 refused: token refused"),
        (logging.WARNING, "99 more invalid HTTP requests in the last 10 s"),
        (logging.INFO, "agent 10.0.0.1:6 refused: token refused"),
    ]


def _hello(json_text: bytes) -> bytes:
    return frames.frame(frames.HELLO, 0, 0, json_text)


HOSTILE_HELLOS = [
    _hello(b'{"versions":[1],"token":"\\ud800","name":"demo","info":{}}'),  # a lone surrogate
    _hello(b'{"versions":[1],"token":"s3cret-token","name":"\\udfff","info":{}}'),
    _hello(b'{"versions":[1],"token":"s3cret-token","name":"demo","info":{"max_streams":1e400}}'),
    _hello(b'{"versions":[1],"token":"s3cret-token","name":"demo","info":{"initial_window":-1}}'),
    _hello(b'{"versions":["1"],"token":5,"name":[],"info":[]}'),
    _hello(b'[' * 5000 + b']' * 5000),
    _hello(b'\xff\xfe{"versions":[1]}'),
    frames.frame(frames.HELLO, 0, 7, b"{}"),
    b"\x00",
    b"\xff" * 64,
]


async def test_hostile_handshakes_are_refused_with_one_line_and_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rng = random.Random(10)
    payloads = HOSTILE_HELLOS + [rng.randbytes(rng.randint(1, 200)) for _ in range(20)]
    async with running_relay(head_timeout=0.3) as relay:  # a frame cut short waits for the rest until then
        for payload in payloads:
            async with websockets.connect(f"ws://127.0.0.1:{relay.port}{CONNECT_PATH}", ping_interval=None) as ws:
                await ws.send(payload)
                try:
                    await asyncio.wait_for(ws.recv(), 10)  # a GOAWAY saying why, or the close
                except websockets.ConnectionClosed:
                    pass
        assert relay.tunnels == []
    assert not any(r.exc_info for r in caplog.records), [r.getMessage() for r in caplog.records if r.exc_info]
    refusals = [r.getMessage() for r in relay_records(caplog) if "refused" in r.getMessage()]
    # The one token refused, its own kind; the first of the others, then their summary as the relay stops.
    assert len(refusals) == 3, refusals
    assert refusals[0].endswith("refused: token refused: it is not valid Unicode text")
    assert "refused: tunnel name" in refusals[1]
    assert re.fullmatch(r"\d+ more agents refused in the last 10 s", refusals[2])


async def test_guesses_at_the_token_are_said_however_many_other_agents_are_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Token refusals shared a kind with every other refusal: behind a stream of bad handshakes,
    guesses at the token were only part of "N more agents refused"."""
    caplog.set_level(logging.INFO)
    async with running_relay(head_timeout=0.3) as relay:
        for payload in HOSTILE_HELLOS[2:]:  # bad handshakes with the right token, or none readable
            async with websockets.connect(f"ws://127.0.0.1:{relay.port}{CONNECT_PATH}", ping_interval=None) as ws:
                await ws.send(payload)
                with contextlib.suppress(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
        for guess in ("password", "s3cret", "s3cret-token1"):
            agent = ScriptedAgent(relay.port, token=guess, name="demo")
            assert isinstance(await agent.connect(), GoAway)
            await agent.close()
    refusals = [r.getMessage() for r in relay_records(caplog) if "refused" in r.getMessage()]
    assert any(m.endswith("refused: token refused: it is not one of the relay's tokens") for m in refusals), refusals
    assert summarised(relay_records(caplog), "agents refused for their token") == 2, refusals
    assert not any(r.exc_info for r in caplog.records)


async def test_a_hello_of_64_kib_before_any_token_is_logged_cut_by_the_relay_command(procs: list[Proc]) -> None:
    # A handshake setting that is no number was quoted whole: one line of 60 KB in the relay's log per
    # interval, from anyone who can reach its port, as a GOAWAY's reason was before it was cut.
    port = free_port()
    proc = Proc([*DEVTUNNEL, "relay", "--listen", f"127.0.0.1:{port}", "--token", "the-relay-token"])
    procs.append(proc)
    proc.line(lambda l: l.startswith("Relay listening on"))
    hello = {"versions": [1], "token": "not-yet-checked", "name": None,
             "info": {"max_frame_size": "\x1b[2J" + "A" * 60_000}}
    async with websockets.connect(f"ws://127.0.0.1:{port}{CONNECT_PATH}", max_size=None) as ws:
        await ws.send(frames.frame(frames.HELLO, 0, 0, json.dumps(hello).encode()))
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    line = proc.line(lambda l: "refused: handshake setting max_frame_size=" in l, lines="err")
    assert line.endswith("refused: handshake setting max_frame_size='\\x1b[2J" + "A" * 35
                         + "… (59966 more characters) is not an integer in 1024..16777215"), line[-300:]
    assert proc.stop(signal.SIGINT) == 0
