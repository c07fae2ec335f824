"""Rules at the relay: the one place both public paths (``HttpForwarder.direct`` from callbacks,
and the ASGI path) and the WebSocket path ask what to do with a request.

``RuleBook.judge`` runs the relay's own rules, then the tunnel's (``devtunnel.rules``), once per
request; the decision is kept in the request's scope so a request the direct path hands over
to the ASGI path is not judged (and counted against a rate limit) twice.

The regexes of a tunnel's rules draw on a ``RegexMeter`` (``rules.share``): one per tunnel name
and token, kept across its agent's reconnections and changes of rules (so neither refills it),
drawing on a share of its token's as well. While one is spent, a request whose rule needs a regex
is answered 503 without running it, and a line says so, at most once an interval per tunnel.

A request a rule answers never crosses the tunnel. The agent still records it: the relay opens
a stream whose REQUEST carries the head and the ``devtunnel-rule`` header naming the rule, the
status given, the size of the body answered and whether the request body it carries is all of
it, with END_STREAM or the request body in one DATA frame (the first ``NOTICE_BODY`` bytes of it
at most); the agent records it, forwards nothing and resets the stream (``docs/protocol.md``,
"Rules"; the header's format is ``protocol.notice``). A request routed by a ``forward`` rule
carries the same header with the rule's number; the agent looks the target up in its own rules. The header is removed from every
public request first, so a client cannot spell it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from devtunnel.capture.filters.edge import client_address
from devtunnel.errors import ProtocolError
from devtunnel.protocol.handshake import RULE_BODIES
from devtunnel.protocol.notice import RULE_HEADER, notice_value, route_value
from devtunnel.relay.asgi import PLAIN_TYPE, Scope, Send, target
from devtunnel.relay.headers import request_host, scope_cookies
from devtunnel.relay.http import CONNECTION_EXTENSION
from devtunnel.relay.link import AgentLink
from devtunnel.rules import Answer, Decision, Engine, RequestView, decide
from devtunnel.rules.engine import MAX_BUCKETS
from devtunnel.rules.model import BODILESS, Rule, uses_regex
from devtunnel.rules.share import RegexMeter, TimeShare, token_share, tunnel_meter

log = logging.getLogger("devtunnel.relay")

#: Key of the scope extension that keeps a request's decision (judged once).
DECISION_EXTENSION = "devtunnel.decision"
# A notice is not sent while the agent's buffer budget is this low: a flood that rules refuse
# must not fill the relay's memory with its records.
_NOTICE_ROOM = 1 << 20
NOTICE_BODY = 64 * 1024
"""The most bytes of a request body a rule's notice carries (``RuleBook.notify``)."""
MAX_METERS = 4096
"""Tunnels (and tokens) whose share of regex time is kept, online or not; the least recently
online go first (one that comes back starts with a full share)."""
SHARE_LOG_INTERVAL = 10.0
"""Seconds between two lines about one tunnel's spent share of regex time."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Fields = Sequence[tuple[bytes, bytes]]


class RuleBook:
    """The relay's rules and each online tunnel's, with their state (buckets, counts)."""

    def __init__(
        self, relay_rules: Sequence[Rule] = (), trusted_proxies: Sequence[Network] = (), *, max_buckets: int = MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic, max_meters: int = MAX_METERS,
    ) -> None:
        self.max_buckets = max_buckets
        self.clock = clock
        """Monotonic seconds the tunnels' regex time is counted by (a seam for tests; a meter
        made already keeps its own ``RegexMeter.clock``)."""
        self.max_meters = max_meters
        self._meters: OrderedDict[tuple[str, str], RegexMeter] = OrderedDict()
        self._token_shares: OrderedDict[str, TimeShare] = OrderedDict()
        self.relay = Engine(relay_rules, "relay", max_buckets=max_buckets) if relay_rules else None
        self.trusted = tuple(trusted_proxies)
        self.forwarded_ports: set[int] = set()
        """Local ports (``Relay.pin(forwarded=True)``) whose every peer is a proxy on this machine
        that appends the client's address to X-Forwarded-For (cloudflared: Cloudflare's edge does)."""
        self._tunnels: dict[AgentLink, Engine] = {}
        self._joined: dict[AgentLink, tuple[Rule, ...]] = {}
        """The rules each tunnel's HELLO carried (a change through its agent's API since aside)."""
        self._aware: set[AgentLink] = set()
        self.in_force = self.relay is not None
        """Whether any rules apply at all (False: ``judge`` decides nothing, for any request)."""

    def add(self, tunnel: AgentLink, rules: Sequence[Rule] | None, peers: Sequence[AgentLink] = ()) -> None:
        """``tunnel`` is online with these rules (None: its agent knows nothing of rules).

        ``peers``: the other members of its pool. One of them with the same rules shares its
        state with ``tunnel``, so a pool's ``respond`` counts and rate-limit buckets are the
        pool's, not each member's (``count = 3`` answers 3 requests, however many members)."""
        if rules is not None:
            self._aware.add(tunnel)
            self._joined[tunnel] = tuple(rules)
            if rules:
                rules = tuple(rules)
                shared = next((e for e in map(self._tunnels.get, peers) if e is not None and e.rules == rules), None)
                meter = self._meter(tunnel) if any(map(uses_regex, rules)) else None
                self._tunnels[tunnel] = shared or Engine(rules, "tunnel", max_buckets=self.max_buckets, meter=meter)
                self.in_force = True

    def remove(self, tunnel: AgentLink) -> None:
        self._tunnels.pop(tunnel, None)
        self._joined.pop(tunnel, None)
        self._aware.discard(tunnel)
        self.in_force = self.relay is not None or bool(self._tunnels)

    def change(self, tunnel: AgentLink, rules: Sequence[Rule], peers: Sequence[AgentLink] = ()) -> None:
        """``tunnel``'s agent changed its rules (through its API): they apply to the requests it
        takes from now on, with counts and buckets of their own, or those of a member of its pool
        (``peers``) with the same rules (a drill removed: the pool's rate limits are one again)."""
        joined = self._joined.get(tunnel, ())
        self.remove(tunnel)
        self.add(tunnel, rules, peers)
        self._joined[tunnel] = joined

    def _meter(self, tunnel: AgentLink) -> RegexMeter:
        """``tunnel``'s regex time: the one its name had with its token before, if still kept."""
        key = (tunnel.token, tunnel.name)
        meter = self._meters.get(key)
        if meter is None:
            share = self._token_shares.get(tunnel.token)
            if share is None:
                share = self._token_shares[tunnel.token] = token_share()
            meter = self._meters[key] = tunnel_meter(share, self.clock)
        self._meters.move_to_end(key)
        self._token_shares.move_to_end(tunnel.token)
        for kept in (self._meters, self._token_shares):
            while len(kept) > self.max_meters:
                kept.popitem(last=False)  # a live tunnel's engine keeps its meter all the same
        return meter

    def engine(self, tunnel: AgentLink) -> Engine | None:
        """The tunnel's rules and state (tests and status)."""
        return self._tunnels.get(tunnel)

    def judge(self, tunnel: AgentLink, scope: dict[str, Any], body: bytes = b"") -> Decision | None:
        """The decision for this request (None: no rules apply to this tunnel at all)."""
        if not self.in_force:
            return None  # a relay without rules pays one look
        extensions = scope.get("extensions")
        if extensions is not None:
            known = extensions.get(DECISION_EXTENSION)
            if known is not None:
                return known  # type: ignore[no-any-return]
        engines = [e for e in (self.relay, self._tunnels.get(tunnel)) if e is not None]
        if not engines:
            return None
        view = RequestView(
            method=scope.get("method", "GET"),
            target=_target(scope),
            headers=scope["headers"],
            ip=self.client_ip(scope),
            body=body,
            websocket=scope["type"] == "websocket",
        )
        decision = decide(engines, view, time.monotonic())
        if decision.unchecked:
            self._tell_spent(tunnel, engines[-1].meter)
        if extensions is not None:
            extensions[DECISION_EXTENSION] = decision
        return decision

    @staticmethod
    def _tell_spent(tunnel: AgentLink, meter: RegexMeter | None) -> None:
        """Say (at most once an interval for each tunnel) that requests were answered without
        running their rule's regex, the tunnel's share being spent: the relay's operator, and
        inside the agent (the embedded relay) its user, learn why they got 503."""
        count = meter.tell(SHARE_LOG_INTERVAL) if meter is not None else 0
        if count:
            assert meter is not None
            share, wait = meter.spent()
            log.warning(
                "tunnel %s: %s used up their share of the relay's time for match regexes (%g ms a second);"
                " requests answered 503 without running one since the last such line: %d (it refills in %.1f s)",
                tunnel.name, share.owner, share.rate * 1000, count, wait,
            )

    def fits(self, rules: Sequence[Rule] | None, members: Sequence[AgentLink]) -> bool:
        """Whether an agent with ``rules`` may join a pool of ``members``: one of them has the
        same guards, now or as it joined. ``respond`` rules (drills) do not count: one answers
        in place of the local service, it never lets a request past, so a member with a drill
        (added through its API, kept across a reconnection) is no weaker than the others."""
        wanted = _guards(rules or ())
        return not members or any(wanted in (_guards(self._rules_of(m)), _guards(self._joined.get(m, ()))) for m in members)

    def _rules_of(self, tunnel: AgentLink) -> tuple[Rule, ...]:
        engine = self._tunnels.get(tunnel)
        return engine.rules if engine else ()

    def same_rules(self, tunnel: AgentLink, other: AgentLink) -> bool:
        """Whether ``other`` has the rules ``tunnel`` has (a decision judged for one holds for the other)."""
        return self._rules_of(tunnel) == self._rules_of(other)

    def client_ip(self, scope: dict[str, Any]) -> str:
        """The client's address: the socket's, or behind a trusted proxy (or on a forwarded port)
        the last address in X-Forwarded-For that is not a trusted proxy itself."""
        client = scope.get("client")
        return self.client_of(str(client[0]) if client else "", scope["headers"], local_port(scope))

    def client_of(self, ip: str, headers: Fields, port: int = 0) -> str:
        """``client_ip`` from the socket's address ``ip``, the request's ``headers`` (names
        lowercase) and the local ``port`` it came to: the address rules judge, and the one the
        agent records."""
        if not (self.forwarded_ports and port in self.forwarded_ports) and not (self.trusted and _trusted(ip, self.trusted)):
            return ip
        hops: list[str] = []
        for name, value in headers:
            if name == b"x-forwarded-for":
                hops += [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
        for hop in reversed(hops):
            address = client_address(hop)
            if address is None:
                return ip  # a hop that is not an address: trust nothing further left
            if not _trusted(str(address), self.trusted):
                return str(address)
        return ip

    def notices(self, tunnel: AgentLink, decision: Decision) -> bool:
        """Whether ``notify`` would tell ``tunnel``'s agent of a request ``decision`` answered now."""
        return (
            tunnel in self._aware and decision.rule is not None and decision.answer is not None
            and not (tunnel.closed or tunnel.draining or tunnel.room < _NOTICE_ROOM)
        )

    def notify(
        self, tunnel: AgentLink, scope: dict[str, Any], fields: Fields, decision: Decision, body: bytes = b"",
        *, cut: int | None = None,
    ) -> None:
        """Tell the tunnel's agent that a rule answered this request, so it records it.

        ``body``: the request body, or, with ``cut``, its first bytes (maybe none): ``cut`` is
        then the body's size as far as the relay knows it (its Content-Length, or the bytes read
        of a chunked one). The notice carries at most ``NOTICE_BODY`` bytes of it; a body it does
        not carry whole is said to be cut, with that size (``docs/protocol.md``, "Rules"), and
        only an agent that reads that (``RULE_BODIES`` in its HELLO) is sent a part of one.

        Only agents that sent rules in their HELLO understand the notice; others are not told
        (an older agent would forward it). Skipped, never waited for, when the tunnel is busy.
        """
        if not self.notices(tunnel, decision):
            return
        assert decision.rule is not None and decision.answer is not None
        scope_name, index, action = decision.rule
        # The credentials tried are a secret (a typo of a real password); good ones that a later
        # rule answered (a rate limit, a drill) are the password itself.
        if action == "basic-auth" or b"authorization" in decision.request_remove:
            fields = [(n, v) for n, v in fields if n.lower() != b"authorization"]
        answer = decision.answer
        # The body's size (what the client got: none for HEAD): the record counts it, and a
        # listing shows it; its bytes stay here.
        size = 0 if answer.drop or scope.get("method") == "HEAD" else len(answer.body)
        limit = min(NOTICE_BODY, tunnel.conn.new_stream_window)
        if cut is None and len(body) > limit:
            cut = len(body)
        if cut is not None:
            cut = max(cut, len(body))
            body = body[:limit] if tunnel.conn.peer_info.get(RULE_BODIES) == 1 else b""
        mark = notice_value(scope_name, index, action, 0 if answer.drop else answer.status, size, cut)
        send_body = bool(body)
        try:
            stream_id = tunnel.conn.open_request(
                scope.get("method", "GET").encode(),
                _target(scope),
                b"1.1",
                (*strip_rule_header(fields), (RULE_HEADER, mark)),  # the client's own spelling never counts
                end_stream=not send_body,
                remote_addr=self.client_ip(scope),
                scheme=scope.get("scheme", "http"),
                websocket=scope["type"] == "websocket",
            )
            if send_body:
                tunnel.conn.send_data(stream_id, body, end_stream=True)
        except (ProtocolError, ValueError) as exc:
            log.debug("tunnel %s: no record of a request rule %s answered: %s", tunnel.name, index, exc)
            return
        tunnel.flush()


def edit_request(fields: Fields, decision: Decision | None) -> tuple[tuple[bytes, bytes], ...]:
    """The headers to forward: the rule header out (a client must not spell it), the rules'
    removals and settings applied, the route of a ``forward`` rule added."""
    if decision is None:
        return tuple(fields)
    remove = decision.request_remove | {RULE_HEADER} | {n.lower() for n, _ in decision.request_set}
    out = [(n, v) for n, v in fields if n.lower() not in remove]
    out += decision.request_set
    if decision.route is not None:
        out.append((RULE_HEADER, route_value(decision.route)))
    return tuple(out)


def strip_rule_header(fields: Fields) -> tuple[tuple[bytes, bytes], ...]:
    """``fields`` without a ``devtunnel-rule`` header a client sent."""
    if any(n.lower() == RULE_HEADER for n, _ in fields):
        return tuple((n, v) for n, v in fields if n.lower() != RULE_HEADER)
    return fields if isinstance(fields, tuple) else tuple(fields)


def edit_response(headers: list[tuple[bytes, bytes]], decision: Decision | None) -> list[tuple[bytes, bytes]]:
    """Response headers with the rules' removals and settings applied (a local service's names
    come in whatever case it wrote them; the rules' are lowercase)."""
    if decision is None or not decision.edits_response:
        return headers
    remove = decision.response_remove | {n.lower() for n, _ in decision.response_set}
    return [(n, v) for n, v in headers if n.lower() not in remove] + [(n.lower(), v) for n, v in decision.response_set]


def answer_messages(answer: Answer, host: bytes, websocket: bool = False) -> list[dict[str, Any]]:
    """The ASGI messages of a rule's answer to a request for ``host`` (``websocket``: as a
    denied WebSocket handshake); its cookies are kept to ``host`` (``scope_cookies``)."""
    headers = [(n.lower(), v) for n, v in answer.headers if n.lower() not in (b"content-length", b"transfer-encoding")]
    headers = scope_cookies(headers, host)
    bodiless = answer.status in BODILESS  # no body, and no length that would promise one
    body = b"" if bodiless else answer.body
    if not any(n == b"content-type" for n, _ in headers) and body:
        headers += PLAIN_TYPE
    if not bodiless:
        headers.append((b"content-length", str(len(body)).encode()))
    prefix = "websocket.http.response" if websocket else "http.response"
    return [
        {"type": f"{prefix}.start", "status": answer.status, "headers": headers},
        {"type": f"{prefix}.body", "body": body},
    ]


async def send_answer(decision: Decision, scope: Scope, send: Send, *, websocket: bool = False) -> None:
    """Answer as a rule says, in a task: after its ``delay``; ``drop`` closes the connection."""
    answer = decision.answer
    assert answer is not None
    if answer.delay > 0:
        await asyncio.sleep(answer.delay)
    if answer.drop:
        client = (scope.get("extensions") or {}).get(CONNECTION_EXTENSION)
        if client is not None:
            client.abort()
            return
        if websocket:
            await send({"type": "websocket.close", "code": 1000})
            return
    for message in answer_messages(answer, request_host(scope["headers"]), websocket=websocket):
        await send(message)


def _guards(rules: Sequence[Rule]) -> tuple[Rule, ...]:
    """``rules`` without ``respond`` rules, unnumbered: what a pool's members must share."""
    return tuple(dataclasses.replace(r, index=0) for r in rules if r.action != "respond")


def local_port(scope: dict[str, Any]) -> int:
    """The local port a request came to (0 on a Unix socket)."""
    server = scope.get("server")
    return int(server[1]) if server and server[1] is not None else 0


def _trusted(ip: str, networks: Sequence[Network]) -> bool:
    address = client_address(ip)
    return address is not None and any(address.version == n.version and address in n for n in networks)




def _target(scope: dict[str, Any]) -> bytes:
    if not scope.get("raw_path"):  # a scope made without one: its decoded path stands in
        scope = {**scope, "raw_path": scope["path"].encode()}
    return target(scope)
