"""How many of a tunnel's streams one client address holds (``ClientSlots``), shared by the HTTP
and WebSocket forwarders: past its share a client gets 429 while other addresses are still served.

Also what a client address counts as (``client_key``: an IPv6 client by its /64), and
``AddressCounts``, the count by address that ``descriptors.OpenConnections`` (open connections)
and ``pending.PendingConnections`` (connections waiting for a request) each keep.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from devtunnel.relay.link import AgentLink
from devtunnel.relay.log import PeerErrorLog

#: Seconds a client over its share is asked to wait.
RETRY_AFTER = 1
#: The header of a 429 that says so.
RETRY_AFTER_HEADER = (b"retry-after", str(RETRY_AFTER).encode())


class ClientSlots:
    """How many of each tunnel's streams each client address holds, within ``limit``.

    One address (a slowloris, a runaway script) must not take every stream of a tunnel and
    leave the others 503s: past its share it gets 429 while other addresses are still served.
    An IPv6 client counts by its /64, the block one host or site usually has to itself.
    With ``limit`` None nothing is counted (a tunnel's own limit still applies: 503).
    """

    __slots__ = ("_held", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._held: dict[tuple[AgentLink, str], int] = {}

    def take(self, tunnel: AgentLink, ip: str) -> bool:
        """Count one more stream of ``tunnel`` for ``ip``; False (nothing counted) past the limit."""
        if self.limit is None:
            return True
        key = (tunnel, ip if ":" not in ip else client_key(ip))  # (an IPv4 address is its own key)
        held = self._held.get(key, 0)
        if held >= self.limit:
            return False
        self._held[key] = held + 1
        return True

    def give_back(self, tunnel: AgentLink, ip: str) -> None:
        """The stream counted by ``take`` is over."""
        if self.limit is None:
            return
        key = (tunnel, ip if ":" not in ip else client_key(ip))
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    def held(self, tunnel: AgentLink, ip: str) -> int:
        """Streams of ``tunnel`` that ``ip`` holds now."""
        return self._held.get((tunnel, client_key(ip)), 0)


class AddressCounts:
    """How many of something each client address holds (by ``client_key``), within ``per_address``.

    Only an address that holds some has an entry (one that gives its last back loses it), so
    what the counts take is bounded by what is held, however many addresses came and went.
    An address in ``exempt`` (a trusted proxy: all its clients share it) is counted, never refused.

    Args:
        per_address: the most one address holds (None: counted, never refused).
        exempt: networks whose addresses ``per_address`` does not apply to.
    """

    __slots__ = ("_exempt", "by_key", "per_address")

    def __init__(
        self,
        per_address: int | None,
        exempt: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
    ) -> None:
        self.per_address = per_address
        self.by_key: dict[str, int] = {}
        """What each address key holds, never 0 (read-only: a cheap ``get`` on the request path)."""
        self._exempt = tuple(exempt)

    def __len__(self) -> int:
        """Addresses holding one or more."""
        return len(self.by_key)

    def take(self, ip: str) -> str | None:
        """Count one more for the address ``ip``: its key (to give ``give_back``), or None,
        counting nothing, when it holds ``per_address`` already."""
        key = client_key(ip)
        held = self.by_key.get(key, 0)
        if self.per_address is not None and held >= self.per_address and not in_networks(ip, self._exempt):
            return None
        self.by_key[key] = held + 1
        return key

    def add(self, key: str) -> None:
        """Count one more for the address ``key`` (from ``take`` or ``client_key``), never refused."""
        by_key = self.by_key
        by_key[key] = by_key.get(key, 0) + 1

    def give_back(self, key: str) -> None:
        """One counted for ``key`` (by ``take`` or ``add``) is over."""
        by_key = self.by_key
        left = by_key[key] - 1
        if left:
            by_key[key] = left
        else:
            del by_key[key]

    def held_by(self, ip: str) -> int:
        """What the address ``ip`` holds now."""
        return self.by_key.get(client_key(ip), 0)


def client_key(ip: str) -> str:
    """What a client address counts as: itself for IPv4, its /64 for IPv6 (an IPv4 address
    mapped into IPv6, as a dual-stack listener sees IPv4 clients, counts as the IPv4 one)."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip.partition("%")[0])
    except ValueError:
        return ip
    mapped = address.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


def in_networks(ip: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether the client address ``ip`` is in one of ``networks`` (an IPv4 address mapped into
    IPv6, as a dual-stack listener sees IPv4 clients, as the IPv4 one)."""
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def over_share(tunnel: AgentLink, ip: str, slots: ClientSlots, peer_errors: PeerErrorLog) -> str:
    """Log, and say to the client, that it already holds its share of ``tunnel``'s streams (429)."""
    peer_errors.log(
        "client-share", logging.WARNING, "client %s holds its share of tunnel %s (%d streams): 429", ip, tunnel.name,
        slots.limit,
    )
    return f"too many requests from {ip} in flight on tunnel {tunnel.name} (at most {slots.limit}); try again\n"
