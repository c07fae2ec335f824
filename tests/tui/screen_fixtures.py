"""Frozen exchanges and a tiny app for testing the inspector's screens on their own."""

from __future__ import annotations

import json

from textual.app import App
from textual.screen import Screen

from devtunnel.capture.model import Exchange, WsMessage
from tests.kit import exchanges as kit

T0 = 1_764_160_200.0
"""2025-11-26 12:30:00 UTC: every frozen exchange starts here."""

HOSTILE = "[bold red]boom[/] [/x] \x1b[31mred\x1b[0m \x1b]52;c;SGVsbG8=\x07 \u202eevil"
"""Rich markup, an SGR sequence, an OSC 52 clipboard write and a bidi override."""


class ScreenApp(App[None]):
    """An app that shows one screen; what the screen returns is kept in ``result``."""

    def __init__(self, screen: Screen[object]) -> None:
        super().__init__()
        self._screen = screen
        self.result: object = None
        self.dismissed = False

    def on_mount(self) -> None:
        def done(result: object) -> None:
            self.result = result
            self.dismissed = True

        self.push_screen(self._screen, done)


def exchange(
    *,
    id: str = "01KB0DETA1L0000000000000JS",
    method: str = "POST",
    target: bytes = b"/api/orders?expand=items",
    req_headers: list[tuple[str, str]] | None = None,
    req_body: bytes = b"",
    status: int | None = 201,
    resp_headers: list[tuple[str, str]] | None = None,
    resp_body: bytes = b"",
    resp_size: int | None = None,
    **fields: object,
) -> Exchange:
    """A complete exchange at ``T0`` with the given parts."""
    response = None
    if status is not None:
        response = kit.make_response(
            status,
            resp_headers if resp_headers is not None else [("Content-Type", "application/json")],
            resp_body,
            reason={200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found"}.get(status, ""),
            body_size=resp_size,
            body_truncated=resp_size is not None and resp_size > len(resp_body),
        )
    values: dict[str, object] = dict(
        id=id,
        tunnel="shop",
        started_at=T0,
        remote_addr="203.0.113.7:51234",
        target_url="http://127.0.0.1:8080",
        ttfb=0.0123,
        duration=0.0457,
    )
    values.update(fields)
    headers = req_headers if req_headers is not None else [("Host", "shop.localhost"), ("User-Agent", "curl/8.5.0")]
    return kit.make_exchange(method, target, headers, req_body, response, **values)  # type: ignore[arg-type]


ORDER = {"id": 42, "items": [{"sku": "A-1", "qty": 2, "price": 9.5}], "paid": True, "note": None}


def json_exchange() -> Exchange:
    """A JSON POST answered with JSON."""
    return exchange(
        req_headers=[("Host", "shop.localhost"), ("Content-Type", "application/json"), ("Content-Length", "37")],
        req_body=b'{"sku":"A-1","qty":2,"coupon":"XMAS"}',
        resp_headers=[("Content-Type", "application/json; charset=utf-8"), ("X-Request-Id", "r-1")],
        resp_body=json.dumps(ORDER, separators=(",", ":")).encode(),
    )


PNG_HEAD = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000100000001008060000001ff3ff61")


def binary_exchange() -> Exchange:
    """A GET answered with a (short) PNG."""
    return exchange(
        method="GET",
        target=b"/logo.png",
        resp_headers=[("Content-Type", "image/png")],
        resp_body=PNG_HEAD + bytes(range(256))[:30],
        status=200,
    )


def ws_exchange() -> Exchange:
    """A WebSocket session with text, binary and hostile messages."""
    return exchange(
        method="GET",
        target=b"/ws",
        status=101,
        resp_headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")],
        websocket=True,
        ws_close_code=1000,
        ws_messages=[
            WsMessage("client", 1, T0 + 0.010, b'{"op":"subscribe"}'),
            WsMessage("server", 1, T0 + 0.020, b'{"op":"ack"}'),
            WsMessage("server", 2, T0 + 0.030, b"\x00\x01\x02\xff"),
            WsMessage("client", 1, T0 + 0.040, HOSTILE.encode()),
            WsMessage("server", 1, T0 + 0.050, b"x" * 100, size=5000),
        ],
    )


def screen_text(app: App[object]) -> str:
    """What the terminal shows right now, as plain lines."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def laid_out(app: App[object], selector: str) -> bool:
    """Whether the screen on top has a widget matching ``selector`` mounted and laid out (with a
    place on screen, where a click lands).

    A pushed screen is ``app.screen`` at once; its widgets are composed, mounted and laid out
    after, those nested in containers a step later than their container: a test that waited for
    the screen alone can find the widget it reads or clicks missing, or nowhere on screen.
    """
    found = app.screen.query(selector)
    return bool(found) and found.first().is_mounted and found.first().region.area > 0


def freeze_utc(monkeypatch: object) -> None:
    """Show local times as UTC so timestamps on screen do not depend on the machine."""
    import time

    monkeypatch.setenv("TZ", "UTC")  # type: ignore[attr-defined]
    time.tzset()


STRIPE_SIGNATURE = (
    "t=1764160200,"
    "v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd5257a869e7ecebeda32affa62cdca3fa,"
    "v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a396ffbb59b2300aae63f272406069a9788"
)
"""A Stripe-Signature longer than two 80-column lines."""


def stripe_exchange() -> Exchange:
    """A Stripe webhook delivery: ten request headers, the signature among them."""
    body = b'{"id":"evt_1QxY","type":"payment_intent.succeeded","data":{"object":{"id":"pi_3Qx","amount":2000}}}'
    return exchange(
        id="01KB0STR1PE000000000000000",
        target=b"/webhooks/stripe",
        req_headers=[
            ("Host", "hooks.localhost"),
            ("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)"),
            ("Content-Length", str(len(body))),
            ("Accept", "*/*; q=0.5, application/xml"),
            ("Cache-Control", "no-cache"),
            ("Content-Type", "application/json; charset=utf-8"),
            ("Stripe-Signature", STRIPE_SIGNATURE),
            ("X-Forwarded-For", "54.187.174.169"),
            ("X-Forwarded-Proto", "https"),
            ("Accept-Encoding", "gzip"),
        ],
        req_body=body,
        status=200,
        resp_headers=[("Content-Type", "application/json"), ("Content-Length", "16")],
        resp_body=b'{"received":true}',
    )
