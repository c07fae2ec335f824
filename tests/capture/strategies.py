"""Hypothesis strategies for exchanges and filter expressions."""

from __future__ import annotations

import itertools
import time

from hypothesis import strategies as st

from devtunnel.capture.model import Exchange, Headers, Request, Response, WsMessage, new_id
from devtunnel.capture.verdict import Signature, Verdict

# Text as it can reach the store: any character except lone surrogates (which no decoded
# byte string contains).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
finite = st.floats(allow_nan=False, allow_infinity=False)
maybe_finite = st.none() | finite
header_fields = st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=6)

_counter = itertools.count()


def _unique_id(draw: st.DrawFn) -> str:
    # Distinct ids per example without relying on the clock.
    return new_id() if draw(st.booleans()) else f"x{next(_counter)}-" + draw(st.text("abcXYZ019", max_size=5))


@st.composite
def ws_messages(draw: st.DrawFn) -> WsMessage:
    payload = draw(st.binary(max_size=40))
    return WsMessage(
        sender=draw(st.sampled_from(["client", "server"])),
        opcode=draw(st.sampled_from([1, 2])),
        time=draw(finite),
        payload=payload,
        size=draw(st.integers(len(payload), 2**40)),
    )


@st.composite
def exchanges(draw: st.DrawFn) -> Exchange:
    """Any exchange the model can hold: arbitrary header bytes, bodies, methods and targets."""
    req_body = draw(st.binary(max_size=200))
    request = Request(
        headers=Headers(draw(header_fields)),
        body=req_body,
        body_size=draw(st.integers(len(req_body), 2**50)),
        body_truncated=draw(st.booleans()),
        http_version=draw(st.sampled_from(["1.0", "1.1", "2"])),
        method=draw(text),
        target=draw(st.binary(max_size=60)),
    )
    response = None
    if draw(st.booleans()):
        res_body = draw(st.binary(max_size=200))
        response = Response(
            headers=Headers(draw(header_fields)),
            body=res_body,
            body_size=draw(st.integers(len(res_body), 2**50)),
            body_truncated=draw(st.booleans()),
            http_version=draw(st.sampled_from(["1.0", "1.1"])),
            status=draw(st.integers(0, 999)),
            reason=draw(text),
        )
    websocket = draw(st.booleans())
    return Exchange(
        id=_unique_id(draw),
        tunnel=draw(text),
        started_at=draw(finite),
        request=request,
        response=response,
        remote_addr=draw(text),
        scheme=draw(st.sampled_from(["http", "https"])),
        target_url=draw(text),
        ttfb=draw(maybe_finite),
        duration=draw(maybe_finite),
        error=draw(st.none() | st.sampled_from(["local_refused", "client_gone", ""])),  # type: ignore[arg-type]
        error_message=draw(text),
        replay_of=draw(st.none() | text),
        edited=draw(st.booleans()),
        websocket=websocket,
        ws_messages=draw(st.lists(ws_messages(), max_size=3)) if websocket else [],
        ws_close_code=draw(st.none() | st.integers(1000, 4999)),
    )


# --- a small vocabulary, so that random filters and random exchanges actually meet ----------

METHODS = ["GET", "POST", "post", "DELETE", "PÖST"]
PATHS = [b"/", b"/webhooks", b"/webhooks/stripe?x=1&y=%", b"/api/v1/items", b"/A\x00b", b"/caf\xc3\xa9",
         b"/caf\xe9?q=\xff", b"/w_%'\"\\"]
HOSTS = ["", "api.example.com", "API.EXAMPLE.com", "hooks.localhost:8080", "Ünï.example"]
HEADER_NAMES = [b"Stripe-Signature", b"content-type", b"Content-Type", b"X-Id", b"\xffodd"]
HEADER_VALUES = [b"application/json", b"text/plain; charset=utf-8", b"t=1,v1=abc", b"", b"JSON", b"\x00\xff"]
BODIES = [b"", b"{\"type\": \"invoice.paid\"}", b"invoice", b"a\x00b", b"caf\xc3\xa9", b"%_'\\", b"line1\nline2"]


@st.composite
def small_exchanges(draw: st.DrawFn) -> Exchange:
    """Exchanges drawn from a small vocabulary of realistic and hostile values."""
    host = draw(st.sampled_from(HOSTS))
    fields = [(b"Host", host.encode())] if host else []
    fields += draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.sampled_from(HEADER_VALUES)), max_size=3))
    request = Request(
        method=draw(st.sampled_from(METHODS)),
        target=draw(st.sampled_from(PATHS)),
        headers=Headers(fields),
        body=draw(st.sampled_from(BODIES)),
    )
    response = None
    if draw(st.booleans()):
        body = draw(st.sampled_from(BODIES))
        response = Response(
            status=draw(st.sampled_from([200, 201, 204, 301, 400, 404, 499, 500, 503])),
            headers=Headers(draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.sampled_from(HEADER_VALUES)),
                                          max_size=3))),
            body=body,
            body_size=draw(st.sampled_from([len(body), 1023, 1024, 1025, 2 * 1024 * 1024])),
        )
    websocket = draw(st.booleans())
    webhook = draw(st.none() | st.builds(
        Verdict,
        provider=st.sampled_from(["stripe", "github", "Acme"]),
        event_type=st.sampled_from([None, "invoice.paid", "invoice.payment_failed", "Invoice.Paid", "invoiceXpaid",
                                    "push", "orders/create", "a\nb", "ünï.paid"]),
        delivery_id=st.sampled_from([None, "evt_1", "evt_2", "EVT_1", "%_'"]),
        signature=st.sampled_from(list(Signature)),
        reason=st.sampled_from(["", "no secret: set STRIPE_WEBHOOK_SECRET"]),
    ))
    return Exchange(
        id=new_id(),
        tunnel=draw(st.sampled_from(["web", "WEB", "api"])),
        started_at=time.time() - draw(st.sampled_from([0.0, 30.0, 3600.0, 90000.0, 40 * 86400.0])),
        request=request,
        response=response,
        scheme=draw(st.sampled_from(["http", "https"])),
        duration=draw(st.none() | st.sampled_from([0.0, 0.1, 0.5, 0.5001, 1.0, 2.5])),
        error=draw(st.none() | st.sampled_from(["local_refused", "client_gone"])),  # type: ignore[arg-type]
        replay_of=draw(st.none() | st.just("01ABC")),
        websocket=websocket,
        webhook=webhook,
        # Held for the app (``--hold``): stored negative while it waits, read back as held and holding.
        held=(held := draw(st.none() | st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.0001, 2.5]))),
        holding=held is not None and held > 0 and draw(st.booleans()),
    )


LEAVES = [
    "method:POST", "method:post", "METHOD:get", "method:PÖST", "method:pöst",
    "path:/webhooks", "path:/", "path:/w_%", "path:~^/api/v[0-9]", "path:~é", 'path:"/A\\\\"',
    "status:404", "status:4xx", "status:>=400", "status:<300", "status:!=200", "status:200-299", "status:5XX",
    "host:example", "host:EXAMPLE.COM", "host:ünï", "host:ÜNÏ", "host:localhost",
    "tunnel:web", "tunnel:api",
    "header:stripe-signature", "header:content-type=json", "header:CONTENT-TYPE=charset", "header:x-id=",
    "body:invoice.paid", "body:invoice", "req.body:invoice", "res.body:café", 'body:"%_\'"',
    "dur:>500ms", "dur:<=0.5s", "dur:100ms-1s", "dur:0",
    "size:>1kb", "size:1024", "size:>=1mb", "size:<1",
    "error", "error:local_refused", "replay", "ws", "held", "held:>1s", "held:<=500ms", "held:250ms-1s", "held:0",
    "webhooks", "HTTPS://", "café", '"x=1&y"', "%", "_", "\"'\"", '"\\\\"',
    "~m post", '~m "^(GET|DELETE)$"', "~u hooks", "~u ^https", "~d EXAMPLE", "~h stripe", '~h "^content-type: json"',
    "~hq x-id", "~hs type", "~b invoice", "~bq \\x00", "~bs caf.", "~t json", "~tq text", "~ts plain",
    "sig:valid", "sig:INVALID", "sig:unsigned", "sig:unverified", "provider:stripe", "provider:GitHub",
    "provider:acme", "event:invoice.paid", "event:INVOICE.PAID", "event:invoice.*", "event:*paid", "event:invoice?paid",
    "event:a?b", "event:ÜNÏ.*", "event:*", "delivery:evt_1", "delivery:EVT_1", 'delivery:"%_\'"', "dup",
    "~c 404", "~c 200", "~q", "~s", "~e", "~websocket", "~replay", "~all",
    "since:10m", "since:2h", "since:2d", "until:1m", "until:1.5h", "since:00:00", "until:23:59:59",
    "since:2026-01-01", "until:2026-01-01T00:00:00Z", "since:1970-01-02T00:00+01:00",
]


@st.composite
def filter_expressions(draw: st.DrawFn, depth: int = 3) -> str:
    """Random expressions over LEAVES with and/or/not, both spellings, and parentheses."""
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from(LEAVES))
    kind = draw(st.sampled_from(["and", "&", " ", "or", "|", "not", "!", "-"]))
    if kind in ("not", "!", "-"):
        inner = draw(filter_expressions(depth - 1))
        return f"{kind} ({inner})" if kind == "not" else f"{kind}({inner})"
    left = draw(filter_expressions(depth - 1))
    right = draw(filter_expressions(depth - 1))
    sep = " " if kind == " " else f" {kind} "
    return f"({left}){sep}({right})"
