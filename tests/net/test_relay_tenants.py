"""Agents of different tokens on one relay (several developers' tunnels): what one tunnel's
answers can do to another's users.

Real relay on loopback, scripted agents with two tokens (``tests/net/_relay_agent.py``).
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import websockets

from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import GoAway
from devtunnel.relay.server import Relay
from tests.helpers import async_wait_for
from tests.net._relay_agent import TOKEN, AgentRequest, ScriptedAgent, connect_agent, running_relay
from tests.net.test_relay_logs import summarised

OTHER = "other-token"
DOMAIN = "t.localhost"


async def _exchange(relay: Relay, request: bytes) -> bytes:
    """Send ``request`` on a new connection; everything the relay answers until it closes
    (or the end of a WebSocket handshake's head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(request)
    await writer.drain()
    data = b""
    try:
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                data += chunk
                if data.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in data:
                    break
    finally:
        writer.close()
    return data


def _cookies(response: bytes) -> list[bytes]:
    head = response.split(b"\r\n\r\n", 1)[0]
    return [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:] if line.lower().startswith(b"set-cookie:")]


_SET = [
    (b"Set-Cookie", b"wide=1; Path=/; Domain=t.localhost; HttpOnly"),
    (b"Set-Cookie", b"dotted=1; domain=.T.LOCALHOST."),
    (b"Set-Cookie", b"theirs=1; Domain=alice.t.localhost"),
    (b"Set-Cookie", b"own=1; Domain=bob.t.localhost; Secure"),
    (b"Set-Cookie", b"under=1; Domain=.x.bob.t.localhost"),
    (b"Set-Cookie", b"plain=1; Path=/"),
]
# What a browser may keep of each: no cookie reaches another tunnel's host (alice) or the
# relay's domain (where every tunnel would get it).
_KEPT = [
    b"wide=1; Path=/; HttpOnly",
    b"dotted=1",
    b"theirs=1",
    b"own=1; Domain=bob.t.localhost; Secure",
    b"under=1; Domain=.x.bob.t.localhost",
    b"plain=1; Path=/",
]


async def _set_cookies(request: AgentRequest) -> None:
    await request.body()
    if request.event.websocket:
        request.respond(101, [*_SET, (b"Sec-WebSocket-Protocol", b"chat")])
        return
    request.respond(200, [*_SET, (b"Content-Length", b"2")])
    await request.send(b"ok", end=True)


async def test_a_tunnel_cannot_set_cookies_for_the_relay_domain_or_another_tunnel() -> None:
    async with running_relay(domain=DOMAIN) as relay:
        alice = await connect_agent(relay, "alice", token=TOKEN)
        bob = await connect_agent(relay, "bob", token=OTHER, handler=_set_cookies)
        try:
            host = f"Host: bob.{DOMAIN}:{relay.port}\r\n".encode()
            # A GET (answered from callbacks) and a body still to come (answered in a task).
            got = await _exchange(relay, b"GET / HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n")
            assert got.startswith(b"HTTP/1.1 200"), got
            assert _cookies(got) == _KEPT
            upload = b"POST / HTTP/1.1\r\n" + host + b"Expect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
            got = await _exchange(relay, upload + b"hi")
            assert b"HTTP/1.1 200" in got, got
            assert _cookies(got.split(b"HTTP/1.1 200", 1)[1]) == _KEPT
            handshake = (
                b"GET /ws HTTP/1.1\r\n" + host + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Protocol: chat\r\n\r\n"
            )
            got = await _exchange(relay, handshake)
            assert got.startswith(b"HTTP/1.1 101"), got
            assert _cookies(got) == _KEPT
        finally:
            await bob.close()
            await alice.close()


async def _exchange_after_continue(relay: Relay, head: bytes, body: bytes) -> bytes:
    """Send ``head``, then ``body`` once the relay answered 100 Continue; what follows it until the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        writer.write(head)
        async with asyncio.timeout(5):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 ")
            writer.write(body)
            return await reader.read()
    finally:
        writer.close()


async def _invalid_header(request: AgentRequest) -> None:
    await request.body()
    request.respond(200, [(b"X-Bad", b"a\r\nInjected: 1"), (b"Content-Length", b"2")])
    await request.send(b"ok", end=True)


async def test_an_agent_answering_every_request_with_invalid_http_costs_the_log_a_line_and_a_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running_relay(domain=DOMAIN, log_interval=0.5) as relay:
        agent = await connect_agent(relay, "bob", token=OTHER, handler=_invalid_header)
        try:
            host = f"Host: bob.{DOMAIN}\r\n".encode()
            for n in range(40):  # the agent's own clients: it chooses how many
                if n % 2:  # a body sent after the head: the response is written by a task, not from callbacks
                    got = await _exchange_after_continue(relay, b"POST / HTTP/1.1\r\n" + host + b"Content-Length: 2\r\n"
                                                         b"Expect: 100-continue\r\nConnection: close\r\n\r\n", b"hi")
                else:
                    got = await _exchange(relay, b"GET / HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n")
                assert b"Injected" not in got.split(b"\r\n\r\n", 1)[0]
                # A 502 that says why, not an empty reply (uvicorn refused the head once begun).
                assert got.startswith(b"HTTP/1.1 502 "), got
                assert got.endswith(b"tunnel bob answered with an invalid header: the value of header 'X-Bad' holds "
                                    b"the control byte 0x0d at 1\n"), got
            await async_wait_for(lambda: summarised(caplog.records, "agent responses that were not valid HTTP") == 39,
                                 what="the summary of the invalid responses")
        finally:
            await agent.close()
    lines = [r for r in caplog.records if "is not valid HTTP" in r.getMessage()]
    assert len(lines) == 1


async def test_an_agent_leaving_with_a_huge_reason_costs_the_log_one_short_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running_relay(domain=DOMAIN) as relay:
        agent = await connect_agent(relay, "bob", token=OTHER)
        agent.conn.send_goaway(ErrorCode.NO_ERROR, "bye\n" + "x" * 900_000)
        agent.flush()
        [link] = relay._tunnels["bob"].members
        await async_wait_for(lambda: link.draining, what="the relay to read the GOAWAY")
        await agent.close()
        await async_wait_for(lambda: relay.tunnels == [], what="the agent to leave")
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tunnel bob offline")]
    assert line.endswith("it left: bye\n" + "x" * 196 + "… (899804 more characters))")


_LENGTHS = {
    b"/two": [(b"Content-Length", b"2"), (b"Content-Length", b"5")],
    b"/plus": [(b"Content-Length", b"+2")],
    b"/word": [(b"Content-Length", b"two")],
}


async def _bad_lengths(request: AgentRequest) -> None:
    await request.body()
    request.respond(200, _LENGTHS[request.event.target])
    await request.send(b"ok", end=True)


@pytest.mark.parametrize(("path", "says"), [
    (b"/two", b"two different Content-Length values"),
    (b"/plus", b"an invalid Content-Length"),
    (b"/word", b"an invalid Content-Length"),
])
async def test_a_response_length_a_client_or_proxy_could_read_otherwise_gets_502(path: bytes, says: bytes) -> None:
    # A proxy in front of the relay keeps connections to it for every tunnel: a response whose
    # length it reads differently would shift the next answer on that connection, another tunnel's.
    async with running_relay(domain=DOMAIN) as relay:
        agent = await connect_agent(relay, "bob", token=OTHER, handler=_bad_lengths)
        try:
            host = f"Host: bob.{DOMAIN}\r\n".encode()
            for request in (
                b"GET " + path + b" HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n",
                b"POST " + path + b" HTTP/1.1\r\n" + host + b"Expect: 100-continue\r\nContent-Length: 2\r\n"
                b"Connection: close\r\n\r\nhi",
                # a WebSocket handshake the service refuses with such an answer
                b"GET " + path + b" HTTP/1.1\r\n" + host + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            ):
                got = await _exchange(relay, request)
                assert b"HTTP/1.1 502" in got, got
                assert got.endswith(b"tunnel bob answered with " + says + b"\n")
                assert b"content-length: 5\r\n" not in got and b": +2" not in got
        finally:
            await agent.close()


@pytest.mark.parametrize("reason", ["x" * 300, "é" * 200, "€" * 41 + "x"], ids=["ascii", "two-byte", "three-byte"])
async def test_an_agent_closing_a_websocket_with_a_reason_too_long_for_a_close_frame_still_closes_it(
    reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A WS_CLOSE may carry a megabyte of reason, a close frame 123 bytes. Before, the relay
    # handed the agent's whole reason to the public WebSocket, whose close then failed: its
    # client lost the connection without a close frame (1006) instead of the agent's 1000.
    async def close_at_once(request: AgentRequest) -> None:
        request.respond(101)
        request.agent.conn.send_ws_close(request.id, 1000, reason)
        request.agent.flush()

    async with running_relay() as relay:
        agent = await connect_agent(relay, handler=close_at_once)
        try:
            async with websockets.connect(f"ws://demo.localhost:{relay.port}/live", host="127.0.0.1") as ws:
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1000, (ws.close_code, ws.close_reason)
            shown = ws.close_reason or ""
            # The longest start of the agent's reason a close frame holds, never half a character.
            assert reason.startswith(shown) and len(shown.encode()) <= 123 < len(shown.encode()) + len(
                reason[len(shown)].encode())
        finally:
            await agent.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_an_agent_asking_for_a_huge_name_that_is_not_one_costs_the_log_one_short_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The refusal quotes the name asked for, which a HELLO (read before any token is checked)
    # may make 64 KiB long: before, the relay logged all of it, one line of 40,000 characters.
    caplog.set_level(logging.INFO)
    async with running_relay(domain=DOMAIN) as relay:
        agent = ScriptedAgent(relay.port, token=OTHER, name="x!" * 20_000)
        refusal = await agent.connect()
        await agent.close()
    assert isinstance(refusal, GoAway) and refusal.code == ErrorCode.NAME_TAKEN
    [line] = [r.getMessage() for r in caplog.records if " refused: " in r.getMessage()]
    assert "tunnel name 'x!x!" in line and line.endswith("more characters)") and len(line) < 300, line[:400]


@pytest.mark.parametrize("status", [101, 403])
async def test_an_agent_answering_a_websocket_handshake_with_an_invalid_header_gets_its_client_a_502(
    caplog: pytest.LogCaptureFixture, status: int
) -> None:
    # The relay's WebSocket accept (or its refusal passed on) raised building the head: the
    # client got uvicorn's 500 and the relay's log a traceback.
    async def answer(request: AgentRequest) -> None:
        request.respond(status, [(b"X-Bad", b"a\r\nInjected: 1"), (b"X-Ok", b"1")], end=status != 101)
        if status == 101:
            await asyncio.sleep(5)  # (the relay gives up on the stream first)

    caplog.set_level(logging.INFO)
    async with running_relay(domain=DOMAIN) as relay:
        agent = await connect_agent(relay, "bob", token=OTHER, handler=answer)
        try:
            handshake = (
                f"GET /ws HTTP/1.1\r\nHost: bob.{DOMAIN}\r\n".encode() + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            got = await _exchange(relay, handshake)
            assert got.startswith(b"HTTP/1.1 502 "), got
            assert b"Injected" not in got.split(b"\r\n\r\n", 1)[0]
            name = b"x-bad" if status == 101 else b"X-Bad"  # (the accept's headers go lower-case)
            assert got.endswith(b"tunnel bob answered with an invalid header: the value of header '" + name
                                + b"' holds the control byte 0x0d at 1\n"), got
        finally:
            await agent.close()
    assert not [r for r in caplog.records if r.exc_info], "a traceback in the relay's log"
