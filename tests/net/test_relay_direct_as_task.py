"""The direct path (``HttpForwarder.direct``, answering from callbacks on a ``DirectCycle``)
against the ASGI task path (uvicorn's ``RequestResponseCycle``), byte for byte: the same
requests and the same agent answers, once through each, must give the client the same bytes.

The task path is forced by a relay whose ``_direct`` takes nothing; each run also checks which
path answered, so a case that silently took the other path fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devtunnel.protocol.events import StreamReset
from tests.helpers import async_wait_for
from tests.net._relay_agent import AgentRequest, connect_agent, echo, running_relay, task_path_spied

HOST = b"Host: demo.localhost\r\n"
# Sent after each case's requests: the connection ends, so the client reads to EOF either way.
LAST = b"GET /last HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"


async def answer(request: AgentRequest) -> None:
    """The agent's answers, by target."""
    target = request.event.target
    if target == b"/empty":
        request.respond(204, [(b"Content-Length", b"0"), (b"X-A", b"1")], end=True)
    elif target == b"/same":
        request.respond(304, [(b"ETag", b'"1"'), (b"Content-Length", b"5")], end=True)
    elif target == b"/stream":  # no length: chunked, each piece as it comes
        request.respond(200, [(b"Content-Type", b"text/plain")])
        await request.send(b"one")
        await request.send(b"")
        await request.send(b"two", end=True)
    elif target == b"/own-chunked":
        request.respond(200, [(b"Transfer-Encoding", b"chunked"), (b"X-B", b"2")])
        await request.send(b"abc", end=True)
    elif target == b"/closing":
        request.respond(200, [(b"Content-Length", b"2"), (b"Connection", b"keep-alive, close")])
        await request.send(b"ok", end=True)
    elif target == b"/big":
        data = b"z" * (3 << 20)
        request.respond(200, [(b"Content-Length", str(len(data)).encode())])
        await request.send(data, end=True)
    else:
        await echo(request)


def _get(target: bytes, extra: bytes = b"", version: bytes = b"1.1", method: bytes = b"GET") -> bytes:
    return method + b" " + target + b" HTTP/" + version + b"\r\n" + HOST + extra + b"\r\n"


CASES: dict[str, list[bytes]] = {
    "keep-alive": [_get(b"/a"), _get(b"/b?x=1")],
    "Connection: close": [_get(b"/a", b"Connection: close\r\n")],
    "HTTP/1.0": [_get(b"/old", version=b"1.0")],
    "HTTP/1.0 keep-alive": [_get(b"/old", b"Connection: keep-alive\r\n", version=b"1.0")],
    "HEAD": [_get(b"/head", method=b"HEAD"), _get(b"/stream", method=b"HEAD")],
    "204 and 304": [_get(b"/empty"), _get(b"/same")],
    "chunked responses": [_get(b"/stream"), _get(b"/own-chunked"), _get(b"/stream", version=b"1.0")],
    "response says close": [_get(b"/closing"), _get(b"/never")],
    "bodies": [b"POST /p HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello",
               b"POST /c HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"],
    "pipelined": [_get(b"/1") + _get(b"/stream") + b"POST /3 HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\n\r\nz"
                  + _get(b"/empty") + _get(b"/4", method=b"HEAD")],
}


@contextlib.asynccontextmanager
async def _relay(direct: bool, handler: Any) -> AsyncIterator[tuple[Any, Any, list[bytes]]]:
    """A relay and an agent answering with ``handler``, and the targets the ASGI path answered;
    through the direct path where it can, or only through tasks."""
    with task_path_spied(direct) as tasks:
        async with running_relay() as relay:
            agent = await connect_agent(relay, handler=handler)
            try:
                yield relay, agent, tasks
            finally:
                await agent.close()


async def _served(
    direct: bool, writes: list[bytes], *, handler: Any = answer, before_reading: Any = None
) -> tuple[bytes, list[bytes]]:
    """What a client writing ``writes`` (then ``LAST``) reads until the relay closes, and the
    targets the ASGI path answered (``_relay``). ``before_reading`` is awaited before the
    client reads anything."""
    async with _relay(direct, handler) as (relay, _, tasks):
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        try:
            for data in writes:
                writer.write(data)
                await writer.drain()
            writer.write(LAST)
            if before_reading is not None:
                await asyncio.wait_for(before_reading(), 20)
            received = await asyncio.wait_for(reader.read(-1), 20)
        finally:
            writer.close()
    return received, tasks


@pytest.mark.parametrize("case", list(CASES))
async def test_the_direct_path_answers_as_the_task_path_byte_for_byte(case: str) -> None:
    direct, direct_tasks = await _served(True, CASES[case])
    task, task_tasks = await _served(False, CASES[case])
    assert direct == task, f"{case}: the direct path's bytes differ from the ASGI path's"
    assert direct.startswith(b"HTTP/1.1 ")
    assert direct_tasks == [], f"{case}: the direct path handed requests to the ASGI path"
    assert task_tasks, f"{case}: no request went through the ASGI path"


async def test_a_client_that_stops_reading_gets_the_same_bytes_from_either_path() -> None:
    # Back-pressure: the client reads nothing until the relay has stopped acknowledging the
    # agent's body (its transport paused writing), then everything.
    size = 8 << 20

    async def run(direct: bool) -> tuple[bytes, list[bytes]]:
        stalled = asyncio.Event()

        async def big(request: AgentRequest) -> None:
            if request.event.target == b"/big":
                await request.send_stalling(bytes(range(256)) * (size // 256), stalled)
            else:
                await answer(request)

        return await _served(direct, [_get(b"/big")], handler=big, before_reading=stalled.wait)

    direct, direct_tasks = await run(True)
    task, task_tasks = await run(False)
    assert len(direct) > size and direct == task
    assert direct_tasks == [] and task_tasks == [b"/big", b"/last"]


async def test_a_client_gone_before_its_response_resets_the_stream_on_either_path() -> None:
    async def run(direct: bool) -> tuple[list[Any], list[bytes]]:
        seen: list[Any] = []

        async def silent(request: AgentRequest) -> None:  # answers nothing; hears what the relay does
            event = await asyncio.wait_for(request.inbox.get(), 10)
            seen.append((type(event), getattr(event, "code", None)))

        async with _relay(direct, silent) as (relay, agent, tasks):
            _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(_get(b"/gone"))
            await async_wait_for(lambda: agent.requests, what="the request to reach the agent")
            writer.close()
            await async_wait_for(lambda: seen, what="the agent to hear the client went")
        return seen, tasks

    direct, direct_tasks = await run(True)
    task, task_tasks = await run(False)
    assert direct == task and direct[0][0] is StreamReset
    assert (direct_tasks, task_tasks) == ([], [b"/gone"])
