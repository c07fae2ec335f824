"""The relay: public HTTP(S) for ``NAME.DOMAIN``, routed to the agent holding tunnel NAME.

uvicorn (httptools parser) serves our own ASGI callable inside the caller's event loop. Agents
connect by WebSocket to ``/_devtunnel/connect`` on the same listener; each WebSocket carries one
multiplexed tunnel connection (``devtunnel.protocol``). Public requests are routed by Host,
except on a port pinned to one tunnel (``Relay.pin``): everything arriving there goes to that
tunnel (a provider such as cloudflared forwards public traffic to it).

The embedded relay answers only Hosts that name it (``Relay.answers``): loopback names, those the
user allowed (``--allow-host``), and on a pinned port its provider's public host too. Anything
else is taken for a web page that reached 127.0.0.1 through DNS rebinding, and gets 421
(``FOREIGN_HOST``) before it reaches a tunnel.

``Relay`` routes; the jobs it routes to are in their own modules: ``http_proxy`` and
``ws_proxy`` forward public requests, ``agents`` admits agents (``registry``: who holds which
name), ``pages`` answers on the relay's own domain, ``listening`` sets uvicorn up, and
``settings`` holds ``RelaySettings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, Final
from urllib.parse import urlsplit

import uvicorn
from devtunnel.errors import ConfigError
from devtunnel.protocol.connection import ErrorCode
from devtunnel.relay.agents import AgentGate
from devtunnel.relay.descriptors import DescriptorWatch, OpenConnections, open_file_limit
from devtunnel.relay.asgi import Receive, Scope, Send, deny_websocket, protocol_of, send_plain
from devtunnel.relay.headers import hostname_of as _hostname, request_host
from devtunnel.relay.http import DirectCycle, HeadLimitedHttpProtocol
from devtunnel.relay.http_proxy import HttpForwarder
from devtunnel.relay.link import AgentLink, BufferBudget
from devtunnel.relay.listening import (
    TlsFront,
    cut_unread_websockets,
    listen_more,
    server_config,
    start_server,
    stop_accepting,
    stop_listening,
)
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.pages import own_page
from devtunnel.relay.pool import Pool
from devtunnel.relay.registry import AgentRegistry
from devtunnel.relay.rules import RuleBook
from devtunnel.relay.pending import PendingConnections
from devtunnel.relay.settings import (
    RelaySettings,
    address_connections,
    allowed_hostnames,
    client_limit,
    pending_limits,
    trusted_networks,
)
from devtunnel.relay.slots import ClientSlots
from devtunnel.relay.tls_door import abort_all
from devtunnel.relay.ws_guard import GuardedWebSocketProtocol
from devtunnel.relay.ws_proxy import WebSocketForwarder
from devtunnel.rules import Engine
from devtunnel.values.loopback import is_loopback_host
from devtunnel.values.relay_url import CONNECT_PATH

log = logging.getLogger("devtunnel.relay")

DRAIN_POLL = 0.05
"""Seconds between two looks at the requests in flight while the relay drains (``Relay.drain``)."""

FOREIGN_HOST = 421
"""The embedded relay's answer to a Host that does not name it (421 Misdirected Request)."""


class Relay:
    """A running relay. ``await start()``, then ``await stop()``; ``await drain(...)`` before
    ``stop`` lets the requests in flight finish.

    The instance is also the ASGI application uvicorn serves.
    """

    def __init__(self, settings: RelaySettings) -> None:
        if bool(settings.tls_cert) != bool(settings.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
        self.settings = settings
        self._domain = settings.domain.lower().strip(".").encode("idna")
        self._suffix = b"." + self._domain
        self._names = TunnelNames(self._suffix)
        # The embedded relay holds one person's tunnels, all without a token.
        names, connections = (0, 0) if settings.embedded else (settings.tunnels_per_token, settings.connections_per_token)
        self._registry = AgentRegistry(settings.name_check_timeout, names, connections)
        self._tunnels = self._registry.pools
        """The agents holding each tunnel name online (one, or a pool sharing it), oldest name first."""
        self._public = urlsplit(settings.public_url) if settings.public_url else None
        proto = "https" if settings.tls or (self._public is not None and self._public.scheme == "https") else "http"
        self._scheme = proto
        self._peer_errors = PeerErrorLog(log, settings.log_interval)
        self._budget = BufferBudget(
            settings.agent_buffer, settings.relay_buffer, settings.agent_responses, settings.relay_buffer,
            self._peer_errors,
        )
        self._slots = ClientSlots(client_limit(settings))
        self._rules = RuleBook(settings.rules, trusted_networks(settings.trusted_proxies), max_buckets=settings.rate_clients)
        trusted = trusted_networks(settings.trusted_proxies)
        self._pending = PendingConnections(*pending_limits(settings), self._peer_errors, exempt=trusted)
        # The embedded relay shares its process with the agent, whose files are no concern of its log.
        self._watch = None if settings.embedded else DescriptorWatch(self._peer_errors, open_file_limit())
        self._open = OpenConnections(address_connections(settings), self._peer_errors, exempt=trusted, watch=self._watch)
        self._forward_http = HttpForwarder(
            max_body=settings.max_body,
            proto=proto,
            body_timeout=settings.body_timeout,
            body_min_rate=settings.body_min_rate,
            slots=self._slots,
            peer_errors=self._peer_errors,
            rules=self._rules,
            pools=self._tunnels,
        )
        self._forward_ws = WebSocketForwarder(
            proto=proto, slots=self._slots, peer_errors=self._peer_errors, rules=self._rules
        )
        self._gate = AgentGate(
            settings, self._registry, self._budget, self._rules, self._peer_errors, self.public_url_for
        )
        self._tls = TlsFront(self._pending, settings.head_timeout, self._open)
        """Connections of the TLS listeners until their handshake is done (``tls_door``)."""
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._port = 0
        # Local port -> the tunnel every request arriving there goes to (see ``pin``).
        self._pins: dict[int, str] = {}
        self._pin_listeners: dict[int, asyncio.AbstractServer] = {}
        # Pinned port -> the public hostname its provider forwards (``serve_host``).
        self._pin_hosts: dict[int, bytes] = {}
        self._loopback = LoopbackHosts()
        self._allowed, self._allowed_under = allowed_hostnames(settings.allowed_hosts)

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port actually listened on (after ``start``)."""
        return self._port

    @property
    def tunnels(self) -> list[str]:
        """Names of the tunnels online, oldest first."""
        return list(self._tunnels)

    def rules_of(self, name: str) -> Engine | None:
        """The rules (with their state) of tunnel ``name`` while it is online (a pool's first member's)."""
        pool = self._tunnels.get(name)
        tunnel = pool.members[0] if pool is not None and pool.members else None
        return self._rules.engine(tunnel) if tunnel is not None else None

    @property
    def agents(self) -> dict[str, int]:
        """How many agents hold each tunnel name online (more than one: a pool), oldest first."""
        return {name: len(pool) for name, pool in self._tunnels.items()}

    @property
    def buffered(self) -> int:
        """Bytes held now on their way to agents (at most ``relay_buffer``, give or take control frames)."""
        return self._budget.used

    @property
    def held_responses(self) -> int:
        """Bytes of responses received from agents and not yet taken to be written to public
        clients (at most ``relay_buffer``, plus one frame: ``BufferBudget``)."""
        return self._budget.responses

    @property
    def held_messages(self) -> int:
        """Bytes of public WebSockets' messages held now (at most ``relay_buffer``, plus 64 KiB
        per WebSocket: ``ws_guard.HeldMessages``)."""
        config = self._server.config if self._server is not None else None
        protocol = getattr(config, "ws_protocol_class", None)
        return protocol.held_messages.used if protocol is not None else 0

    @property
    def connections(self) -> int:
        """Open client connections (HTTP and WebSocket, public and agents)."""
        return len(self._server.server_state.connections) if self._server is not None else 0

    @property
    def pending_connections(self) -> int:
        """Connections open now that wait for a request head (new, or kept alive between
        requests), and agents' WebSockets whose HELLO is not accepted yet (``relay.pending``)."""
        return len(self._pending)

    @property
    def turned_away(self) -> dict[str, int]:
        """Since the start: connections ``refused`` (429) for their address's pending connections,
        and pending ones ``dropped`` to make room under the total."""
        return {"refused": self._pending.refused, "dropped": self._pending.dropped}

    @property
    def open_connections(self) -> int:
        """Public connections open now, in any state (agents' until their HELLO is accepted):
        what ``connections_per_address`` bounds per client address (``relay.descriptors``)."""
        return self._open.total

    @property
    def refused_for_open(self) -> int:
        """Connections refused since the start for their address's open connections (429)."""
        return self._open.refused

    @property
    def requests_in_flight(self) -> int:
        """HTTP requests through tunnels whose response has not all come from the agent yet:
        the open HTTP streams of every agent's link (public WebSockets, and the agents' own
        connections, are not counted)."""
        return sum(
            not stream.websocket
            for pool in self._tunnels.values()
            for tunnel in pool.members
            for stream in tunnel.streams.values()
        )

    async def start(self) -> None:
        """Listen; returns once the socket accepts connections.

        Raises:
            ConfigError: the address cannot be listened on, or the TLS files are unusable.
        """
        s = self.settings
        config = server_config(
            self, s, direct=self._direct, peer_errors=self._peer_errors, pending=self._pending, connections=self._open
        )
        self._server, self._socket = await start_server(config, s.host, s.port, self._tls)
        if self._watch is not None:  # asyncio's loop reports an accept that failed there (uvloop's says nothing)
            self._watch.install(asyncio.get_running_loop())
        self._port = self._socket.getsockname()[1]

    async def pin(self, name: str, port: int = 0, *, forwarded: bool = False) -> int:
        """Listen on one more port (``settings.host``; 0: any free one) for tunnel ``name`` alone.

        Every request and WebSocket arriving there goes to tunnel ``name`` whatever its Host,
        and nothing else is served there: no relay pages, no agent logins. Returns the port.

        ``forwarded``: what connects there is a proxy on this machine that appends each client's
        address to X-Forwarded-For, as Cloudflare's edge does for cloudflared: the rules judge,
        and the agent records, that address (``RuleBook.client_of``), not the proxy's.

        Raises:
            ConfigError: the port cannot be listened on.
        """
        server = self._server
        if server is None:
            raise RuntimeError("the relay is not started")
        bound, listener = await listen_more(server, self.settings.host, port, self._tls)
        self._pins[bound] = name
        self._pin_listeners[bound] = listener
        if forwarded:
            self._rules.forwarded_ports.add(bound)
        else:
            self._rules.forwarded_ports.discard(bound)
        return bound

    def serve_host(self, port: int, public_url: str) -> None:
        """Answer on pinned port ``port`` requests whose Host is ``public_url``'s host (any port):
        the provider forwarding there passes its public Host on. Replaces the one served before
        (a provider that restarts may print a new URL; the old one no longer leads here)."""
        try:
            hostname = urlsplit(public_url).hostname
        except ValueError:
            hostname = None
        if hostname and port in self._pins:
            self._pin_hosts[port] = hostname.rstrip(".").encode("latin-1", "replace")

    def unpin(self, port: int) -> None:
        """Stop listening on a port ``pin`` opened. Connections still open there keep going only
        to its tunnel (until another ``pin`` takes the same port number)."""
        listener = self._pin_listeners.pop(port, None)
        self._pin_hosts.pop(port, None)
        self._rules.forwarded_ports.discard(port)
        if listener is not None:
            stop_listening(self._server, listener)

    def stop_accepting(self) -> None:
        """Take no new requests: every listener closes (pinned ports too), so new connections
        are refused, and each public HTTP connection closes once its response is written (that
        response says ``Connection: close`` when its head was not written yet), an idle
        kept-alive one at once (``listening.stop_accepting``). Agents stay connected, and
        public WebSockets open."""
        if self._server is not None:
            stop_accepting(self._server)

    async def drain(self, timeout: float, interrupted: asyncio.Event | None = None) -> int:
        """Take no new requests (``stop_accepting``) and let the HTTP requests in flight through
        tunnels finish, before ``stop``: agents stay connected, as the streams they serve must
        finish. Returns once none is in flight (``requests_in_flight``), ``timeout`` seconds
        have passed, or ``interrupted`` is set; with how many are still in flight then (0: all
        finished), which ``stop`` cuts.

        ``devtunnel relay`` drains; the embedded relay does not (its agent goes away with it).
        """
        server = self._server
        if server is None:
            return 0
        if interrupted is None:
            interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            stop_accepting(server)  # each time: also a connection the loop was still setting up
            left = self.requests_in_flight
            remaining = deadline - loop.time()
            if not left or remaining <= 0 or interrupted.is_set():
                return left
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(DRAIN_POLL, remaining)):
                    await interrupted.wait()

    async def stop(self) -> None:
        """Tell every agent the relay is going away, then close all connections: a public
        WebSocket whose client has not read what was written to it is dropped at once, with
        one log line saying how many (``listening.cut_unread_websockets``)."""
        for tunnel in [member for pool in list(self._tunnels.values()) for member in pool.members]:
            # The agent says the reason after "the relay is going away:", and reconnects on this code.
            await tunnel.disconnect(ErrorCode.SHUTTING_DOWN, "shutting down", 1012)
        server, self._server = self._server, None
        abort_all(self._tls.doors)
        if server is not None:
            cut = cut_unread_websockets(server)
            if cut:
                log.info("stopping: %d public WebSocket%s cut, not reading what the relay sent",
                         cut, "" if cut == 1 else "s")
            await server.shutdown(sockets=[self._socket] if self._socket else None)
        self._socket = None
        if self._watch is not None:
            self._watch.uninstall()
        self._peer_errors.close()

    def public_url_for(self, name: str) -> str:
        """The public URL of tunnel ``name``, e.g. ``https://name.tunnel.example.com``."""
        if self._public is not None and self._public.hostname:
            port = f":{self._public.port}" if self._public.port else ""
            return f"{self._scheme}://{name}.{self._public.hostname}{port}"
        default_port = 443 if self._scheme == "https" else 80
        port = "" if self._port == default_port else f":{self._port}"
        return f"{self._scheme}://{name}.{self.settings.domain}{port}"

    # -- ASGI --------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            host = request_host(scope["headers"])
            server = scope.get("server")
            if not self.answers(host, server):
                await send_plain(send, FOREIGN_HOST, self._foreign(host, server))
                return
            tunnel, own = self._route(host, server)
            if tunnel is not None:
                await self._forward_http(tunnel, scope, receive, send, host)
            elif own:
                await own_page(scope, send, host, self._tunnels)
            else:
                await send_plain(send, 404, f"no tunnel is online at {host.decode('latin-1')}\n")
        elif kind == "websocket":
            host = request_host(scope["headers"])
            server = scope.get("server")
            if not self.answers(host, server):
                await receive()
                await deny_websocket(send, FOREIGN_HOST, self._foreign(host, server))
                return
            if scope["path"] == CONNECT_PATH and not _hostname(host).endswith(self._suffix) and not self._pinned(server):
                await self._gate.serve(scope, receive, send)
                return
            tunnel, _ = self._route(host, server)
            if tunnel is not None:
                protocol = protocol_of(receive)
                if isinstance(protocol, GuardedWebSocketProtocol):
                    protocol.opened()
                await self._forward_ws(tunnel, scope, receive, send, host)
            else:
                await receive()
                await deny_websocket(send, 404, f"no tunnel is online at {host.decode('latin-1')}\n")

    def _direct(self, client: HeadLimitedHttpProtocol, cycle: DirectCycle) -> bool:
        """Take a request bound for a tunnel over from uvicorn, without an ASGI task
        (``HttpForwarder.direct``); False leaves it to ``__call__``."""
        host = request_host(cycle.headers)
        pool, _ = self._pool_for(host, client.server)  # (the scope's "server")
        if pool is None or not self.answers(host, client.server):  # (__call__ refuses it)
            return False
        # The member is only taken if the request is: one left to __call__ is routed there anew.
        tunnel = pool.peek()
        if tunnel is None or not self._forward_http.direct(tunnel, client, cycle, host):
            return False
        pool.took(tunnel)
        return True

    def answers(self, host: bytes, server: Any = None) -> bool:
        """Whether the relay answers a request for Host ``host`` arriving at local address
        ``server``: a relay of its own domain answers every Host (by domain, or 404); the
        embedded one only Hosts that name it.

        Those are a loopback name with any port (``NAME.localhost``, ``localhost``,
        ``127.0.0.1``, ``[::1]``: ``values.loopback``, the agent API's rule), no Host at all
        (which no browser sends), the hosts the user allowed (``RelaySettings.allowed_hosts``),
        and on a pinned port its provider's public host (``serve_host``). A web page of another
        site that a browser reached 127.0.0.1 through (DNS rebinding) carries its own site's
        name, and must never read the tunnelled service as if it were that site's: with
        ``--host-header rewrite`` the service would see ``127.0.0.1`` and its own guard
        (Vite's ``allowedHosts``) would let it through."""
        if not self.settings.embedded or not host or self._loopback[host]:
            return True
        hostname = _hostname(host)
        if hostname in self._allowed or (self._allowed_under and hostname.endswith(self._allowed_under)):
            return True
        served = self._pin_hosts.get(server[1]) if server and self._pin_hosts else None
        return served is not None and hostname == served

    def _foreign(self, host: bytes, server: Any) -> str:
        """What a request for a Host the relay does not answer is told (``answers``)."""
        port = server[1] if server else self._port
        pinned = self._pinned(server)
        name = pinned or next(iter(self._tunnels), "NAME")
        provider = " and the public host of the --via provider forwarding here" if pinned else ""
        allowed = ", the names --allow-host gave" if self._allowed else ""
        return (f"devtunnel: this relay does not answer for Host {host.decode('latin-1')}: it answers for "
                f"NAME.localhost, localhost, 127.0.0.1, [::1]{allowed}{provider} only, so that a web page of another "
                f"site that reaches 127.0.0.1 (DNS rebinding) cannot read your service. Open "
                f"http://{name}.localhost:{port}/ or http://127.0.0.1:{port}/, or allow this name with "
                f"--allow-host {_hostname(host).decode('latin-1')}\n")

    def _pinned(self, server: Any) -> str | None:
        """The tunnel the local address ``server`` (a scope's ``server``) is pinned to, if any."""
        return self._pins.get(server[1]) if server and self._pins else None

    def _route(self, host: bytes, server: Any = None) -> tuple[AgentLink | None, bool]:
        """Where a request for ``host`` arriving at local address ``server`` goes: (tunnel, False),
        (None, True) for the relay's own pages, or (None, False) for a tunnel that is not online.
        A pool's turn moves on."""
        pool, own = self._pool_for(host, server)
        return (pool.pick() if pool is not None else None), own

    def _pool_for(self, host: bytes, server: Any = None) -> tuple[Pool | None, bool]:
        """The agents holding the tunnel ``host`` (or the pinned port ``server`` arrived at) names:
        (pool, False), (None, True) for the relay's own pages, or (None, False) for a tunnel that
        is not online."""
        if self._pins:
            pinned = self._pinned(server)
            if pinned is not None:
                return self._tunnels.get(pinned), False
        name = self._names[host]
        if name is not None:
            return self._tunnels.get(name), False
        hostname = _hostname(host)
        if hostname == self._domain or not self.settings.embedded:
            return None, True
        # Embedded: any other host it answers (127.0.0.1:PORT, ``answers``) reaches the oldest tunnel.
        return next(iter(self._tunnels.values()), None), False


def tunnel_name(host: bytes, suffix: bytes) -> str | None:
    """The tunnel name a Host header names under the relay's domain (``suffix``: ``.`` and the
    domain), or None when it does not end in the domain."""
    hostname = _hostname(host)
    if hostname.endswith(suffix):
        return hostname[: -len(suffix)].decode("latin-1")
    return None


class TunnelNames(dict[bytes, "str | None"]):
    """``tunnel_name`` of the Host headers seen lately, by Host header (``names[host]``): each
    worked out once, as a keep-alive client sends the same Host with every request. Holds at
    most ``kept`` of them (then starts over), and none longer than ``MAX_KEPT_HOST`` bytes (a
    hostname and a port), so a client inventing Host headers, long ones too, costs at most
    ``kept`` short entries."""

    MAX_KEPT_HOST: Final = 300  # (Final: compiled, as relay.server can be, a plain class attribute was missing on these instances)

    def __init__(self, suffix: bytes, kept: int = 1024) -> None:
        super().__init__()
        self.suffix = suffix
        self.kept = kept

    def __missing__(self, host: bytes) -> str | None:
        name = tunnel_name(host, self.suffix)
        if len(host) <= self.MAX_KEPT_HOST:
            if len(self) >= self.kept:
                self.clear()
            self[host] = name
        return name


class LoopbackHosts(dict[bytes, bool]):
    """``is_loopback_host`` of the Host headers seen lately, by Host header (``hosts[host]``),
    kept as ``TunnelNames`` keeps names: at most ``kept`` of them, none longer than
    ``TunnelNames.MAX_KEPT_HOST`` bytes."""

    def __init__(self, kept: int = 1024) -> None:
        super().__init__()
        self.kept = kept

    def __missing__(self, host: bytes) -> bool:
        loopback = is_loopback_host(host.decode("latin-1"))
        if len(host) <= TunnelNames.MAX_KEPT_HOST:
            if len(self) >= self.kept:
                self.clear()
            self[host] = loopback
        return loopback
