"""A webhook receiver that verifies deliveries the way real ones do: with the providers' own libraries.

Stripe with ``stripe.Webhook.construct_event``, Standard Webhooks with ``standardwebhooks``, Slack
with ``slack_sdk``'s ``SignatureVerifier``, Twilio with its ``RequestValidator`` (on the URL the
receiver was called at, with the algorithm ``X-Twilio-Webhooks-Signature-Settings`` names),
GitHub and Shopify by their documented algorithms. Each path answers 200 when the delivery
verifies and 400 (Stripe, Standard, Slack, Twilio) or 401 (GitHub, Shopify) with the library's
reason otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import slack_sdk.signature
import standardwebhooks
import stripe
from twilio.request_validator import RequestValidator, get_signature_algorithm

from tests.kit.servers import Received, Reply, http_server

__all__ = ["Receiver", "receiver", "RECEIVER_SECRETS"]

RECEIVER_SECRETS = {
    "STRIPE_WEBHOOK_SECRET": "whsec_receiver_stripe_0123456789",
    "GITHUB_WEBHOOK_SECRET": "receiver-github-secret",
    "SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
    "SHOPIFY_WEBHOOK_SECRET": "shpss_receiver",
    "WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"receiver-standard-webhooks-key!!").decode(),
    "TWILIO_AUTH_TOKEN": "receiver-twilio-token",
}


@dataclass
class Receiver:
    url: str
    verdicts: list[tuple[str, int, str]] = field(default_factory=list)
    """(path, status, reason) per delivery received."""
    bodies: list[bytes] = field(default_factory=list)
    """The body of each delivery received, in the same order."""
    headers: list[list[tuple[str, str]]] = field(default_factory=list)
    """The header fields of each delivery received, as sent, in the same order."""


def _verify(path: str, headers: dict[str, str], body: bytes, url: str) -> tuple[int, str]:
    s = RECEIVER_SECRETS
    try:
        if path.startswith("/webhooks/stripe"):
            stripe.Webhook.construct_event(body, headers.get("stripe-signature", ""), s["STRIPE_WEBHOOK_SECRET"])
        elif path.startswith("/webhooks/github-sha1"):  # GitHub Enterprise Server before 3.0
            expected = "sha1=" + hmac.new(s["GITHUB_WEBHOOK_SECRET"].encode(), body, hashlib.sha1).hexdigest()
            if not hmac.compare_digest(expected, headers.get("x-hub-signature", "")):
                return 401, "bad signature"
        elif path.startswith("/webhooks/github"):
            expected = "sha256=" + hmac.new(s["GITHUB_WEBHOOK_SECRET"].encode(), body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, headers.get("x-hub-signature-256", "")):
                return 401, "bad signature"
        elif path.startswith("/webhooks/shopify"):
            expected = base64.b64encode(hmac.new(s["SHOPIFY_WEBHOOK_SECRET"].encode(), body, hashlib.sha256).digest()).decode()
            if not hmac.compare_digest(expected, headers.get("x-shopify-hmac-sha256", "")):
                return 401, "bad signature"
        elif path.startswith("/webhooks/standard") or path == "/webhooks":
            standardwebhooks.Webhook(s["WEBHOOK_SECRET"]).verify(body, headers)
        elif path.startswith("/slack"):
            verifier = slack_sdk.signature.SignatureVerifier(s["SLACK_SIGNING_SECRET"])
            if not verifier.is_valid_request(body.decode(), headers):
                return 400, "invalid Slack signature"
        elif path.startswith("/twilio"):
            params = dict(parse_qsl(body.decode(), keep_blank_values=True))
            algorithm = get_signature_algorithm(headers.get("x-twilio-webhooks-signature-settings"))
            if not RequestValidator(s["TWILIO_AUTH_TOKEN"]).validate(url, params, headers.get("x-twilio-signature", ""),
                                                                   algorithm):
                return 400, "invalid Twilio signature"
        else:
            return 404, "no receiver here"
    except Exception as exc:  # the libraries' own refusals, with their messages
        return 400, f"{type(exc).__name__}: {exc}"
    return 200, "ok"


@contextmanager
def receiver(behind_proxy: bool = False) -> Iterator[Receiver]:
    """A verifying receiver on 127.0.0.1 (HTTP/1.1, keep-alive); ``behind_proxy``: it takes the URL
    it was called at from X-Forwarded-Proto and X-Forwarded-Host when a request has them, as an
    app behind a proxy does (werkzeug's ProxyFix)."""
    rx = Receiver("")

    def verify(request: Received) -> Reply:
        headers = request.lower_headers()
        scheme, host = "http", request.header("Host")
        if behind_proxy:
            scheme, host = headers.get("x-forwarded-proto", scheme), headers.get("x-forwarded-host", host)
        url = f"{scheme}://{host}{request.path}"
        status, reason = _verify(request.path.split("?", 1)[0], request.lower_headers(), request.body, url)
        rx.bodies.append(request.body)
        rx.headers.append(list(request.headers))
        rx.verdicts.append((request.path, status, reason))
        return Reply(status, [("Content-Type", "text/plain")], reason.encode())

    with http_server(verify) as server:
        rx.url = server.url
        yield rx
