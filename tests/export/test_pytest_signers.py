"""The signers written into a ``export --format pytest`` module make the same signatures as
``devtunnel.webhooks``' providers: the module runs without devtunnel installed, so it carries its
own copy of each scheme, and this checks the two cannot drift apart."""

from __future__ import annotations

import random
import time
from types import ModuleType
from typing import Any

import pytest

from devtunnel.capture.model import Headers
from devtunnel.export.pytest_module import _scheme_of, export_pytest
from devtunnel.webhooks import BUILTIN, CustomProvider, Delivery, by_name
from devtunnel.webhooks.samples import list_samples, sample
from tests.kit.exchanges import make_exchange, make_response

SECRETS = {"stripe": "whsec_test_0123456789", "github": "gh-secret", "slack": "8f742231b10e8888abcd99yyyzzz85a5",
           "shopify": "shpss_0123456789abcdef", "standard": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
           "twilio": "12345auth-token"}


@pytest.fixture(scope="module")
def module() -> ModuleType:
    """The helpers of a generated module, executed (its tests are not run)."""
    exchange = make_exchange("GET", "/", [("Host", "127.0.0.1:9")], b"", make_response(200), tunnel="t",
                             started_at=time.time(), target_url="http://127.0.0.1:9", duration=0.01)
    text = export_pytest([exchange]).text
    generated = ModuleType("generated_signers")
    exec(compile(text, "test_generated.py", "exec"), generated.__dict__)  # noqa: S102 - our own output
    return generated


def _same(module: ModuleType, name: str, headers: Headers, body: bytes, url: str, now: int) -> None:
    provider = by_name(name)
    assert provider is not None
    ours = provider.sign(Delivery("POST", url, headers, body), SECRETS[name], now)
    theirs: list[Any] = module.SIGNERS[name](headers.items(), body, url, SECRETS[name], now)
    for header in provider.signature_headers:
        assert Headers(theirs).get_all(header) == ours.get_all(header), (name, header)


def test_every_builtin_provider_has_a_signer_in_the_module(module: ModuleType) -> None:
    assert sorted(module.SIGNERS) == sorted(p.name for p in BUILTIN)


@pytest.mark.parametrize("info", list_samples(), ids=lambda i: f"{i.provider}-{i.name}")
def test_each_sample_is_signed_alike(module: ModuleType, info: Any) -> None:
    now = int(time.time())
    made = sample(info.provider, info.name, now=now, rng=random.Random(7))
    _same(module, info.provider, made.headers, made.body, "https://hooks.example.test" + info.path + "?a=1", now)


@pytest.mark.parametrize(("name", "headers", "body"), [
    # GitHub Enterprise Server before 3.0 signed with SHA-1 alone; newer sends both.
    ("github", [("X-GitHub-Event", "push"), ("X-Hub-Signature", "sha1=00")], b'{"zen": "x"}'),
    ("github", [("X-GitHub-Event", "push"), ("X-Hub-Signature", "sha1=00"), ("X-Hub-Signature-256", "sha256=00")],
     b"{}"),
    # Standard Webhooks under Svix's header names, and the generic ones.
    ("standard", [("svix-id", "msg_1"), ("svix-timestamp", "1"), ("svix-signature", "v1,x")], b'{"a": 1}'),
    ("standard", [("webhook-id", "msg_2"), ("webhook-timestamp", "1"), ("webhook-signature", "v1,x")], b"{}"),
    # Both families: svix reads the one, standardwebhooks the other; neither is left stale.
    ("standard", [("svix-id", "msg_3"), ("svix-timestamp", "1"), ("svix-signature", "v1,x"),
                  ("webhook-id", "msg_3"), ("webhook-timestamp", "1"), ("webhook-signature", "v1,y")], b"{}"),
    # A signature header sent twice is signed once: no stale second beside the fresh first.
    ("stripe", [("Stripe-Signature", "t=1,v1=00"), ("Stripe-Signature", "t=2,v1=11")], b"{}"),
    ("github", [("X-GitHub-Event", "push"), ("X-Hub-Signature-256", "sha256=00"), ("X-Hub-Signature-256", "sha256=11")],
     b"{}"),
    # Twilio: a form body (its parameters signed sorted) and the SHA-256 setting.
    ("twilio", [("Content-Type", "application/x-www-form-urlencoded"), ("X-Twilio-Signature", "x")],
     b"To=%2B1555&From=%2B1666&Body=hi+there&Body=again&Body=again"),
    ("twilio", [("Content-Type", "application/json"), ("X-Twilio-Signature", "x"),
                ("X-Twilio-Webhooks-Signature-Settings", "algorithm=HMAC_SHA256")], b'{"a": "b"}'),
    # Bodies that are not ASCII.
    ("stripe", [("Stripe-Signature", "t=1,v1=00")], "{\"name\": \"Zoë ✓\"}".encode()),
    ("shopify", [("X-Shopify-Topic", "orders/create"), ("X-Shopify-Hmac-Sha256", "x")], b"\xff\x00binary"),
    ("slack", [("X-Slack-Request-Timestamp", "1"), ("X-Slack-Signature", "v0=00")], b"payload=%7B%7D"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_edge_deliveries_are_signed_alike(module: ModuleType, name: str, headers: list[tuple[str, str]],
                                          body: bytes) -> None:
    _same(module, name, Headers(headers), body, "https://hooks.example.test/in?b=2&a=1", 1_760_000_000)


@pytest.mark.parametrize("scheme", [
    {},
    {"algorithm": "sha1", "encoding": "base64", "prefix": "sha1="},
    {"algorithm": "sha512", "template": "{timestamp}.{body}", "timestamp_header": "X-Acme-Timestamp"},
    {"template": "{id}:{timestamp}:{url}:{body}{body}", "timestamp_header": "X-Acme-Timestamp",
     "id_header": "X-Acme-Delivery", "prefix": "v1,"},
    {"template": "{url}", "encoding": "base64"},
], ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "defaults")
def test_a_custom_scheme_is_signed_alike(module: ModuleType, scheme: dict[str, str]) -> None:
    provider = CustomProvider("acme", "X-Acme-Signature", **scheme)  # type: ignore[arg-type]
    written = _scheme_of(provider)
    assert written is not None
    headers = Headers([("X-Acme-Delivery", "dlv_9"), ("X-Acme-Timestamp", "1"), ("X-Acme-Signature", "x")])
    body, url, now = "{\"name\": \"Zoë\"}".encode(), "https://hooks.example.test/in?b=2&a=1", 1_760_000_000
    ours = provider.sign(Delivery("POST", url, headers, body), "acme-key", now)
    theirs: list[Any] = module._custom_signer(written)(headers.items(), body, url, "acme-key", now)
    for header in provider.signature_headers:
        assert Headers(theirs).get(header) == ours.get(header), header
