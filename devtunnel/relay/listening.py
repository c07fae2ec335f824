"""How the relay listens: uvicorn, configured with the relay's own protocol classes, serving the
relay's ASGI application on a socket bound here, more listeners on the same server for pinned
ports (``Relay.pin``), and how it stops taking requests when it drains (``stop_accepting``).
With TLS the listeners are the relay's own, each connection a ``TlsDoor`` until its handshake
is done (``TlsFront``).

uvicorn is driven by hand (``Server.startup`` and ``shutdown`` rather than ``serve``), so it runs
inside the caller's event loop; ``tests/net/test_uvicorn_contract.py`` checks what this relies on.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any

import uvicorn
from devtunnel.errors import ConfigError
from devtunnel.relay.descriptors import OpenConnections
from devtunnel.relay.http import DirectCycle, HeadLimitedHttpProtocol
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.pending import PendingConnections
from devtunnel.relay.tls_door import TlsDoor
from devtunnel.relay.settings import RelaySettings
from devtunnel.relay.ws_guard import PRELOGIN_MAX_SIZE, GuardedWebSocketProtocol
from devtunnel.sockets import bind

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
"""Seconds a TLS handshake may take on a listener given no ``TlsFront``."""

# Largest WebSocket message accepted, from agents (batched frames) and public clients alike.
WS_MAX_SIZE = 64 << 20


def server_config(
    app: Any,
    settings: RelaySettings,
    *,
    direct: Callable[[HeadLimitedHttpProtocol, DirectCycle], bool],
    peer_errors: PeerErrorLog,
    pending: PendingConnections | None = None,
    connections: OpenConnections | None = None,
) -> uvicorn.Config:
    """uvicorn's configuration for the relay (its protocols, limits and TLS), loaded.

    Raises:
        ConfigError: the TLS files are unusable.
    """
    s = settings
    config = uvicorn.Config(
        app,
        http=HeadLimitedHttpProtocol.configured(
            s.max_head, s.head_timeout, direct=direct, peer_errors=peer_errors, pending=pending,
            connections=connections,
        ),
        ws=GuardedWebSocketProtocol.configured(
            PRELOGIN_MAX_SIZE, s.stall_timeout, s.relay_buffer, pending=pending, connections=connections
        ).logging_to(peer_errors),
        ws_max_size=WS_MAX_SIZE,
        ws_per_message_deflate=False,
        ws_ping_interval=s.ping_interval,
        ws_ping_timeout=s.ping_timeout,
        lifespan="off",
        interface="asgi3",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=max(1, int(s.shutdown_timeout)),
        ssl_certfile=s.tls_cert,
        ssl_keyfile=s.tls_key,
    )
    try:
        config.load()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use the TLS certificate {s.tls_cert} / key {s.tls_key}: {exc}") from exc
    return config


class TlsFront:
    """How the relay's TLS listeners take a connection: a ``TlsDoor`` first, counted in
    ``pending`` and ``connections`` and given ``timeout`` seconds for its handshake; ``doors``
    are those shaking hands now (``abort_all`` at the relay's stop)."""

    def __init__(
        self, pending: PendingConnections | None, timeout: float, connections: OpenConnections | None = None
    ) -> None:
        self.pending = pending
        self.timeout = timeout
        self.connections = connections
        self.doors: set[TlsDoor] = set()


async def start_server(
    config: uvicorn.Config, host: str, port: int, tls: TlsFront | None = None
) -> tuple[uvicorn.Server, socket.socket]:
    """Start uvicorn on ``host:port``; returns once the socket accepts connections. With TLS
    (``config.ssl``), the listener is the relay's own (``listen_more``), each connection
    through a ``TlsDoor`` (``tls``).

    Raises:
        ConfigError: the address cannot be listened on.
    """
    sock = bind(host, port)
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    try:
        if config.ssl is None:
            await server.startup(sockets=[sock])
        else:
            await server.startup(sockets=[])
            await _listen(server, sock, tls)
    except BaseException:
        sock.close()
        raise
    return server, sock


async def listen_more(
    server: uvicorn.Server, host: str, port: int, tls: TlsFront | None = None
) -> tuple[int, asyncio.AbstractServer]:
    """One more listener on ``host:port`` (0: any free port) whose connections ``server`` serves
    as it serves its own, and which its ``shutdown`` closes with the others. Returns the port
    and the listener.

    Raises:
        ConfigError: the port cannot be listened on.
    """
    sock = bind(host, port)
    try:
        listener = await _listen(server, sock, tls)
    except BaseException:
        sock.close()
        raise
    return int(sock.getsockname()[1]), listener


async def _listen(server: uvicorn.Server, sock: socket.socket, tls: TlsFront | None) -> asyncio.AbstractServer:
    """A listener on ``sock`` whose connections ``server`` serves, closed by its ``shutdown``."""
    config = server.config
    loop = asyncio.get_running_loop()

    def protocol() -> asyncio.Protocol:  # what uvicorn's own listener creates per connection
        return config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=server.server_state, app_state=server.lifespan.state, _loop=loop)

    context = config.ssl
    factory: Callable[[], asyncio.Protocol] = protocol
    if context is not None:
        front = tls or TlsFront(None, DEFAULT_HANDSHAKE_TIMEOUT)

        def factory() -> asyncio.Protocol:
            return TlsDoor(protocol, context, front.timeout, front.pending, front.doors, front.connections)

    listener = await loop.create_server(factory, sock=sock, backlog=config.backlog)
    server.servers.append(listener)  # closed with the others by ``shutdown``
    return listener


def stop_accepting(server: uvicorn.Server) -> None:
    """The first half of ``server.shutdown``, WebSockets left out: close every listener (its own
    and ``listen_more``'s), so new connections are refused, and ask each public HTTP connection
    to close: at once when no response is under way on it, else after that response, which says
    ``Connection: close`` if its head is not written yet (uvicorn's ``shutdown`` of its HTTP
    protocol; the direct path writes through the same cycle: ``http_direct.response_head``,
    ``complete``). WebSockets, the agents' and the public ones, stay open.

    Asking again is harmless: it also reaches a connection the loop was still setting up when
    the listeners closed.
    """
    for listener in server.servers:
        listener.close()
    for connection in list(server.server_state.connections):
        if isinstance(connection, HeadLimitedHttpProtocol):
            connection.shutdown()


def cut_unread_websockets(server: uvicorn.Server) -> int:
    """Drop each public WebSocket whose client has not read what was written to it
    (``GuardedWebSocketProtocol.cut_if_unread``), before ``server.shutdown``, which would
    otherwise wait for it up to its graceful timeout and then cancel the task writing to it.
    Returns how many were cut."""
    return sum(
        connection.cut_if_unread()
        for connection in list(server.server_state.connections)
        if isinstance(connection, GuardedWebSocketProtocol)
    )


def stop_listening(server: uvicorn.Server | None, listener: asyncio.AbstractServer) -> None:
    """Close a listener ``listen_more`` opened (connections open there carry on)."""
    listener.close()
    if server is not None and listener in server.servers:
        server.servers.remove(listener)
