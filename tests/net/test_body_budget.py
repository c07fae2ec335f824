"""The agent's body budget (``recording.BodyBudget``): the bytes its captures in flight keep,
together, stay within it, and every way an exchange ends gives all it took back, once.

Each test drives the path through a real relay and agent on loopback, then checks the budget
is back to 0: a capture that never gave back would leave the agent keeping less of every body
that follows, for good.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from devtunnel.agent.recording import DEFAULT_BODY_BUDGET, BodyBudget
from devtunnel.api.app import serve_api
from devtunnel.export.agent_json import capture_json
from devtunnel.capture.model import BUDGET_CUT_WHY
from devtunnel.tui.render import describe_body
from devtunnel.tui.screens.detail import WsMessageLines
from tests.helpers import async_wait_for, free_port
from tests.net.tunnel_fixtures import (
    Harness,
    LocalState,
    StreamTasks,
    _pattern,
    local_http,
    local_websocket,
    raw_server,
    read_request_head,
    relay_and_agent,
)


@pytest.fixture
def local() -> Iterator[tuple[int, LocalState]]:
    with local_http() as served:
        yield served
        served[1].release_sse.set()  # a handler still waiting goes on, and ends
        served[1].release_slow.set()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with relay_and_agent(tmp_path) as h:
        yield h


def _budget(harness: Harness) -> BodyBudget:
    return harness.service.budget


def _client(harness: Harness, name: str = "app") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=harness.base_url, headers={"Host": harness.host(name)}, timeout=20,
                             trust_env=False)


async def _open(harness: Harness, request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.relay.port)
    writer.write(request)
    await writer.drain()
    return reader, writer


def _get(harness: Harness, target: str, name: str = "app") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {harness.host(name)}\r\n\r\n".encode()


async def _kept_some(harness: Harness) -> None:
    await async_wait_for(lambda: _budget(harness).used > 0, what="the capture to keep body bytes")


async def _given_back(harness: Harness, count: int) -> list[object]:
    """Wait for ``count`` records, then the budget must be whole again."""
    done = await harness.exchanges(count)
    assert _budget(harness).used == 0
    return done


# -- the default and the bound ---------------------------------------------------------------------

async def test_the_budget_defaults_to_64_mib_and_is_never_below_one_body_cap(tmp_path: Path) -> None:
    async with relay_and_agent(tmp_path) as h:
        assert (h.service.budget.limit, h.service.budget.used) == (DEFAULT_BODY_BUDGET, 0) == (64 << 20, 0)
    async with relay_and_agent(tmp_path / "big", body_cap=100 << 20, body_budget=1 << 20) as h:
        assert h.service.budget.limit == 100 << 20


async def test_stalled_downloads_keep_no_more_than_the_budget_and_still_arrive_whole(tmp_path: Path) -> None:
    # Three downloads whose clients read nothing: each stalls once what the relay holds for it
    # (its 4 MiB window) and the sockets are full, its capture keeping what came so far. Without
    # the budget, each kept a body cap; with it, the captures in flight together keep at most
    # the budget (here one body cap).
    cap = 2 << 20
    size = 24 << 20
    with local_http() as (port, _state):
        async with relay_and_agent(tmp_path, body_cap=cap, body_budget=cap) as h:
            await h.start(str(port))
            budget = _budget(h)
            peak = 0

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, budget.used)
                    await asyncio.sleep(0.001)

            watcher = asyncio.create_task(watch())
            streams = [await _open(h, _get(h, f"/big?n={size}")) for _ in range(3)]
            await async_wait_for(lambda: budget.used >= budget.limit, what="the stalled captures to fill the budget")
            assert h.service._tunnels["app"].requests == 3
            await asyncio.sleep(0.2)  # the stalled streams go no further: nothing more is kept
            assert budget.used == budget.limit

            async def read_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")
                body = await reader.readexactly(size)
                writer.close()
                return body

            bodies = await asyncio.gather(*(read_all(r, w) for r, w in streams))
            done = await _given_back(h, 3)
            watcher.cancel()
    whole = hashlib.sha256(_pattern(size)).hexdigest()
    assert [hashlib.sha256(b).hexdigest() for b in bodies] == [whole] * 3  # the traffic is untouched
    assert peak <= cap
    responses = [ex.response for ex in done]  # type: ignore[attr-defined]
    assert all(r.body_truncated and r.body_size == size for r in responses)
    # Read back from the store: a body the budget cut says so; one the body cap cut does not.
    assert [r.body_budget_cut for r in responses] == [len(r.body) < cap for r in responses]
    cut = next(ex for ex in done if ex.response.body_budget_cut)  # type: ignore[attr-defined]
    assert describe_body(cut.response).label.endswith(f"of 24 MiB: {BUDGET_CUT_WHY}")  # type: ignore[attr-defined]
    shown = subprocess.run([sys.executable, "-m", "devtunnel", "show", cut.id, "--db", str(tmp_path / "captures.db")],  # type: ignore[attr-defined]
                           capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert f"recorded; {BUDGET_CUT_WHY})" in shown.stdout, shown.stderr
    # And the agent API's JSON (what GET /api/requests/http/ID answers): why each was cut.
    assert [capture_json(ex)["response"]["body_budget_cut"] for ex in done] == [len(r.body) < cap for r in responses]
    assert [capture_json(ex)["request"]["body_budget_cut"] for ex in done] == [False] * 3


async def test_the_api_status_says_how_many_body_bytes_the_requests_in_flight_keep(tmp_path: Path) -> None:
    # A user whose records come out cut asks the agent how much of --body-budget is in use: a
    # stalled download keeps its body cap while it stalls, and gives it back when it ends.
    cap = 1 << 20
    size = 24 << 20
    with local_http() as (port, _state):
        async with relay_and_agent(tmp_path, body_cap=cap, body_budget=3 * cap) as h:
            api, api_port = await serve_api(h.service, port=0)
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=10,
                                             trust_env=False) as client:

                    async def in_use() -> int:
                        answer = await client.get("/api/status")
                        assert answer.status_code == 200
                        budget = answer.json()["body_budget"]
                        assert budget["limit"] == 3 * cap
                        return int(budget["used"])

                    assert await in_use() == 0
                    await h.start(str(port))
                    reader, writer = await _open(h, _get(h, f"/big?n={size}"))  # read nothing: it stalls
                    await async_wait_for(lambda: _budget(h).used == cap, what="the stalled download to keep a body cap")
                    assert await in_use() == cap
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200")
                    await reader.readexactly(size)
                    writer.close()
                    await _given_back(h, 1)
                    assert await in_use() == 0
            finally:
                await api.stop()


async def test_a_body_cut_by_the_budget_keeps_no_hole_when_bytes_are_given_back() -> None:
    from devtunnel.agent.recording import ExchangeCapture
    from devtunnel.protocol.events import RequestReceived

    budget = BodyBudget(10)
    head = RequestReceived(1, b"POST", b"/", b"1.1", (), end_stream=False)
    first = ExchangeCapture(lambda ex, final: None, "demo", head, "http://127.0.0.1:1", 8, budget=budget)
    second = ExchangeCapture(lambda ex, final: None, "demo", head, "http://127.0.0.1:1", 8, budget=budget)
    first.request_body(b"aaaaaa")
    second.request_body(b"bbbbbb")  # 4 bytes of budget left: cut there
    assert budget.used == 10 and second.request_body_full
    done = first.finish()
    assert (done.request.body, budget.used) == (b"aaaaaa", 4)
    second.request_body(b"cc")  # room in the budget again: the record would have a hole in it
    record = second.finish()
    assert (record.request.body, record.request.body_size, record.request.body_truncated) == (b"bbbb", 8, True)
    assert record.request.body_budget_cut and not done.request.body_budget_cut
    assert budget.used == 0
    second.finish()
    first.finish()
    assert budget.used == 0  # given back once


# -- every way an exchange ends gives its bytes back ------------------------------------------------

async def test_answered_requests_give_back_what_they_kept(harness: Harness, local: tuple[int, LocalState]) -> None:
    await harness.start(str(local[0]))
    upload = _pattern(300_000)
    async with _client(harness) as client:
        assert (await client.post("/echo", content=upload)).json()["size"] == len(upload)
        assert len((await client.get("/big?n=500000")).content) == 500_000
        assert (await client.get("/chunked")).status_code == 200
    await _given_back(harness, 3)


async def test_quick_answers_give_back_what_they_kept(harness: Harness, local: tuple[int, LocalState]) -> None:
    await harness.start(str(local[0]))
    async with _client(harness) as client:
        assert (await client.get("/head")).status_code == 200  # opens the kept-alive local connection
        with StreamTasks() as tasks:
            for _ in range(5):
                response = await client.get("/head")
                assert response.content == b"x" * 1234
        assert tasks.count < 5  # answered quick, without a task
    await _given_back(harness, 6)


async def test_a_quick_answer_cut_by_the_relay_gives_back_what_it_kept(
    harness: Harness, local: tuple[int, LocalState]
) -> None:
    port, state = local
    await harness.start(str(port))
    async with _client(harness) as client:
        assert (await client.get("/head")).status_code == 200
    reader, writer = await _open(harness, _get(harness, "/sse"))  # a GET with no body: quick, then streaming
    await reader.readuntil(b"data: first\n\n")
    await _kept_some(harness)
    writer.close()
    done = await _given_back(harness, 2)
    assert done[1].error == "client_gone"  # type: ignore[attr-defined]


async def test_a_client_gone_mid_response_gives_back_what_was_kept(
    harness: Harness, local: tuple[int, LocalState]
) -> None:
    await harness.start(str(local[0]))
    reader, writer = await _open(harness, _get(harness, "/sse"))
    await reader.readuntil(b"data: first\n\n")
    await _kept_some(harness)
    writer.close()
    [ex] = await _given_back(harness, 1)
    assert ex.error == "client_gone"  # type: ignore[attr-defined]


async def test_a_client_gone_mid_upload_gives_back_what_was_kept(
    harness: Harness, local: tuple[int, LocalState]
) -> None:
    await harness.start(str(local[0]))
    head = f"POST /echo HTTP/1.1\r\nHost: {harness.host('app')}\r\nContent-Length: 1000000\r\n\r\n".encode()
    _reader, writer = await _open(harness, head + b"x" * 100_000)
    await async_wait_for(lambda: _budget(harness).used >= 100_000, what="the upload's start kept")
    writer.close()
    [ex] = await _given_back(harness, 1)
    assert ex.error == "client_gone"  # type: ignore[attr-defined]
    # The record says the body is partial (it said 100,000 bytes, whole): 100,000 of 1,000,000 came.
    request = ex.request  # type: ignore[attr-defined]
    assert (len(request.body), request.body_size, request.body_truncated) == (100_000, 1_000_000, True)


async def test_a_local_service_that_resets_mid_body_or_refuses_gives_back_what_was_kept(harness: Harness) -> None:
    async def reset_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"y" * 50_000)
        await writer.drain()
        await asyncio.sleep(0.2)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST

    with raw_server(reset_mid_body) as port:
        await harness.start(str(port), name="resets")
        async with _client(harness, "resets") as client:
            with pytest.raises(httpx.HTTPError):
                await client.get("/x")
        [ex] = await _given_back(harness, 1)
    assert ex.error and ex.response.body_size == 50_000  # type: ignore[attr-defined]

    await harness.start(str(free_port()), name="refused")
    async with _client(harness, "refused") as client:
        response = await client.post("/hook", content=b"z" * 200_000)
    assert response.status_code == 502
    done = await _given_back(harness, 2)
    assert any(ex.error == "local_refused" and len(ex.request.body) == 200_000 for ex in done)  # type: ignore[attr-defined]


async def test_websocket_sessions_give_back_what_they_kept(tmp_path: Path) -> None:
    with local_websocket() as (port, _requests):
        async with relay_and_agent(tmp_path) as h:
            await h.start(str(port), name="ws")
            async with connect(f"ws://{h.host('ws')}/chat", host="127.0.0.1", port=h.relay.port, proxy=None,
                               max_size=None, compression=None) as ws:
                for _ in range(3):
                    await ws.send(b"m" * 100_000)
                    assert await ws.recv() == b"m" * 100_000
                assert _budget(h).used == 600_000
            await _given_back(h, 1)
            # A session the local service drops without a close frame.
            async with connect(f"ws://{h.host('ws')}/chat", host="127.0.0.1", port=h.relay.port, proxy=None) as ws:
                await ws.send("x" * 1000)
                await ws.recv()
                await ws.send("vanish")
                await ws.wait_closed()
            await _given_back(h, 2)


async def test_websocket_payloads_the_budget_cut_say_so_and_those_the_cap_cut_do_not(tmp_path: Path) -> None:
    # A session's payloads cut because another session kept the budget read as cut at the body cap:
    # a user raised --body-cap, which changed nothing. They now say why, in the store, in
    # ``devtunnel show`` and in the inspector's WebSocket view; those the body cap cut do not.
    cap = 100_000
    with local_websocket() as (port, _requests):
        async with relay_and_agent(tmp_path, body_cap=cap, body_budget=cap) as h:
            await h.start(str(port), name="ws")

            def session() -> Any:
                return connect(f"ws://{h.host('ws')}/chat", host="127.0.0.1", port=h.relay.port, proxy=None,
                               max_size=None, compression=None)

            async with session() as first:
                await first.send(b"a" * 30_000)
                assert await first.recv() == b"a" * 30_000
                await async_wait_for(lambda: _budget(h).used == 60_000, what="the first session's payloads kept")
                async with session() as second:  # 40,000 bytes of budget left, under its own cap
                    await second.send(b"b" * 50_000)
                    assert await second.recv() == b"b" * 50_000
                [starved] = await h.exchanges(1)
                assert _budget(h).used == 60_000
                await first.send(b"c" * 50_000)  # 40,000 bytes of its cap left, and of the budget
                assert await first.recv() == b"c" * 50_000
            done = await _given_back(h, 2)
    capped = next(ex for ex in done if ex.id != starved.id)  # type: ignore[attr-defined]
    assert [(len(m.payload), m.size, m.budget_cut) for m in starved.ws_messages] == [  # type: ignore[attr-defined]
        (40_000, 50_000, True), (0, 50_000, True)]
    assert [(len(m.payload), m.size, m.budget_cut) for m in capped.ws_messages] == [  # type: ignore[attr-defined]
        (30_000, 30_000, False), (30_000, 30_000, False), (40_000, 50_000, False), (0, 50_000, False)]
    assert not starved.response.body_truncated  # type: ignore[attr-defined]  # its 101 has no body to cut
    lines = WsMessageLines(starved)  # type: ignore[arg-type]
    assert [lines.line(i).plain.endswith(f"(recorded {kept} of 50000 bytes: {BUDGET_CUT_WHY})")
            for i, kept in enumerate((40_000, 0))] == [True, True]
    assert "budget" not in WsMessageLines(capped).line(3).plain  # type: ignore[arg-type]
    db = str(tmp_path / "captures.db")
    for ex, said in ((starved, True), (capped, False)):
        shown = subprocess.run([sys.executable, "-m", "devtunnel", "show", ex.id, "--db", db],  # type: ignore[attr-defined]
                               capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.count(f"of 50000 bytes; {BUDGET_CUT_WHY})") == (2 if said else 0), shown.stdout
        assert shown.stdout.count("of 50000 bytes") == 2
        said_json = [m["budget_cut"] for m in capture_json(ex)["ws_messages"]]  # type: ignore[arg-type]
        assert said_json == ([True, True] if said else [False, False, False, False]), said_json


async def test_a_connection_to_the_relay_cut_with_streams_open_gives_back_what_they_kept(
    harness: Harness, local: tuple[int, LocalState]
) -> None:
    await harness.start(str(local[0]))
    streams = [await _open(harness, _get(harness, f"/sse?i={i}")) for i in range(3)]
    for reader, _ in streams:
        await reader.readuntil(b"data: first\n\n")
    await async_wait_for(lambda: _budget(harness).used == 3 * len(b"data: first\n\n"), what="three captures keeping")
    session = harness.service._tunnels["app"]._session
    assert session is not None
    session.ws.transport.abort()  # the network drops: the tunnel reconnects, the streams are cut
    done = await _given_back(harness, 3)
    assert {ex.error for ex in done} == {"agent_gone"} or all(ex.error for ex in done)  # type: ignore[attr-defined]
    for _, writer in streams:
        writer.close()


async def test_stopping_the_agent_gives_back_what_the_open_exchanges_kept(
    harness: Harness, local: tuple[int, LocalState]
) -> None:
    await harness.start(str(local[0]))
    streams = [await _open(harness, _get(harness, f"/sse?i={i}")) for i in range(2)]
    for reader, _ in streams:
        await reader.readuntil(b"data: first\n\n")
    await _kept_some(harness)
    session = harness.service._tunnels["app"]._session
    assert session is not None
    stopping = asyncio.create_task(harness.service.stop())
    await async_wait_for(lambda: session._idle is not None, what="the stop to wait for the streams")
    harness.service.hurry()  # no grace for the streams that would last
    await stopping
    await _given_back(harness, 2)
    for _, writer in streams:
        writer.close()


async def test_held_requests_that_end_while_held_give_back_what_they_kept(harness: Harness) -> None:
    port = free_port()
    await harness.start(str(port), name="held", hold=20.0)
    gate = harness.service._tunnels["held"].forwarder.gate
    assert gate is not None
    head = f"POST /hook HTTP/1.1\r\nHost: {harness.host('held')}\r\nContent-Length: 50000\r\n\r\n".encode()
    _reader, writer = await _open(harness, head + b"h" * 50_000)
    await async_wait_for(lambda: gate.waiting == 1, what="the request held")
    writer.close()  # the client leaves while its request waits for the app
    await _given_back(harness, 1)

    await harness.start(str(free_port()), name="expires", hold=0.3)
    async with _client(harness, "expires") as client:
        response = await client.post("/hook", content=b"e" * 40_000)
    assert response.status_code == 503
    done = await _given_back(harness, 2)
    assert any(ex.error == "app_restarting" and len(ex.request.body) == 40_000 for ex in done)  # type: ignore[attr-defined]


async def test_an_exchange_finished_after_its_live_snapshot_was_recorded_gives_back_what_it_kept(
    harness: Harness, local: tuple[int, LocalState]
) -> None:
    port, state = local
    await harness.start(str(port))
    async with _client(harness) as client:
        async with client.stream("GET", "/sse") as response:
            stream = response.aiter_bytes()
            assert await anext(stream) == b"data: first\n\n"
            await _kept_some(harness)

            def snapshot_stored() -> bool:
                harness.recorder.flush()
                return any(not ex.complete for ex in harness.store.query())

            await async_wait_for(snapshot_stored, what="the live snapshot in the store")
            assert _budget(harness).used == len(b"data: first\n\n")
            state.release_sse.set()
            rest = b"".join([chunk async for chunk in stream])
    assert rest == b"data: second\n\n"
    [ex] = await _given_back(harness, 1)
    assert ex.response.body == b"data: first\n\ndata: second\n\n"  # type: ignore[attr-defined]


async def test_requests_a_rule_at_the_relay_answered_give_back_the_body_they_kept(
    harness: Harness, local: tuple[int, LocalState]
) -> None:
    from devtunnel.rules import parse_rules

    await harness.start(str(local[0]), rules=parse_rules([{"match": "path:/admin", "action": "deny"}], "test"))
    async with _client(harness) as client:
        assert (await client.post("/admin/hook", content=b"d" * 30_000)).status_code == 403
        assert (await client.get("/admin/page")).status_code == 403
    done = await _given_back(harness, 2)
    assert sorted(len(ex.request.body) for ex in done) == [0, 30_000]  # type: ignore[attr-defined]
