"""Each provider's scheme against the provider's own library (or its documented example), both ways."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import datetime, timezone
from urllib.parse import urlencode

import pytest
import slack_sdk.signature
import standardwebhooks
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from devtunnel.capture.model import Headers, Request
from devtunnel.errors import ConfigError
from devtunnel.webhooks import BUILTIN, CustomProvider, Delivery, Signature, SignatureError, by_name, detect, judge
from devtunnel.webhooks.providers import GitHub, Shopify, Slack, StandardWebhooks, Stripe, Twilio
from devtunnel.webhooks.secrets import known_secrets, split_secrets

NOW = 1_764_600_000.0
STRIPE_SECRET = "whsec_test_0123456789abcdef"
SVIX_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
STRIPE_EVENT = json.dumps({"id": "evt_1QX", "object": "event", "type": "payment_intent.succeeded",
                           "data": {"object": {"id": "pi_1", "amount": 2000}}}).encode()


def delivery(headers: list[tuple[str, str]], body: bytes, url: str = "https://hooks.example.com/hook") -> Delivery:
    return Delivery("POST", url, Headers(headers), body)


def signed(provider_name: str, d: Delivery, secret: str, now: float = NOW) -> Delivery:
    provider = by_name(provider_name)
    assert provider is not None
    return Delivery(d.method, d.url, provider.sign(d, secret, now), d.body)


# Stripe ------------------------------------------------------------------------------------------


def test_stripe_signature_is_accepted_by_stripes_library_and_stripes_by_ours() -> None:
    d = signed("stripe", delivery([("Content-Type", "application/json")], STRIPE_EVENT), STRIPE_SECRET, time.time())
    header = d.header("stripe-signature")
    assert header is not None
    event = stripe.Webhook.construct_event(d.body, header, STRIPE_SECRET)
    assert event["type"] == "payment_intent.succeeded"
    theirs = stripe.WebhookSignature.generate_signature_header(payload=STRIPE_EVENT.decode(), secret=STRIPE_SECRET,
                                                                timestamp=int(NOW))
    assert Stripe().verify(delivery([("Stripe-Signature", theirs)], STRIPE_EVENT), [STRIPE_SECRET], NOW).signature \
        is Signature.VALID


def test_stripe_old_delivery_is_refused_by_stripe_and_judged_with_its_age() -> None:
    old = signed("stripe", delivery([], STRIPE_EVENT), STRIPE_SECRET, NOW - 3600)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(old.body.decode(), old.header("stripe-signature"), STRIPE_SECRET, 300)
    check = Stripe().verify(old, [STRIPE_SECRET], NOW)
    assert check.signature is Signature.INVALID
    assert check.reason == "timestamp outside the tolerance: 60 min old (tolerance 300 s)"
    # Judged at the moment of delivery it was valid: verdicts use the exchange's own time.
    assert Stripe().verify(old, [STRIPE_SECRET], NOW - 3590).signature is Signature.VALID


def test_stripe_accepts_any_of_several_v1_signatures_and_any_of_several_secrets() -> None:
    d = signed("stripe", delivery([], STRIPE_EVENT), STRIPE_SECRET)
    header = d.header("stripe-signature")
    assert header is not None
    several = delivery([("Stripe-Signature", header.replace("v1=", "v1=" + "00" * 32 + ",v1="))], STRIPE_EVENT)
    assert Stripe().verify(several, [STRIPE_SECRET], NOW).signature is Signature.VALID
    assert Stripe().verify(d, ["whsec_other", STRIPE_SECRET], NOW).signature is Signature.VALID


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("garbage", "malformed Stripe-Signature header: no v1 signature"),
        (f"t={int(NOW)},v1=zz", "signature does not match: wrong secret or altered body"),
        ("t=1,v0=abcd", "malformed Stripe-Signature header: no v1 signature"),
        ("v1=" + "00" * 32, "missing timestamp"),
        ("t=soon,v1=" + "00" * 32, "malformed timestamp 'soon'"),
        (f"t={int(NOW)},v1=" + "00" * 32, "signature does not match: wrong secret or altered body"),
    ],
)
def test_stripe_bad_headers_are_invalid_with_the_reason(header: str, reason: str) -> None:
    check = Stripe().verify(delivery([("Stripe-Signature", header)], STRIPE_EVENT), [STRIPE_SECRET], NOW)
    assert (check.signature, check.reason) == (Signature.INVALID, reason)



def _stripe_accepts(body: bytes, header: str) -> bool:
    try:
        stripe.WebhookSignature.verify_header(body, header, STRIPE_SECRET, 300)
    except stripe.SignatureVerificationError:
        return False
    return True


@pytest.mark.parametrize(
    ("shape", "valid"),
    [
        ("t={t},v1={sig},v1=zz", True),  # a signature that is no hex beside the right one
        ("t={t},v1={sig},junk", True),  # an item without =
        ("t={t},v0=abc,v1={sig}", True),
        ("t={t},v1={sig},t=soon", True),  # the first t= is the timestamp
        ("t={t}, v1={sig}", False),  # " v1" is no v1 to Stripe
        ("t={t},v1={SIG}", False),  # compared as text with the lower-case hex digest
        ("t={t},v1= {sig}", False),
    ],
)
def test_stripe_reads_the_signature_header_as_stripes_library_does(shape: str, valid: bool) -> None:
    t = int(time.time())
    sig = stripe.WebhookSignature._compute_signature(f"{t}.{STRIPE_EVENT.decode()}", STRIPE_SECRET)
    header = shape.format(t=t, sig=sig, SIG=sig.upper())
    assert _stripe_accepts(STRIPE_EVENT, header) is valid
    check = Stripe().verify(delivery([("Stripe-Signature", header)], STRIPE_EVENT), [STRIPE_SECRET], time.time())
    assert (check.signature is Signature.VALID) is valid, check.reason


def test_stripe_accepts_a_timestamp_ahead_of_the_delivery_as_its_library_does() -> None:
    ahead = signed("stripe", delivery([], STRIPE_EVENT), STRIPE_SECRET, time.time() + 3600)
    assert _stripe_accepts(ahead.body, ahead.header("stripe-signature") or "")
    assert Stripe().verify(ahead, [STRIPE_SECRET], time.time()).signature is Signature.VALID
    # Slack and Standard Webhooks refuse it, as their libraries do.
    slack = signed("slack", delivery([], STRIPE_EVENT), "s3cret", time.time() + 3600)
    assert not slack_sdk.signature.SignatureVerifier("s3cret").is_valid_request(slack.body, dict(slack.headers.items()))
    assert "in the future" in Slack().verify(slack, ["s3cret"], time.time()).reason


@pytest.mark.parametrize("provider", ["github", "slack"])
def test_a_hex_signature_in_upper_case_is_refused_as_the_receivers_compare_text(provider: str) -> None:
    d = signed(provider, delivery([("X-GitHub-Event", "push")], STRIPE_EVENT), "s3cret", time.time())
    name = "X-Hub-Signature-256" if provider == "github" else "X-Slack-Signature"
    scheme, _, digest = (d.header(name) or "").partition("=")
    upper = Delivery(d.method, d.url, d.headers.with_set(name, f"{scheme}={digest.upper()}"), d.body)
    if provider == "slack":
        assert not slack_sdk.signature.SignatureVerifier("s3cret").is_valid_request(upper.body,
                                                                                     dict(upper.headers.items()))
    else:  # GitHub's documented check: hmac.compare_digest("sha256=" + hexdigest, header)
        expected = "sha256=" + hmac.new(b"s3cret", d.body, hashlib.sha256).hexdigest()
        assert not hmac.compare_digest(expected, upper.header(name) or "")
    provider_of = by_name(provider)
    assert provider_of is not None
    assert provider_of.verify(upper, ["s3cret"], time.time()).signature is Signature.INVALID


def test_standard_webhooks_passes_over_a_signature_it_cannot_read_beside_the_right_one() -> None:
    d = delivery([("webhook-id", "msg_1")], STRIPE_EVENT)
    good = signed("standard", d, SVIX_SECRET, time.time())
    header = good.header("webhook-signature") or ""
    for other in ("v1,@@@", "v1a,c2lnbmF0dXJl", "nonsense"):
        sent = Delivery(d.method, d.url, good.headers.with_set("webhook-signature", f"{other} {header}"), d.body)
        standardwebhooks.Webhook(SVIX_SECRET).verify(sent.body, dict(sent.headers.items()))  # accepted
        assert StandardWebhooks().verify(sent, [SVIX_SECRET], time.time()).signature is Signature.VALID, other


def test_signed_with_each_secret_a_receiver_holding_any_one_accepts_it() -> None:
    now = time.time()
    secrets = ["whsec_new_one", STRIPE_SECRET]
    d = Stripe().sign_with_each(delivery([], STRIPE_EVENT), secrets, now)
    for secret in secrets:
        stripe.WebhookSignature.verify_header(STRIPE_EVENT, d.get("stripe-signature"), secret, 300)
    other = "whsec_" + base64.b64encode(b"another-key-another-key-another!").decode()
    sw = StandardWebhooks().sign_with_each(delivery([("webhook-id", "msg_1")], STRIPE_EVENT), [other, SVIX_SECRET], now)
    for secret in (other, SVIX_SECRET):
        standardwebhooks.Webhook(secret).verify(STRIPE_EVENT, dict(sw.items()))
    # One signature per scheme that carries one: the first secret's.
    gh = GitHub().sign_with_each(delivery([], STRIPE_EVENT), ["first", "second"], now)
    assert gh.get("x-hub-signature-256") == GitHub().sign(delivery([], STRIPE_EVENT), "first", now).get("x-hub-signature-256")

def test_an_altered_body_or_a_wrong_secret_is_invalid() -> None:
    d = signed("stripe", delivery([], STRIPE_EVENT), STRIPE_SECRET)
    altered = Delivery(d.method, d.url, d.headers, d.body.replace(b"2000", b"20"))
    assert Stripe().verify(altered, [STRIPE_SECRET], NOW).reason == "signature does not match: wrong secret or altered body"
    assert Stripe().verify(d, ["whsec_wrong"], NOW).signature is Signature.INVALID


def test_unsigned_and_unverified_say_what_is_missing() -> None:
    bare = delivery([("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")], STRIPE_EVENT)
    assert detect(bare) is not None and detect(bare).name == "stripe"  # type: ignore[union-attr]
    check = Stripe().verify(bare, [STRIPE_SECRET], NOW)
    assert (check.signature, check.reason) == (Signature.UNSIGNED, "no Stripe-Signature header")
    d = signed("stripe", bare, STRIPE_SECRET)
    check = Stripe().verify(d, [], NOW)
    assert (check.signature, check.reason) == (Signature.UNVERIFIED, "no secret: set STRIPE_WEBHOOK_SECRET")


# GitHub ------------------------------------------------------------------------------------------


def test_github_documented_example_and_event_with_action() -> None:
    # GitHub's documentation: secret "It's a Secret to Everybody", payload "Hello, World!".
    d = delivery([("X-GitHub-Event", "ping"), ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
                  ("X-Hub-Signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")],
                 b"Hello, World!")
    assert GitHub().verify(d, ["It's a Secret to Everybody"], NOW).signature is Signature.VALID
    assert GitHub().sign(d, "It's a Secret to Everybody", NOW) == d.headers
    issue = delivery([("X-GitHub-Event", "issues"), ("X-GitHub-Delivery", "d-1")], b'{"action": "opened"}')
    assert (GitHub().event_type(issue), GitHub().delivery_id(issue)) == ("issues.opened", "d-1")
    assert GitHub().verify(issue, ["s"], NOW).signature is Signature.UNSIGNED


def test_github_signs_the_older_sha1_header_too_when_it_was_sent() -> None:
    d = delivery([("X-GitHub-Event", "push"), ("X-Hub-Signature", "sha1=00"), ("X-Hub-Signature-256", "sha256=00")], b"{}")
    headers = GitHub().sign(d, "s", NOW)
    assert headers.get("x-hub-signature") == "sha1=" + hmac.new(b"s", b"{}", hashlib.sha1).hexdigest()


def test_github_enterprise_sha1_alone_is_verified_and_signed_alone() -> None:
    # GitHub Enterprise Server before 3.0 sends X-Hub-Signature only.
    sha1 = "sha1=" + hmac.new(b"s", b"{}", hashlib.sha1).hexdigest()
    d = delivery([("X-GitHub-Event", "push"), ("X-Hub-Signature", sha1)], b"{}")
    assert GitHub().verify(d, ["s"], NOW).signature is Signature.VALID
    wrong = GitHub().verify(d, ["other"], NOW)
    assert wrong.signature is Signature.INVALID and "does not match" in wrong.reason
    odd = GitHub().verify(delivery([("X-Hub-Signature", "sha256=00")], b"{}"), ["s"], NOW)
    assert odd.signature is Signature.INVALID and odd.reason == "malformed X-Hub-Signature header (expected sha1=HEX)"
    headers = GitHub().sign(delivery(list(d.headers), b'{"a":1}'), "s", NOW)
    assert headers.get("x-hub-signature") == "sha1=" + hmac.new(b"s", b'{"a":1}', hashlib.sha1).hexdigest()
    assert headers.get("x-hub-signature-256") is None  # the delivery's shape, as captured


# Slack -------------------------------------------------------------------------------------------


def test_slack_signature_is_accepted_by_slack_sdk_and_its_by_ours() -> None:
    body = b"token=x&team_id=T1&command=%2Fdeploy&text=prod"
    d = signed("slack", delivery([("Content-Type", "application/x-www-form-urlencoded"),
                                  ("X-Slack-Request-Timestamp", "1")], body), "8f742231b10e8888abcd99yyyzzz85a5", time.time())
    verifier = slack_sdk.signature.SignatureVerifier("8f742231b10e8888abcd99yyyzzz85a5")
    assert verifier.is_valid(body=body.decode(), timestamp=d.header("x-slack-request-timestamp"),
                             signature=d.header("x-slack-signature"))
    assert Slack().event_type(d) == "/deploy"
    theirs = verifier.generate_signature(timestamp=str(int(NOW)), body=body.decode())
    ours = delivery([("X-Slack-Request-Timestamp", str(int(NOW))), ("X-Slack-Signature", theirs)], body)
    assert Slack().verify(ours, ["8f742231b10e8888abcd99yyyzzz85a5"], NOW).signature is Signature.VALID


class _Clock(slack_sdk.signature.Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def test_slack_signs_and_checks_the_timestamp_header_as_sent_as_slack_sdk_does() -> None:
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    verifier = slack_sdk.signature.SignatureVerifier(secret, clock=_Clock(NOW))
    body = b"command=%2Fdeploy"
    # Digits slack_sdk takes as they are (its age check reads them as a number, its signature as text).
    stamp = "0" + str(int(NOW))
    theirs = verifier.generate_signature(timestamp=stamp, body=body)
    assert verifier.is_valid(body, stamp, theirs)
    d = delivery([("X-Slack-Request-Timestamp", stamp), ("X-Slack-Signature", theirs)], body)
    assert Slack().verify(d, [secret], NOW).signature is Signature.VALID
    # Re-signed at a moment between two seconds: the header sent is the text signed.
    later = NOW + 60.999
    headers = Slack().sign(d, secret, later)
    sent = headers.get("x-slack-request-timestamp")
    assert sent == str(int(later)) and len(headers.get_all("x-slack-request-timestamp")) == 1
    verifier = slack_sdk.signature.SignatureVerifier(secret, clock=_Clock(later))
    assert verifier.is_valid(body, sent, headers.get("x-slack-signature"))


def test_slack_event_types_and_ids() -> None:
    callback = delivery([("X-Slack-Request-Timestamp", "1")],
                        b'{"type": "event_callback", "event_id": "Ev1", "event": {"type": "app_mention"}}')
    assert (Slack().event_type(callback), Slack().delivery_id(callback)) == ("app_mention", "Ev1")
    assert Slack().event_type(delivery([], b'{"type": "url_verification", "challenge": "c"}')) == "url_verification"
    interactive = delivery([("Content-Type", "application/x-www-form-urlencoded")],
                           urlencode({"payload": json.dumps({"type": "block_actions"})}).encode())
    assert Slack().event_type(interactive) == "block_actions"


# Shopify -----------------------------------------------------------------------------------------


def test_shopify_documented_algorithm_and_headers() -> None:
    body = b'{"id": 820982911946154508, "email": "jon@example.com"}'
    mac = base64.b64encode(hmac.new(b"shpss_secret", body, hashlib.sha256).digest()).decode()
    d = delivery([("X-Shopify-Topic", "orders/create"), ("X-Shopify-Webhook-Id", "b54557e4"),
                  ("X-Shopify-Hmac-Sha256", mac)], body)
    assert Shopify().verify(d, ["shpss_secret"], NOW).signature is Signature.VALID
    assert (Shopify().event_type(d), Shopify().delivery_id(d)) == ("orders/create", "b54557e4")
    assert Shopify().sign(d, "shpss_secret", NOW) == d.headers
    bad = delivery([("X-Shopify-Hmac-Sha256", "not base64!")], body)
    assert Shopify().verify(bad, ["s"], NOW).reason.startswith("malformed X-Shopify-Hmac-Sha256")


# Standard Webhooks / Svix ------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["webhook", "svix"])
def test_standard_webhooks_both_ways_with_the_reference_library(prefix: str) -> None:
    body = b'{"type": "invoice.paid", "data": {"id": 1}}'
    d = signed("standard", delivery([(f"{prefix}-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"), (f"{prefix}-timestamp", "1"),
                                     (f"{prefix}-signature", "v1,AAAA")], body), SVIX_SECRET, time.time())
    plain = {k.replace("svix-", "webhook-"): v for k, v in d.headers.items()}
    assert standardwebhooks.Webhook(SVIX_SECRET).verify(body, plain) == json.loads(body)
    theirs = standardwebhooks.Webhook(SVIX_SECRET).sign("msg_1", datetime.fromtimestamp(NOW, tz=timezone.utc), body.decode())
    ours = delivery([(f"{prefix}-id", "msg_1"), (f"{prefix}-timestamp", str(int(NOW))), (f"{prefix}-signature", theirs)], body)
    assert StandardWebhooks().verify(ours, [SVIX_SECRET], NOW).signature is Signature.VALID
    assert (StandardWebhooks().event_type(ours), StandardWebhooks().delivery_id(ours)) == ("invoice.paid", "msg_1")


def test_standard_webhooks_refuses_a_secret_that_is_not_base64_and_keeps_the_id() -> None:
    d = delivery([("webhook-id", "msg_1"), ("webhook-timestamp", "1"), ("webhook-signature", "v1,AAAA")], b"{}")
    check = StandardWebhooks().verify(d, ["whsec_%%%"], NOW)
    assert (check.signature, check.reason) == (Signature.UNVERIFIED,
                                               "the secret for Standard Webhooks is not whsec_ followed by base64")
    headers = StandardWebhooks().sign(d, SVIX_SECRET, NOW)
    assert headers.get("webhook-id") == "msg_1" and headers.get("webhook-timestamp") == str(int(NOW))
    with pytest.raises(SignatureError):
        StandardWebhooks().sign(delivery([("webhook-signature", "v1,AAAA")], b"{}"), SVIX_SECRET, NOW)


# Twilio ------------------------------------------------------------------------------------------


def test_twilio_form_signature_with_twilios_validator_both_ways() -> None:
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234", "From": "+12349013030"}
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    body = urlencode(params).encode()
    d = signed("twilio", delivery([("Content-Type", "application/x-www-form-urlencoded"),
                                   ("I-Twilio-Idempotency-Token", "idem-1")], body, url), "12345")
    validator = RequestValidator("12345")
    assert validator.validate(url, params, d.header("x-twilio-signature"))
    theirs = validator.compute_signature(url, params)
    again = delivery([("Content-Type", "application/x-www-form-urlencoded"), ("X-Twilio-Signature", theirs)], body, url)
    assert Twilio().verify(again, ["12345"], NOW).signature is Signature.VALID
    elsewhere = Delivery(again.method, "https://other.example/myapp.php?foo=1&bar=2", again.headers, body)
    assert "another URL" in Twilio().verify(elsewhere, ["12345"], NOW).reason
    assert Twilio().delivery_id(d) == "idem-1"


@pytest.mark.parametrize(("form", "event"), [
    ({"SmsStatus": "received", "MessageSid": "SM1", "Body": "hi"}, "sms.received"),  # an incoming message
    ({"SmsStatus": "delivered", "MessageStatus": "delivered", "MessageSid": "SM1"}, "sms.delivered"),  # its status callback
    ({"CallSid": "CA1", "CallStatus": "ringing", "Direction": "inbound"}, "call.ringing"),  # an incoming call
    ({"EventType": "onMessageAdded", "ConversationSid": "CH1"}, "onMessageAdded"),  # Conversations names its own
    ({"Digits": "1234"}, None),
])
def test_twilio_event_types_come_from_the_form(form: dict[str, str], event: str | None) -> None:
    # The event column read "?" for every Twilio delivery, devtunnel's own sample included.
    d = delivery([("Content-Type", "application/x-www-form-urlencoded"), ("I-Twilio-Idempotency-Token", "idem-1")],
                 urlencode(form).encode())
    assert Twilio().event_type(d) == event


def test_a_twilio_event_type_is_the_senders_text_and_is_shown_escaped() -> None:
    # EventType comes from the network: the headless line escapes it and cuts it, as any
    # provider's event type; a JSON body (no form) names no event.
    from devtunnel.agent.exchange_log import verdict_line

    hostile = "\x1b]52;c;ZXZpbA==\x07[bold]x[/]" + "e" * 500
    d = delivery([("Content-Type", "application/x-www-form-urlencoded"), ("X-Twilio-Signature", "AAAA")],
                 urlencode({"EventType": hostile}).encode())
    verdict = Twilio().verdict(d, [], NOW)
    assert verdict.event_type == hostile
    line = verdict_line("12:00:00  01M8V2JDA09PA  ", verdict)
    assert "\x1b" not in line and "\x07" not in line and len(line) < 300, line
    assert Twilio().event_type(delivery([("Content-Type", "application/json")], b'{"EventType": "x"}')) is None


def test_twilio_json_body_signs_the_url_carrying_the_body_hash() -> None:
    body = b'{"event": "x"}'
    url = "https://hooks.example.com/t?bodySHA256=" + hashlib.sha256(body).hexdigest()
    d = signed("twilio", delivery([("Content-Type", "application/json")], body, url), "tok")
    assert RequestValidator("tok").validate(url, body.decode(), d.header("x-twilio-signature"))
    altered = Delivery(d.method, d.url, d.headers, b'{"event": "y"}')
    assert "bodySHA256" in Twilio().verify(altered, ["tok"], NOW).reason
    with pytest.raises(SignatureError):
        Twilio().sign(altered, "tok", NOW)



@pytest.mark.parametrize("algorithm", ["HMAC_SHA1", "HMAC_SHA256", "hmac_sha256"])
def test_twilio_signs_and_verifies_with_the_algorithm_the_settings_header_names(algorithm: str) -> None:
    params = {"From": "+15550001", "Body": "hi"}
    url = "https://hooks.example.com/sms"
    settings_header = ("X-Twilio-Webhooks-Signature-Settings", f"key=webhooks_sharedkey_1, algorithm={algorithm}")
    d = signed("twilio", delivery([("Content-Type", "application/x-www-form-urlencoded"), settings_header],
                                  urlencode(params).encode(), url), "shared")
    assert RequestValidator("shared").validate(url, params, d.header("x-twilio-signature"), algorithm.upper())
    assert Twilio().verify(d, ["shared"], NOW).signature is Signature.VALID


def test_twilio_an_algorithm_it_does_not_know_is_invalid_and_cannot_be_signed() -> None:
    d = delivery([("Content-Type", "application/x-www-form-urlencoded"), ("X-Twilio-Signature", "AAAA"),
                  ("X-Twilio-Webhooks-Signature-Settings", "algorithm=HMAC_SHA3")], b"a=1", "https://h/x")
    check = Twilio().verify(d, ["tok"], NOW)
    assert check.signature is Signature.INVALID
    assert check.reason == ("unknown signature algorithm 'HMAC_SHA3' in X-Twilio-Webhooks-Signature-Settings "
                            "(expected HMAC_SHA1 or HMAC_SHA256)")
    with pytest.raises(SignatureError, match="unknown algorithm"):
        Twilio().sign(d, "tok", NOW)


@pytest.mark.parametrize(("signed_for", "called_at"), [
    ("https://hooks.example.com:443/sms", "https://hooks.example.com/sms"),
    ("https://hooks.example.com/sms", "https://hooks.example.com:443/sms"),
    ("http://hooks.localhost/sms", "http://hooks.localhost:41234/sms"),
])
def test_twilio_accepts_the_url_with_or_without_its_port_as_its_validator_does(signed_for: str, called_at: str) -> None:
    params = {"From": "+15550001", "Body": "hi"}
    signature = RequestValidator("tok").compute_signature(signed_for, params)
    assert RequestValidator("tok").validate(called_at, params, signature)
    d = delivery([("Content-Type", "application/x-www-form-urlencoded"), ("X-Twilio-Signature", signature)],
                 urlencode(params).encode(), called_at)
    assert Twilio().verify(d, ["tok"], NOW).signature is Signature.VALID


def test_twilio_counts_a_form_pair_sent_twice_once_as_its_validator_does() -> None:
    body = b"Body=hi&From=%2B1&Body=hi"
    params = {"Body": "hi", "From": "+1"}  # a dict, as the receiver's form: one value per name
    signature = RequestValidator("tok").compute_signature("https://h/x", params)
    d = delivery([("Content-Type", "application/x-www-form-urlencoded"), ("X-Twilio-Signature", signature)], body,
                 "https://h/x")
    assert Twilio().verify(d, ["tok"], NOW).signature is Signature.VALID

# Custom ------------------------------------------------------------------------------------------


def test_a_custom_scheme_signs_and_verifies_its_template() -> None:
    acme = CustomProvider("acme", "X-Acme-Signature", algorithm="sha512", encoding="base64", prefix="v1=",
                          template="{id}:{timestamp}:{url}:{body}", timestamp_header="X-Acme-Time",
                          id_header="X-Acme-Delivery", event_path="meta.kind")
    d = delivery([("X-Acme-Delivery", "d7"), ("X-Acme-Signature", "v1=AAAA")], b'{"meta": {"kind": "order.paid"}}')
    headers = acme.sign(d, "k", NOW)
    content = f"d7:{int(NOW)}:{d.url}:".encode() + d.body
    assert headers.get("x-acme-signature") == "v1=" + base64.b64encode(hmac.new(b"k", content, hashlib.sha512).digest()).decode()
    again = Delivery(d.method, d.url, headers, d.body)
    assert acme.verify(again, ["k"], NOW).signature is Signature.VALID
    assert acme.verify(again, ["k"], NOW + 301).reason.startswith("timestamp outside the tolerance")
    assert (acme.event_type(again), acme.delivery_id(again), acme.secret_env) == ("order.paid", "d7", "ACME_WEBHOOK_SECRET")
    assert detect(again, [acme, *BUILTIN]) is acme


def test_a_custom_scheme_signs_and_checks_its_timestamp_header_as_sent() -> None:
    acme = CustomProvider("acme", "X-Acme-Signature", template="{timestamp}.{body}", timestamp_header="X-Acme-Time")
    body = b'{"type": "order.paid"}'
    stamp = "0" + str(int(NOW))  # what the sender put in the header is what it signed
    given = hmac.new(b"k", f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    d = delivery([("X-Acme-Time", stamp), ("X-Acme-Signature", given)], body)
    assert acme.verify(d, ["k"], NOW).signature is Signature.VALID
    later = NOW + 0.999
    headers = acme.sign(d, "k", later)
    sent = headers.get("x-acme-time")
    assert sent == str(int(later))
    assert headers.get("x-acme-signature") == hmac.new(b"k", f"{sent}.".encode() + body, hashlib.sha256).hexdigest()



@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"header": ""}, "webhooks.acme.header: the signature header is required"),
        ({"algorithm": "md5"}, "webhooks.acme.algorithm: expected one of sha1, sha256, sha512"),
        ({"encoding": "hex64"}, "webhooks.acme.encoding: expected hex or base64"),
        ({"template": "{body}{nonce}"}, "unknown field {nonce}"),
        ({"template": "{timestamp}.{body}"}, "{timestamp} needs timestamp_header"),
        ({"template": "{id}.{body}"}, "{id} needs id_header"),
        ({"tolerance": 0}, "tolerance: expected seconds"),
    ],
)
def test_a_bad_custom_scheme_is_one_clear_config_error(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"header": "X-Sig", **kwargs}
    with pytest.raises(ConfigError) as info:
        CustomProvider("acme", **args)  # type: ignore[arg-type]
    assert message in str(info.value)


# The verdict on a captured request ---------------------------------------------------------------


def test_judge_gives_the_whole_verdict_and_a_truncated_body_is_unverified() -> None:
    d = signed("stripe", delivery([("Host", "pay.localhost")], STRIPE_EVENT), STRIPE_SECRET)
    request = Request(method="POST", target=b"/webhooks/stripe", headers=d.headers, body=d.body, body_size=len(d.body))
    verdict = judge(request, scheme="https", now=NOW, secrets={"stripe": [STRIPE_SECRET]})
    assert verdict is not None
    assert verdict.to_json() == {"provider": "stripe", "event_type": "payment_intent.succeeded", "delivery_id": "evt_1QX",
                                 "signature": "valid", "reason": None, "duplicate_of": None}
    assert type(verdict).from_json(verdict.to_json()) == verdict
    request.body_truncated = True
    cut = judge(request, scheme="https", now=NOW, secrets={"stripe": [STRIPE_SECRET]})
    assert cut is not None and cut.signature is Signature.UNVERIFIED and "recorded only in part" in cut.reason
    assert judge(Request(headers=Headers([("Host", "x")])), scheme="http", now=NOW, secrets={}) is None


def test_secrets_come_from_config_then_the_conventional_variable_with_rotation() -> None:
    env = {"STRIPE_WEBHOOK_SECRET": "whsec_new, whsec_old", "GITHUB_WEBHOOK_SECRET": "", "HOOKS": "gh1"}
    found = known_secrets(BUILTIN, env, configured={"stripe": ["whsec_file"]}, env_names={"github": "HOOKS"})
    assert found == {"stripe": ["whsec_file", "whsec_new", "whsec_old"], "github": ["gh1"]}
    assert split_secrets(" a,b  c\n") == ["a", "b", "c"]


# Properties: every scheme round-trips for any body ------------------------------------------------

SECRETS = {"stripe": STRIPE_SECRET, "github": "gh", "slack": "sl", "shopify": "sh", "standard": SVIX_SECRET,
           "twilio": "tw"}
BASE_HEADERS = {"standard": [("webhook-id", "msg_p")], "github": [("X-GitHub-Event", "push")]}


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(SECRETS)), body=st.binary(max_size=2048), now=st.integers(0, 2**33))
def test_sign_then_verify_round_trips_for_every_scheme(name: str, body: bytes, now: int) -> None:
    provider = by_name(name)
    assert provider is not None
    headers = BASE_HEADERS.get(name, [])
    if name == "twilio":  # Twilio signs form parameters (a raw body is not covered by its scheme)
        body = urlencode({"Body": body.decode("latin-1")}).encode()
        headers = [("Content-Type", "application/x-www-form-urlencoded")]
    elif provider.text_body:  # its library reads the body as UTF-8 text (a body that is not: below)
        body = body.decode("latin-1").encode("utf-8")
    d = signed(name, delivery(headers, body), SECRETS[name], now)
    assert detect(d) is provider
    assert provider.verify(d, [SECRETS[name]], now).signature is Signature.VALID
    if body:
        flipped = bytes([body[0] ^ 1]) + body[1:]
        assert provider.verify(Delivery(d.method, d.url, d.headers, flipped), [SECRETS[name]], now).signature \
            is Signature.INVALID


# Timestamps of a custom scheme: no library to read them as, so ASCII digits alone -----------------
# (The built-in schemes read theirs as their libraries do: tests/webhooks/test_library_differential.py.)

_ACME = CustomProvider("acme", "X-Acme-Signature", template="{timestamp}.{body}", timestamp_header="X-Acme-Time")
_ARABIC_INDIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")


@pytest.mark.parametrize(
    "stamp",
    [
        # int() read these as NOW: the signature over NOW's digits then passed for valid.
        str(int(NOW)).translate(_ARABIC_INDIC),
        f"+{int(NOW)}",
        f"{int(NOW)}".replace("17", "1_7"),
        f"{int(NOW)} ",
        f" {int(NOW)}",
        # ... these as numbers: "timestamp outside the tolerance: 20790.7 days old".
        "\u0661\u0662\u0663",
        "+123",
        "1_0",
        "-5",
        # a number too long for a float: the comparison with now raised OverflowError.
        "9" * 400,
    ],
    ids=["arabic-indic-now", "plus-now", "underscore-now", "space-after", "space-before", "arabic-indic-123",
         "plus", "underscore", "minus", "400-digits"],
)
def test_a_custom_schemes_timestamp_that_is_not_ascii_digits_is_malformed(stamp: str) -> None:
    d = delivery([("Content-Type", "application/json")], STRIPE_EVENT)
    headers = _ACME.sign(d, "k", NOW)
    assert headers.get("x-acme-time") == str(int(NOW))
    sent = Delivery(d.method, d.url, headers.with_set("x-acme-time", stamp), d.body)
    assert _ACME.verify(Delivery(d.method, d.url, headers, d.body), ["k"], NOW).signature is Signature.VALID
    check = _ACME.verify(sent, ["k"], NOW)
    if stamp != stamp.strip():
        # Space around a header's value (HTTP's optional whitespace) is syntax, not the timestamp.
        assert check.signature is Signature.VALID
        return
    assert (check.signature, check.reason) == (Signature.INVALID, f"malformed timestamp {stamp[:40]!r}")
    verdict = judge(Request(method="POST", target=b"/hook", headers=Headers([("Host", "hooks.example.com"),
                                                                            *sent.headers.items()]),
                            body=d.body), scheme="https", now=NOW, secrets={"acme": ["k"]}, providers=[_ACME, *BUILTIN])
    assert verdict is not None and verdict.provider == "acme"
    assert (verdict.signature, verdict.reason) == (Signature.INVALID, f"malformed timestamp {stamp[:40]!r}")


def test_a_timestamp_of_ascii_digits_is_still_judged_by_its_age() -> None:
    d = signed("slack", delivery([], b"command=%2Fdeploy"), "s", NOW - 3600)
    assert Slack().verify(d, ["s"], NOW).reason == "timestamp outside the tolerance: 60 min old (tolerance 300 s)"
    millis = Delivery(d.method, d.url, d.headers.with_set("X-Slack-Request-Timestamp", str(int(NOW) * 1000)), d.body)
    assert Slack().verify(millis, ["s"], NOW).reason.startswith("timestamp outside the tolerance")


@pytest.mark.parametrize("name", [p.name for p in BUILTIN])
def test_expired_says_what_the_library_refuses_for_time_alone(name: str) -> None:
    # What an export of the captured signature warns about: the age of its timestamp, whatever
    # the secret; a scheme without a timestamp never expires.
    from devtunnel.webhooks.samples import list_samples, sample

    provider = by_name(name)
    assert provider is not None
    info = next(i for i in list_samples() if i.provider == name)
    made = sample(name, info.name, now=NOW)
    captured = Delivery("POST", "https://hooks.example.com" + info.path, made.headers, made.body)
    fresh = Delivery("POST", captured.url, provider.sign(captured, "whsec_" + "QUJD" * 8, NOW), made.body)
    assert provider.expired(fresh, NOW + 10) is None
    later = provider.expired(fresh, NOW + 3600)
    if provider.tolerance is None:
        assert later is None
    else:
        assert later == "timestamp outside the tolerance: 60 min old (tolerance 300 s)"
        assert provider.verify(fresh, ["whsec_" + "WFla" * 8], NOW + 3600).reason == later  # whatever the secret
    if name == "stripe":  # as its library sees it: refused an hour later, for the timestamp
        with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
            stripe.WebhookSignature.verify_header(made.body.decode(), fresh.header("stripe-signature"),
                                                  "whsec_" + "QUJD" * 8, tolerance=300)


def test_a_custom_scheme_expires_by_its_timestamp_header() -> None:
    acme = CustomProvider("acme", "X-Acme-Signature", template="{timestamp}.{body}", timestamp_header="X-Acme-Ts")
    d = delivery([("X-Acme-Signature", "00"), ("X-Acme-Ts", str(int(NOW)))], b"{}")
    assert acme.expired(d, NOW) is None
    assert acme.expired(d, NOW + 7200) == "timestamp outside the tolerance: 2.0 h old (tolerance 300 s)"
    assert CustomProvider("plain", "X-Plain-Signature").expired(delivery([("X-Plain-Signature", "00")], b""), NOW + 1e6) is None


def test_a_github_hook_of_form_content_type_has_its_action_as_a_json_one_does() -> None:
    # GitHub's "Content type: application/x-www-form-urlencoded" sends the JSON as the field payload:
    # the EVENT column said "pull_request" for it, "pull_request.opened" for the same event as JSON.
    from devtunnel.webhooks.context import WebhookContext
    from tests.kit.exchanges import make_exchange

    payload = json.dumps({"action": "opened", "number": 7})
    for content_type, body in (("application/json", payload.encode()),
                               ("application/x-www-form-urlencoded", urlencode({"payload": payload}).encode())):
        headers = [("Host", "hooks.example.com"), ("Content-Type", content_type), ("X-GitHub-Event", "pull_request"),
                   ("X-GitHub-Delivery", "d-7")]
        signed_headers = GitHub().sign(delivery(headers, body), "gh", NOW)
        exchange = make_exchange("POST", "/webhooks/github", signed_headers.items(), body, started_at=NOW)
        verdict = WebhookContext(secrets={"github": ("gh",)}).judge(exchange)
        assert verdict is not None and verdict.signature is Signature.VALID, content_type
        assert verdict.event_type == "pull_request.opened", content_type


def _stripe_twice(*secrets: str) -> Delivery:
    signatures = [Stripe().sign(Delivery("POST", "", Headers(), STRIPE_EVENT), s, NOW).get("Stripe-Signature")
                  for s in secrets]
    return Delivery("POST", "", Headers([("Stripe-Signature", s or "") for s in signatures]), STRIPE_EVENT)


def test_a_signature_header_sent_twice_and_alike_says_so_and_stands() -> None:
    verdict = Stripe().verdict(_stripe_twice(STRIPE_SECRET, STRIPE_SECRET), [STRIPE_SECRET], NOW)
    assert (verdict.signature, verdict.reason) == (
        Signature.VALID, "judged alike: the first Stripe-Signature header, the second Stripe-Signature header")


def test_without_a_secret_a_repeated_header_keeps_the_no_secret_reason() -> None:
    # The inspector's hint reads the variable from it: nothing is judged, nothing is added.
    verdict = Stripe().verdict(_stripe_twice(STRIPE_SECRET, "whsec_other"), [], NOW)
    assert (verdict.signature, verdict.reason) == (Signature.UNVERIFIED, "no secret: set STRIPE_WEBHOOK_SECRET")


def test_a_header_repeated_many_times_is_judged_a_bounded_number_of_times() -> None:
    verdict = Stripe().verdict(_stripe_twice(STRIPE_SECRET, *["whsec_other"] * 50), [STRIPE_SECRET], NOW)
    assert verdict.signature is Signature.INVALID
    assert verdict.reason.count("Stripe-Signature header") == 4 and verdict.reason.endswith("; 47 more not judged")


def test_githubs_two_headers_agreeing_add_nothing() -> None:
    body = b'{"zen": "x"}'
    headers = GitHub().sign(Delivery("POST", "", Headers([("X-GitHub-Event", "push"), ("X-Hub-Signature-256", "x"),
                                                          ("X-Hub-Signature", "y")]), body), "gh", NOW)
    assert GitHub().verdict(Delivery("POST", "", headers, body), ["gh"], NOW).reason == ""
