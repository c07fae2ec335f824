"""A TLS connection until its handshake is done (``TlsDoor``), for a relay serving TLS itself.

asyncio's TLS listener gives the relay's protocol nothing (no ``connection_made``, so no
address) until the handshake is done, and waits 60 s for it: a client opening connections and
never sending a ClientHello held a descriptor and an SSL object each (1,000 of them: 1,000
descriptors and 53 MB), counted nowhere. The relay's TLS listeners accept plain connections
instead, and each starts as a ``TlsDoor``: counted among the pending connections from its
accept (``relay.pending``: per address and in all, the oldest dropped to make room), its
handshake bounded by the head timeout (``loop.start_tls``), then handed to the relay's HTTP
protocol with what the client sent behind its handshake. It counts among its address's open
connections from its accept too (``relay.descriptors``), a place the HTTP protocol takes over;
one past its address's share is cut at once (no answer a TLS client could read is possible
before its handshake).

uvloop starts reading a connection as soon as its ``connection_made`` returns, whatever the
protocol asked there (``pause_reading``), so the start of a handshake already in when the
connection is accepted (a busy relay, a quick client) can reach the door before the handshake
starts: the door keeps it and gives it to the TLS protocol first (``_hand_over``), else client
and relay would each wait for the other until the head timeout.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

from devtunnel.relay.descriptors import Counted, OpenConnections
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
        connections: where the connection counts among its address's open ones (None: nowhere).
    """

    def __init__(
        self,
        make: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        timeout: float,
        pending: PendingConnections | None,
        doors: set[TlsDoor],
        connections: OpenConnections | None = None,
    ) -> None:
        self._make = make
        self._context = context
        self._timeout = timeout
        self._pending = pending
        self._doors = doors
        self._connections = connections
        self._open_key: str | None = None
        self._transport: asyncio.Transport | None = None
        self._raw: list[bytes] = []  # what came before the handshake started: its start
        self._tls = False  # start_tls took the connection: what the door receives is decrypted
        self._early: list[bytes] = []  # application data that came with the end of the handshake
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # (uvloop's is no asyncio.Transport subclass)
        self._transport = transport
        transport.pause_reading()  # until start_tls reads the handshake
        peer = transport.get_extra_info("peername")
        if self._connections is not None:
            self._open_key = self._connections.opened(peer, transport)
            if self._open_key is None:
                transport.abort()  # (no answer a TLS client could read before its handshake)
                return
        pending = self._pending
        if pending is not None and not pending.admit(self, peer):
            self._give_back_open()
            transport.abort()
            return
        self._doors.add(self)
        asyncio.get_running_loop().create_task(self._handshake(transport))

    async def _handshake(self, raw: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        tls: asyncio.Transport | None = None
        self._tls = True
        raw_in, self._raw = self._raw, []
        if raw_in:  # runs once start_tls (below) has set its protocol, before the connection reads again
            loop.call_soon(_hand_over, raw, self, raw_in)
        try:
            tls = await loop.start_tls(raw, self, self._context, server_side=True, ssl_handshake_timeout=self._timeout)
        except (OSError, asyncio.CancelledError):  # a failed or slow handshake (start_tls closed it), or the relay stops
            raw.abort()
        finally:
            self._doors.discard(self)
            if self._pending is not None:
                self._pending.release(self)  # the relay's protocol counts itself (its connection_made)
        if tls is None or self._lost:
            self._give_back_open()
            return
        protocol = self._make()
        key, self._open_key = self._open_key, None
        if key is not None:
            if isinstance(protocol, Counted):
                protocol.adopt_open(key)
            elif self._connections is not None:
                self._connections.closed(key)
        tls.set_protocol(protocol)
        protocol.connection_made(tls)
        early, self._early = self._early, []
        for data in early:
            if tls.is_closing():
                break
            protocol.data_received(data)

    def _give_back_open(self) -> None:
        key, self._open_key = self._open_key, None
        if key is not None and self._connections is not None:
            self._connections.closed(key)

    def drop_pending(self) -> None:
        """Dropped to make room for newer connections (``PendingConnections``): cut."""
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._tls:
            self._early.append(data)
        else:  # read despite pause_reading (uvloop): the start of the handshake
            self._raw.append(data)
            if self._transport is not None:
                self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True


def _hand_over(raw: asyncio.Transport, door: TlsDoor, data: list[bytes]) -> None:
    """Give the TLS protocol start_tls put on ``raw`` what the door read of the handshake, in
    its order and before anything the connection reads next."""
    protocol = raw.get_protocol()
    if protocol is door:  # (start_tls sets its protocol before it first waits: it failed)
        raw.abort()
        return
    # asyncio's TLS protocol and uvloop's (no BufferedProtocol subclass) read into their buffer.
    get_buffer = getattr(protocol, "get_buffer", None)
    for chunk in data:
        if get_buffer is None:
            cast(asyncio.Protocol, protocol).data_received(chunk)
            continue
        view = memoryview(chunk)
        while view:
            buffer = get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            cast(asyncio.BufferedProtocol, protocol).buffer_updated(size)
            view = view[size:]


def abort_all(doors: set[TlsDoor]) -> None:
    """Cut every connection still shaking hands (the relay stops)."""
    for door in list(doors):
        door.drop_pending()
