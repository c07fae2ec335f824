"""The relay's door for agents: the WebSocket at ``/_devtunnel/connect`` (``AgentGate``).

An agent's connection is read until its HELLO, which is checked (token, rules, name) before the
agent is given its name (``AgentRegistry``) and its ``AgentLink``; then the agent's messages are
handled in the WebSocket protocol's callback until it disconnects, and the name is freed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from devtunnel import __version__
from devtunnel.errors import ProtocolError
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.relay_side import RelayConnection
from devtunnel.protocol.events import Hello
from devtunnel.protocol.handshake import RULE_PATHS, RULES_ACK
from devtunnel.relay.asgi import Receive, Scope, Send, deny_websocket, protocol_of
from devtunnel.relay.http import DeadPeerWebSocketProtocol
from devtunnel.relay.link import MAX_AGENT_TEXT, AgentLink, BufferBudget, send_last_words
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.registry import AgentRegistry
from devtunnel.relay.rules import RuleBook
from devtunnel.relay.settings import RelaySettings
from devtunnel.relay.ws_guard import GuardedWebSocketProtocol
from devtunnel.rules import PATH_READING, WIRE_VERSION, Rule, RulesError, rules_from_wire
from devtunnel.values.terminal import clipped

log = logging.getLogger("devtunnel.relay")

# Response bytes an agent may send on a stream before the relay has written them to the client.
# With the protocol's default of 1 MiB a large download waited for credit between batches even
# on loopback (100 MiB downloads: about 250-320 MiB/s at 1 MiB, 370-440 MiB/s at 4 MiB). It is
# also what a slow client can leave buffered here per stream.
RESPONSE_WINDOW = 4 << 20

RECEIVE_SLICE = 64 << 10
"""Bytes of an agent's frames handled in one turn of the event loop (``receive_slice``): at most
7,282 frames (9 bytes each at least), a few milliseconds of work. A message of 59 MiB of tiny
frames (3.7 million PINGs) is handled a slice per turn, other tunnels served in between, and
its events never all exist at once; the agent is not read meanwhile (``_Delivery``). A frame
starting in a slice is handled whole, so a message of large DATA frames is hardly cut."""

BROWSER_REFUSAL = "a web page cannot connect as an agent (the handshake has an Origin header)"


class AgentGate:
    """Serves the agents' WebSockets (one instance per relay).

    Args:
        settings: the relay's settings (tokens, limits, timeouts).
        registry: the names online, which an admitted agent joins and leaves.
        budget: the buffer budget every agent's ``AgentLink`` draws on.
        rules: the rule book an agent's rules are added to while it is online.
        peer_errors: where refusals are logged, throttled.
        public_url_for: the public URL of a tunnel name (it goes in the WELCOME).
    """

    def __init__(
        self,
        settings: RelaySettings,
        registry: AgentRegistry,
        budget: BufferBudget,
        rules: RuleBook,
        peer_errors: PeerErrorLog,
        public_url_for: Callable[[str], str],
    ) -> None:
        self.settings = settings
        self._tokens = [token.encode() for token in settings.tokens]
        self._registry = registry
        self._budget = budget
        self._rules = rules
        self._peer_errors = peer_errors
        self._public_url_for = public_url_for
        self._ending: set[asyncio.Task[None]] = set()
        """Tunnels being ended from a callback (rules refused), kept until they are."""
        # Inside the agent, its own output already says when a tunnel comes and goes.
        self._log_level = logging.DEBUG if settings.embedded else logging.INFO

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one agent's tunnel connection, from HELLO until it disconnects."""
        if (await receive())["type"] != "websocket.connect":
            return
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "?"
        if any(name.lower() == b"origin" for name, _ in scope.get("headers", ())):
            # Only browsers send Origin (on every WebSocket, and agents never do): a web page must
            # not hold a tunnel, least of all on the tokenless embedded relay on 127.0.0.1, where
            # it would serve its own pages from NAME.localhost, a loopback origin.
            self._peer_errors.log("agent-refused", self._log_level, "agent %s refused: %s", peer, BROWSER_REFUSAL)
            await deny_websocket(send, 403, BROWSER_REFUSAL + "\n")
            return
        await send({"type": "websocket.accept"})
        conn = RelayConnection(
            max_streams=self.settings.max_streams,
            initial_window=RESPONSE_WINDOW,
            max_send_window=self.settings.max_window,
            receive_slice=RECEIVE_SLICE,
        )
        unheard: asyncio.TimeoutError | ProtocolError | None = None
        try:
            hello = await asyncio.wait_for(_read_hello(conn, receive), self.settings.head_timeout)
        except (asyncio.TimeoutError, ProtocolError) as exc:
            unheard = exc
        # Refused outside the handler: nothing awaits while an exception is being handled
        # (devtunnel/native.py says why).
        if isinstance(unheard, asyncio.TimeoutError):
            reason = f"no HELLO within {self.settings.head_timeout:g} s"
            await _refuse(conn, send, ErrorCode.PROTOCOL_ERROR, reason, receive)
            return
        if unheard is not None:
            # Its words can quote what it sent (a HELLO of 64 KiB, before any token): cut, as a GOAWAY's reason is.
            self._peer_errors.log("agent-refused", self._log_level, "agent %s refused: %s", peer,
                                  clipped(str(unheard), MAX_AGENT_TEXT))
            await _refuse(conn, send, ErrorCode.PROTOCOL_ERROR, str(unheard), receive)  # keeps a GOAWAY already queued
            return
        if hello is None:
            return
        token, refusal = self._admit(hello)
        rules: tuple[Rule, ...] | None = None
        if refusal is None:
            rules, refusal = _hello_rules(hello)
        if refusal is not None:
            code, reason = refusal
            self._peer_errors.log(_refusal_kind(code), self._log_level, "agent %s refused: %s", peer,
                                  clipped(reason, MAX_AGENT_TEXT))
            await _refuse(conn, send, code, reason, receive)
            return
        name, refusal = self._registry.pick_name(hello.name)
        displaced: list[AgentLink] = []
        if refusal is None:
            displaced, refusal = await self._registry.claim(
                name, token, hello.instance, hello.pool, fits=lambda members: self._rules.fits(rules, members)
            )
        if refusal is not None:
            code, reason = refusal
            # A name refused as no name quotes it, and a HELLO may ask for one of 64 KiB: cut, as above.
            self._peer_errors.log(_refusal_kind(code), self._log_level, "agent %s refused: %s", peer,
                                  clipped(reason, MAX_AGENT_TEXT))
            await _refuse(conn, send, code, reason, receive)
            return
        # Take the name (or a place in its pool) before any await, so no other agent can slip in between.
        tunnel = AgentLink(
            name, token, conn, send, peer, instance=hello.instance, budget=self._budget, pooled=hello.pool
        )
        pool = self._registry.join(name, token, hello.pool, tunnel, displaced)
        self._rules.add(tunnel, rules, peers=[m for m in pool.members if m is not tunnel])
        if rules is not None:
            tunnel.on_rules = self._rules_changer(tunnel, peer)
        info: dict[str, object] = {"relay": f"devtunnel {__version__}"}
        if rules is not None:
            info[RULES_ACK] = WIRE_VERSION
            info[RULE_PATHS] = PATH_READING
        members = len(pool) if hello.pool else None
        conn.send_welcome(name, self._public_url_for(name), info, pool=members)
        tunnel.start_writer()
        tunnel.flush()
        shared = f", pool of {len(pool)}" if hello.pool else ""
        log.log(self._log_level, "tunnel %s online for agent %s (%s%s)", name, peer, self._public_url_for(name), shared)
        protocol = protocol_of(receive)
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
        # The handlers only keep the exception; what they did runs after them: nothing awaits
        # while an exception is being handled (devtunnel/native.py says why).
        failed: BaseException | None = None
        try:
            broken: ProtocolError | None = None
            try:
                if protocol is not None:
                    # Binary messages are handled in the protocol's callback (see on_bytes); what
                    # still comes through receive() is the end, a text message, or a failure there.
                    protocol.on_bytes = _Delivery(tunnel, protocol)
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
                    while conn.backlog:  # a slice per turn (RECEIVE_SLICE), reading nothing meanwhile
                        if conn.wants_to_send:
                            tunnel.flush()
                        await asyncio.sleep(0)
                        tunnel.handle(conn.receive_data(b""))
                    if conn.wants_to_send:  # a PONG; otherwise waking the writer finds nothing to send
                        tunnel.flush()
            except ProtocolError as exc:
                broken = exc
            if broken is not None:
                reason = f"protocol error: {broken}"
                conn.send_goaway(ErrorCode.PROTOCOL_ERROR, str(broken))  # no-op if the connection queued its own
                tunnel.close(f"tunnel {name} went offline")
                if isinstance(protocol, GuardedWebSocketProtocol) and not protocol.writable.is_set():
                    # It does not read (a flood of PINGs whose PONGs it leaves: MAX_UNSENT_REPLIES):
                    # the GOAWAY goes behind what it has not read, without waiting for it.
                    await tunnel.stop_writer()
                    protocol.close_unread(conn.data_to_send(), 1002)
                else:
                    await tunnel.finish_writing({"type": "websocket.close", "code": 1002})
        except BaseException as exc:  # cancelled, or a defect: the tunnel is let go first, then raised again
            failed = exc
        if protocol is not None:
            protocol.on_bytes = None
            if protocol.unanswered_ping:  # not "disconnected": a laptop asleep, a network gone
                reason = f"it did not answer a ping within {self.settings.ping_timeout:g} s"
        remaining = self._registry.leave(name, tunnel)
        self._rules.remove(tunnel)
        tunnel.close(f"tunnel {name} went offline")
        await tunnel.stop_writer()
        reason = tunnel.end_reason or reason
        if remaining:
            log.log(self._log_level, "tunnel %s: agent %s left its pool (%s); %d remain", name, peer, reason, remaining)
        else:
            log.log(self._log_level, "tunnel %s offline (agent %s: %s)", name, peer, reason)
        if failed is not None:
            raise failed

    def _rules_changer(self, tunnel: AgentLink, peer: str) -> Callable[[dict[str, Any]], None]:
        """What a RULES frame from ``tunnel``'s agent does: its rules are replaced (their
        counts and buckets start afresh). Rules the relay cannot enforce end the tunnel with
        ``GOAWAY RULES_REFUSED``, as its next HELLO would: an agent reads them as a relay of its
        version would before sending, so only an agent of another version gets here, and one older
        than the relay's checks (its API answered 201) would otherwise list a guard nobody enforces."""

        def change(wire: dict[str, Any]) -> None:
            rules, refusal = _hello_rules(Hello(0, "", None, rules=wire))
            if refusal is not None or rules is None:
                if tunnel.draining:  # ending already (refused before, or leaving): it takes no request
                    return
                reason = f"{refusal[1] if refusal else 'no rules'} (changed while the tunnel ran)"
                self._peer_errors.log("rules-refused", logging.WARNING, "tunnel %s (agent %s) ended: %s",
                                      tunnel.name, peer, clipped(reason, MAX_AGENT_TEXT))
                tunnel.goaway(ErrorCode.RULES_REFUSED, reason)  # no new stream from here on
                ending = asyncio.get_running_loop().create_task(
                    tunnel.disconnect(ErrorCode.RULES_REFUSED, reason, 1008))
                self._ending.add(ending)
                ending.add_done_callback(self._ending.discard)
                return
            pool = self._registry.pools.get(tunnel.name)
            self._rules.change(tunnel, rules, [m for m in pool.members if m is not tunnel] if pool else ())
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


_FAILURE = "devtunnel.failure"
"""Key of a receive() message carrying an exception raised while handling a message in the callback."""


class _Delivery:
    """Handles each message from the agent as it arrives, in the protocol's callback (``on_bytes``).

    The same as the receive() loop does, one task hop earlier. An exception (a protocol error,
    or a defect) must not escape into the transport's callback: it goes to the receive() loop
    instead, through the queue, which raises it there as if the loop had handled the message.

    A message larger than a slice (``RECEIVE_SLICE``) is handled a slice per turn of the event
    loop, from ``call_soon``: other tunnels are served in between, and the answers of each slice
    (PONGs) are flushed before the next. Meanwhile the agent is not read, so what it sends next
    waits in the kernel, not here.
    """

    __slots__ = ("tunnel", "protocol", "paused", "waiting")

    def __init__(self, tunnel: AgentLink, protocol: DeadPeerWebSocketProtocol) -> None:
        self.tunnel = tunnel
        self.protocol = protocol
        self.paused = False
        """Reading is paused, and ``go_on`` scheduled, until the backlog is handled."""
        self.waiting: deque[bytes] = deque()
        """Messages that came meanwhile, in the read that brought the one being sliced: they
        wait their turn (joined to the backlog, each would copy it)."""

    def __call__(self, data: bytes) -> None:
        if self.paused:
            self.waiting.append(data)
        elif self._handle(data) and self.tunnel.conn.backlog:
            self.paused = True
            self.protocol.transport.pause_reading()
            self.protocol.loop.call_soon(self.go_on)

    def go_on(self) -> None:
        """Handle the next slice of the backlog (or the next message waiting); read the agent
        again once all are handled."""
        protocol = self.protocol
        waiting = self.waiting
        data = waiting.popleft() if waiting and not self.tunnel.conn.backlog else b""
        if protocol.on_bytes is not self or not self._handle(data):  # failed, or the tunnel ended
            self.paused = False
            waiting.clear()
            return
        if self.tunnel.conn.backlog or waiting:
            protocol.loop.call_soon(self.go_on)
            return
        self.paused = False
        transport = protocol.transport
        if not protocol.read_paused and not transport.is_closing():  # (uvicorn pauses for its queue)
            transport.resume_reading()

    def _handle(self, data: bytes) -> bool:
        """Handle ``data`` (or the next slice of the backlog); False once the connection failed."""
        tunnel = self.tunnel
        conn = tunnel.conn
        try:
            tunnel.handle(conn.receive_data(data))
        except Exception as exc:
            self.protocol.on_bytes = None  # like the loop, handle nothing after the failure
            self.protocol.queue.put_nowait({"type": "websocket.receive", _FAILURE: exc})  # type: ignore[arg-type]  # our marker
            return False
        if conn.wants_to_send:  # a PONG; otherwise waking the writer finds nothing to send
            tunnel.flush()  # (call_soon: before the next slice)
        return True


async def _read_hello(conn: RelayConnection, receive: Receive) -> Hello | None:
    """Read until the agent's HELLO; None if it disconnected first."""
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return None
        data = message.get("bytes")
        if data is None:
            raise ProtocolError("the agent sent a text WebSocket message; the tunnel speaks binary")
        while True:  # every slice (a message is 64 KiB at most before login)
            for event in conn.receive_data(data):
                if isinstance(event, Hello):
                    return event
            if not conn.backlog:
                break
            data = b""


def _refusal_kind(code: ErrorCode) -> str:
    """The log's kind for an agent refused with ``code``: a token refused is a kind of its own,
    so guesses at the token are said (a line, then their count) however many agents are refused
    for other reasons in the same seconds: another's flood of bad handshakes cannot hide them."""
    return "agent-token-refused" if code == ErrorCode.AUTH_FAILED else "agent-refused"


async def _refuse(conn: RelayConnection, send: Send, code: ErrorCode, reason: str, receive: Receive) -> None:
    """Send a GOAWAY (unless the connection already queued one) and close, without waiting for
    the agent's close frame: a refused connection is let go at once."""
    conn.send_goaway(code, reason)
    close = {"type": "websocket.close", "code": 1008 if code == ErrorCode.AUTH_FAILED else 1000}
    await send_last_words(send, [{"type": "websocket.send", "bytes": conn.data_to_send()}, close])
    protocol = protocol_of(receive)
    if isinstance(protocol, GuardedWebSocketProtocol):
        protocol.transport.close()  # after what was written; a peer not reading is dropped by the guard
