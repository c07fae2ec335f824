"""The relay: public HTTP(S) for ``NAME.DOMAIN``, routed to the agent holding tunnel NAME.

uvicorn (httptools parser) serves our own ASGI callable inside the caller's event loop. Agents
connect by WebSocket to ``/_devtunnel/connect`` on the same listener; each WebSocket carries one
multiplexed tunnel connection (``devtunnel.protocol``). Public requests are routed by Host,
except on a port pinned to one tunnel (``Relay.pin``): everything arriving there goes to that
tunnel, whatever its Host (a provider such as cloudflared forwards public traffic to it).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from devtunnel import __version__
from devtunnel.errors import ConfigError, ProtocolError
from devtunnel.values.names import random_name, validate_name
from devtunnel.relay.http import DeadPeerWebSocketProtocol, HeadLimitedHttpProtocol
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.pool import Pool, mix_refusal
from devtunnel.relay.proxy import ClientSlots, HttpForwarder, Receive, Scope, Send, WebSocketForwarder, send_plain
from devtunnel.relay.rules import RuleBook
from devtunnel.relay.tunnel import BufferBudget, Tunnel, send_last_words
from devtunnel.relay.ws_guard import PRELOGIN_MAX_SIZE, GuardedWebSocketProtocol
from devtunnel.protocol.connection import DEFAULT_MAX_STREAMS, ErrorCode
from devtunnel.protocol.relay_side import RelayConnection
from devtunnel.protocol.events import Hello
from devtunnel.protocol.handshake import RULES_ACK
from devtunnel.rules import WIRE_VERSION, Engine, Rule, RulesError, rules_from_wire

log = logging.getLogger("devtunnel.relay")

#: Path on the relay where agents open their WebSocket.
CONNECT_PATH = "/_devtunnel/connect"
# Largest WebSocket message accepted, from agents (batched frames) and public clients alike.
WS_MAX_SIZE = 64 << 20
# Response bytes an agent may send on a stream before the relay has written them to the client.
# With the protocol's default of 1 MiB a large download waited for credit between batches even
# on loopback (100 MiB downloads: about 250-320 MiB/s at 1 MiB, 370-440 MiB/s at 4 MiB). It is
# also what a slow client can leave buffered here per stream.
RESPONSE_WINDOW = 4 << 20


@dataclass
class RelaySettings:
    """How a relay listens, whom it lets in, and its limits."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 0
    """Port to listen on; 0 picks a free one (read ``Relay.port`` after ``start``)."""
    domain: str = "localhost"
    """``NAME.DOMAIN`` goes to tunnel NAME."""
    tokens: Sequence[str] = ()
    """Tokens agents may present. Ignored when ``embedded``."""
    tls_cert: str | None = None
    """PEM certificate chain: serve https and wss."""
    tls_key: str | None = None
    """PEM private key for ``tls_cert``."""
    max_body: int = 0
    """Largest request body in bytes; 0 for no limit."""
    head_timeout: float = 10.0
    """Seconds a client (or an agent's HELLO) may take to send its request head."""
    public_url: str | None = None
    """Public base URL when a proxy terminates TLS, e.g. ``https://tunnel.example.com``."""
    embedded: bool = False
    """Run inside the agent on loopback: no token check; unknown hosts go to the oldest tunnel."""
    max_head: int = 64 * 1024
    """Largest request head (request line and headers) in bytes; larger ones get 431."""
    ping_interval: float = 10.0
    """Seconds between WebSocket pings to each agent."""
    ping_timeout: float = 10.0
    """Seconds to wait for a pong before dropping the agent and freeing its name."""
    max_streams: int = DEFAULT_MAX_STREAMS
    """Concurrent requests per tunnel; more get 503."""
    body_timeout: float = 30.0
    """Seconds a request body may go without a byte arriving before it is dropped (408)."""
    client_share: float = 0.25
    """Fraction of a tunnel's ``max_streams`` one client address may hold at once; more get 429.
    Not applied when ``embedded``: every client of a loopback relay has the same address."""
    log_interval: float = 10.0
    """Seconds between log lines of one kind about peers' bad input (the rest are summarised)."""
    shutdown_timeout: float = 3.0
    """Seconds ``stop`` waits for requests in flight."""
    name_check_timeout: float = 2.0
    """Seconds the agent holding a name has to answer a ping when another agent with the same
    token asks for the name; one that does not is displaced."""
    stall_timeout: float = 15.0
    """Seconds an agent's socket may stay full without draining a byte before the agent is dropped."""
    max_window: int = 16 << 20
    """Most flow-control credit the relay uses per stream toward an agent, whatever it announces."""
    agent_buffer: int = 16 << 20
    """Bytes the relay holds on their way to one agent; request bodies wait (and their clients
    are not read) beyond it."""
    relay_buffer: int = 256 << 20
    """Bytes the relay holds on their way to all agents together."""
    rules: Sequence[Rule] = ()
    """The relay's own rules, applied to every tunnel before the tunnel's (``relay --rules FILE``)."""
    rate_clients: int = 10_000
    """Client addresses each rate-limit rule keeps a bucket for (the least recently seen go
    first): what bounds its memory under many addresses."""
    trusted_proxies: Sequence[str] = ()
    """CIDRs of proxies in front of the relay: a request from one of them is judged by the
    client address in X-Forwarded-For (``--trusted-proxy``); otherwise by the socket's."""

    @property
    def tls(self) -> bool:
        """Whether the relay serves TLS itself."""
        return bool(self.tls_cert)


class Relay:
    """A running relay. ``await start()``, then ``await stop()``.

    The instance is also the ASGI application uvicorn serves.
    """

    def __init__(self, settings: RelaySettings) -> None:
        if bool(settings.tls_cert) != bool(settings.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
        self.settings = settings
        self._domain = settings.domain.lower().strip(".").encode("idna")
        self._suffix = b"." + self._domain
        self._tokens = [token.encode() for token in settings.tokens]
        self._tunnels: dict[str, Pool] = {}
        """The agents holding each tunnel name online (one, or a pool sharing it), oldest name first."""
        self._budget = BufferBudget(settings.agent_buffer, settings.relay_buffer)
        self._public = urlsplit(settings.public_url) if settings.public_url else None
        proto = "https" if settings.tls or (self._public is not None and self._public.scheme == "https") else "http"
        self._scheme = proto
        # Inside the agent, its own output already says when a tunnel comes and goes.
        self._log_level = logging.DEBUG if settings.embedded else logging.INFO
        self._peer_errors = PeerErrorLog(log, settings.log_interval)
        self._slots = ClientSlots(client_limit(settings))
        self._rules = RuleBook(settings.rules, _networks(settings.trusted_proxies), max_buckets=settings.rate_clients)
        self._forward_http = HttpForwarder(
            max_body=settings.max_body,
            proto=proto,
            body_timeout=settings.body_timeout,
            slots=self._slots,
            peer_errors=self._peer_errors,
            rules=self._rules,
        )
        self._forward_ws = WebSocketForwarder(
            proto=proto, slots=self._slots, peer_errors=self._peer_errors, rules=self._rules
        )
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._port = 0
        # Local port -> the tunnel every request arriving there goes to (see ``pin``).
        self._pins: dict[int, str] = {}
        self._pin_listeners: dict[int, asyncio.AbstractServer] = {}

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
    def connections(self) -> int:
        """Open client connections (HTTP and WebSocket, public and agents)."""
        return len(self._server.server_state.connections) if self._server is not None else 0

    async def start(self) -> None:
        """Listen; returns once the socket accepts connections.

        Raises:
            ConfigError: the address cannot be listened on, or the TLS files are unusable.
        """
        s = self.settings
        config = uvicorn.Config(
            self,
            http=HeadLimitedHttpProtocol.configured(
                s.max_head, s.head_timeout, direct=self._direct, peer_errors=self._peer_errors
            ),
            ws=GuardedWebSocketProtocol.configured(PRELOGIN_MAX_SIZE, s.stall_timeout).logging_to(self._peer_errors),
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
        sock = _bind(s.host, s.port)
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        self._server, self._socket = server, sock
        self._port = sock.getsockname()[1]

    async def pin(self, name: str, port: int = 0) -> int:
        """Listen on one more port (``settings.host``; 0: any free one) for tunnel ``name`` alone.

        Every request and WebSocket arriving there goes to tunnel ``name`` whatever its Host,
        and nothing else is served there: no relay pages, no agent logins. Returns the port.

        Raises:
            ConfigError: the port cannot be listened on.
        """
        server = self._server
        if server is None:
            raise RuntimeError("the relay is not started")
        config = server.config
        loop = asyncio.get_running_loop()
        sock = _bind(self.settings.host, port)

        def protocol() -> asyncio.Protocol:  # what uvicorn's own listener creates per connection
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=server.server_state, app_state=server.lifespan.state, _loop=loop)

        try:
            listener = await loop.create_server(protocol, sock=sock, ssl=config.ssl, backlog=config.backlog)
        except BaseException:
            sock.close()
            raise
        bound = int(sock.getsockname()[1])
        self._pins[bound] = name
        self._pin_listeners[bound] = listener
        server.servers.append(listener)  # closed with the others by ``stop``
        return bound

    def unpin(self, port: int) -> None:
        """Stop listening on a port ``pin`` opened. Connections still open there keep going only
        to its tunnel (until another ``pin`` takes the same port number)."""
        listener = self._pin_listeners.pop(port, None)
        if listener is not None:
            listener.close()
            if self._server is not None and listener in self._server.servers:
                self._server.servers.remove(listener)

    async def stop(self) -> None:
        """Tell every agent the relay is going away, then close all connections."""
        for tunnel in [member for pool in list(self._tunnels.values()) for member in pool.members]:
            await tunnel.disconnect(ErrorCode.SHUTTING_DOWN, "the relay is shutting down; reconnect", 1012)
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown(sockets=[self._socket] if self._socket else None)
        self._socket = None
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
            host = _host(scope["headers"])
            tunnel, own = self._route(host, scope.get("server"))
            if tunnel is not None:
                await self._forward_http(tunnel, scope, receive, send, host)
            elif own:
                await self._own_page(scope, send, host)
            else:
                await send_plain(send, 404, f"no tunnel is online at {host.decode('latin-1')}\n")
        elif kind == "websocket":
            host = _host(scope["headers"])
            server = scope.get("server")
            if scope["path"] == CONNECT_PATH and not _hostname(host).endswith(self._suffix) and not self._pinned(server):
                await self._serve_agent(scope, receive, send)
                return
            tunnel, _ = self._route(host, server)
            if tunnel is not None:
                protocol = getattr(receive, "__self__", None)
                if isinstance(protocol, GuardedWebSocketProtocol):
                    protocol.opened()
                await self._forward_ws(tunnel, scope, receive, send, host)
            else:
                await receive()
                text = f"no tunnel is online at {host.decode('latin-1')}\n".encode()
                headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())]
                await send({"type": "websocket.http.response.start", "status": 404, "headers": headers})
                await send({"type": "websocket.http.response.body", "body": text})

    def _direct(self, client: HeadLimitedHttpProtocol, cycle: RequestResponseCycle) -> bool:
        """Take a request bound for a tunnel over from uvicorn, without an ASGI task
        (``HttpForwarder.direct``); False leaves it to ``__call__``."""
        host = _host(cycle.scope["headers"])  # type: ignore[arg-type]
        pool, _ = self._pool_for(host, cycle.scope.get("server"))
        if pool is None:
            return False
        # The member is only taken if the request is: one left to __call__ is routed there anew.
        tunnel = pool.peek()
        if tunnel is None or not self._forward_http.direct(tunnel, client, cycle, host):
            return False
        pool.took(tunnel)
        return True

    def _pinned(self, server: Any) -> str | None:
        """The tunnel the local address ``server`` (a scope's ``server``) is pinned to, if any."""
        return self._pins.get(server[1]) if server and self._pins else None

    def _route(self, host: bytes, server: Any = None) -> tuple[Tunnel | None, bool]:
        """Where a request for ``host`` arriving at local address ``server`` goes: (tunnel, False),
        (None, True) for the relay's own pages, or (None, False) for a tunnel that is not online.
        A pool's turn moves on."""
        pool, own = self._pool_for(host, server)
        return (pool.pick() if pool is not None else None), own

    def _pool_for(self, host: bytes, server: Any = None) -> tuple[Pool | None, bool]:
        """The agents holding the tunnel ``host`` (or the pinned port ``server`` arrived at) names:
        (pool, False), (None, True) for the relay's own pages, or (None, False) for a tunnel that
        is not online."""
        pinned = self._pinned(server)
        if pinned is not None:
            return self._tunnels.get(pinned), False
        hostname = _hostname(host)
        if hostname.endswith(self._suffix):
            return self._tunnels.get(hostname[: -len(self._suffix)].decode("latin-1")), False
        if hostname == self._domain or not self.settings.embedded:
            return None, True
        # Embedded: any other host (127.0.0.1:PORT ...) reaches the oldest tunnel.
        return next(iter(self._tunnels.values()), None), False

    async def _own_page(self, scope: Scope, send: Send, host: bytes) -> None:
        path = scope["path"]
        if path == "/healthz":
            await send_plain(send, 200, "ok\n")
        elif path == "/":
            await send_plain(send, 200, self._status_text())
        else:
            await send_plain(send, 404, f"nothing at {path} on {host.decode('latin-1')}\n")

    def _status_text(self) -> str:
        """The status page: version, tunnels and agents online, and each pool with its members.

        Names held by one agent are only counted: a pool's name is one a team shares on purpose.
        """
        agents = sum(len(pool) for pool in self._tunnels.values())
        lines = [f"devtunnel relay {__version__}", f"tunnels online: {len(self._tunnels)}", f"agents online: {agents}"]
        for name, pool in self._tunnels.items():
            if pool.shared:
                lines.append(f"pool {name}: {len(pool)} agent{'' if len(pool) == 1 else 's'}")
        return "\n".join(lines) + "\n"

    # -- agents ------------------------------------------------------------------------
    async def _serve_agent(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one agent's tunnel connection, from HELLO until it disconnects."""
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "?"
        conn = RelayConnection(
            max_streams=self.settings.max_streams,
            initial_window=RESPONSE_WINDOW,
            max_send_window=self.settings.max_window,
        )
        try:
            hello = await asyncio.wait_for(_read_hello(conn, receive), self.settings.head_timeout)
        except asyncio.TimeoutError:
            reason = f"no HELLO within {self.settings.head_timeout:g} s"
            await _refuse(conn, send, ErrorCode.PROTOCOL_ERROR, reason, receive)
            return
        except ProtocolError as exc:
            self._peer_errors.log("agent-refused", self._log_level, "agent %s refused: %s", peer, exc)
            await _refuse(conn, send, ErrorCode.PROTOCOL_ERROR, str(exc), receive)  # keeps a GOAWAY already queued
            return
        if hello is None:
            return
        token, refusal = self._admit(hello)
        rules: tuple[Rule, ...] | None = None
        if refusal is None:
            rules, refusal = _hello_rules(hello)
        if refusal is not None:
            code, reason = refusal
            self._peer_errors.log("agent-refused", self._log_level, "agent %s refused: %s", peer, reason)
            await _refuse(conn, send, code, reason, receive)
            return
        name, refusal = self._pick_name(hello.name)
        displaced: list[Tunnel] = []
        if refusal is None:
            displaced, refusal = await self._claim(name, token, hello.instance, hello.pool)
        if refusal is not None:
            code, reason = refusal
            self._peer_errors.log("agent-refused", self._log_level, "agent %s refused: %s", peer, reason)
            await _refuse(conn, send, code, reason, receive)
            return
        # Take the name (or a place in its pool) before any await, so no other agent can slip in between.
        tunnel = Tunnel(name, token, conn, send, peer, instance=hello.instance, budget=self._budget)
        pool = self._join(name, token, hello.pool, tunnel, displaced)
        self._rules.add(tunnel, rules)
        if rules is not None:
            tunnel.on_rules = self._rules_changer(tunnel, peer)
        info: dict[str, object] = {"relay": f"devtunnel {__version__}"}
        if rules is not None:
            info[RULES_ACK] = WIRE_VERSION
        members = len(pool) if hello.pool else None
        conn.send_welcome(name, self.public_url_for(name), info, pool=members)
        tunnel.start_writer()
        tunnel.flush()
        shared = f", pool of {len(pool)}" if hello.pool else ""
        log.log(self._log_level, "tunnel %s online for agent %s (%s%s)", name, peer, self.public_url_for(name), shared)
        protocol = getattr(receive, "__self__", None)
        if isinstance(protocol, GuardedWebSocketProtocol):
            protocol.admitted()
            protocol.on_writable = tunnel.on_writable
        for old in displaced:
            if old.instance is not None and old.instance == hello.instance:
                why = "the agent connected again; this connection of it is stale"
            else:
                why = f"it did not answer within {self.settings.name_check_timeout:g} s; another agent took the name"
            log.log(self._log_level, "tunnel %s: agent %s displaced (%s)", name, old.peer, why)
            await old.disconnect(ErrorCode.NAME_IN_USE, why, 1000)
        reason = "the agent disconnected"
        if not isinstance(protocol, DeadPeerWebSocketProtocol):
            protocol = None
        try:
            if protocol is not None:
                # Binary messages are handled in the protocol's callback (see on_bytes); what
                # still comes through receive() is the end, a text message, or a failure there.
                protocol.on_bytes = _deliver(tunnel, protocol)
                tunnel.socket = protocol
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    break
                failure = message.get(_FAILURE)
                if failure is not None:
                    raise failure
                data = message.get("bytes")
                if data is None:
                    raise ProtocolError("the agent sent a text WebSocket message; the tunnel speaks binary")
                tunnel.handle(conn.receive_data(data))
                if conn.wants_to_send:  # a PONG; otherwise waking the writer finds nothing to send
                    tunnel.flush()
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
            conn.send_goaway(ErrorCode.PROTOCOL_ERROR, str(exc))  # no-op if the connection queued its own
            tunnel.close(f"tunnel {name} went offline")
            await tunnel.finish_writing({"type": "websocket.close", "code": 1002})
        finally:
            if protocol is not None:
                protocol.on_bytes = None
            remaining = self._leave(name, tunnel)
            self._rules.remove(tunnel)
            tunnel.close(f"tunnel {name} went offline")
            await tunnel.stop_writer()
            reason = tunnel.end_reason or reason
            if remaining:
                log.log(self._log_level, "tunnel %s: agent %s left its pool (%s); %d remain", name, peer, reason, remaining)
            else:
                log.log(self._log_level, "tunnel %s offline (agent %s: %s)", name, peer, reason)

    def _rules_changer(self, tunnel: Tunnel, peer: str) -> Callable[[dict[str, Any]], None]:
        """What a RULES frame from ``tunnel``'s agent does: its rules are replaced (their
        counts and buckets start afresh). Rules the relay cannot enforce leave the old ones
        in place and are logged: the agent checked them with the same code before sending."""

        def change(wire: dict[str, Any]) -> None:
            rules, refusal = _hello_rules(Hello(0, "", None, rules=wire))
            if refusal is not None or rules is None:
                reason = refusal[1] if refusal else "no rules"
                self._peer_errors.log("rules-refused", logging.WARNING, "tunnel %s (agent %s): rules kept: %s",
                                      tunnel.name, peer, reason)
                return
            self._rules.remove(tunnel)
            self._rules.add(tunnel, rules)
            log.log(self._log_level, "tunnel %s: %d rules now", tunnel.name, len(rules))

        return change

    def _admit(self, hello: Hello) -> tuple[str, tuple[ErrorCode, str] | None]:
        """The token the agent is known by, or why it is refused."""
        try:
            hello.token.encode()
        except UnicodeEncodeError:  # JSON can spell lone surrogates
            return "", (ErrorCode.AUTH_FAILED, "token refused: it is not valid Unicode text")
        if self.settings.embedded:
            return hello.token, None
        if not hello.token:
            return "", (ErrorCode.AUTH_FAILED, "no token given: this relay needs one (--token or DEVTUNNEL_TOKEN)")
        given = hello.token.encode()
        accepted = False
        for token in self._tokens:  # every token is compared, so timing does not tell which matched
            accepted |= hmac.compare_digest(token, given)
        if not accepted:
            return "", (ErrorCode.AUTH_FAILED, "token refused: it is not one of the relay's tokens")
        return hello.token, None

    def _pick_name(self, wanted: str | None) -> tuple[str, tuple[ErrorCode, str] | None]:
        """The tunnel name to give, or why the wanted one is not a valid name."""
        if not wanted:
            name = random_name()
            while name in self._tunnels:
                name = random_name()
            return name, None
        try:
            name = validate_name(wanted)
        except ConfigError as exc:
            # NAME_TAKEN is the code for "this name is refused; retrying will not help".
            return wanted, (ErrorCode.NAME_TAKEN, str(exc))
        return name, None

    async def _claim(
        self, name: str, token: str, instance: str | None, shared: bool
    ) -> tuple[list[Tunnel], tuple[ErrorCode, str] | None]:
        """Whether an agent may have ``name`` (``shared``: in a pool): (the connections it
        displaces, refusal or None).

        A name belongs to the token that holds it. Under the same token, an agent with a
        holder's instance id is that holder coming back (its old connection is the stale one)
        and takes its place at once; an agent asking for a pool joins a pool; any other agent
        (one alone against a pool, a pool against one alone, one alone against another) gets
        the name only if every holder fails a liveness check now: a healthy agent is never
        displaced. Returns with no await after its last look, so the caller can take the
        name before anyone else.
        """
        while True:
            pool = self._tunnels.get(name)
            if pool is None:
                return [], None
            if not hmac.compare_digest(pool.token.encode(), token.encode()):
                return [], (ErrorCode.NAME_TAKEN, f"tunnel name {name!r} is in use by an agent with another token")
            stale = pool.find(instance) if instance is not None else None
            if stale is not None and (len(pool) == 1 or (pool.shared and shared)):
                return [stale], None
            refusal = mix_refusal(pool, shared)
            if refusal is None:
                return [], None
            holders = list(pool.members)
            alive = await asyncio.gather(*(holder.answers(self.settings.name_check_timeout) for holder in holders))
            if any(alive):
                return [], (ErrorCode.NAME_IN_USE, refusal)
            if self._tunnels.get(name) is pool and pool.members == holders:
                return holders, None
            # The name changed hands during the check: look again.

    def _join(self, name: str, token: str, shared: bool, tunnel: Tunnel, displaced: list[Tunnel]) -> Pool:
        """Give ``tunnel`` its place under ``name`` (after ``_claim``), in place of ``displaced``."""
        pool = self._tunnels.get(name)
        if pool is not None:
            for old in displaced:
                pool.remove(old)
        if pool is None or not pool.members:
            pool = self._tunnels[name] = Pool(name, token, shared=shared)
        pool.add(tunnel)
        self._announce(pool, tunnel)
        return pool

    def _leave(self, name: str, tunnel: Tunnel) -> int:
        """Take ``tunnel`` out of its pool (if still in it) and free the name after the last one;
        returns how many agents it leaves holding the name (0 for one already displaced)."""
        pool = self._tunnels.get(name)
        if pool is None or not pool.remove(tunnel):
            return 0
        if not pool.members:
            del self._tunnels[name]
            return 0
        self._announce(pool)
        return len(pool)

    @staticmethod
    def _announce(pool: Pool, joined: Tunnel | None = None) -> None:
        """Tell each member of a pool how many agents share the name now (``joined`` learns it
        from its WELCOME)."""
        if not pool.shared:
            return
        for member in pool.members:
            if member is not joined and not member.closed:
                member.conn.send_pool(len(pool))
                member.flush()


def _hello_rules(hello: Hello) -> tuple[tuple[Rule, ...] | None, tuple[ErrorCode, str] | None]:
    """The rules a HELLO asks the relay to enforce (None: an agent that knows no rules), or why
    they are refused (a version this relay does not know, or an invalid rule)."""
    if hello.rules is None:
        return None, None
    version = hello.rules["version"]
    if version != WIRE_VERSION:
        reason = f"rules version {version} is not known to this relay (it enforces version {WIRE_VERSION}); upgrade it"
        return None, (ErrorCode.RULES_REFUSED, reason)
    try:
        return rules_from_wire(hello.rules["list"]), None
    except RulesError as exc:
        return None, (ErrorCode.RULES_REFUSED, str(exc))


def _networks(cidrs: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``--trusted-proxy`` values as networks; ConfigError naming a bad one."""
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"--trusted-proxy {cidr!r} is not an address or CIDR (e.g. 10.0.0.0/8)") from None
    return out


_FAILURE = "devtunnel.failure"
"""Key of a receive() message carrying an exception raised while handling a message in the callback."""


def _deliver(tunnel: Tunnel, protocol: DeadPeerWebSocketProtocol) -> Callable[[bytes], None]:
    """Handle each message from the agent as it arrives, in the protocol's callback.

    The same as the receive() loop does, one task hop earlier. An exception (a protocol error,
    or a defect) must not escape into the transport's callback: it goes to the receive() loop
    instead, through the queue, which raises it there as if the loop had handled the message.
    """
    conn = tunnel.conn

    def deliver(data: bytes) -> None:
        try:
            tunnel.handle(conn.receive_data(data))
        except Exception as exc:
            protocol.on_bytes = None  # like the loop, handle nothing after the failure
            protocol.queue.put_nowait({"type": "websocket.receive", _FAILURE: exc})
            return
        if conn.wants_to_send:  # a PONG; otherwise waking the writer finds nothing to send
            tunnel.flush()

    return deliver


async def _read_hello(conn: RelayConnection, receive: Receive) -> Hello | None:
    """Read until the agent's HELLO; None if it disconnected first."""
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return None
        data = message.get("bytes")
        if data is None:
            raise ProtocolError("the agent sent a text WebSocket message; the tunnel speaks binary")
        for event in conn.receive_data(data):
            if isinstance(event, Hello):
                return event


async def _refuse(conn: RelayConnection, send: Send, code: ErrorCode, reason: str, receive: Receive) -> None:
    """Send a GOAWAY (unless the connection already queued one) and close, without waiting for
    the agent's close frame: a refused connection is let go at once."""
    conn.send_goaway(code, reason)
    close = {"type": "websocket.close", "code": 1008 if code == ErrorCode.AUTH_FAILED else 1000}
    await send_last_words(send, [{"type": "websocket.send", "bytes": conn.data_to_send()}, close])
    protocol = getattr(receive, "__self__", None)
    if isinstance(protocol, GuardedWebSocketProtocol):
        protocol.transport.close()  # after what was written; a peer not reading is dropped by the guard


def client_limit(settings: RelaySettings) -> int | None:
    """Streams of one tunnel one client address may hold at once (``client_share`` of
    ``max_streams``); None when that is the whole tunnel anyway."""
    if settings.embedded or settings.client_share >= 1:
        return None
    return max(1, int(settings.max_streams * settings.client_share))


def _host(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name == b"host":
            return value
    return b""


def _hostname(host: bytes) -> bytes:
    """``host`` lowercased, without its port or a fully qualified name's final dot
    (IPv6 literals keep their brackets)."""
    host = host.lower()
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    colon = host.rfind(b":")
    return (host[:colon] if colon >= 0 else host).rstrip(b".")


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (uvicorn listens on it)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        # A name like "localhost" may resolve to ::1 first; clients mostly try 127.0.0.1.
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock

