"""Connections that have not proved anything yet (``PendingConnections``): each bounded in time
and bytes by the head timeout and the head and pre-login limits, and here in number.

A connection is pending while it waits for a request head: from the moment it is accepted, and
again while it is kept alive between requests, until the head is complete; an agent's WebSocket
stays pending after its upgrade head until its HELLO is accepted. Without a bound one client
could open thousands of them (or make one cheap request on each and keep it alive) and hold
the relay's file descriptors and memory: once the process runs out of descriptors it accepts no
one, agents included.

A connection idle between requests counts only while the relay is crowded (``quiet_total``: its
address holds more than a quarter of ``per_address`` open connections, or the relay more than
half of ``limit``: ``descriptors.OpenConnections`` counts them): below that, idle connections hold no more than those figures allow,
and an ordinary client's kept-alive requests pay nothing for the bookkeeping.

- **Per address**: past ``per_address`` pending connections from one client address (an IPv6
  client by its /64, ``slots.client_key``), a new one is refused: its first bytes are answered
  ``429`` unread and it is closed (cut if it sends none within ``REFUSAL_GRACE`` seconds, or if
  ``REFUSING_MOST`` refused connections wait already). Other addresses are not affected. A connection going idle after a
  response counts, but is not refused: a client keeping many connections alive (a load test)
  keeps them, and opens no more meanwhile. A trusted proxy's address is not limited (all its
  clients share it): the total applies to it.
- **In all**: past ``limit`` pending connections the oldest is dropped to make room (``503`` to
  a client that has not sent its head, a close to one idle between requests or to an agent that
  has not sent its HELLO), so a flood from many addresses cannot lock out an agent or client
  that goes on promptly; what it costs is held to ``limit``. nginx, short of connections,
  closes idle ones the same way.

Refusals and drops are logged through ``PeerErrorLog`` (one line per kind, then a summary per
interval: one line per burst), and counted in ``refused`` and ``dropped``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from devtunnel.relay.descriptors import open_file_limit
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.slots import AddressCounts

AUTO_LIMIT_CAP = 4096
"""The most pending connections the automatic total allows (``default_limit``)."""
AUTO_LIMIT_FLOOR = 64
"""The fewest pending connections the automatic total allows, whatever the descriptor limit."""
RETRY_AFTER = 5
REFUSAL_GRACE = 1.0
"""Seconds a refused connection is kept for its first bytes, to answer them 429: an answer
written before the client spoke would cross its request (a WebSocket client may then fail
outright instead of reading it). One that sends nothing is cut."""
REFUSING_MOST = 256
"""Refused connections kept for their first bytes at once, in all; more are cut without a word."""
"""Seconds a refused client is asked to wait (``Retry-After``)."""
DROPPED_PENDING = "the relay holds too many connections waiting to send a request; try again\n"
"""What a pending connection dropped to make room is told (503, or the reason of a WebSocket's close)."""


@runtime_checkable
class Droppable(Protocol):
    """A pending connection the relay can drop to make room (the HTTP and WebSocket protocols)."""

    def drop_pending(self) -> None: ...


def default_limit() -> int:
    """The automatic total: half the process's open-file limit (the other half for the agents,
    public requests and their local files), between ``AUTO_LIMIT_FLOOR`` and ``AUTO_LIMIT_CAP``."""
    soft = open_file_limit()
    if soft is None:
        return AUTO_LIMIT_CAP
    return max(AUTO_LIMIT_FLOOR, min(AUTO_LIMIT_CAP, soft // 2))


class PendingConnections:
    """The pending connections, oldest first, and how many each client address holds.

    Args:
        limit: the most held in all; past it the oldest is dropped.
        per_address: the most one address holds (None: no limit); past it a new one is refused.
        peer_errors: where refusals and drops are logged, throttled.
        exempt: networks whose addresses ``per_address`` does not apply to (trusted proxies).
    """

    def __init__(
        self,
        limit: int,
        per_address: int | None,
        peer_errors: PeerErrorLog,
        exempt: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
    ) -> None:
        self.limit = max(1, limit)
        self.refused = 0
        """Connections refused (429) for their address's pending connections, since the start."""
        self.dropped = 0
        """Pending connections dropped to make room under ``limit``, since the start."""
        self.refusing = 0
        """Refused connections kept now for their first bytes (``begin_refusal``)."""
        self._peer_errors = peer_errors
        self._held: dict[Droppable, str] = {}  # (insertion order: oldest first)
        self.held = self._held
        """The pending connections (read-only: a cheap ``in`` on the request path)."""
        self._counts = AddressCounts(per_address, exempt)
        self.quiet_total = max(1, limit // 2)
        """Open public connections in all (``descriptors.OpenConnections``) up to which an idle
        kept-alive one is not counted: below both
        quiet figures, idle connections hold no more than they allow (each bounded by the keep-alive
        timeout), and an ordinary client's kept-alive requests pay nothing for the count. The relay's
        request path tests them itself (``HeadLimitedHttpProtocol.on_response_complete``)."""
        self.quiet_per_address = max(1, per_address // 4) if per_address is not None else 1 << 62
        """Open public connections of one address up to which its idle kept-alive ones are not counted."""

    @property
    def per_address(self) -> int | None:
        """The most pending connections one address holds (None: no limit)."""
        return self._counts.per_address

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, connection: object) -> bool:
        return connection in self._held

    def admit(self, connection: Droppable, client: tuple[str, int] | None) -> bool:
        """Count ``connection`` (from ``client``) as pending; False, counting nothing, when its
        address holds ``per_address`` already (the caller answers 429 and closes). May drop the
        oldest pending connection to stay within ``limit``."""
        ip = client[0] if client else "?"
        key = self._counts.take(ip)
        if key is None:
            self.refused += 1
            self._peer_errors.log(
                "pending-refused", logging.WARNING,
                "client %s holds %d connections waiting to send a request, the most one address may: "
                "a new one refused (429)", ip, self._counts.held_by(ip),
            )
            return False
        if len(self._held) >= self.limit:
            self._drop_oldest()
        self._held[connection] = key
        return True

    def begin_refusal(self) -> bool:
        """Count a refused connection kept for its first bytes (until ``end_refusal``); False
        when ``REFUSING_MOST`` are kept already: cut it at once."""
        self.refusing += 1
        return self.refusing <= REFUSING_MOST

    def end_refusal(self) -> None:
        """A connection counted by ``begin_refusal`` is gone."""
        self.refusing -= 1

    def idle(self, connection: Droppable, key: str) -> None:
        """Count ``connection`` (its address ``key``, from ``OpenConnections.opened``), kept alive after a
        response, as pending: never refused (``admit`` with ``idle``)."""
        held = self._held
        if len(held) >= self.limit:
            self._drop_oldest()
        held[connection] = key
        self._counts.add(key)

    def _drop_oldest(self) -> None:
        oldest = next(iter(self._held))
        self.release(oldest)
        self.dropped += 1
        self._peer_errors.log(
            "pending-dropped", logging.WARNING,
            "%d connections waiting to send a request (or an agent's HELLO), the most the relay holds: "
            "the oldest dropped to make room", self.limit,
        )
        oldest.drop_pending()

    def release(self, connection: object) -> None:
        """``connection`` is pending no more (it proved itself, or it is gone); harmless twice."""
        key = self._held.pop(connection, None)  # type: ignore[call-overload]
        if key is not None:
            self._counts.give_back(key)

    def hand_over(self, old: object, new: Droppable) -> None:
        """``new`` takes ``old``'s place (an HTTP connection upgraded to a WebSocket), if it had one."""
        key = self._held.pop(old, None)  # type: ignore[call-overload]
        if key is not None:
            self._held[new] = key

    def held_by(self, ip: str) -> int:
        """Pending connections the address ``ip`` holds now."""
        return self._counts.held_by(ip)

    def refusal(self, client: tuple[str, int] | None) -> str:
        """The body of the 429 a refused connection gets."""
        ip = client[0] if client else "?"
        return (f"too many connections from {ip} waiting to send a request (at most {self.per_address}); "
                f"try again later\n")
