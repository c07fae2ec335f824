"""``RelaySettings``: how a relay listens, whom it lets in, and its limits (one dataclass the
``relay`` command and the agent's embedded relay fill in), and the values derived from them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from devtunnel.errors import ConfigError
from devtunnel.protocol.connection import DEFAULT_MAX_STREAMS
from devtunnel.relay.descriptors import default_per_address
from devtunnel.relay.pending import default_limit
from devtunnel.rules import Rule
from devtunnel.values.terminal import quoted


@dataclass
class RelaySettings:
    """How a relay listens, whom it lets in, and its limits."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 0
    """Port to listen on; 0 picks a free one (read ``Relay.port`` after ``start``)."""
    domain: str = "localhost"
    """``NAME.DOMAIN`` goes to tunnel NAME."""
    tokens: Sequence[str] = field(default=(), repr=False)
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
    """Run inside the agent on loopback: no token check; a loopback Host that names no tunnel
    (``127.0.0.1:PORT``) goes to the oldest one, and a Host that does not name this machine gets
    421 (``Relay.answers``)."""
    max_head: int = 64 * 1024
    """Largest request head (request line and headers) in bytes; larger ones get 431 (414 when
    the request line alone is larger: a request target too long)."""
    ping_interval: float = 10.0
    """Seconds between WebSocket pings to each agent."""
    ping_timeout: float = 10.0
    """Seconds to wait for a pong before dropping the agent and freeing its name."""
    max_streams: int = DEFAULT_MAX_STREAMS
    """Concurrent requests per tunnel; more get 503."""
    body_timeout: float = 30.0
    """Seconds a request body may go without a byte arriving before it is dropped (408)."""
    body_min_rate: int = 500
    """Bytes a second a request body must keep up on average: the time the relay spends waiting
    for it may be at most ``body_timeout`` plus one second for each ``body_min_rate`` bytes
    received; past it the body is dropped (408), so one trickling a byte now and then ends. 0:
    no such bound (``body_timeout`` alone)."""
    client_share: float = 0.25
    """Fraction of a tunnel's ``max_streams`` one client address may hold at once; more get 429.
    Not applied when ``embedded``: every client of a loopback relay has the same address."""
    log_interval: float = 10.0
    """Seconds between log lines of one kind about peers' bad input (the rest are summarised)."""
    shutdown_timeout: float = 3.0
    """Seconds ``stop`` waits for requests in flight."""
    drain_timeout: float = 10.0
    """Seconds ``devtunnel relay`` lets the HTTP requests in flight finish on SIGTERM or SIGINT,
    taking no new ones, before it stops (``Relay.drain``); 0: it stops at once. Not applied when
    ``embedded``: its agent goes away with it."""
    name_check_timeout: float = 2.0
    """Seconds the agent holding a name has to answer a ping when another agent with the same
    token asks for the name; one that does not is displaced."""
    tunnels_per_token: int = 32
    """Tunnel names one token may hold at once (a pool's members hold one name together); an
    agent asking for one more is refused. 0: no limit. Not applied when ``embedded``."""
    connections_per_token: int = 64
    """Agent connections one token may hold at once (each member of a pool is one; an agent
    coming back in place of its stale connection is not one more); one more is refused. Each
    costs the relay a task and its buffers. 0: no limit. Not applied when ``embedded``."""
    stall_timeout: float = 15.0
    """Seconds an agent's socket may stay full without draining a byte before the agent is dropped."""
    max_window: int = 16 << 20
    """Most flow-control credit the relay uses per stream toward an agent, whatever it announces."""
    agent_buffer: int = 16 << 20
    """Bytes the relay holds on their way to one agent; request bodies wait (and their clients
    are not read) beyond it."""
    relay_buffer: int = 256 << 20
    """Bytes the relay holds on their way to all agents together; also the most bytes of
    responses it holds from all agents together (``agent_responses``)."""
    agent_responses: int = 64 << 20
    """Bytes of responses from one agent the relay holds for public clients that have not read
    them yet; past it (or past ``relay_buffer`` for all agents) the stream holding the most is
    reset and its client cut. Each stream may hold its window (4 MiB) of them."""
    rules: Sequence[Rule] = ()
    """The relay's own rules, applied to every tunnel before the tunnel's (``relay --rules FILE``)."""
    rate_clients: int = 10_000
    """Client addresses each rate-limit rule keeps a bucket for (the least recently seen go
    first): what bounds its memory under many addresses."""
    pending_connections: int = 0
    """Connections the relay holds at once that wait for a request head (new ones, and ones kept
    alive between requests; an agent's WebSocket until its HELLO is accepted); past it the oldest
    of them is dropped (503, or a close) to make room. 0: half the process's open-file limit,
    between 64 and 4096 (``pending.default_limit``)."""
    connections_per_address: int | None = None
    """Public connections one client address (an IPv6 one by its /64) may hold open at once, in
    any state, over all tunnels (an agent's until its HELLO is accepted); one more is answered
    429 unread and closed. None: a quarter of the process's open-file limit, between 16 and 4096
    (``descriptors.default_per_address``); 0: no limit. Not applied when ``embedded``, nor to
    the addresses of ``trusted_proxies``."""
    pending_per_address: int = 256
    """Such connections one client address (an IPv6 one by its /64) may hold at once; one more is
    answered 429 and closed before a byte of it is read. 0: no limit. Not applied when
    ``embedded``, nor to the addresses of ``trusted_proxies``."""
    trusted_proxies: Sequence[str] = ()
    """CIDRs of proxies in front of the relay: a request from one of them is judged by the
    client address in X-Forwarded-For (``--trusted-proxy``); otherwise by the socket's."""
    allowed_hosts: Sequence[str] = ()
    """More hostnames the embedded relay answers (``--allow-host``), any port, besides this
    machine's names and a ``--via`` provider's public host; one starting with ``.`` answers the
    name and every name under it (``.example.test``), as Vite's ``allowedHosts`` reads it.
    Ignored unless ``embedded``: a relay of its own domain answers every Host."""

    @property
    def tls(self) -> bool:
        """Whether the relay serves TLS itself."""
        return bool(self.tls_cert)


def client_limit(settings: RelaySettings) -> int | None:
    """Streams of one tunnel one client address may hold at once (``client_share`` of
    ``max_streams``); None when that is the whole tunnel anyway."""
    if settings.embedded or settings.client_share >= 1:
        return None
    return max(1, int(settings.max_streams * settings.client_share))


def pending_limits(settings: RelaySettings) -> tuple[int, int | None]:
    """The most pending connections in all, and per client address (None: no limit)."""
    total = settings.pending_connections or default_limit()
    if settings.embedded or not settings.pending_per_address:
        return total, None
    return total, settings.pending_per_address


def address_connections(settings: RelaySettings) -> int | None:
    """Open public connections one client address may hold at once (None: no limit)."""
    if settings.embedded:
        return None
    if settings.connections_per_address is None:
        return default_per_address()
    return settings.connections_per_address or None


def allowed_hostnames(hosts: Sequence[str]) -> tuple[frozenset[bytes], tuple[bytes, ...]]:
    """``--allow-host`` values as (hostnames, suffixes: ``.example.test``), lowercase; ConfigError naming a bad one."""
    names: set[bytes] = set()
    suffixes: list[bytes] = []
    for host in hosts:
        name = host.strip().lower().rstrip(".")
        bare = name.removeprefix(".")
        if not bare or any(c in bare for c in ":/@[]\\ \t*") or not bare.isascii() or not bare.isprintable():
            raise ConfigError(f"--allow-host {quoted(host)} is not a hostname (e.g. myapp.test, or .example.test"
                              " for every name under it)")
        if name.startswith("."):
            suffixes.append(name.encode())
        names.add(bare.encode())
    return frozenset(names), tuple(suffixes)


def trusted_networks(cidrs: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``--trusted-proxy`` values as networks; ConfigError naming a bad one."""
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"--trusted-proxy {quoted(cidr)} is not an address or CIDR (e.g. 10.0.0.0/8)") from None
    return out
