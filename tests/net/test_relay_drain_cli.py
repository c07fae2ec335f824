"""``devtunnel relay`` drains on SIGTERM or SIGINT: the relay and an agent as subprocesses, a
slow local service that answers once the test lets it, and a client on a raw socket.

The first signal: no new connections, the requests in flight through the tunnel finish (up to
``--drain-timeout``), then the relay stops as it did before (agents told, exit 0). A second
signal stops at once. ``--drain-timeout 0`` and the embedded relay of ``devtunnel http`` stop
at once, as before.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.helpers import free_port, wait_for
from tests.kit.procs import Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.kit.servers import LocalServer, Received, Reply, http_server

BODY = b"slow answer " * 20_000  # 240 KB: more than one window of the tunnel's flow control
DRAIN_STARTS = "in flight; taking no new connections, waiting up to"


@dataclass
class Slow:
    """A local service answering ``/slow...`` once ``release`` is set, anything else at once."""

    service: LocalServer
    release: threading.Event

    def seen(self, count: int) -> None:
        wait_for(lambda: sum(r.path.startswith("/slow") for r in self.service.received) >= count,
                 what=f"{count} slow requests to reach the local service")


@pytest.fixture
def slow() -> Iterator[Slow]:
    release = threading.Event()

    def answer(request: Received) -> Reply:
        if request.path.startswith("/slow"):
            release.wait(60)
        return Reply(200, [("Content-Type", "text/plain")], BODY)

    with http_server(answer) as service:
        try:
            yield Slow(service, release)
        finally:
            release.set()


def tunnel(procs: list[Proc], env: dict[str, str], service: LocalServer, *flags: str) -> tuple[Proc, int]:
    """``devtunnel relay`` with ``flags`` and an agent holding tunnel ``drain`` to ``service``."""
    port = free_port()
    relay = start(procs, env, "relay", "--listen", f"127.0.0.1:{port}", "--token", "good", *flags)
    relay.line(lambda l: l.startswith("Relay listening"))
    agent = start(procs, env, "http", str(service.port), "--relay", f"ws://127.0.0.1:{port}", "--token", "good",
                  "--name", "drain", "--no-tui", "--api-port", "0", "--no-record")
    agent.line(lambda l: l.startswith("Forwarding"))
    return relay, port


def send(port: int, request: str) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    client.sendall(request.replace("HOST", f"drain.localhost:{port}").encode())
    return client


def read_to_end(client: socket.socket) -> bytes:
    """Everything the relay sends until it closes the connection (a reset ends it too)."""
    chunks = []
    try:
        while data := client.recv(65536):
            chunks.append(data)
    except ConnectionResetError:
        chunks.append(b"<reset>")
    client.close()
    return b"".join(chunks)


def response(data: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines)}
    return status, fields, body


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_requests_in_flight_at_sigterm_get_their_whole_response_and_the_relay_exits_0_after_them(
    env: dict[str, str], procs: list[Proc], slow: Slow
) -> None:
    """A GET (answered from the relay's callbacks) and a POST whose body followed ``100
    Continue`` (answered by a task) are in flight, and a kept-alive connection is idle: on
    SIGTERM the relay refuses new connections and closes the idle one, keeps running while
    the two are answered, sends each whole with ``Connection: close`` and closes it, then
    exits 0 and says all finished."""
    relay, port = tunnel(procs, env, slow.service)
    idle = send(port, "GET /fast HTTP/1.1\r\nHost: HOST\r\n\r\n")
    first = b""
    while len(response(first)[2]) < len(BODY):  # the whole response; the connection stays open
        first += idle.recv(65536)
    assert response(first)[0] == b"HTTP/1.1 200 OK" and response(first)[2] == BODY
    direct = send(port, "GET /slow/direct HTTP/1.1\r\nHost: HOST\r\n\r\n")
    task = send(port, "POST /slow/task HTTP/1.1\r\nHost: HOST\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert task.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    task.sendall(b"hi")
    slow.seen(2)

    relay.popen.send_signal(signal.SIGTERM)
    line = relay.line(lambda l: DRAIN_STARTS in l, lines="err")
    assert line.endswith("stopping: 2 requests in flight; taking no new connections, waiting up to 10 s for them"
                         " to finish (a second Ctrl-C or SIGTERM stops at once)"), line
    assert refused(port)
    assert read_to_end(idle) == b""  # the kept-alive connection was closed, nothing sent on it
    assert relay.returncode is None

    slow.release.set()
    for client in (direct, task):
        status, fields, body = response(read_to_end(client))
        assert (status, fields[b"connection"], body) == (b"HTTP/1.1 200 OK", b"close", BODY)
    assert relay.wait() == 0
    assert any(l.endswith("stopping: every request in flight finished") for l in relay.err), relay.err
    assert "Traceback" not in "\n".join(relay.err)


def test_requests_still_in_flight_at_the_drain_timeout_are_cut_and_the_log_says_how_many(
    env: dict[str, str], procs: list[Proc], slow: Slow
) -> None:
    relay, port = tunnel(procs, env, slow.service, "--drain-timeout", "0.5")
    clients = [send(port, f"GET /slow/{n} HTTP/1.1\r\nHost: HOST\r\n\r\n") for n in range(2)]
    slow.seen(2)
    relay.popen.send_signal(signal.SIGTERM)
    assert relay.wait() == 0
    assert any(l.endswith("stopping: drain timeout of 0.5 s reached, 2 requests still in flight cut") for l in relay.err), relay.err
    for client in clients:
        status, _, body = response(read_to_end(client))
        assert (status, body) == (b"HTTP/1.1 503 Service Unavailable",
                                  b"the relay is stopping: tunnel drain did not answer in time\n")


def test_a_second_sigterm_during_the_drain_stops_the_relay_at_once(
    env: dict[str, str], procs: list[Proc], slow: Slow
) -> None:
    relay, port = tunnel(procs, env, slow.service, "--drain-timeout", "600")
    client = send(port, "GET /slow HTTP/1.1\r\nHost: HOST\r\n\r\n")
    slow.seen(1)
    relay.popen.send_signal(signal.SIGTERM)
    relay.line(lambda l: DRAIN_STARTS in l, lines="err")
    assert relay.stop(signal.SIGTERM, timeout=15) == 0  # not the 600 s
    assert any(l.endswith("stopping at once (a second signal): 1 request still in flight cut") for l in relay.err), relay.err
    assert response(read_to_end(client))[0] == b"HTTP/1.1 503 Service Unavailable"


def test_a_drain_timeout_of_0_stops_at_once_as_before(env: dict[str, str], procs: list[Proc], slow: Slow) -> None:
    relay, port = tunnel(procs, env, slow.service, "--drain-timeout", "0")
    client = send(port, "GET /slow HTTP/1.1\r\nHost: HOST\r\n\r\n")
    slow.seen(1)
    assert relay.stop(signal.SIGINT, timeout=15) == 0
    assert response(read_to_end(client))[0] == b"HTTP/1.1 503 Service Unavailable"
    assert not any("stopping" in l for l in relay.err), relay.err


def test_with_no_request_in_flight_the_relay_stops_at_once_without_a_drain_line(
    env: dict[str, str], procs: list[Proc], slow: Slow
) -> None:
    relay, port = tunnel(procs, env, slow.service, "--drain-timeout", "600")
    client = send(port, "GET /fast HTTP/1.1\r\nHost: HOST\r\n\r\n")
    assert response(client.recv(65536))[0] == b"HTTP/1.1 200 OK"  # answered: kept alive, idle
    assert relay.stop(signal.SIGTERM, timeout=15) == 0
    # No drain, or (when the signal came between the client's last byte and the relay closing
    # that stream's books, as on a loaded machine) one that ends at once with nothing cut.
    stopping = [l for l in relay.err if "stopping" in l]
    assert stopping == [] or (len(stopping) == 2 and "every request in flight finished" in stopping[1]), relay.err
    client.close()
    # The agent is told why, once: it said "the relay is going away: the relay is shutting
    # down; reconnect; reconnecting in 0.4 s".
    agent = procs[-1]
    line = agent.line(lambda l: "the relay is going away" in l, "err")
    assert "tunnel drain: the relay is going away: shutting down; reconnecting in " in line, line


def test_the_embedded_relay_of_devtunnel_http_does_not_drain(env: dict[str, str], procs: list[Proc], slow: Slow) -> None:
    """Its agent goes away with it: on SIGTERM the agent's tunnel lets its request finish for
    a while (``LEAVE_GRACE``), then the embedded relay stops as before, saying nothing of a
    drain; the held request is cut."""
    port = free_port()
    agent = start(procs, env, "http", str(slow.service.port), "--no-tui", "--api-port", "0", "--no-record",
                  "--port", str(port), "--name", "drain")
    agent.line(lambda l: l.startswith("Forwarding"))
    client = send(port, "GET /slow HTTP/1.1\r\nHost: HOST\r\n\r\n")
    slow.seen(1)
    assert agent.stop(signal.SIGTERM, timeout=20) == 0
    assert not response(read_to_end(client))[0].startswith(b"HTTP/1.1 200")
    assert not any(DRAIN_STARTS in l or "stopping:" in l for l in agent.err), agent.err
