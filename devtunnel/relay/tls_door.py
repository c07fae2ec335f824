"""A TLS connection until its handshake is done (``TlsDoor``), for a relay serving TLS itself.

asyncio's TLS listener gives the relay's protocol nothing (no ``connection_made``, so no
address) until the handshake is done, and waits 60 s for it: a client opening connections and
never sending a ClientHello held a descriptor and an SSL object each (1,000 of them: 1,000
descriptors and 53 MB), counted nowhere. The relay's TLS listeners accept plain connections
instead, and each starts as a ``TlsDoor``: counted among the pending connections from its
accept (``relay.pending``: per address and in all, the oldest dropped to make room), its
handshake bounded by the head timeout (``loop.start_tls``), then handed to the relay's HTTP
protocol with what the client sent behind its handshake.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

from devtunnel.relay.pending import PendingConnections


class TlsDoor(asyncio.Protocol):
    """One accepted connection of a TLS listener, until its handshake is done.

    Args:
        make: the relay's protocol for the connection once it speaks TLS.
        context: the server's TLS context.
        timeout: seconds the handshake may take.
        pending: where the connection counts while it shakes hands (None: nowhere).
        doors: the doors shaking hands now, which this one joins until its handshake ends
            (``abort_all``).
    """

    def __init__(
        self,
        make: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        timeout: float,
        pending: PendingConnections | None,
        doors: set[TlsDoor],
    ) -> None:
        self._make = make
        self._context = context
        self._timeout = timeout
        self._pending = pending
        self._doors = doors
        self._transport: asyncio.Transport | None = None
        self._early: list[bytes] = []  # application data that came with the end of the handshake
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # (uvloop's is no asyncio.Transport subclass)
        self._transport = transport
        transport.pause_reading()  # until start_tls reads the handshake
        pending = self._pending
        if pending is not None and not pending.admit(self, transport.get_extra_info("peername")):
            transport.abort()  # (no answer a TLS client could read before its handshake)
            return
        self._doors.add(self)
        asyncio.get_running_loop().create_task(self._handshake(transport))

    async def _handshake(self, raw: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        tls: asyncio.Transport | None = None
        try:
            tls = await loop.start_tls(raw, self, self._context, server_side=True, ssl_handshake_timeout=self._timeout)
        except (OSError, asyncio.CancelledError):  # a failed or slow handshake (start_tls closed it), or the relay stops
            raw.abort()
        finally:
            self._doors.discard(self)
            if self._pending is not None:
                self._pending.release(self)  # the relay's protocol counts itself (its connection_made)
        if tls is None or self._lost:
            return
        protocol = self._make()
        tls.set_protocol(protocol)
        protocol.connection_made(tls)
        early, self._early = self._early, []
        for data in early:
            if tls.is_closing():
                break
            protocol.data_received(data)

    def drop_pending(self) -> None:
        """Dropped to make room for newer connections (``PendingConnections``): cut."""
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._early.append(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True


def abort_all(doors: set[TlsDoor]) -> None:
    """Cut every connection still shaking hands (the relay stops)."""
    for door in list(doors):
        door.drop_pending()
