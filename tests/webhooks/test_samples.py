"""The shipped sample deliveries: each one signed is a valid delivery of its provider, fresh every time."""

from __future__ import annotations

import json
import random
import re
import time

import pytest
import stripe

from devtunnel.errors import ConfigError
from devtunnel.webhooks import Delivery, Signature, by_name, detect
from devtunnel.webhooks.samples import list_samples, sample
from tests.webhooks.test_providers import SECRETS

REQUIRED = {
    ("stripe", "payment_intent.succeeded"), ("stripe", "checkout.session.completed"), ("stripe", "invoice.paid"),
    ("stripe", "customer.subscription.updated"), ("github", "push"), ("github", "pull_request"), ("github", "issues"),
    ("github", "ping"), ("slack", "url_verification"), ("slack", "event_callback"), ("shopify", "orders/create"),
    ("standard", "user.created"), ("twilio", "sms.received"), ("twilio", "sms.delivered"), ("twilio", "call.ringing"),
    ("slack", "slash_command"), ("slack", "block_actions"), ("github", "issue_comment"), ("github", "release"),
    ("github", "workflow_run"), ("github", "installation"),
    # Shopify's mandatory compliance webhooks: every public app answers them.
    ("shopify", "customers/data_request"), ("shopify", "customers/redact"), ("shopify", "shop/redact"),
    ("shopify", "app/uninstalled"),
    # What a Stripe integration handles beyond a payment that went through (stripe trigger has them).
    ("stripe", "payment_intent.payment_failed"), ("stripe", "invoice.payment_failed"), ("stripe", "customer.created"),
    ("stripe", "customer.subscription.created"), ("stripe", "customer.subscription.deleted"),
    ("stripe", "charge.succeeded"), ("stripe", "charge.refunded"), ("stripe", "checkout.session.expired"),
}


def test_every_required_sample_is_shipped() -> None:
    assert REQUIRED <= {(s.provider, s.name) for s in list_samples()}


@pytest.mark.parametrize("info", list_samples(), ids=lambda s: f"{s.provider}-{s.name}")
def test_a_signed_sample_is_a_valid_delivery_of_its_provider(info: object) -> None:
    now = time.time()
    made = sample(info.provider, info.name, now=now)  # type: ignore[attr-defined]
    provider = by_name(made.info.provider)
    assert provider is not None
    url = f"https://hooks.example.com{made.info.path}"
    signed = Delivery("POST", url, provider.sign(Delivery("POST", url, made.headers, made.body),
                                                   SECRETS[provider.name], now), made.body)
    assert detect(signed) is provider
    assert provider.verify(signed, [SECRETS[provider.name]], now).signature is Signature.VALID
    event = provider.event_type(signed)
    assert event is not None and event.startswith(made.info.event), event  # the event column shows it
    if (provider.name, made.info.name) != ("slack", "url_verification"):  # Slack's handshake has no event_id
        assert provider.delivery_id(signed)
    assert "${" not in made.body.decode() and all("${" not in v for _, v in made.headers.items())
    if provider.name == "stripe":
        header = signed.header("stripe-signature")
        assert stripe.Webhook.construct_event(made.body, header, SECRETS["stripe"])["type"] == made.info.event


def test_each_delivery_is_fresh_and_one_placeholder_is_one_value() -> None:
    a = sample("twilio", "sms.received", now=1_764_600_000, rng=random.Random(1))
    b = sample("twilio", "sms.received", now=1_764_600_000, rng=random.Random(2))
    assert a.body != b.body
    form = dict(pair.split("=", 1) for pair in a.body.decode().split("&"))
    assert form["SmsSid"] == form["MessageSid"] == form["SmsMessageSid"]
    # Twilio's SID format (two letters, 32 hex digits): a receiver may check it (twilio's own
    # helpers and many apps match ^SM[0-9a-f]{32}$).
    assert re.fullmatch("SM[0-9a-f]{32}", form["SmsSid"]) and re.fullmatch("AC[0-9a-f]{32}", form["AccountSid"])
    event = json.loads(sample("stripe", "invoice.paid", now=1_764_600_000).body)
    assert event["created"] == 1_764_600_000 and event["id"].startswith("evt_") and len(event["id"]) == 28


def test_an_unknown_sample_lists_what_there_is() -> None:
    with pytest.raises(ConfigError, match="no stripe sample named 'charge.nope'; stripe has: charge.refunded, charge.succeeded, checkout.session.completed"):
        sample("stripe", "charge.nope", now=0)
    # A typo gets the name it is closest to, before the list.
    with pytest.raises(ConfigError, match="no stripe sample named 'invoice.payed'; did you mean invoice.paid[?] stripe has: "):
        sample("stripe", "invoice.payed", now=0)
    with pytest.raises(ConfigError, match="no samples for provider 'paypal'; providers: github, shopify"):
        sample("paypal", "x", now=0)
