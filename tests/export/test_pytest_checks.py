"""The rule of what an ``export --format pytest`` test asserts of an answer (``pytest_checks``),
read as a table: the captured status is what the service did, not what it should do."""

from __future__ import annotations

import time

import pytest

from devtunnel.capture.model import Exchange
from devtunnel.capture.verdict import Signature, Verdict
from devtunnel.errors import ExportError
from devtunnel.export import export, options_of
from devtunnel.export.pytest_checks import expectation, slack_challenge
from devtunnel.webhooks import Provider, by_name
from devtunnel.webhooks.samples import sample
from tests.kit.exchanges import make_exchange, make_response


def _answered(status: int, signature: Signature | None = None, provider: str = "stripe") -> Exchange:
    verdict = None if signature is None else Verdict(provider, "invoice.paid", "evt_1", signature,
                                                     "signature does not match: wrong secret or altered body"
                                                     if signature is Signature.INVALID else "")
    return make_exchange("POST", "/hooks", [("Host", "shop.example")], b"{}", make_response(status), tunnel="t",
                         started_at=0.0, duration=0.01, webhook=verdict)


STRIPE = by_name("stripe")


@pytest.mark.parametrize(("status", "signature", "provider", "condition", "said"), [
    # A delivery: what its sender counts as delivered, whatever was answered.
    (500, Signature.VALID, STRIPE, "200 <= response.status_code < 300", "2xx"),
    (400, Signature.VALID, STRIPE, "200 <= response.status_code < 300", "2xx"),
    (200, Signature.UNVERIFIED, STRIPE, "200 <= response.status_code < 300", "2xx"),
    (503, Signature.UNSIGNED, by_name("github"), "200 <= response.status_code < 300", "2xx"),  # a hook without a secret
    # Unsigned from a provider that signs every delivery: not its, a refusal.
    (200, Signature.UNSIGNED, STRIPE, "400 <= response.status_code < 500", "4xx"),
    (503, Signature.UNSIGNED, STRIPE, "400 <= response.status_code < 500", "4xx"),
    (502, None, STRIPE, "200 <= response.status_code < 300", "2xx"),  # recognised, never judged
    (500, Signature.VALID, None, "200 <= response.status_code < 300", "2xx"),  # judged, its scheme not described here
    # Judged invalid when it came: a refusal, whatever was answered.
    (200, Signature.INVALID, STRIPE, "400 <= response.status_code < 500", "4xx"),
    (500, Signature.INVALID, STRIPE, "400 <= response.status_code < 500", "4xx"),
    (401, Signature.INVALID, STRIPE, "400 <= response.status_code < 500", "4xx"),
    # No webhook: the captured status, unless it was a server error.
    (500, None, None, "response.status_code < 500", "any status but 5xx"),
    (502, None, None, "response.status_code < 500", "any status but 5xx"),
    (404, None, None, "response.status_code == 404", "404"),
    (302, None, None, "response.status_code == 302", "302"),
    (201, None, None, "response.status_code == 201", "201"),
], ids=lambda v: v.name if isinstance(v, Provider) else None)
def test_a_test_asserts_what_the_other_side_expects_not_the_captured_status(
        status: int, signature: Signature | None, provider: Provider | None, condition: str, said: str) -> None:
    expected = expectation(_answered(status, signature), provider)
    assert (expected.condition(), expected.said) == (condition, said)
    assert f"captured {status}" in expected.message or expected.said == str(status)
    assert expected.refusal is (said == "4xx")


def test_each_builtin_provider_says_why_it_wants_a_2xx() -> None:
    said = {name: expectation(_answered(500, Signature.VALID, name), by_name(name)).message
            for name in ("stripe", "github", "slack", "shopify", "standard", "twilio")}
    assert said["stripe"] == "expected 2xx: Stripe retries a delivery not answered 2xx; captured 500"
    assert said["shopify"] == "expected 2xx: Shopify retries a delivery not answered 2xx; captured 500"
    assert said["github"] == "expected 2xx: GitHub records a delivery not answered 2xx as failed; captured 500"
    assert said["slack"] == "expected 2xx: Slack retries an event not answered 2xx; captured 500"
    assert all(text.startswith("expected 2xx: ") and text.endswith("; captured 500") for text in said.values())


def test_a_refusal_says_why_the_signature_was_judged_invalid() -> None:
    expected = expectation(_answered(200, Signature.INVALID), STRIPE)
    assert expected.message == ("expected 4xx: its signature was judged invalid when it came (signature does not "
                                "match: wrong secret or altered body): a receiver refuses a delivery it cannot "
                                "verify; captured 200")


@pytest.mark.parametrize(("status", "signature", "refusal"), [
    (500, Signature.VALID, False), (200, Signature.INVALID, False), (401, Signature.INVALID, True), (500, None, False)])
def test_asserts_captured_asserts_the_captured_status(status: int, signature: Signature | None, refusal: bool) -> None:
    expected = expectation(_answered(status, signature), STRIPE if signature else None, asserts="captured")
    assert expected.condition() == f"response.status_code == {status}"
    assert expected.refusal is refusal  # one refused when it came is still sent as captured


def test_asserts_is_an_option_of_the_pytest_format_and_takes_two_values() -> None:
    assert "asserts" in options_of("pytest")
    with pytest.raises(ExportError, match="asserts= is expected or captured, not 'exact'"):
        export("pytest", [_answered(200)], asserts="exact")


def test_only_a_slack_url_verification_has_a_challenge_to_echo() -> None:
    slack = by_name("slack")
    handshake, event = (sample("slack", name, now=time.time()) for name in ("url_verification", "event_callback"))
    made = {name: make_exchange("POST", "/slack/events", [("Host", "x.example"), *s.headers.items()], s.body,
                                make_response(200), tunnel="t", started_at=0.0, duration=0.01)
            for name, s in (("handshake", handshake), ("event", event))}
    challenge = slack_challenge(made["handshake"], slack)
    assert challenge and challenge.encode() in handshake.body
    assert slack_challenge(made["event"], slack) is None
    assert slack_challenge(made["handshake"], STRIPE) is None


@pytest.mark.parametrize("name", ["stripe", "slack", "shopify", "standard", "twilio"])
def test_an_unsigned_delivery_of_a_provider_that_signs_every_one_is_to_be_refused(name: str) -> None:
    # Its test expected a 2xx: against a receiver that verifies, as the provider's own library
    # does, the test failed where the receiver was right to refuse it.
    expected = expectation(_answered(200, Signature.UNSIGNED, name), by_name(name))
    assert expected.said == "4xx" and expected.refusal
    assert expected.message.startswith("expected 4xx: it came unsigned, and ") and "signs every" in expected.message
