"""What the relay's public connections hold of the process's open-file limit.

Every accepted socket is a file descriptor, whatever it is doing: waiting for a head, carrying
a request whose body trickles in, a WebSocket, an agent's connection before its HELLO. The
other bounds each hold one kind of them (``pending``: those waiting for a request;
``slots.ClientSlots``: a tunnel's streams, per tunnel), so one client address could hold its
share of every tunnel at once and take the descriptors every other client and agent needs:
past the limit the relay accepts no one. Here they are held per address:

- ``OpenConnections`` counts the open public connections of each client address (an IPv6
  client by its /64, as ``slots.client_key`` says), from their accept to their close (an
  agent's until its HELLO is accepted: then ``--connections-per-token`` bounds it), and
  refuses one past ``per_address``; other addresses are not affected. A trusted proxy's address
  is not limited (all its clients share it).
- ``default_per_address``: by default an address holds at most a quarter of the open-file
  limit (between ``AUTO_PER_ADDRESS_FLOOR`` and ``AUTO_PER_ADDRESS_CAP``).
- ``raise_open_file_limit``: ``devtunnel relay`` raises its soft limit to the hard one at start,
  as servers do (nginx's ``worker_rlimit_nofile``, systemd's ``LimitNOFILE``), so a 1,024 soft
  limit does not bound a relay allowed more.
- ``DescriptorWatch`` says, rate-limited, when the relay runs short of descriptors: from the
  descriptor each new connection gets (the lowest free one, so ``fd + 1`` are open at least),
  as uvloop's listener resets connections it cannot accept without a word; and from the event
  loop's report of an accept that failed (asyncio's own loop), which would otherwise be a
  traceback a second.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import resource
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.slots import AddressCounts

AUTO_PER_ADDRESS_SHARE = 4
"""By default one address holds at most 1/4 of the open-file limit."""
AUTO_PER_ADDRESS_FLOOR = 16
"""The fewest open connections the automatic per-address figure allows."""
AUTO_PER_ADDRESS_CAP = 4096
"""The most open connections the automatic per-address figure allows, however high the limit."""
UNBOUNDED_TARGET = 1 << 16
"""The soft limit asked for when the hard one is unlimited (which no kernel grants as such)."""
_ACCEPT_FAILED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def open_file_limit() -> int | None:
    """The process's soft open-file limit (``ulimit -n``); None when unlimited or unknown."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    return int(soft)


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise the soft open-file limit to the hard one; (before, after) when it changed."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    target = UNBOUNDED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):  # (macOS refuses more than OPEN_MAX: the soft limit stays)
        return None
    return int(soft), int(target)


def default_per_address(limit: int | None = None) -> int:
    """The automatic figure of open connections per address: a quarter of ``limit`` (the
    process's open-file limit when not given), between the floor and the cap."""
    if limit is None:
        limit = open_file_limit()
    if limit is None:
        return AUTO_PER_ADDRESS_CAP
    return max(AUTO_PER_ADDRESS_FLOOR, min(AUTO_PER_ADDRESS_CAP, limit // AUTO_PER_ADDRESS_SHARE))


@runtime_checkable
class Counted(Protocol):
    """A protocol that takes over a connection's place in ``OpenConnections`` (an HTTP connection
    after its TLS handshake, a WebSocket after its upgrade), to give it back when it ends."""

    def adopt_open(self, key: str) -> None: ...


class DescriptorWatch:
    """Says, rate-limited, that the relay runs short of file descriptors (module docstring).

    Args:
        peer_errors: where the lines go.
        limit: the open-file limit (None: unknown, nothing watched at accept).
    """

    def __init__(self, peer_errors: PeerErrorLog, limit: int | None) -> None:
        self.limit = limit
        self.near = limit - max(8, limit // 16) if limit is not None else None
        """A new connection's descriptor from which the relay is short (16th of the limit left)."""
        self._peer_errors = peer_errors
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Any = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle ``loop``'s reports of accepts that failed (``loop_exception_handler``) until ``uninstall``."""
        self._loop, self._previous = loop, loop.get_exception_handler()
        loop.set_exception_handler(self.loop_exception_handler)

    def uninstall(self) -> None:
        """Give the loop its exception handler back."""
        loop, self._loop = self._loop, None
        if loop is not None and loop.get_exception_handler() == self.loop_exception_handler:
            loop.set_exception_handler(self._previous)

    def accepted(self, transport: asyncio.BaseTransport) -> None:
        """Look at the descriptor of a connection just accepted."""
        near = self.near
        if near is None:
            return
        sock = transport.get_extra_info("socket")
        try:
            fd = sock.fileno() if sock is not None else -1
        except (OSError, ValueError):
            return
        if fd >= near:
            self._peer_errors.log(
                "descriptors-low", logging.WARNING,
                "the relay is running out of file descriptors: at least %d of %d open (ulimit -n); past the "
                "limit new connections are reset unserved (raise it: LimitNOFILE= in a systemd unit, ulimit -n)",
                fd + 1, self.limit,
            )

    def loop_exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The event loop's exception handler: an accept that failed for want of descriptors
        (or memory) is one clear line, rate-limited; anything else goes to the default handler."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_FAILED and "accept" in str(context.get("message", "")):
            limit = f"{self.limit}" if self.limit is not None else "unknown"
            self._peer_errors.log(
                "accept-failed", logging.ERROR,
                "the relay could not accept a connection: %s (open-file limit %s, ulimit -n); new connections "
                "wait until some close", exc.strerror or exc, limit,
            )
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)


class OpenConnections:
    """The open public connections of each client address, within ``per_address``.

    Args:
        per_address: the most one address holds (None: counted, never refused).
        peer_errors: where refusals are logged, throttled.
        exempt: networks whose addresses ``per_address`` does not apply to (trusted proxies).
        watch: told of every accepted connection (``DescriptorWatch``), if given.
    """

    def __init__(
        self,
        per_address: int | None,
        peer_errors: PeerErrorLog,
        exempt: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
        watch: DescriptorWatch | None = None,
    ) -> None:
        self._counts = AddressCounts(per_address, exempt)
        self.total = 0
        """Public connections open now (``opened`` and not ``closed``)."""
        self.by_address = self._counts.by_key
        """``total`` by client address key (read-only)."""
        self.refused = 0
        """Connections refused for their address's open connections, since the start."""
        self._peer_errors = peer_errors
        self._watch = watch

    @property
    def per_address(self) -> int | None:
        """The most open connections one address holds (None: no limit)."""
        return self._counts.per_address

    def opened(self, client: tuple[str, int] | None, transport: asyncio.BaseTransport) -> str | None:
        """Count a connection from ``client`` just accepted on ``transport``: its address key (to
        give ``closed``), or None, counting nothing, when its address holds ``per_address``
        already (the caller refuses it)."""
        if self._watch is not None:
            self._watch.accepted(transport)
        ip = client[0] if client else "?"
        key = self._counts.take(ip)
        if key is None:
            self.refused += 1
            self._peer_errors.log(
                "open-refused", logging.WARNING,
                "client %s holds %d open connections, the most one address may (--connections-per-address): "
                "a new one refused", ip, self._counts.held_by(ip),
            )
            return None
        self.total += 1
        return key

    def closed(self, key: str) -> None:
        """A connection ``opened`` with ``key`` is closed (or no longer a public one: an agent)."""
        self.total -= 1
        self._counts.give_back(key)

    def held_by(self, ip: str) -> int:
        """Open connections the address ``ip`` holds now."""
        return self._counts.held_by(ip)

    def refusal(self, client: tuple[str, int] | None) -> str:
        """The body of the 429 a refused connection gets."""
        ip = client[0] if client else "?"
        return f"too many connections open from {ip} (at most {self.per_address}); try again later\n"
