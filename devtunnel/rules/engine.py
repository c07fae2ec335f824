"""Deciding one request: the rules in order, the first that answers ends the evaluation.

Pure and synchronous: the relay calls ``decide`` from its request callback with a clock
reading; state (rate-limit buckets, ``respond`` counts) lives in the ``Engine`` of a tunnel.

Order: relay-wide rules first, then the tunnel's, each list top to bottom. A rule whose
``match`` fails is skipped. ``basic-auth`` (wrong or missing credentials), ``deny``,
``allow-ip`` (address not listed), ``rate-limit`` (bucket empty) and ``respond`` answer and
stop; a passed check goes on. ``forward`` picks the local target (the first matching one
wins) and ``headers`` edits add up; both go on.

The regexes of the ``match`` filters of one request run within ``RULES_REGEX_BUDGET`` in all
(``capture.filters.regex_budget``): the relay decides on its event loop, and a public client
must not hold it with a body or path that makes a rule's regex backtrack. A rule whose match
is stopped for time answers 503 itself: the request is refused, never let past a rule that
could not be checked. Over time, a tunnel's regexes draw on its ``RegexMeter`` (``rules.share``):
while its share of the relay's time is spent, a rule whose match holds a regex answers 503
without running it, with ``Retry-After``, and the same holds: nothing passes a rule unchecked.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from devtunnel.capture.filters import regex_budget
from devtunnel.capture.filters.edge import client_address
from devtunnel.capture.filters.edge import ip_in as _ip_in
from devtunnel.capture.model import Exchange, Headers, Request
from devtunnel.errors import FilterTimeoutError
from devtunnel.rules.model import Rule, uses_regex
from devtunnel.rules.paths import rule_target
from devtunnel.rules.share import RegexMeter

RULES_REGEX_BUDGET = 0.02
"""Seconds the ``match`` regexes of all rules may run on one request: a path or header takes tens
of microseconds with an ordinary pattern, ``~b "foo.*bar"`` about a millisecond on a body of 1 MiB."""
MAX_BUCKETS = 10_000
"""Client addresses one rate-limit rule keeps a bucket for; the least recently seen go first."""

Fields = Sequence[tuple[bytes, bytes]]


@dataclass(slots=True)
class RequestView:
    """What a rule may look at: the request as it arrived, before anything answers it."""

    method: str
    target: bytes
    headers: Fields
    ip: str
    """The client's address (the socket's, or from X-Forwarded-For behind a trusted proxy)."""
    body: bytes = b""
    """The body bytes that arrived with the head (all of it on the direct path)."""
    websocket: bool = False
    _exchange: Exchange | None = None

    def exchange(self) -> Exchange:
        """The request as an Exchange, for the filter language (built once)."""
        if self._exchange is None:
            self._exchange = Exchange(
                id="",
                tunnel="",
                started_at=0.0,
                request=Request(
                    headers=Headers.of_pairs(tuple(self.headers)),
                    method=self.method,
                    target=rule_target(self.target),
                    body=self.body,
                    body_size=len(self.body),
                ),
                remote_addr=self.ip,
                websocket=self.websocket,
            )
        return self._exchange


@dataclass(frozen=True, slots=True)
class Answer:
    """The relay answers instead of the tunnel."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    delay: float = 0.0
    drop: bool = False
    """Close the connection instead of answering."""


@dataclass(slots=True)
class Decision:
    """What the rules made of one request."""

    answer: Answer | None = None
    rule: tuple[str, int, str] | None = None
    """The rule that decided it: (``relay`` or ``tunnel``, number, action)."""
    route: int | None = None
    """Number of the tunnel's ``forward`` rule whose target takes the request."""
    request_set: list[tuple[bytes, bytes]] = field(default_factory=list)
    request_remove: set[bytes] = field(default_factory=set)
    response_set: list[tuple[bytes, bytes]] = field(default_factory=list)
    response_remove: set[bytes] = field(default_factory=set)
    unchecked: bool = False
    """The rule answered without running its match: its tunnel's share of regex time was spent."""

    @property
    def edits_response(self) -> bool:
        return bool(self.response_set or self.response_remove)


class _Buckets:
    """Token buckets per client address, at most ``cap`` of them (least recently seen out)."""

    __slots__ = ("rate", "burst", "cap", "_buckets")

    def __init__(self, rate: float, burst: int, cap: int) -> None:
        self.rate = rate
        self.burst = burst
        self.cap = cap
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """Take a token for ``key``: 0 when there was one, else seconds until there is."""
        buckets = self._buckets
        entry = buckets.pop(key, None)
        tokens = float(self.burst) if entry is None else min(self.burst, entry[0] + (now - entry[1]) * self.rate)
        if tokens >= 1:
            buckets[key] = (tokens - 1, now)
            wait = 0.0
        else:
            buckets[key] = (tokens, now)
            wait = (1 - tokens) / self.rate
        while len(buckets) > self.cap:
            buckets.popitem(last=False)
        return wait


class Engine:
    """One list of rules with its state (``scope``: ``relay`` or ``tunnel``)."""

    def __init__(
        self, rules: Sequence[Rule], scope: str = "tunnel", *, max_buckets: int = MAX_BUCKETS, meter: RegexMeter | None = None
    ) -> None:
        self.rules = tuple(rules)
        self.scope = scope
        self.meter = meter
        """What the regexes of these rules may take of the relay's time (None: only the bound of
        one request); a pool's members and a change of rules keep their tunnel's."""
        self._metered = frozenset(r.index for r in self.rules if uses_regex(r)) if meter is not None else frozenset()
        self._buckets = {r.index: _Buckets(r.rate, r.burst, max_buckets) for r in self.rules if r.action == "rate-limit"}
        self._left = {r.index: r.count for r in self.rules if r.action == "respond" and r.count is not None}

    def buckets(self, index: int) -> int:
        """Client addresses rule ``index`` (a rate limit) holds a bucket for now."""
        return len(self._buckets[index])

    def remaining(self, index: int) -> int | None:
        """Answers a ``respond`` rule with a count still gives (None: no count)."""
        return self._left.get(index)

    def apply(self, view: RequestView, decision: Decision, now: float) -> bool:
        """Run the rules on ``view`` into ``decision``; True when one answered (stop there)."""
        for rule in self.rules:
            flt = rule.filter
            try:
                if flt is None:
                    matched: bool | None = True
                elif self.meter is not None and rule.index in self._metered:
                    matched = self.meter.run(flt, view.exchange())
                else:
                    matched = flt(view.exchange())
            except FilterTimeoutError:
                decision.answer = _plain(
                    503, f"the {self.scope}'s rule {rule.index} could not decide in time (its match regex took too long)\n"
                )
                decision.rule = (self.scope, rule.index, rule.action)
                return True
            if matched is None:
                assert self.meter is not None
                share, wait = self.meter.spent()
                retry = max(1, math.ceil(wait))
                decision.answer = _plain(
                    503, f"the {self.scope}'s rule {rule.index} was not checked: {share.owner} used up their share of the"
                         f" relay's time for match regexes; try again in {retry} s\n",
                    [(b"retry-after", str(retry).encode())],
                )
                decision.rule = (self.scope, rule.index, rule.action)
                decision.unchecked = True
                return True
            if not matched:
                continue
            action = rule.action
            answer: Answer | None = None
            if action == "headers":
                _edit(decision.request_set, decision.request_remove, rule.request_set, rule.request_remove)
                _edit(decision.response_set, decision.response_remove, rule.response_set, rule.response_remove)
                continue
            if action == "forward":
                if decision.route is None and self.scope == "tunnel":
                    decision.route = rule.index
                    decision.rule = (self.scope, rule.index, action)
                continue
            if action == "basic-auth":
                if _authorized(rule, view.headers):
                    if not rule.forward_auth:
                        decision.request_remove.add(b"authorization")
                    continue
                answer = _plain(401, "authentication required\n", [(b"www-authenticate", f'Basic realm="{rule.realm}"'.encode())])
            elif action == "allow-ip":
                if _ip_in(view.ip, rule.networks):
                    continue
                answer = _plain(403, "forbidden: your address is not allowed\n")
            elif action == "rate-limit":
                wait = self._buckets[rule.index].take(_bucket_key(view.ip), now)
                if not wait:
                    continue
                answer = _plain(429, f"too many requests: at most {rule.rate_text}; try again\n",
                                [(b"retry-after", str(max(1, math.ceil(wait))).encode())])
            elif action in ("deny", "respond"):
                left = self._left.get(rule.index)
                if left is not None:
                    if left <= 0:
                        continue
                    self._left[rule.index] = left - 1
                body = rule.body.encode() if rule.body or action == "respond" else b"forbidden\n"
                headers = tuple((n.encode(), v.encode("latin-1")) for n, v in rule.headers)
                answer = Answer(rule.status, body, headers, rule.delay, rule.drop)
            if answer is not None:
                decision.answer = answer
                decision.rule = (self.scope, rule.index, action)
                return True
        return False


def decide(engines: Sequence[Engine], view: RequestView, now: float) -> Decision:
    """Run each list of rules in turn (relay-wide first) until one answers."""
    decision = Decision()
    with regex_budget(RULES_REGEX_BUDGET):
        for engine in engines:
            if engine.apply(view, decision, now):
                break
    return decision


def _edit(sets: list[tuple[bytes, bytes]], removals: set[bytes], rule_set: Sequence[tuple[str, str]],
          rule_remove: Sequence[str]) -> None:
    """Add one ``headers`` rule's edits of one side to those of the rules before it, in order:
    its ``set`` replaces a value an earlier rule set, its ``remove`` takes one out (one header
    name is never sent twice with two rules' values)."""
    if rule_remove:
        gone = {n.encode() for n in rule_remove}
        removals |= gone
        sets[:] = [(n, v) for n, v in sets if n.lower() not in gone]
    for name, value in rule_set:
        key = name.lower().encode()
        sets[:] = [(n, v) for n, v in sets if n.lower() != key]
        sets.append((name.encode(), value.encode("latin-1")))


def _plain(status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> Answer:
    return Answer(status, text.encode(), (*(extra or ()), (b"content-type", b"text/plain; charset=utf-8")))


def _authorized(rule: Rule, headers: Fields) -> bool:
    """Whether the request's Basic credentials are one of the rule's users.

    Every user is checked whatever the outcome, so the time taken does not tell which
    names exist."""
    value = b""
    for name, v in headers:
        if name.lower() == b"authorization":
            value = v
            break
    scheme, _, encoded = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, password = decoded.partition(b":")
    if not sep:
        return False
    accepted = False
    for credential in rule.users:
        good = credential.accepts(password)
        accepted |= good & _same(credential.user.encode(), user)
    return accepted


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _bucket_key(ip: str) -> str:
    """A rate limit counts an IPv6 client by its /64 (what one host or site usually has)."""
    address = client_address(ip)
    if address is None or address.version == 4:
        return str(address or ip)
    return str(ipaddress.IPv6Network((address, 64), strict=False))
