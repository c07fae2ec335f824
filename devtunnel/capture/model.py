"""The exchange model: one HTTP request/response (or WebSocket session) through a tunnel.

Everything here is plain data. Captured bytes are kept exactly as they arrived (header names in
the client's case, repeated headers in order, bodies as bytes); ``str`` views decode them for
display without ever failing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

from devtunnel.capture.verdict import Verdict
from devtunnel.values.durations import human_duration
from devtunnel.values.exchange_ids import new_id
from devtunnel.values.media import media_type
from devtunnel.values.terminal import json_safe, read_utf8, read_utf8_json

__all__ = [
    "Headers",
    "Request",
    "Response",
    "WsMessage",
    "Exchange",
    "RuleMark",
    "ErrorKind",
    "new_id",
    "DEFAULT_BODY_CAP",
    "wire_bytes",
    "body_bytes",
    "cut_bodies",
    "held_json",
    "held_text",
]

_M = TypeVar("_M", bound="_Message")

DEFAULT_BODY_CAP = 10 * 1024 * 1024
"""Bytes of each body recorded by default; the traffic itself is never cut."""

BUDGET_CUT_WHY = "the agent kept no more for the requests in flight (--body-budget)"
"""Why a body under the body cap was recorded cut (``body_budget_cut``)."""

ErrorKind = Literal[
    "local_refused",  # the local service refused the connection
    "local_timeout",  # the local service did not answer in time
    "local_error",  # the local service broke the connection or sent invalid HTTP
    "client_gone",  # the public client went away before the exchange finished
    "client_timeout",  # the public client sent its request body too slowly: the relay answered 408
    "agent_gone",  # the agent's connection to the relay broke mid-exchange, or the agent died with it in flight (capture.runs)
    "agent_stopped",  # the agent stopped its tunnel cleanly (quit, Ctrl-C, SIGTERM) and cut it after the grace
    "too_large",  # a request body exceeded the relay's limit, or the agent held too much of it
    "replay_failed",  # a replay could not be sent
    "bad_request",  # refused before forwarding: the target is not a path, or the head is malformed
    "app_restarting",  # the local app devtunnel runs was down or restarting (502), or did not come back in time (503)
    "app_stopped",  # the local app devtunnel runs had stopped for good (exited with status 0, or could not start): 502
]

_new_object = object.__new__

# Captured bytes as a string that always encodes (JSON, the database, filters), by the one rule
# ``values.terminal.read_utf8_json``: UTF-8, each other byte U+FFFD. To show to a person, read
# them with ``values.terminal.read_utf8`` (``Headers.display_items``, ``Request.display_url``,
# ``Response.reason_text``), which keeps such a byte for ``escape`` to show as ``\xNN``.
_text = read_utf8_json


def wire_bytes(text: str) -> bytes:
    """The bytes a captured text field stands for (``Request.method``, ``Response.reason``).

    The agent records such a field one character per byte received (latin-1), and those come
    back exactly. Text given as text (an edit, an import) may hold a character above U+00FF: it
    is UTF-8, which ``values.terminal.read_utf8`` (``Response.reason_text``) reads back as the
    same text, a ``surrogateescape`` surrogate as the byte it stands for. A lone surrogate of
    another kind, which no encoder takes, is ``?``.
    """
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


class Headers:
    """An ordered multi-map of header fields, keeping the sender's case and order.

    Fields are stored as raw ``(name, value)`` byte pairs; lookups are case-insensitive.
    ``Headers`` is immutable: ``with_*`` methods return a new object.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[bytes | str, bytes | str]] = ()) -> None:
        self._fields: tuple[tuple[bytes, bytes], ...] = tuple(
            (
                n.encode("latin-1") if isinstance(n, str) else bytes(n),
                v.encode("utf-8") if isinstance(v, str) else bytes(v),
            )
            for n, v in fields
        )

    @classmethod
    def of_pairs(cls, fields: tuple[tuple[bytes, bytes], ...]) -> Headers:
        """Headers over a tuple of ``(bytes, bytes)`` pairs, taken as they are (no conversion).

        For the forwarding hot path, whose header tuples already have that exact shape.
        """
        headers = cls.__new__(cls)
        headers._fields = fields
        return headers

    @property
    def fields(self) -> tuple[tuple[bytes, bytes], ...]:
        """The raw ``(name, value)`` pairs in order."""
        return self._fields

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value for ``name`` (case-insensitive) as text, or ``default``."""
        key = name.lower().encode("latin-1")
        for n, v in self._fields:
            if n.lower() == key:
                return _text(v)
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value for ``name`` in order, as text."""
        key = name.lower().encode("latin-1")
        return [_text(v) for n, v in self._fields if n.lower() == key]

    def items(self) -> list[tuple[str, str]]:
        """All fields as text pairs, in order (names in the sender's case)."""
        return [(_text(n), _text(v)) for n, v in self._fields]

    def display_items(self) -> list[tuple[str, str]]:
        """All fields in order, read for a person as a reason phrase is (``values.terminal.read_utf8``):
        UTF-8 where they are, any other byte a surrogate that ``values.terminal.escape`` shows as
        ``\\xNN``. Escape before showing; not for JSON (:meth:`items` always encodes)."""
        return [(read_utf8(n), read_utf8(v)) for n, v in self._fields]

    def as_multidict(self) -> dict[str, list[str]]:
        """``{name: [values]}`` keyed by the first spelling seen (ngrok's API shape)."""
        out: dict[str, list[str]] = {}
        canon: dict[str, str] = {}
        for n, v in self.items():
            key = canon.setdefault(n.lower(), n)
            out.setdefault(key, []).append(v)
        return out

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower().encode("latin-1")
        return any(n.lower() == key for n, _ in self._fields)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash(self._fields)

    def __repr__(self) -> str:
        return f"Headers({list(self._fields)!r})"

    def with_set(self, name: str, value: str | bytes) -> Headers:
        """A copy where ``name`` has exactly one value (replacing the first, dropping the rest)."""
        key = name.lower().encode("latin-1")
        raw = value.encode("utf-8") if isinstance(value, str) else value
        out: list[tuple[bytes, bytes]] = []
        done = False
        for n, v in self._fields:
            if n.lower() == key:
                if not done:
                    out.append((n, raw))
                    done = True
            else:
                out.append((n, v))
        if not done:
            out.append((name.encode("latin-1"), raw))
        return Headers(out)

    def without(self, *names: str) -> Headers:
        """A copy without any field named in ``names`` (case-insensitive)."""
        keys = {n.lower().encode("latin-1") for n in names}
        return Headers((n, v) for n, v in self._fields if n.lower() not in keys)


@dataclass
class _Message:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    body_size: int = 0
    """The real size of the body on the wire (after any transfer-encoding was removed)."""
    body_truncated: bool = False
    """True when only the first ``len(body)`` of ``body_size`` bytes were recorded."""
    body_budget_cut: bool = False
    """True when the body was cut (``body_truncated``) because the agent kept no more body bytes for
    its requests in flight (``--body-budget``), not at the body cap. Left to the class's default by
    ``received``: set only on such a body."""
    http_version: str = "1.1"

    @property
    def body_cut_why(self) -> str:
        """Why the recorded body is cut, said after its sizes (the inspector, ``show``): "" when it
        is not cut, or when the body cap cut it, which the sizes say alone."""
        return BUDGET_CUT_WHY if self.body_budget_cut else ""

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-case (``""`` when absent)."""
        return media_type(self.headers.get("content-type") or "")

    @property
    def body_text(self) -> str:
        """The recorded body as text that always encodes: UTF-8, each other byte U+FFFD
        (``values.terminal.read_utf8_json``)."""
        return _text(self.body)


@dataclass
class Request(_Message):
    """A captured request, as the agent received it from the relay."""

    method: str = "GET"
    target: bytes = b"/"
    """The raw request target: path plus ``?`` and the raw query, exactly as sent."""

    @classmethod
    def received(cls, headers: Headers, http_version: str, method: str, target: bytes) -> Request:
        """``Request(headers=..., http_version=..., method=..., target=...)``, no body yet.

        The same object the dataclass's ``__init__`` makes at a third of its cost (the agent
        makes one a request, on its event loop). A test holds it to ``__init__`` field by field,
        so a field added to ``_Message`` or here must be added to it too.
        """
        req = _new_object(cls)
        req.headers = headers
        req.body = b""
        req.body_size = 0
        req.body_truncated = False
        req.http_version = http_version
        req.method = method
        req.target = target
        return req

    @property
    def path(self) -> str:
        """The path part of the target as text that always encodes (JSON, the database, the
        ``path:`` filter): UTF-8, each other byte U+FFFD (``values.terminal.read_utf8_json``)."""
        return _text(self.target.split(b"?", 1)[0])

    @property
    def display_path(self) -> str:
        """The path part of the target for a person (``values.terminal.read_utf8``): a byte that
        is not UTF-8 stays a surrogate that ``values.terminal.escape`` shows as ``\\xNN``.
        Escape before showing; for JSON use :attr:`path`."""
        return read_utf8(self.target.split(b"?", 1)[0])

    @property
    def query(self) -> bytes:
        """The raw query string without the ``?`` (``b""`` when absent)."""
        parts = self.target.split(b"?", 1)
        return parts[1] if len(parts) == 2 else b""

    @property
    def url_text(self) -> str:
        """The whole target as text that always encodes (JSON, the database, bare-word filters):
        UTF-8, each other byte U+FFFD (``values.terminal.read_utf8_json``)."""
        return _text(self.target)

    @property
    def display_url(self) -> str:
        """The whole target for a person, read as header values are (``values.terminal.read_utf8``):
        a byte that is not UTF-8 stays a surrogate that ``values.terminal.escape`` shows as
        ``\\xNN``. Escape before showing; for JSON use :attr:`url_text`."""
        return read_utf8(self.target)

    @property
    def host(self) -> str:
        """The ``Host`` header (``""`` when absent)."""
        return self.headers.get("host") or ""


@dataclass
class Response(_Message):
    """A captured response from the local service."""

    status: int = 200
    reason: str = ""
    """The reason phrase as received, one character per byte (latin-1), so exports give the bytes
    back (``wire_bytes``); text given as text holding a character above U+00FF goes out as UTF-8."""

    @property
    def reason_text(self) -> str:
        """The reason phrase for a person: its bytes read as UTF-8 (``Größe``, not ``GrÃ¶Ãe``),
        by ``values.terminal.read_utf8``, as header values are (``Headers.display_items``).

        A byte that is not UTF-8 stays a ``surrogateescape`` surrogate, which
        ``values.terminal.escape`` shows as ``\\xNN``: escape the result before showing it,
        and for JSON use :attr:`reason_json`.
        """
        try:
            raw = self.reason.encode("latin-1")
        except UnicodeEncodeError:
            return self.reason  # text given as text (an edit, an import): ``wire_bytes`` sends it as UTF-8
        return read_utf8(raw)

    @property
    def reason_json(self) -> str:
        """The reason phrase for JSON (HAR ``statusText``, the agent API's ``status``): read as
        :attr:`reason_text`, each byte that is not UTF-8 as U+FFFD, so the document always
        encodes. Control characters stay (JSON escapes them); the raw exports keep the bytes."""
        return json_safe(self.reason_text)

    @classmethod
    def received(cls, headers: Headers, http_version: str, status: int, reason: str) -> Response:
        """``Response(headers=..., http_version=..., status=..., reason=...)``, no body yet: as
        ``Request.received``, held to ``__init__`` by the same test."""
        res = _new_object(cls)
        res.headers = headers
        res.body = b""
        res.body_size = 0
        res.body_truncated = False
        res.http_version = http_version
        res.status = status
        res.reason = reason
        return res


@dataclass(slots=True)
class WsMessage:
    """One WebSocket message of a captured WebSocket exchange."""

    sender: Literal["client", "server"]
    """Who sent it: the public client or the local service."""
    opcode: int
    """1 for text, 2 for binary."""
    time: float
    """Seconds since the epoch."""
    payload: bytes
    size: int = -1
    """Real size; larger than ``len(payload)`` when the payload was truncated."""
    budget_cut: bool = False
    """True when the payload was cut (``size`` above its length) because the agent kept no more
    for its requests in flight (``--body-budget``), not at the body cap: as ``body_budget_cut``."""

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.payload)

    @property
    def cut_why(self) -> str:
        """Why the recorded payload is cut, said after its sizes: "" when it is whole, or when the
        body cap cut it, which the sizes say alone."""
        return BUDGET_CUT_WHY if self.budget_cut and self.size > len(self.payload) else ""


@dataclass(frozen=True, slots=True)
class RuleMark:
    """The rule that decided an exchange at the relay (docs/policy.md)."""

    index: int
    """The rule's number in its list, from 1."""
    action: str
    """``basic-auth``, ``deny``, ``allow-ip``, ``rate-limit``, ``forward`` or ``respond``."""
    scope: str = "tunnel"
    """``tunnel`` (the tunnel's own rules) or ``relay`` (the relay's, applied first)."""

    def to_json(self) -> dict[str, object]:
        """``{"index", "action"}``, plus ``"scope": "relay"`` for a relay-wide rule."""
        out: dict[str, object] = {"index": self.index, "action": self.action}
        if self.scope != "tunnel":
            out["scope"] = self.scope
        return out

    def label(self) -> str:
        """``rule 2 rate-limit`` (``relay rule 1 deny`` for the relay's own)."""
        return f"{'relay ' if self.scope == 'relay' else ''}rule {self.index} {self.action}"



@dataclass
class Exchange:
    """One request through a tunnel and what came of it."""

    id: str
    tunnel: str
    started_at: float
    """Seconds since the epoch when the request head reached the agent."""
    request: Request
    response: Response | None = None
    remote_addr: str = ""
    """The public client's address as the relay saw it (``ip:port`` or ``ip``)."""
    scheme: str = "http"
    """The public side's scheme (``http`` or ``https``)."""
    target_url: str = ""
    """The local service this exchange was forwarded to (``http://127.0.0.1:8080``)."""
    ttfb: float | None = None
    """Seconds from start to the first response byte (None until the response began)."""
    duration: float | None = None
    """Seconds from start to the end of the exchange (None while it is in flight)."""
    error: ErrorKind | None = None
    error_message: str = ""
    replay_of: str | None = None
    """The id of the exchange this one replays, if it is a replay."""
    edited: bool = False
    """True for a replay sent with changes (method, target, headers or body): an edited replay."""
    resigned: str | None = None
    """For a replay of a webhook delivery signed afresh, the provider that signed it (``stripe``)."""
    signature_notice: str = field(default="", compare=False)
    """For a replay just sent, why its signature was not refreshed (``signature not refreshed:
    set STRIPE_WEBHOOK_SECRET``) or what to doubt about it, else "". Not stored."""
    websocket: bool = False
    ws_messages: list[WsMessage] = field(default_factory=list)
    ws_close_code: int | None = None
    webhook: Verdict | None = None
    """The verdict on a webhook delivery (provider, event, signature, duplicate), or None when
    no provider recognises the request. Set when the exchange is recorded."""
    rule: RuleMark | None = None
    """The rule at the relay that answered or routed this request (None: no rule decided it)."""
    held: float | None = None
    """Seconds the request waited for the local app to come back before it was sent (``--run``
    with ``--hold``; ``agent.hold``), so far if it still waits; None: it never waited."""
    holding: bool = False
    """True while the request still waits for the app (in flight, not sent yet)."""

    @classmethod
    def begun(
        cls, id: str, tunnel: str, started_at: float, request: Request, remote_addr: str, scheme: str,
        target_url: str, websocket: bool, rule: RuleMark | None,
    ) -> Exchange:
        """``Exchange(id=..., ..., rule=...)``: these fields given, every other at its default.

        The same object the dataclass's ``__init__`` makes, at a third of its cost (the agent
        makes one a request, on its event loop): its keyword matching over 21 parameters goes.
        A test holds it to ``__init__``, field by field, so a field added above must be added here.
        """
        ex = _new_object(cls)
        ex.id = id
        ex.tunnel = tunnel
        ex.started_at = started_at
        ex.request = request
        ex.response = None
        ex.remote_addr = remote_addr
        ex.scheme = scheme
        ex.target_url = target_url
        ex.ttfb = None
        ex.duration = None
        ex.error = None
        ex.error_message = ""
        ex.replay_of = None
        ex.edited = False
        ex.resigned = None
        ex.signature_notice = ""
        ex.websocket = websocket
        ex.ws_messages = []
        ex.ws_close_code = None
        ex.webhook = None
        ex.rule = rule
        # ``held`` and ``holding`` read their defaults from the class until a wait sets them
        # (nearly no request waits): two stores a request fewer.
        return ex

    @property
    def complete(self) -> bool:
        """True once the exchange has ended, with a response or an error."""
        return self.duration is not None

    @property
    def status(self) -> int | None:
        """The response status, or None without a response."""
        return self.response.status if self.response is not None else None

    @property
    def size(self) -> int:
        """Bytes of response body (real size), 0 without a response."""
        return self.response.body_size if self.response is not None else 0

    @property
    def url(self) -> str:
        """The public URL of the request (``scheme://host/target``)."""
        return f"{self.scheme}://{self.request.host}{self.request.url_text}"

    def summary(self) -> dict[str, object]:
        """The short JSON form used by ``devtunnel requests --json`` and list views."""
        return {
            "id": self.id,
            "tunnel": self.tunnel,
            "started_at": self.started_at,
            "method": self.request.method,
            "path": self.request.url_text,
            "host": self.request.host,
            "status": self.status,
            "duration_ms": None if self.duration is None else round(self.duration * 1000, 3),
            "size": self.size,
            "error": self.error,
            "replay_of": self.replay_of,
            "edited": self.edited,
            "resigned": self.resigned,
            "websocket": self.websocket,
            "webhook": None if self.webhook is None else self.webhook.to_json(),
            "rule": None if self.rule is None else self.rule.to_json(),
            **held_json(self.held, self.holding),
        }


def held_json(held: float | None, holding: bool) -> dict[str, object]:
    """``{"held_ms": 3250.0, "holding": false}``: how long a request waited for the app devtunnel
    runs (``--hold``; null: it never waited) and whether it waits still. The one form of
    ``devtunnel requests --json``, ``show --json`` and the agent API's captures."""
    return {"held_ms": None if held is None else round(held * 1000, 3), "holding": holding}


def held_text(exchange: Exchange) -> str:
    """How long the request waited for the local app devtunnel runs (``--hold``) before it was sent:
    ``3.21 s while the app was down``, ``3.21 s so far, until the app is back``; "" if it never
    waited. The one wording of ``devtunnel show`` and the inspector's Timing."""
    if exchange.held is None:
        return ""
    if exchange.holding:
        return f"{human_duration(exchange.held)} so far, until the app is back"
    return f"{human_duration(exchange.held)} while the app was down"


def body_bytes(exchange: Exchange) -> int:
    """Bytes of recorded body an exchange holds: request, response and WebSocket payloads."""
    n = len(exchange.request.body)
    if exchange.response is not None:
        n += len(exchange.response.body)
    if exchange.ws_messages:
        n += sum(len(m.payload) for m in exchange.ws_messages)
    return n


def cap_each_body(exchange: Exchange, limit: int) -> Exchange:
    """The exchange with its request and response bodies and each WebSocket payload cut to at most
    ``limit`` bytes, marked cut with their real sizes kept, as one past the body cap is (a body
    ``body_truncated``, a message by its ``size`` above its payload's length)."""

    def cap(message: _M) -> _M:
        body = message.body
        if len(body) <= limit:
            return message
        return replace(message, body=body[:limit], body_size=max(message.body_size, len(body)), body_truncated=True)

    response = cap(exchange.response) if exchange.response is not None else None
    messages = exchange.ws_messages
    if any(len(m.payload) > limit for m in messages):
        messages = [m if len(m.payload) <= limit else replace(m, payload=m.payload[:limit], size=max(m.size, len(m.payload)))
                    for m in messages]
    return replace(exchange, request=cap(exchange.request), response=response, ws_messages=messages)


def cut_bodies(exchange: Exchange, keep: int) -> Exchange:
    """The exchange with at most ``keep`` bytes of recorded body: the request's first, then the
    response's, then the WebSocket payloads in order. A body cut is marked truncated and keeps its
    real size, as one past the body cap is."""
    room = max(0, keep)

    def cut(message: _M) -> _M:
        nonlocal room
        body = message.body
        kept = body[:room]
        room -= len(kept)
        if len(kept) == len(body):
            return message
        return replace(message, body=kept, body_size=max(message.body_size, len(body)), body_truncated=True)

    request = cut(exchange.request)
    response = cut(exchange.response) if exchange.response is not None else None
    messages = exchange.ws_messages
    if messages:
        messages = []
        for m in exchange.ws_messages:
            payload = m.payload[:room]
            room -= len(payload)
            messages.append(m if len(payload) == len(m.payload) else replace(m, payload=payload))
    return replace(exchange, request=request, response=response, ws_messages=messages)
