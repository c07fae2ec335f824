"""The recorder's judge: its quick look at header names never changes a verdict."""

from __future__ import annotations

import random
import time

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from devtunnel.capture.model import Headers
from devtunnel.webhooks import BUILTIN, CustomProvider, Delivery, judge
from devtunnel.webhooks.context import WebhookContext
from devtunnel.webhooks.providers import GitHub, StandardWebhooks, Stripe
from devtunnel.webhooks.samples import list_samples, sample
from tests.kit.exchanges import make_exchange, make_request

ACME = CustomProvider("acme", "X-Acme-Signature", id_header="X-Acme-Id", event_path="type")
PROVIDERS = (ACME, *BUILTIN)
SECRETS = {"stripe": ("whsec_s",), "github": ("g",), "standard": ("whsec_c2VjcmV0",), "acme": ("a",)}
NAMES = ["Stripe-Signature", "User-Agent", "user-agent", "X-GitHub-Event", "X-Hub-Signature-256", "X-GitHub-Delivery",
         "X-Slack-Signature", "X-Slack-Request-Timestamp", "X-Shopify-Topic", "X-Shopify-Hmac-Sha256",
         "webhook-id", "webhook-timestamp", "webhook-signature", "svix-id", "svix-signature", "svix-timestamp",
         "X-Twilio-Signature", "I-Twilio-Idempotency-Token", "X-Acme-Signature", "X-Acme-Id", "Host", "Accept",
         "Content-Type", "X-\xffodd", "A\x00User-Agent"]
VALUES = ["", "Stripe/1.0 (+https://stripe.com/docs/webhooks)", " Stripe/2.0", "Mozilla/5.0 Stripe/3", "stripe/1.0",
          "Stripe", "curl/8", "t=1,v1=abc", "sha256=00", "v0=00",
          "push", "1700000000", "v1,AAAA", "application/json", "application/x-www-form-urlencoded", "\x00\xff"]
BODIES = [b"", b'{"id": "evt_1", "type": "invoice.paid"}', b'{"action": "opened"}', b"a=1&b=2", b"\xff"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=6), st.sampled_from(BODIES),
       st.booleans())
def test_the_quick_look_gives_the_verdict_a_full_judgement_gives(
        fields: list[tuple[str, str]], body: bytes, truncated: bool) -> None:
    now = time.time()
    request = make_request("POST", b"/hooks?x=1", fields, body, body_size=len(body) + truncated, body_truncated=truncated)
    ex = make_exchange(request=request, tunnel="web", started_at=now, duration=0.01, scheme="https")
    ctx = WebhookContext(PROVIDERS, SECRETS)
    assert ctx.judge(ex) == judge(request, scheme="https", now=now, secrets=SECRETS, providers=PROVIDERS)


def test_signed_deliveries_of_each_kind_are_judged_valid() -> None:
    now = time.time()
    ctx = WebhookContext(PROVIDERS, SECRETS)
    body = b'{"id": "evt_1", "type": "invoice.paid"}'
    cases = [
        (Stripe(), Headers([("Content-Type", "application/json")]), "whsec_s"),
        (GitHub(), Headers([("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d1")]), "g"),
        (StandardWebhooks(), Headers([("svix-id", "msg_1")]), "whsec_c2VjcmV0"),
        (ACME, Headers([("X-Acme-Id", "a1")]), "a"),
    ]
    for provider, headers, secret in cases:
        signed = provider.sign(Delivery("POST", "", headers, body), secret, now)
        ex = make_exchange("POST", b"/", signed, body, tunnel="web", started_at=now, duration=0.01)
        verdict = ctx.judge(ex)
        assert verdict is not None and verdict.provider == provider.name and verdict.signature.value == "valid"


BROWSER = [("Host", "shop.example"), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0"),
           ("Accept", "text/html"), ("Cookie", "s=1")]


@pytest.mark.parametrize("info", list_samples(), ids=lambda i: f"{i.provider}/{i.name}")
@pytest.mark.parametrize("signed", [False, True])
def test_the_quick_look_never_passes_over_a_sample_delivery(info: object, signed: bool) -> None:
    """Every shipped sample, unsigned and signed, among browser headers: judged as in full, by its provider."""
    now = time.time()
    s = sample(info.provider, info.name, now=now, rng=random.Random(7))  # type: ignore[attr-defined]
    headers = Headers([*BROWSER, *s.headers.items()])
    provider = next(p for p in PROVIDERS if p.name == info.provider)  # type: ignore[attr-defined]
    if signed:
        secret = SECRETS.get(provider.name, ("k",))[0]
        headers = provider.sign(Delivery("POST", "https://shop.example" + s.info.path, headers, s.body), secret, now)
    request = make_request("POST", s.info.path, headers.fields, s.body)
    ex = make_exchange(request=request, tunnel="web", started_at=now, duration=0.01, scheme="https")
    ctx = WebhookContext(PROVIDERS, SECRETS)
    verdict = ctx.judge(ex)
    assert verdict == judge(request, scheme="https", now=now, secrets=SECRETS, providers=PROVIDERS)
    if signed:  # an unsigned sample lacks the signature headers, by which some providers alone know theirs
        assert verdict is not None and verdict.provider == provider.name


def test_a_stripe_delivery_known_by_its_user_agent_alone_is_judged() -> None:
    now = time.time()
    for agent in ("Stripe/1.0 (+https://stripe.com/docs/webhooks)", "  Stripe/9"):
        ex = make_exchange("POST", b"/hooks", [("User-Agent", agent), ("Content-Type", "application/json")],
                           b'{"id": "evt_1", "type": "invoice.paid"}', tunnel="web", started_at=now, duration=0.01)
        verdict = WebhookContext().judge(ex)
        assert verdict is not None and verdict.provider == "stripe" and verdict.delivery_id == "evt_1"


def test_browser_traffic_asks_no_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """A User-Agent that is not Stripe's is no reason to ask Stripe (nor anyone)."""
    asked: list[str] = []

    def detects(self: object, delivery: Delivery) -> bool:
        asked.append(type(self).__name__)
        return False

    for provider in BUILTIN:
        monkeypatch.setattr(type(provider), "detects", detects)
    ex = make_exchange("GET", b"/", BROWSER, tunnel="web", duration=0.01)
    assert WebhookContext().judge(ex) is None
    assert asked == []
    ex = make_exchange("GET", b"/", [*BROWSER, ("X-GitHub-Event", "push")], tunnel="web", duration=0.01)
    assert WebhookContext().judge(ex) is None
    assert asked == ["GitHub"]


def test_the_plans_remembered_stay_bounded_when_a_sender_varies_its_header_names() -> None:
    from itertools import combinations

    from devtunnel.webhooks.context import _Screen

    screen = _Screen(PROVIDERS)
    markers = sorted(screen.names)
    for size in (1, 2, 3):
        for names in combinations(markers, size):
            screen.candidates(tuple((name, b"v") for name in names))
    assert 0 < len(screen.plans) <= _Screen._MAX_PLANS
