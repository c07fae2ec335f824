"""Held requests are delivered a few at a time once the app is back (``HoldGate.release_window``),
never all at once into an app's small listen backlog, and a request refused in its turn waits again."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from devtunnel.agent.hold import RELEASE_WINDOW, HoldExpired, HoldGate
from devtunnel.agent.tunnel import AgentTunnel
from tests.helpers import async_wait_for, free_port
from tests.net.tunnel_fixtures import Harness, relay_and_agent

pytestmark = pytest.mark.timeout(120)

APP = Path(__file__).with_name("app_fixture.py")


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with relay_and_agent(tmp_path) as h:
        yield h


def _gate(harness: Harness, name: str) -> HoldGate:
    gate = harness.service._tunnels[name].forwarder.gate
    assert gate is not None
    return gate


def _client(harness: Harness, name: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    return httpx.AsyncClient(base_url=harness.base_url, headers={"Host": harness.host(name)}, timeout=60,
                             trust_env=False, limits=limits)


async def test_held_requests_go_to_an_app_with_a_small_backlog_without_overflowing_it(
        harness: Harness, tmp_path: Path) -> None:
    """``--run`` with ``--hold``: 24 requests held while the app starts, an app that listens late
    with a backlog of 5 and answers one connection at a time (a dev server without threads).
    Released all at once, the kernel's queue for the app filled and dropped the next
    connections' SYNs: they waited 1 s, 3 s ... for the client's retries. The app notes its
    queue before each accept: it never holds more than its backlog (a SYN dropped leaves it past
    that until the next accept), and every request is answered."""
    port, backlog, n = free_port(), 5, 24
    listen, queue = tmp_path / "listen", tmp_path / "queue"
    await harness.start(str(port), name="small", hold=60.0,
                        run=f"{sys.executable} {APP} {port} --serial --backlog {backlog}"
                            f" --listen-file {listen} --queue-file {queue}")
    gate = _gate(harness, "small")
    await async_wait_for(lambda: gate.app_state.startswith("starting"), timeout=20, what="the app starting")
    async with _client(harness, "small") as client:
        sent = [asyncio.create_task(client.get(f"/held/{i}")) for i in range(n)]
        await async_wait_for(lambda: gate.waiting == n, timeout=20, what="every request held")
        listen.touch()
        answers = await asyncio.gather(*sent)
    assert [a.status_code for a in answers] == [200] * n
    samples = [tuple(map(int, line.split())) for line in queue.read_text().splitlines()]
    assert len(samples) >= n and {most for _, most in samples} == {backlog}
    assert max(queued for queued, _ in samples) <= backlog, samples
    assert gate.delivering == 0 and gate.waiting == 0


async def test_a_request_refused_in_its_turn_waits_again_instead_of_failing(harness: Harness) -> None:
    """The app's supervisor says it is ready, but its port refuses as the requests go (a
    reloader restarting it once more): each goes back to waiting, gives its turn back, and all
    are answered once the port accepts, none 502."""
    port = free_port()
    await harness.start(str(port), name="flaky", hold=30.0)
    gate = _gate(harness, "flaky")
    gate.set_app_state(False, "restarting (1)")
    n = 3 * RELEASE_WINDOW
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b" ", 2)[1].decode())
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async with _client(harness, "flaky") as client:
        sent = [asyncio.create_task(client.get(f"/r/{i}")) for i in range(n)]
        await async_wait_for(lambda: gate.waiting == n, what="every request held")
        gate.set_app_state(True, "ready")  # nothing listens yet: each turn is refused
        await async_wait_for(lambda: not gate._reachable.is_set() and gate.delivering == 0 and gate.waiting == n,
                             what="the refused requests back to waiting, their turns given back")
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        try:
            answers = await asyncio.gather(*sent)
        finally:
            server.close()
    assert [a.status_code for a in answers] == [200] * n
    assert sorted(seen) == sorted(f"/r/{i}" for i in range(n))
    assert gate.delivering == 0 and gate.waiting == 0 and not gate._sent


# -- the gate on its own ------------------------------------------------------------------------------

async def test_turns_are_taken_in_order_and_handed_on_when_answered() -> None:
    gate = HoldGate(10.0, release_window=2)
    gate.set_app_state(False, "restarting (1)")
    connected: list[int] = []

    def make(i: int):  # type: ignore[no-untyped-def]
        async def connect() -> object:
            connected.append(i)
            return f"conn{i}"
        return connect

    tasks = [asyncio.create_task(gate.connect(make(i), until_answered=True)) for i in range(5)]
    await async_wait_for(lambda: gate.waiting == 5, what="all held")
    gate.set_app_state(True, "ready")
    await async_wait_for(lambda: connected == [0, 1], what="the first two turns")
    assert gate.delivering == 2 and gate.waiting == 3
    newcomer = asyncio.create_task(gate.connect(make(9), until_answered=True))  # behind those held
    gate.answered("conn1")
    await async_wait_for(lambda: connected == [0, 1, 2], what="the third one's turn")
    gate.answered("unknown")  # a connection that had no turn changes nothing
    gate.answered("conn0")
    await async_wait_for(lambda: connected == [0, 1, 2, 3], what="the fourth one's turn")
    assert gate.delivering == 2
    for i in (2, 3):
        gate.answered(f"conn{i}")
    await async_wait_for(lambda: connected == [0, 1, 2, 3, 4, 9], what="the last two turns")
    gate.answered("conn4")
    assert await asyncio.gather(*tasks, newcomer) == ["conn0", "conn1", "conn2", "conn3", "conn4", "conn9"]
    assert connected == [0, 1, 2, 3, 4, 9]
    gate.answered("conn9")
    assert gate.delivering == 0 and gate.waiting == 0


async def test_a_request_that_times_out_or_goes_while_waiting_for_its_turn_gives_the_turn_on() -> None:
    gate = HoldGate(0.5, release_window=1)
    gate.set_app_state(False, "restarting (1)")

    async def connect() -> object:
        return object()

    first = asyncio.create_task(gate.connect(connect, until_answered=True))
    second = asyncio.create_task(gate.connect(connect, until_answered=True))
    third = asyncio.create_task(gate.connect(connect, until_answered=True))
    await async_wait_for(lambda: gate.waiting == 3, what="all held")
    gate.set_app_state(True, "ready")
    conn = await first  # never answered: the others wait for its turn
    second.cancel()  # its client went away
    with pytest.raises(HoldExpired, match=r"the app is back, but did not answer the requests held before this one"
                                          r" within 0.5 s \(they are sent 1 at a time\)"):
        await third
    assert second.cancelled() and gate.waiting == 0 and gate.delivering == 1
    gate.answered(conn)
    assert gate.delivering == 0
    assert isinstance(await gate.connect(connect), object)  # nothing held or delivered: at once


async def test_stopping_answers_the_requests_waiting_for_their_turn_at_once() -> None:
    gate = HoldGate(30.0, release_window=1)
    gate.set_app_state(False, "restarting (1)")

    async def connect() -> object:
        return object()

    first = asyncio.create_task(gate.connect(connect, until_answered=True))
    second = asyncio.create_task(gate.connect(connect, until_answered=True))
    await async_wait_for(lambda: gate.waiting == 2, what="both held")
    gate.set_app_state(True, "ready")
    await first
    await async_wait_for(lambda: len(gate._turns) == 1, what="the second waiting for its turn")
    gate.end_holding("devtunnel is stopping")
    with pytest.raises(HoldExpired, match="devtunnel is stopping"):
        await asyncio.wait_for(second, 5)
    assert gate.waiting == 0 and gate.delivering == 1  # the first one's turn, until it is answered


# -- an app that crashes again while held requests are being delivered ---------------------------------

async def _start_looping(harness: Harness, tmp_path: Path, name: str) -> tuple[Path, AgentTunnel, HoldGate]:
    """A tunnel holding for 60 s with an app that exits after every second answer, restarted in a
    moment (not in up to 30 s), and listening once the returned file exists: (that file, the
    tunnel, its gate), the app starting."""
    port = free_port()
    listen = tmp_path / "listen"
    await harness.start(str(port), name=name, hold=60.0,
                        run=f"{sys.executable} {APP} {port} --exit-after 2 --listen-file {listen}")
    tunnel = harness.service._tunnels[name]
    assert tunnel.app is not None
    tunnel.app.child._backoff = (0.05, 0.2)
    gate = _gate(harness, name)
    await async_wait_for(lambda: gate.app_state.startswith("starting"), timeout=20, what="the app starting")
    return listen, tunnel, gate


def _served(harness: Harness, name: str) -> list[str]:
    """The paths the app run by ``name`` answered, from its log (``served PATH #N``), in order."""
    app = harness.service._tunnels[name].app
    assert app is not None
    return [line.text.split()[1] for line in app.log.lines("served ")]


async def test_held_requests_all_reach_an_app_that_crashes_after_every_second_answer(
        harness: Harness, tmp_path: Path) -> None:
    """16 held requests (GETs and POSTs with a body) and an app that exits after every second answer
    (threaded: the requests sent beside those two are read, then dropped unanswered as it exits).
    A request dropped beside others could not be told from the one that crashed the app: it was
    counted a strike, and one dropped so by two runs got 502 "went down with this request in it
    twice" (3 of 16). Now such a request is held again ahead of those never sent, and sent alone:
    every request is answered 200, each answered once."""
    n = 16
    listen, tunnel, gate = await _start_looping(harness, tmp_path, "loop")
    async with _client(harness, "loop") as client:
        sent = [asyncio.create_task(client.post(f"/p{i}", content=b'{"n": %d}' % i) if i % 2
                                    else client.get(f"/g{i}")) for i in range(n)]
        await async_wait_for(lambda: gate.waiting == n, timeout=20, what="every request held")
        listen.touch()
        answers = await asyncio.gather(*sent)
    assert [(a.status_code, a.headers.get("X-Devtunnel-Error")) for a in answers] == [(200, None)] * n, [
        a.text for a in answers if a.status_code != 200]
    paths = [f"/p{i}" if i % 2 else f"/g{i}" for i in range(n)]
    served = _served(harness, "loop")
    assert set(served) <= set(paths) and len(served) == len(set(served)), served  # none answered twice
    assert tunnel.app.state.restarts >= n // 2 - 1
    assert gate.delivering == 0 and gate.waiting == 0 and not gate._sent


async def test_a_held_request_that_crashes_the_app_each_time_ends_in_502_and_the_others_are_answered(
        harness: Harness, tmp_path: Path) -> None:
    """Among 12 held requests to an app that exits after every second answer, one that crashes the
    app each time it is handled (``/crash``). Dropped beside others, it is held again and sent
    alone; the app that goes down with it alone, as the first request of its run, has its answer:
    502, "not sent a third time" (a run that answered others first may have been exiting on its
    count: the request then goes first to the next). It crashed the app three times at most, not
    until the hold ran out, and every other request is answered."""
    n = 12
    listen, tunnel, gate = await _start_looping(harness, tmp_path, "poison")
    paths = [f"/g{i}" for i in range(n)]
    paths[1] = "/crash"  # in the first turns, beside others
    async with _client(harness, "poison") as client:
        sent = [asyncio.create_task(client.get(path)) for path in paths]
        await async_wait_for(lambda: gate.waiting == n, timeout=20, what="every request held")
        listen.touch()
        answers = dict(zip(paths, await asyncio.gather(*sent)))
    crashed = answers.pop("/crash")
    assert (crashed.status_code, crashed.headers["X-Devtunnel-Error"]) == (502, "app_restarting")
    assert "went down with this request in it twice" in crashed.text and "not sent a third time" in crashed.text
    assert {path: a.status_code for path, a in answers.items()} == {path: 200 for path in answers}
    # Once when its first drop was a run ending on its count (read, unanswered), else twice, or
    # three times when the run it crashed had answered another request first.
    assert 1 <= len(tunnel.app.log.lines("crashing on /crash")) <= 3
    assert gate.delivering == 0 and gate.waiting == 0 and not gate._sent


async def test_a_request_held_again_goes_alone_and_before_those_never_sent() -> None:
    """The gate on its own: requests held again (``again``, the time the app first dropped each)
    take their turns before the ones that never had one, the earliest dropped first, each alone
    and a moment after the last turn ended; then the window of 2 is whole again."""
    gate = HoldGate(10.0, release_window=2, retry_interval=0.05)
    gate.set_app_state(False, "restarting (1)")
    connected: list[str] = []
    loop = asyncio.get_running_loop()

    def make(name: str):  # type: ignore[no-untyped-def]
        async def connect() -> object:
            connected.append(name)
            return name
        return connect

    fresh = [asyncio.create_task(gate.connect(make(f"n{i}"), until_answered=True)) for i in range(3)]
    await async_wait_for(lambda: gate.waiting == 3, what="the new ones held")
    late = asyncio.create_task(gate.connect(make("a2"), until_answered=True, again=2.0))
    early = asyncio.create_task(gate.connect(make("a1"), until_answered=True, again=1.0))
    await async_wait_for(lambda: gate.waiting == 5, what="all held")
    gate.set_app_state(True, "ready")
    await async_wait_for(lambda: connected == ["a1"], what="the earliest dropped, alone")
    assert gate.alone and gate.delivering == 1
    gate.answered("a1")
    ended = loop.time()
    await async_wait_for(lambda: connected == ["a1", "a2"], what="the next one dropped, alone")
    assert loop.time() - ended >= 0.05 and gate.alone and gate.delivering == 1
    gate.answered("a2")
    await async_wait_for(lambda: connected == ["a1", "a2", "n0", "n1"], what="the window again")
    assert not gate.alone and gate.delivering == 2
    for name in ("n0", "n1"):
        gate.answered(name)
    await async_wait_for(lambda: connected[-1] == "n2", what="the last one")
    gate.answered("n2")
    assert await asyncio.gather(early, late, *fresh) == ["a1", "a2", "n0", "n1", "n2"]
    assert gate.delivering == 0 and gate.waiting == 0 and not gate.alone


async def test_a_held_request_that_crashes_the_app_before_reading_its_body_ends_too(harness: Harness) -> None:
    """A POST the app crashes on before reading its body: each run resets it (bytes unread), as an
    app exiting as a request comes does. Sent alone and first to the app started again, it is
    its own crash: 502 after the second, not sent until the hold runs out."""
    port = free_port()
    await harness.start(str(port), name="unread", hold=60.0, run=f"{sys.executable} {APP} {port}")
    tunnel = harness.service._tunnels["unread"]
    assert tunnel.app is not None
    tunnel.app.child._backoff = (0.05, 0.2)
    gate = _gate(harness, "unread")
    await async_wait_for(lambda: gate.app_state == "ready", timeout=20, what="the app ready")
    body = b"x" * (32 << 10)  # more than the app's first read: the kernel holds the rest unread
    async with _client(harness, "unread") as client:
        crashed = await client.post("/unread-crash", content=body)
        assert (crashed.status_code, crashed.headers["X-Devtunnel-Error"]) == (502, "app_restarting"), crashed.text
        assert "went down with this request in it twice" in crashed.text
        await async_wait_for(lambda: gate.app_state == "ready", timeout=20, what="the app ready again")
        after = await client.get("/after")
    assert after.status_code == 200
    assert len(tunnel.app.log.lines("crashing on /unread-crash")) == 2


async def test_no_request_goes_on_a_kept_alive_connection_beside_one_held_again(harness: Harness) -> None:
    """A POST the app dropped (it went down) is sent again alone; meanwhile a request that crashes
    the app comes, and a kept-alive connection to the app is idle. Sent on it, beside the POST, it
    crashed the app with both in it, and the POST, dropped twice, got 502 for the other's crash.
    Now the idle connections close when a request held again is sent: the newcomer waits for its
    turn, the POST is answered, and the newcomer alone has the app's crashes (502)."""
    port = free_port()
    await harness.start(str(port), name="beside", hold=20.0)
    gate = _gate(harness, "beside")
    gate.set_app_state(True, "ready")  # an app devtunnel runs, ready
    warm: list[int] = []
    posts = 0
    crashes = 0
    in_app: list[asyncio.StreamWriter] = []
    loop = asyncio.get_running_loop()

    def restart() -> None:  # the app crashed and is up again: its next run
        gate.set_app_state(False, "crashed")
        gate.set_app_state(True, "ready")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal posts, crashes
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path == b"/warm":
                    warm.append(1)
                    deadline = loop.time() + 10
                    while len(warm) < 2 and loop.time() < deadline:  # both connections open at once
                        await asyncio.sleep(0.01)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                elif path == b"/hook":
                    await reader.readexactly(2)
                    posts += 1
                    if posts == 1:
                        restart()
                        writer.close()  # read, then the app went down: dropped unanswered
                        return
                    in_app.append(writer)
                    deadline = loop.time() + 10
                    while crashes == 0 and gate.waiting == 0 and loop.time() < deadline:
                        await asyncio.sleep(0.01)  # until the newcomer is in the app, or waits for its turn
                    if crashes:
                        return  # the app went down with both in it
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nhook")
                else:  # /poison: the app crashes with whatever is in it
                    crashes += 1
                    restart()
                    for other in in_app:
                        other.close()
                    writer.close()
                    return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        async with _client(harness, "beside") as client:
            assert [r.status_code for r in await asyncio.gather(client.get("/warm"), client.get("/warm"))] == [200] * 2
            hook = asyncio.create_task(client.post("/hook", content=b"{}"))
            await async_wait_for(lambda: bool(in_app), what="the POST sent again, alone")
            poison = await client.get("/poison")
            answered = await hook
    finally:
        server.close()
    assert (answered.status_code, answered.text) == (200, "hook")
    assert (poison.status_code, poison.headers["X-Devtunnel-Error"]) == (502, "app_restarting")
    assert "went down with this request in it twice" in poison.text and crashes == 2


async def test_a_request_held_again_that_a_run_drops_after_answering_others_goes_first_to_the_next(
        harness: Harness) -> None:
    """A GET held again (its first run went down with it) is sent alone to the next run, which has
    answered another request already and ends with it unanswered, as an app exiting on a count
    does after its answers. That run's end was not this request's: it was answered 502 "not sent
    a third time". Now it goes first to the run after, which answers it."""
    port = free_port()
    await harness.start(str(port), name="count", hold=20.0)
    gate = _gate(harness, "count")
    gate.set_app_state(True, "ready")  # an app devtunnel runs, ready
    seen: list[str] = []
    other_answered = asyncio.Event()

    def restart() -> None:  # the app went down and is up again: its next run
        gate.set_app_state(False, "crashed")
        gate.set_app_state(True, "ready")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the gate's probe
        path = head.split(b" ", 2)[1].decode()
        seen.append(path)
        if path == "/a" and seen.count("/a") == 1:
            restart()  # the first run goes down with it; the next one answers /other first
            async with asyncio.timeout(10):
                await other_answered.wait()
            writer.close()
            return
        if path == "/a" and seen.count("/a") == 2:
            restart()  # after its answer to /other, this run ends: /a is dropped unanswered
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (len(path), path.encode()))
        await writer.drain()
        writer.close()
        if path == "/other":
            other_answered.set()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        async with _client(harness, "count") as client:
            first = asyncio.create_task(client.get("/a"))
            await async_wait_for(lambda: seen == ["/a"], what="/a in the app")
            other = await client.get("/other")
            answered = await first
    finally:
        server.close()
    assert (other.status_code, other.text) == (200, "/other")
    assert (answered.status_code, answered.text) == (200, "/a"), answered.text
    assert seen == ["/a", "/other", "/a", "/a"]
