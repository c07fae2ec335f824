"""``devtunnel relay`` stopping while public WebSocket clients have stopped reading: the relay
and an agent as subprocesses, a local WebSocket service that pushes without end, and public
clients on raw sockets that take the handshake and never read again.

What the relay wrote to such a client waits in its socket; the relay's task sending to it
waits for the client to read. On SIGTERM the relay cuts those WebSockets itself and says how
many in one line: no task is left for uvicorn to cancel (a traceback per WebSocket, "Exception
in ASGI application"), and it exits 0 promptly.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.helpers import free_port, wait_for
from tests.kit.procs import Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.tunnel_fixtures import LoopThread, _listen

MESSAGE = b"p" * (64 << 10)
CLIENTS = 4
CUT = re.compile(r"stopping: (\d+) public WebSockets? cut, not reading what the relay sent$")


def _kernel_send_buffer() -> int:
    """The most a TCP socket's send buffer grows to here (``tcp_wmem``'s third value)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 << 20


@pytest.fixture
def pusher() -> Iterator[tuple[int, dict[int, int]]]:
    """A local WebSocket service sending binary messages to each client as fast as it takes
    them; yields its port and the bytes sent on each connection."""
    thread = LoopThread()
    sock = _listen()
    sent: dict[int, int] = {}

    async def push(ws: ServerConnection) -> None:
        key = id(ws)
        sent[key] = 0
        try:
            while True:
                await ws.send(MESSAGE)
                sent[key] += len(MESSAGE)
        except ConnectionClosed:
            pass

    async def start_server() -> object:
        return await serve(push, sock=sock, compression=None, max_size=None)

    server = thread.call(start_server())
    try:
        yield sock.getsockname()[1], sent
    finally:
        server.close()  # type: ignore[attr-defined]
        thread.close()


def stalled_client(port: int) -> socket.socket:
    """A public WebSocket client that takes the 101 and then reads nothing."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(30)
    client.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    client.sendall(
        f"GET /push HTTP/1.1\r\nHost: stop.localhost:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        data = client.recv(1)
        assert data, head
        head += data
    assert head.startswith(b"HTTP/1.1 101"), head
    return client


def test_sigterm_cuts_public_websockets_that_stopped_reading_without_a_traceback_and_exits_0(
    env: dict[str, str], procs: list[Proc], pusher: tuple[int, dict[int, int]]
) -> None:
    service_port, sent = pusher
    port = free_port()
    relay = start(procs, env, "relay", "--listen", f"127.0.0.1:{port}", "--token", "good")
    relay.line(lambda l: l.startswith("Relay listening"))
    agent = start(procs, env, "http", str(service_port), "--relay", f"ws://127.0.0.1:{port}", "--token", "good",
                  "--name", "stop", "--no-tui", "--api-port", "0", "--no-record")
    agent.line(lambda l: l.startswith("Forwarding"))
    clients = [stalled_client(port) for _ in range(CLIENTS)]
    # More than the kernel takes between the relay and a client: the rest waits in the relay
    # (up to the stream's window), whose task sending to the client waits for it to read.
    beyond = _kernel_send_buffer() + (1 << 20)
    wait_for(lambda: len(sent) == CLIENTS and min(sent.values()) > beyond, timeout=30,
             what=f"the service to push {beyond} bytes to each client; sent {sent}")

    relay.popen.send_signal(signal.SIGTERM)
    assert relay.wait(timeout=15) == 0
    err = "\n".join(relay.err)
    assert "Traceback" not in err and "Exception in ASGI application" not in err, err
    assert not any("Cancel" in l and "running task" in l for l in relay.err), err
    # (at most one line; the count is of the WebSockets the relay still had bytes for: how much
    # the kernel took of each decides whether it was still being written to, so in a rare run
    # none is, and there is nothing to cut; most runs cut one or more, which failed before)
    cut = [m for l in relay.err if (m := CUT.search(l))]
    assert len(cut) <= 1 and all(1 <= int(m[1]) <= CLIENTS for m in cut), err
    for client in clients:
        client.close()
