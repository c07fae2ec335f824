"""Hold (``agent/hold.py``): requests wait for the local app, in order and bounded, and a tunnel
with hold configured forwards exactly as one without it while the app answers."""

from __future__ import annotations

import asyncio
import hashlib
import select
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtunnel.agent.hold import CONNECT_GRACE, HeldFor, HoldExpired, HoldGate
from devtunnel.capture.model import held_text
from tests.helpers import async_wait_for, free_port
from tests.net.tunnel_fixtures import (
    Harness,
    LocalState,
    _pattern,
    relay_and_agent,
)
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with relay_and_agent(tmp_path) as h:
        yield h


def _client(harness: Harness, name: str, timeout: float = 30) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=harness.base_url, headers={"Host": harness.host(name)}, timeout=timeout,
                             trust_env=False)


def _gate(harness: Harness, name: str) -> HoldGate:
    gate = harness.service._tunnels[name].forwarder.gate
    assert gate is not None
    return gate


async def _ordered_server(port: int, seen: list[str]) -> asyncio.Server:
    """A minimal HTTP/1.1 server on ``port`` that notes each request's path, in arrival order."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                seen.append(path)
                body = path.encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


# -- the fast path keeps the slow path's guarantees ---------------------------------------------------

async def test_with_hold_configured_streaming_and_big_bodies_are_unchanged(
    harness: Harness, local: tuple[int, LocalState]
) -> None:
    await harness.start(str(local[0]), name="held", hold=30.0)
    state = local[1]
    async with _client(harness, "held") as client:
        async with client.stream("GET", "/sse") as response:
            chunks = response.aiter_bytes()
            async with asyncio.timeout(10):  # the local app holds the second event until released
                assert await chunks.__anext__() == b"data: first\n\n"
            state.release_sse.set()
            assert b"".join([c async for c in chunks]) == b"data: second\n\n"
        n = 8 << 20
        payload = _pattern(n)
        response = await client.post("/echo", content=payload)
        assert response.status_code == 200
        assert response.json()["sha256"] == hashlib.sha256(payload).hexdigest()
        ports = {(await client.get("/echo")).json()["client_port"] for _ in range(5)}
        assert len(ports) == 1  # keep-alive reuse as without hold
    assert _gate(harness, "held").held == 0


async def test_with_hold_configured_back_pressure_reaches_the_local_service(harness: Harness) -> None:
    total = 64 << 20
    sent = 0
    chunk = b"x" * 65536

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        try:
            while sent < total:
                writer.write(chunk)
                await writer.drain()  # blocks when nobody reads: back-pressure
                sent += len(chunk)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await harness.start(str(port), name="bp", hold=30.0)
        async with _client(harness, "bp") as client, client.stream("GET", "/big") as response:
            stream = response.aiter_raw()
            received = len(await stream.__anext__())
            # The client reads nothing more: the local service must be stopped well before the end.
            last, still = -1, 0
            for _ in range(200):  # at most 20 s
                await asyncio.sleep(0.1)
                still = still + 1 if sent == last else 0
                last = sent
                if still >= 10:
                    break
            assert still >= 10 and sent < total // 2, f"the local service wrote {sent} of {total} bytes unread"
            async for piece in stream:
                received += len(piece)
        assert received == total
    finally:
        server.close()


# -- holding -------------------------------------------------------------------------------------

async def test_requests_wait_for_a_target_that_comes_up_and_arrive_in_order(harness: Harness) -> None:
    port = free_port()
    await harness.start(str(port), name="later", hold=20.0)
    gate = _gate(harness, "later")
    seen: list[str] = []
    async with _client(harness, "later") as client:
        tasks = []
        for i in range(5):
            tasks.append(asyncio.create_task(client.get(f"/r{i}")))
            await async_wait_for(lambda n=i + 1: gate.waiting == n, what=f"request {i} held")
        server = await _ordered_server(port, seen)
        try:
            responses = await asyncio.gather(*tasks)
        finally:
            server.close()
    assert [r.status_code for r in responses] == [200] * 5
    assert seen == [f"/r{i}" for i in range(5)]
    assert gate.held == 5 and gate.waiting == 0


async def test_hold_without_run_expires_with_503_and_retry_after(harness: Harness) -> None:
    port = free_port()
    await harness.start(str(port), name="never", hold=0.5)
    async with _client(harness, "never") as client:
        response = await client.post("/hook", content=b'{"id": 1}')
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-devtunnel-error"] == "app_restarting"
    assert "local app restarting" in response.text
    [ex] = await harness.exchanges(1)
    assert (ex.status, ex.error) == (503, "app_restarting")
    assert ex.request.body == b'{"id": 1}'  # the undelivered webhook is kept for a replay


async def test_a_refused_target_without_hold_or_run_is_still_local_refused(harness: Harness) -> None:
    await harness.start(str(free_port()), name="plain")
    async with _client(harness, "plain") as client:
        response = await client.get("/")
    assert response.status_code == 502 and response.headers["x-devtunnel-error"] == "local_refused"


# -- the gate on its own ------------------------------------------------------------------------------

def _connect_recording(order: list[int], results: Callable[[], object]) -> Callable[[int], Callable[[], Awaitable[object]]]:
    def make(i: int) -> Callable[[], Awaitable[object]]:
        async def connect() -> object:
            order.append(i)
            return results()
        return connect
    return make


async def test_held_requests_are_released_in_order_when_the_app_is_ready() -> None:
    gate = HoldGate(10.0)
    gate.set_app_state(False, "restarting (1)")
    order: list[int] = []
    make = _connect_recording(order, lambda: "conn")
    tasks = [asyncio.create_task(gate.connect(make(i))) for i in range(20)]
    await async_wait_for(lambda: gate.waiting == 20, what="all held")
    assert order == []
    gate.set_app_state(True, "ready")
    assert await asyncio.gather(*tasks) == ["conn"] * 20
    assert order == list(range(20))


async def test_the_queue_is_bounded_and_the_hold_is_timed() -> None:
    gate = HoldGate(0.3, max_waiting=3)
    gate.set_app_state(False, "starting")

    async def connect() -> object:
        raise AssertionError("not called while the app is down")

    held = [asyncio.create_task(gate.connect(connect)) for _ in range(3)]
    await async_wait_for(lambda: gate.waiting == 3, what="three held")
    with pytest.raises(HoldExpired, match="3 requests are already waiting"):
        await gate.connect(connect)
    for task in held:
        with pytest.raises(HoldExpired, match="has not come up in 0.3 s"):  # never ready: not restarting
            await task
    assert gate.waiting == 0 and gate.expired == 4


async def test_a_request_held_again_waits_only_what_its_earlier_waits_left_of_the_hold() -> None:
    # Each wait had a whole hold of its own: a request the app went down with waited its first
    # wait, then the hold again ("held 6.30 s" with --hold 5s).
    gate = HoldGate(0.5)
    gate.set_app_state(False, "restarting (1)")
    held = HeldFor()
    held.held = 0.4  # its first wait, before the app took it and went down with it

    async def connect() -> object:
        raise AssertionError("not called while the app is down")

    with pytest.raises(HoldExpired, match=r"in 0\.5 s"):
        await gate.connect(connect, held, again=0.0)
    assert held.held is not None and held.held <= 0.5 + 0.05, held.held


async def test_a_held_requests_connection_takes_at_most_the_grace_past_its_hold() -> None:
    # The app is back, but does not accept (its listen backlog full: the kernel drops the SYN, and
    # the client tries again a second later, then 3 s ...): the request waited past its hold for
    # as long as the connection took, up to the local pool's 10 s.
    gate = HoldGate(0.3)
    gate.set_app_state(False, "starting")
    held = HeldFor()

    async def never_accepted() -> object:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.create_task(gate.connect(never_accepted, held))
    await async_wait_for(lambda: gate.waiting == 1, what="the request held")
    gate.set_app_state(True, "ready")
    done, _ = await asyncio.wait([task], timeout=5)
    if not done:
        task.cancel()
    assert task in done, "still connecting after 5 s"
    assert isinstance(task.exception(), TimeoutError)  # as a connection not accepted in time: 504
    assert held.held is not None and held.held <= 0.3 + CONNECT_GRACE + 0.05, held.held
    assert gate.waiting == 0 and gate.delivering == 0


async def test_end_holding_answers_the_held_requests_at_once_and_holds_no_more() -> None:
    gate = HoldGate(600.0)
    gate.set_app_state(False, "starting")

    async def connect() -> object:
        raise ConnectionRefusedError()

    held = [asyncio.create_task(gate.connect(connect)) for _ in range(3)]
    await async_wait_for(lambda: gate.waiting == 3, what="three held")
    gate.end_holding("devtunnel is stopping")
    for task in held:
        with pytest.raises(HoldExpired, match="devtunnel is stopping"):
            await task
    with pytest.raises(ConnectionRefusedError):  # a request after that is not held
        await gate.connect(connect)
    assert gate.waiting == 0 and gate.expired == 3


async def test_without_hold_the_gate_only_connects() -> None:
    gate = HoldGate(0.0)
    gate.set_app_state(False, "crashed")

    async def refused() -> object:
        raise ConnectionRefusedError()

    with pytest.raises(ConnectionRefusedError):
        await gate.connect(refused)
    assert gate.managed and gate.app_down and gate.app_state == "crashed"


async def test_a_held_webhook_is_delivered_whole_once_the_app_is_ready(
    harness: Harness, local: tuple[int, LocalState]
) -> None:
    await harness.start(str(local[0]), name="hooks", hold=20.0)
    gate = _gate(harness, "hooks")
    gate.set_app_state(False, "restarting (1)")  # as the app's supervisor says while it restarts
    payload = _pattern(3 << 20)  # more than the relay's first window: the rest waits at the relay
    async with _client(harness, "hooks") as client:
        task = asyncio.create_task(client.post("/echo", content=payload))
        await async_wait_for(lambda: gate.waiting == 1, what="the webhook held")
        assert not task.done()
        gate.set_app_state(True, "ready")
        response = await task
    assert response.status_code == 200
    assert response.json()["sha256"] == hashlib.sha256(payload).hexdigest()
    [ex] = await harness.exchanges(1)
    assert ex.status == 200 and ex.error is None


async def test_a_webhook_the_app_dropped_unanswered_while_going_down_is_held_and_sent_again(
    harness: Harness,
) -> None:
    # uvicorn --reload: the worker that stops closes the connections it has not read a request on.
    bodies: list[bytes] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await reader.readuntil(b"\r\n\r\n")
            writer.close()  # going down: nothing answered
            return
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
        body = await reader.readexactly(length)
        bodies.append(body)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        await harness.start(str(port), name="hooks", hold=20.0)
        _gate(harness, "hooks").set_app_state(True, "ready")  # an app devtunnel runs, ready
        async with _client(harness, "hooks") as client:
            response = await client.post("/hook", content=b'{"type": "invoice.paid"}')
    finally:
        server.close()
    assert response.status_code == 200 and response.text == '{"type": "invoice.paid"}'
    assert bodies == [b'{"type": "invoice.paid"}'] and connections == 2
    [ex] = await harness.exchanges(1)
    assert ex.status == 200 and ex.request.body == b'{"type": "invoice.paid"}'


async def test_a_request_the_app_reset_unread_as_it_died_is_held_again(harness: Harness) -> None:
    # An app dies with a request read: devtunnel holds the request once more, but its supervisor
    # has not seen the death yet, and the next connection lands in the queue of the dying app's
    # listening socket, which the kernel resets. The request was never read: it is held again.
    connections = 0
    answered: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await reader.readuntil(b"\r\n\r\n")
            writer.close()  # dying: the request read, nothing answered
            return
        if connections == 2:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # a reset before the request was read
            return
        try:
            await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the gate's probe: it connects and goes
        answered.append(connections)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        await harness.start(str(port), name="app", hold=20.0)
        _gate(harness, "app").set_app_state(True, "ready")  # an app devtunnel runs, ready
        async with _client(harness, "app") as client:
            response = await client.get("/late")
    finally:
        server.close()
    assert (response.status_code, response.text) == (200, "ok")
    assert len(answered) == 1 and answered[0] >= 3
    [ex] = await harness.exchanges(1)
    assert ex.status == 200 and ex.error is None


@pytest.mark.parametrize("hold", [20.0, 0.0])
async def test_a_connection_the_dying_app_had_queued_and_the_kernel_reset_is_held_as_a_refusal(
    harness: Harness, hold: float
) -> None:
    # An app exits just as a request connects: the kernel had completed the connection and queued
    # it on the app's listening socket, and resets it as the socket closes, before the event loop
    # saw it made: connecting raises ConnectionResetError, not a refusal. It was answered 502
    # "cannot connect to the local service" (a request to a held tunnel lost). Now it is held as
    # after a refusal and reaches the app started again; without hold its 502 says the app restarts.
    port = free_port()
    dying = socket.socket()
    dying.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    dying.bind(("127.0.0.1", port))
    dying.listen(8)  # never accepts: the app is exiting
    seen: list[str] = []
    restarted: list[asyncio.Server] = []
    await harness.start(str(port), name="app", hold=hold)
    forwarder = harness.service._tunnels["app"].forwarder
    if forwarder.gate is None:  # a tunnel with --run and no hold has a gate that holds nothing
        forwarder.gate = HoldGate(hold)
    gate = forwarder.gate
    gate.set_app_state(True, "ready")  # an app devtunnel runs, ready: its supervisor does not know yet
    # The event loop's own connect is wrapped (not the pool's: compiled with mypyc, its methods
    # cannot be replaced), for the app's port only.
    loop = asyncio.get_running_loop()
    create_connection = loop.create_connection

    async def dies_as_it_is_connected_to(factory: Any, host: Any = None, to: Any = None, **kwargs: Any) -> Any:
        if to != port or dying.fileno() < 0:
            return await create_connection(factory, host, to, **kwargs)
        connecting = asyncio.ensure_future(create_connection(factory, host, to, **kwargs))
        async with asyncio.timeout(5):  # until the kernel queued the connection on the app's socket
            while not select.select([dying], [], [], 0)[0]:
                await asyncio.sleep(0)
        assert not connecting.done()  # the event loop has not seen it made
        dying.close()  # the app exits: the kernel resets the queued connection
        gate.set_app_state(False, "crashed")
        restarted.append(await _ordered_server(port, seen))
        gate.set_app_state(True, "ready")
        return await connecting

    loop.create_connection = dies_as_it_is_connected_to  # type: ignore[method-assign]
    try:
        async with _client(harness, "app") as client:
            response = await client.get("/late")
    finally:
        del loop.create_connection  # the loop's own method again
        dying.close()
        for server in restarted:
            server.close()
    if hold:
        assert (response.status_code, response.text) == (200, "/late")
        assert seen == ["/late"]
        return
    assert response.status_code == 502 and seen == []
    assert response.headers["X-Devtunnel-Error"] == "app_restarting", response.text
    assert "its app at" in response.text and "is not ready" in response.text


async def test_a_websocket_handshake_reset_as_the_app_exits_says_the_app_is_restarting(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same reset for a WebSocket without hold (a connection queued on the dying app's socket):
    # it got 502 local_error "WebSocket handshake ... failed: [Errno 104]", as if no app were meant
    # to be there; a refusal at that moment said the app is restarting, and so does the reset now.
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    import devtunnel.agent.local_ws as local_ws

    async def reset_as_the_app_exits(*args: object, **kwargs: object) -> object:
        raise ConnectionResetError(104, "Connection reset by peer")

    port = free_port()
    await harness.start(str(port), name="app")
    forwarder = harness.service._tunnels["app"].forwarder
    forwarder.gate = HoldGate(0.0)  # an app devtunnel runs (--run), without hold
    forwarder.gate.set_app_state(False, "crashed")
    monkeypatch.setattr(local_ws, "connect_here", reset_as_the_app_exits)

    def handshake() -> InvalidStatus:
        host, relay_port = harness.base_url.rsplit("/", 1)[1].rsplit(":", 1)
        sock = socket.create_connection((host, int(relay_port)), timeout=20)
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://{harness.host('app')}/live", sock=sock, open_timeout=20)
        return refused.value

    refused = await asyncio.to_thread(handshake)
    assert refused.response.status_code == 502
    assert refused.response.headers["X-Devtunnel-Error"] == "app_restarting", refused.response.body
    assert b"is not ready (crashed" in refused.response.body


# -- the count of held requests, as subscribers (the API's events, the inspector) hear it -------------

async def test_held_requests_are_told_to_subscribers_merged_and_the_count_goes_back_to_zero(
        harness: Harness, tmp_path: Path) -> None:
    """``app.waiting`` changed with no notice: the inspector, following the API's events, never
    heard that requests waited. Now each change is told, a burst merged into one notice per
    ``HELD_NOTICE_INTERVAL`` (not one per request), and the count goes back to 0 once the app is up."""
    import sys

    from devtunnel.agent.tunnel import HELD_NOTICE_INTERVAL

    port = free_port()
    ready = tmp_path / "ready"
    app = Path(__file__).with_name("app_fixture.py")
    await harness.start(str(port), name="slow", hold=30.0, health="/healthz",
                        run=f"{sys.executable} {app} {port} --ready-file {ready}")

    def told() -> list[int]:
        infos = [info for info in harness.infos if info.name == "slow" and info.app is not None]
        assert all(info.app is not None and info.app["waiting"] == info.waiting for info in infos)
        return [info.waiting for info in infos]

    await async_wait_for(lambda: _gate(harness, "slow").app_state.startswith("starting"), timeout=20,
                         what="the app starting")
    before = len(told())
    loop = asyncio.get_running_loop()
    began = loop.time()
    n = 200
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=harness.base_url, headers={"Host": harness.host("slow")}, timeout=30,
                                 trust_env=False, limits=limits) as client:
        sent = [asyncio.create_task(client.get(f"/held/{i}")) for i in range(n)]
        await async_wait_for(lambda: told() and told()[-1] == n, timeout=20, what="every request held, and told")
        elapsed = loop.time() - began
        notices = told()[before:]
        assert notices == sorted(notices) and notices[-1] == n
        assert len(notices) <= elapsed / HELD_NOTICE_INTERVAL + 3, (len(notices), elapsed)
        assert len(notices) < n // 4
        ready.touch()
        answers = await asyncio.gather(*sent)
    assert [a.status_code for a in answers] == [200] * n
    await async_wait_for(lambda: told()[-1] == 0, what="the count back to 0")
    assert _gate(harness, "slow").waiting == 0


async def test_requests_held_for_a_target_without_run_are_counted_too(harness: Harness) -> None:
    """``--hold`` without ``--run``: the requests waiting for the target's port are counted in
    the tunnel's ``waiting`` (it has no ``app`` object), and the count goes once they went through."""
    port = free_port()
    await harness.start(str(port), name="bare", hold=30.0)

    def told() -> list[int]:
        return [info.waiting for info in harness.infos if info.name == "bare"]

    seen: list[str] = []
    async with _client(harness, "bare") as client:
        sent = [asyncio.create_task(client.get(f"/w/{i}")) for i in range(3)]
        await async_wait_for(lambda: told()[-1] == 3, what="three requests held, told")
        server = await _ordered_server(port, seen)
        try:
            answers = await asyncio.gather(*sent)
            await async_wait_for(lambda: told()[-1] == 0, what="the count back to 0")
        finally:
            server.close()
    assert [a.status_code for a in answers] == [200] * 3
    assert sorted(seen) == ["/w/0", "/w/1", "/w/2"]


# -- the record says a request is held ---------------------------------------------------------------

async def test_a_held_request_is_stored_as_held_while_it_waits_and_with_its_wait_once_sent(
    harness: Harness, local: tuple[int, LocalState]
) -> None:
    """The inspector and ``devtunnel requests`` read the store: a request waiting for the app is
    told apart from one the app is slow to answer, and the wait stays in the record."""
    await harness.start(str(local[0]), name="crashed", hold=20.0)
    gate = _gate(harness, "crashed")
    gate.set_app_state(False, "crashed (1)")

    async def stored(holding: bool) -> Any:
        await asyncio.to_thread(harness.recorder.flush)
        rows = harness.store.rows()
        return rows[0] if rows and rows[0].holding is holding else None

    async with _client(harness, "crashed") as client:
        task = asyncio.create_task(client.get("/echo"))
        await async_wait_for(lambda: gate.waiting == 1, what="the request held")
        row = None
        async with asyncio.timeout(10):  # its live snapshot comes after LIVE_AFTER seconds
            while row is None:
                row = await stored(True)
                await asyncio.sleep(0.05)
        assert row.status is None and row.held is not None and row.held > 0
        exchange = harness.store.get(row.id)
        assert exchange.holding and held_text(exchange).endswith("so far, until the app is back")
        gate.set_app_state(True, "ready")
        response = await task
    assert response.status_code == 200
    [ex] = await harness.exchanges(1)
    assert not ex.holding and ex.held is not None and row.held <= ex.held < ex.duration
    assert held_text(ex).endswith("while the app was down")
    assert harness.store.rows()[0].holding is False


async def test_a_request_sent_at_once_records_no_wait(harness: Harness, local: tuple[int, LocalState]) -> None:
    await harness.start(str(local[0]), name="up", hold=20.0)
    async with _client(harness, "up") as client:
        assert (await client.get("/echo")).status_code == 200
    [ex] = await harness.exchanges(1)
    assert ex.held is None and not ex.holding and ex.summary()["held_ms"] is None


async def test_a_held_request_sent_and_still_running_is_stored_as_held_no_more(
    harness: Harness, local: tuple[int, LocalState]
) -> None:
    """Once the app is back, a held request that is still running (a stream) shows in flight, not
    held, without waiting for its end: its live snapshot is stored again."""
    await harness.start(str(local[0]), name="streams", hold=20.0)
    gate = _gate(harness, "streams")
    gate.set_app_state(False, "restarting (1)")

    async def row() -> Any:
        await asyncio.to_thread(harness.recorder.flush)
        rows = harness.store.rows()
        return rows[0] if rows else None

    async with _client(harness, "streams") as client:
        async with asyncio.timeout(20):
            request = client.build_request("GET", "/sse")
            task = asyncio.create_task(client.send(request, stream=True))
            while (first := await row()) is None or not first.holding:
                await asyncio.sleep(0.05)
            gate.set_app_state(True, "ready")
            response = await task
            chunks = response.aiter_bytes()
            assert await chunks.__anext__() == b"data: first\n\n"
            while (now := await row()).holding:
                await asyncio.sleep(0.05)
            assert now.duration is None and now.held is not None and now.held >= first.held  # type: ignore[operator]
            local[1].release_sse.set()
            assert b"".join([c async for c in chunks]) == b"data: second\n\n"
            await response.aclose()
