"""``devtunnel relay`` under a flood of connections that prove nothing (``relay.pending``): the
relay and an agent as subprocesses, attackers on raw sockets from other loopback addresses.

Each such connection was bounded in time and bytes, not in number: one client holding a few
hundred (silent, trickling a head, or WebSocket upgrades to the agents' door that never send
HELLO) held as many descriptors and their memory, and past the process's open-file limit the
relay accepted no one. Now one address holds at most ``--pending-per-address`` of them (429
beyond, not upgraded), all together at most ``--max-pending`` (the oldest dropped to
make room), and an agent still connects and serves through its tunnel while the flood is held.
"""

from __future__ import annotations

import base64
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import free_port, wait_for
from tests.kit.procs import Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.kit.servers import Received, Reply, http_server

LEGIT = "127.0.0.1"
REFUSED_LINE = "the most one address may: a new one refused (429)"


def answer(request: Received) -> Reply:
    return Reply(200, [("Content-Type", "text/plain")], b"served " + request.path.encode())


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def upgrade_head(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /_devtunnel/connect HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


@contextmanager
def flood(port: int, source: str, count: int, deadline: float = 30.0) -> Iterator[list[socket.socket]]:
    """``count`` connections from ``source`` (at most 2,000; given up after ``deadline`` seconds),
    a third each: silent, a head begun and never ended, a WebSocket upgrade to the agents' door
    without HELLO. Closed at the end of the block."""
    assert count <= 2000
    socks: list[socket.socket] = []
    end = time.monotonic() + deadline
    try:
        for i in range(count):
            assert time.monotonic() < end, "the flood took too long to open"
            sock = socket.socket()
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
            if i % 3 == 1:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: flood")
            elif i % 3 == 2:
                sock.sendall(upgrade_head(port))
            socks.append(sock)
        # Upgraded before the block (or the next flood) goes on: an upgrade takes the newest
        # place among the pending connections, so the order they are dropped in is known.
        wait_for(lambda: all(upgraded_or_refused(sock) for sock in socks[2::3]), what="the upgrades answered")
        yield socks
    finally:
        for sock in socks:
            sock.close()


def upgraded_or_refused(sock: socket.socket) -> bool:
    """Whether the relay answered ``sock`` (or closed it)."""
    sock.settimeout(0)
    try:
        sock.recv(4096, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        pass
    return True


def first_line(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """The first line the relay sent on ``sock`` (b"" if it closed without a word)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return data.partition(b"\r\n")[0]


def waiting(sock: socket.socket) -> bool:
    """Whether the relay holds ``sock`` open without having closed it or sent a refusal (a
    WebSocket accepted, and no close frame after it)."""
    sock.settimeout(0)
    try:
        data = sock.recv(4096, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    head, end, frames = data.partition(b"\r\n\r\n")
    return head.startswith(b"HTTP/1.1 101") and bool(end) and not frames.startswith(b"\x88")


def answers(socks: list[socket.socket]) -> Counter[bytes]:
    """What each connection got: b"held" (nothing yet, or a WebSocket accepted), else its first line."""
    return Counter(b"held" if waiting(sock) else first_line(sock) for sock in socks)


def get(port: int, host: str, path: str) -> bytes:
    with socket.create_connection((LEGIT, port), timeout=10) as client:
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while data := client.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def relay(procs: list[Proc], env: dict[str, str], *flags: str) -> tuple[Proc, int]:
    port = free_port()
    proc = start(procs, env, "relay", "--listen", f"127.0.0.1:{port}", "--token", "good", "--head-timeout", "60", *flags)
    proc.line(lambda l: l.startswith("Relay listening"))
    return proc, port


def agent_serves(procs: list[Proc], env: dict[str, str], port: int, service_port: int) -> None:
    """An agent connects (from ``LEGIT``), and a request through its tunnel is answered."""
    agent = start(procs, env, "http", str(service_port), "--relay", f"ws://127.0.0.1:{port}", "--token", "good",
                  "--name", "calm", "--no-tui", "--api-port", "0", "--no-record")
    agent.line(lambda l: l.startswith("Forwarding"))
    response = get(port, f"calm.localhost:{port}", "/through")
    assert response.startswith(b"HTTP/1.1 200 OK") and response.endswith(b"served /through"), response


def test_one_address_holding_hundreds_of_idle_connections_gets_429_beyond_its_share_and_an_agent_still_serves(
    env: dict[str, str], procs: list[Proc]
) -> None:
    proc, port = relay(procs, env)  # the default: 256 per address
    before = descriptors(proc.pid)
    with http_server(answer) as service, flood(port, "127.0.0.3", 400) as socks:
        wait_for(lambda: sum(not waiting(s) for s in socks) >= 144, what="144 connections refused")
        got = answers(socks)
        # Those that spoke are answered; a silent one is cut (an answer would cross its request).
        assert got == {b"held": 256, b"HTTP/1.1 429 Too Many Requests": 96, b"": 48}, got
        assert descriptors(proc.pid) - before < 256 + 20  # (before: one per connection held, 400)
        agent_serves(procs, env, port, service.port)
        assert answers(socks[:256]) == {b"held": 256}  # the flood is still held
    lines = [line for line in proc.err if REFUSED_LINE in line]
    assert len(lines) == 1 and "client 127.0.0.3 holds 256 connections" in lines[0], proc.err
    assert proc.stop() == 0


def test_a_refused_connection_is_told_why_and_when_to_come_back(env: dict[str, str], procs: list[Proc]) -> None:
    proc, port = relay(procs, env, "--pending-per-address", "3")
    with flood(port, "127.0.0.3", 5) as socks:
        sock = socks[-1]  # (a WebSocket upgrade: the relay answers what it sends)
        sock.settimeout(10)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 429 Too Many Requests"
    assert b"retry-after: 5" in head.lower() and b"connection: close" in head.lower()
    assert body == b"too many connections from 127.0.0.3 waiting to send a request (at most 3); try again later\n"


def test_a_flood_from_many_addresses_is_held_to_the_total_the_oldest_dropped_and_an_agent_still_serves(
    env: dict[str, str], procs: list[Proc]
) -> None:
    proc, port = relay(procs, env, "--pending-per-address", "20", "--max-pending", "40")
    before = descriptors(proc.pid)
    with http_server(answer) as service, flood_from(port, ["127.0.0.3", "127.0.0.4", "127.0.0.5"], 20) as socks:
        wait_for(lambda: sum(not waiting(s) for s in socks) >= 20, what="the oldest 20 dropped")
        oldest, newest = socks[:20], socks[20:]
        assert answers(newest) == {b"held": 40}
        dropped = answers(oldest)
        # A client that began a head gets 503; a silent one a close, a WebSocket before HELLO 1013.
        assert dropped == {b"HTTP/1.1 503 Service Unavailable": 7, b"": 7, b"HTTP/1.1 101 Switching Protocols": 6}
        assert descriptors(proc.pid) - before < 40 + 20
        agent_serves(procs, env, port, service.port)  # its connection made room: the oldest went
        assert sum(waiting(s) for s in newest) >= 38
    assert any("the most the relay holds: the oldest dropped to make room" in line for line in proc.err), proc.err
    assert proc.stop() == 0


@contextmanager
def flood_from(port: int, sources: list[str], each: int) -> Iterator[list[socket.socket]]:
    """``flood`` from each of ``sources`` in turn, ``each`` connections apiece, all held together."""
    with flood(port, sources[0], each) as first:
        if len(sources) == 1:
            yield first
            return
        with flood_from(port, sources[1:], each) as rest:
            yield first + rest


def test_pending_limit_flags_take_whole_numbers(env: dict[str, str], procs: list[Proc]) -> None:
    for flag in ("--pending-per-address", "--max-pending"):
        proc = start(procs, env, "relay", flag, "-1")
        assert proc.wait() == 2
        assert f"{flag}: expected a whole number of 0 or more, not '-1'" in proc.err[-1], proc.err
