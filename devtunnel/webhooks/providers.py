"""The built-in providers: Stripe, GitHub, Slack, Shopify, Standard Webhooks (Svix) and Twilio.

Each scheme as its provider documents it:

=================  ==========================================================================
Stripe             ``Stripe-Signature: t=TS,v1=hex(HMAC-SHA256(secret, "TS." + body))``
GitHub             ``X-Hub-Signature-256: sha256=hex(HMAC-SHA256(secret, body))``
Slack              ``X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:TS:" + body))``
Shopify            ``X-Shopify-Hmac-Sha256: base64(HMAC-SHA256(secret, body))``
Standard Webhooks  ``webhook-signature: v1,base64(HMAC-SHA256(b64decode(secret), "ID.TS." + body))``
Twilio             ``X-Twilio-Signature: base64(HMAC-SHA1(token, URL + sorted form params))``, or
                   HMAC-SHA256 where ``X-Twilio-Webhooks-Signature-Settings`` says ``algorithm=HMAC_SHA256``
=================  ==========================================================================
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from datetime import datetime, timezone
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from devtunnel.capture.model import Headers
from devtunnel.values.terminal import quoted
from devtunnel.webhooks.base import (
    DEFAULT_TOLERANCE,
    Check,
    Delivery,
    Provider,
    Signature,
    SignatureError,
    hmac_digest,
    json_field,
    stamped,
    timestamp_text,
)

__all__ = ["Stripe", "GitHub", "Slack", "Shopify", "StandardWebhooks", "Twilio"]


_TWILIO_ALGORITHMS = MappingProxyType({"HMAC_SHA1": "sha1", "HMAC_SHA256": "sha256"})
"""The algorithms X-Twilio-Webhooks-Signature-Settings may name, and their hashes."""


def _unhex(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _text(signature: str) -> bytes:
    """A signature as the text it was sent as, to compare with the digest encoded as its provider
    encodes it: the providers' libraries compare text (``hmac.compare_digest(expected_hex, header)``),
    so ``A1B2`` is not ``a1b2`` to them, and a receiver refuses what decoding first would accept."""
    return signature.encode("utf-8", "surrogateescape")


def _signable(provider: Provider, delivery: Delivery) -> None:
    """Raises SignatureError when the provider's library refuses the body whatever its signature."""
    problem = provider.body_problem(delivery.body)
    if problem:
        raise SignatureError(problem)


class Stripe(Provider):
    name = "stripe"
    title = "Stripe"
    secret_env = "STRIPE_WEBHOOK_SECRET"
    signature_headers = ("Stripe-Signature",)
    tolerance = DEFAULT_TOLERANCE
    refuses_future = False  # stripe.WebhookSignature.verify_header refuses only old timestamps
    text_body = True  # verify_header decodes the body as UTF-8 first
    value_markers = MappingProxyType({"user-agent": "Stripe/"})  # signed, or sent by Stripe's agent

    def detects(self, delivery: Delivery) -> bool:
        return self.signed(delivery) or (delivery.header("user-agent") or "").startswith("Stripe/")

    def event_type(self, delivery: Delivery) -> str | None:
        return json_field(delivery.json(), "type")

    def delivery_id(self, delivery: Delivery) -> str | None:
        return json_field(delivery.json(), "id")

    @staticmethod
    def _parts(header: str) -> tuple[str | None, list[str]] | None:
        """The timestamp and the v1 signatures, read as stripe's ``verify_header`` reads them:
        items between commas with their keys as they are (``t=1, v1=...`` has no ``v1`` item, but
        `` v1``), the first ``t=`` the timestamp, each ``v1=`` a signature compared as text with
        the lower-case hex digest; any other item (``v0=``, a scheme to come, no ``=`` at all)
        passed over. None when the library cannot read the header at all: an item ``t`` or
        ``v1`` without ``=`` (its ``item[1]`` raises)."""
        stamp: str | None = None
        signatures: list[str] = []
        for item in header.split(","):
            key, *values = item.split("=", 2)
            if key in ("t", "v1") and not values:
                return None
            if key == "t" and stamp is None:
                stamp = values[0]
            elif key == "v1":
                signatures.append(values[0])
        return stamp, signatures

    def read_timestamp(self, text: str) -> tuple[float, str] | None:
        # stripe reads t= with int() (a sign, spaces around it, _ between digits, any script's
        # digits, as many digits as int() takes) and signs "%d" of the number, not the text.
        try:
            value = int(text)
        except ValueError:
            return None
        return value, str(value)

    def signed_timestamp(self, delivery: Delivery) -> str | None:
        parts = self._parts(delivery.header("stripe-signature") or "")
        return parts[0] if parts is not None else None

    def check(self, delivery: Delivery, secret: str, now: float) -> Check:
        parts = self._parts(delivery.header("stripe-signature") or "")
        if parts is None:
            return Check(Signature.INVALID, "malformed Stripe-Signature header: an item t or v1 without =")
        stamp, signatures = parts
        if not signatures:
            return Check(Signature.INVALID, "malformed Stripe-Signature header: no v1 signature")
        value = self._timestamp_check(stamp, now)
        if isinstance(value, Check):
            return value
        expected = hmac_digest("sha256", secret.encode(), f"{value}.".encode() + delivery.body).hex()
        # In the header's order, as stripe compares them: the first that matches settles it, and
        # one with a character that is not ASCII before it makes hmac.compare_digest raise.
        for given in signatures:
            if not given.isascii():
                return Check(Signature.INVALID, f"malformed Stripe-Signature header: v1 signature {quoted(given[:40])} "
                                                "is not ASCII")
            if self._matches(expected.encode(), [_text(given)]).signature is Signature.VALID:
                return Check(Signature.VALID)
        return self._matches(expected.encode(), [])

    def sign(self, delivery: Delivery, secret: str, now: float) -> Headers:
        return self.sign_with_each(delivery, [secret], now)

    def sign_with_each(self, delivery: Delivery, secrets: Sequence[str], now: float) -> Headers:
        _signable(self, delivery)
        stamp = timestamp_text(now)
        signatures = dict.fromkeys(hmac_digest("sha256", s.encode(), f"{stamp}.".encode() + delivery.body).hex()
                                   for s in secrets)
        return delivery.headers.with_set("Stripe-Signature", f"t={stamp}," + ",".join(f"v1={s}" for s in signatures))


def _payload(form: dict[str, str]) -> Any:
    """The JSON of a form's ``payload`` field (Slack's interactions, GitHub's form hooks), or None."""
    return Delivery("POST", "", Headers(), form["payload"].encode()).json()


class GitHub(Provider):
    name = "github"
    title = "GitHub"
    secret_env = "GITHUB_WEBHOOK_SECRET"
    signature_headers = ("X-Hub-Signature-256", "X-Hub-Signature")

    def detects(self, delivery: Delivery) -> bool:
        return delivery.header("x-github-event") is not None or self.signed(delivery)

    def event_type(self, delivery: Delivery) -> str | None:
        event = delivery.header("x-github-event")
        if not event:
            return None
        data = delivery.json()
        if data is None and "payload" in (form := dict(delivery.form())):
            # A hook of content type application/x-www-form-urlencoded: the JSON in the field payload.
            data = _payload(form)
        action = json_field(data, "action")
        return f"{event}.{action}" if action else event

    def delivery_id(self, delivery: Delivery) -> str | None:
        return delivery.header("x-github-delivery")

    def signed(self, delivery: Delivery) -> bool:
        # GitHub Enterprise Server before 3.0 sends only the SHA-1 header.
        return any(delivery.header(name) is not None for name in self.signature_headers)

    def readings(self, delivery: Delivery) -> list[tuple[str, Delivery]]:
        # GitHub sends both headers; a receiver written for the SHA-1 one reads only that.
        found = super().readings(delivery)
        if delivery.header("x-hub-signature-256") is None or delivery.header("x-hub-signature") is None:
            return found
        sha1 = Delivery(delivery.method, delivery.url, delivery.headers.without("X-Hub-Signature-256"), delivery.body)
        return [found[0] if found else ("X-Hub-Signature-256", delivery), ("X-Hub-Signature", sha1), *found[1:]]

    def check(self, delivery: Delivery, secret: str, now: float) -> Check:
        name, algorithm = "X-Hub-Signature-256", "sha256"
        header = delivery.header(name)
        if header is None and delivery.header("x-hub-signature") is not None:
            name, algorithm, header = "X-Hub-Signature", "sha1", delivery.header("x-hub-signature")
        given, sep, digest = (header or "").partition("=")
        if not (sep and given == algorithm and _unhex(digest) is not None):
            return Check(Signature.INVALID, f"malformed {name} header (expected {algorithm}=HEX)")
        return self._matches(hmac_digest(algorithm, secret.encode(), delivery.body).hex().encode(), [_text(digest)])

    def sign(self, delivery: Delivery, secret: str, now: float) -> Headers:
        # The headers a delivery was sent with are kept (GitHub Enterprise Server before 3.0 sends
        # the SHA-1 one alone); one that carries neither (a sample made fresh) gets both, SHA-1
        # first, as github.com sends them: a receiver may read either.
        headers = delivery.headers
        sha256 = "x-hub-signature-256" in headers
        sha1 = "x-hub-signature" in headers or not sha256
        if sha1:
            headers = headers.with_set(
                "X-Hub-Signature", "sha1=" + hmac_digest("sha1", secret.encode(), delivery.body).hex())
        if sha256 or "x-hub-signature" not in delivery.headers:
            headers = headers.with_set(
                "X-Hub-Signature-256", "sha256=" + hmac_digest("sha256", secret.encode(), delivery.body).hex())
        return headers


class Slack(Provider):
    name = "slack"
    title = "Slack"
    secret_env = "SLACK_SIGNING_SECRET"
    signature_headers = ("X-Slack-Signature", "X-Slack-Request-Timestamp")
    tolerance = DEFAULT_TOLERANCE
    text_body = True  # SignatureVerifier decodes a body given as bytes as UTF-8

    def detects(self, delivery: Delivery) -> bool:
        return self.signed(delivery) or delivery.header("x-slack-request-timestamp") is not None

    def event_type(self, delivery: Delivery) -> str | None:
        data = delivery.json()
        if data is not None:
            return json_field(data, "event.type") or json_field(data, "type")
        form = dict(delivery.form())
        if "command" in form:
            return form["command"]
        if "payload" in form:  # interactivity: a JSON payload in a form field
            return json_field(_payload(form), "type")
        return None

    def delivery_id(self, delivery: Delivery) -> str | None:
        data = delivery.json()
        if data is not None:
            return json_field(data, "event_id")
        # A slash command or an interaction (a form) has no event id; its trigger id is new for
        # each one, as the id of a delivery is.
        form = dict(delivery.form())
        if "payload" in form:
            return json_field(_payload(form), "trigger_id")
        return form.get("trigger_id") or None

    def read_timestamp(self, text: str) -> tuple[float, str] | None:
        # slack_sdk judges the age of int(header) and signs the header's text as it is.
        try:
            return int(text), text
        except ValueError:
            return None

    def signed_timestamp(self, delivery: Delivery) -> str | None:
        return delivery.header("x-slack-request-timestamp")

    def check(self, delivery: Delivery, secret: str, now: float) -> Check:
        header = delivery.header("x-slack-signature") or ""
        version, sep, digest = header.partition("=")
        if not (sep and version == "v0" and _unhex(digest) is not None):
            return Check(Signature.INVALID, "malformed X-Slack-Signature header (expected v0=HEX)")
        stamp = self._timestamp_check(delivery.header("x-slack-request-timestamp"), now)
        if isinstance(stamp, Check):
            return stamp
        return self._matches(self._digest(secret, stamp, delivery.body).hex().encode(),  # the text as sent
                             [_text(digest)])

    def sign(self, delivery: Delivery, secret: str, now: float) -> Headers:
        _signable(self, delivery)
        headers, stamp = stamped(delivery.headers, "X-Slack-Request-Timestamp", now)
        return headers.with_set("X-Slack-Signature", f"v0={self._digest(secret, stamp, delivery.body).hex()}")

    @staticmethod
    def _digest(secret: str, stamp: str, body: bytes) -> bytes:
        """Slack's signature of ``body`` at the timestamp header's text ``stamp``, as sent (not
        read as a number and written again: slack_sdk signs the header's text)."""
        return hmac_digest("sha256", secret.encode(), f"v0:{stamp}:".encode() + body)


class Shopify(Provider):
    name = "shopify"
    title = "Shopify"
    secret_env = "SHOPIFY_WEBHOOK_SECRET"
    signature_headers = ("X-Shopify-Hmac-Sha256",)

    def detects(self, delivery: Delivery) -> bool:
        return self.signed(delivery) or delivery.header("x-shopify-topic") is not None

    def event_type(self, delivery: Delivery) -> str | None:
        return delivery.header("x-shopify-topic")

    def delivery_id(self, delivery: Delivery) -> str | None:
        return delivery.header("x-shopify-webhook-id")

    def check(self, delivery: Delivery, secret: str, now: float) -> Check:
        given = delivery.header("x-shopify-hmac-sha256") or ""
        if _unb64(given) is None:
            return Check(Signature.INVALID, "malformed X-Shopify-Hmac-Sha256 header (expected base64)")
        return self._matches(_b64(hmac_digest("sha256", secret.encode(), delivery.body)).encode(), [_text(given)])

    def sign(self, delivery: Delivery, secret: str, now: float) -> Headers:
        return delivery.headers.with_set(
            "X-Shopify-Hmac-Sha256", _b64(hmac_digest("sha256", secret.encode(), delivery.body)))


_SVIX = ("svix-id", "svix-timestamp", "svix-signature")
"""Svix's names of the Standard Webhooks headers."""


class StandardWebhooks(Provider):
    """Standard Webhooks, as Svix and the providers built on it send them (``webhook-*`` or ``svix-*``)."""

    name = "standard"
    title = "Standard Webhooks"
    secret_env = "WEBHOOK_SECRET"
    signature_headers = ("webhook-signature", "webhook-timestamp", "svix-signature", "svix-timestamp")
    tolerance = DEFAULT_TOLERANCE

    @staticmethod
    def _name(delivery: Delivery, part: str) -> str:
        """The header that carries ``part`` (``id``, ``timestamp``, ``signature``), as svix reads
        them: ``svix-PART`` where the delivery has it, else ``webhook-PART`` (all standardwebhooks
        reads; the two agree on every delivery it can read). Where neither is there, the name of
        the delivery's family: ``svix-`` when it carries any of those headers."""
        for name in (f"svix-{part}", f"webhook-{part}"):
            if delivery.header(name) is not None:
                return name
        svix = any(delivery.header(f"svix-{p}") is not None for p in ("id", "timestamp", "signature"))
        return f"{'svix' if svix else 'webhook'}-{part}"

    def signed(self, delivery: Delivery) -> bool:
        return delivery.header(self._name(delivery, "signature")) is not None

    def readings(self, delivery: Delivery) -> list[tuple[str, Delivery]]:
        # svix reads svix-* first; standardwebhooks reads webhook-* alone.
        found = super().readings(delivery)
        if delivery.header("svix-signature") is None or delivery.header("webhook-signature") is None:
            return found
        webhook = Delivery(delivery.method, delivery.url, delivery.headers.without(*_SVIX), delivery.body)
        return [found[0] if found else ("svix-signature", delivery), ("webhook-signature", webhook), *found[1:]]

    def detects(self, delivery: Delivery) -> bool:
        return self.signed(delivery) or (delivery.header(self._name(delivery, "id")) is not None
                                         and delivery.header(self._name(delivery, "timestamp")) is not None)

    def event_type(self, delivery: Delivery) -> str | None:
        return json_field(delivery.json(), "type")

    def delivery_id(self, delivery: Delivery) -> str | None:
        return delivery.header(self._name(delivery, "id"))

    @staticmethod
    def _key(secret: str) -> bytes:
        # As standardwebhooks (and svix) make the key: whsec_ taken off, "==" added, and what
        # base64 does not spell passed over (a secret with extra padding, a space or a character
        # of another alphabet is the key that library makes of it, not refused).
        try:
            raw = base64.b64decode(secret.removeprefix("whsec_") + "==")
        except (binascii.Error, ValueError):
            raw = b""
        if not raw:
            raise SignatureError("a Standard Webhooks secret is whsec_ followed by base64")
        return raw

    def secret_problem(self, secret: str) -> str | None:
        try:
            self._key(secret)
        except SignatureError:
            return f"the secret for {self.title} is not whsec_ followed by base64"
        return None

    def read_timestamp(self, text: str) -> tuple[float, str] | None:
        # standardwebhooks (and svix, which calls it) reads the header with float() into a
        # datetime, judges that moment's age and signs its whole seconds: "+1.7e9", " 17_0"
        # and a fraction are read, "nan" and a year past 9999 refused.
        try:
            moment = datetime.fromtimestamp(float(text), tz=timezone.utc).timestamp()
        except (ValueError, OverflowError, OSError):
            return None
        return moment, str(math.floor(moment))

    def signed_timestamp(self, delivery: Delivery) -> str | None:
        return delivery.header(self._name(delivery, "timestamp"))

    def check(self, delivery: Delivery, secret: str, now: float) -> Check:
        id_name, signature_name = self._name(delivery, "id"), self._name(delivery, "signature")
        msg_id = delivery.header(id_name)
        if not msg_id:
            return Check(Signature.INVALID, f"missing {id_name} header")
        value = self._timestamp_check(delivery.header(self._name(delivery, "timestamp")), now)
        if isinstance(value, Check):
            return value
        # As standardwebhooks reads it: signatures between single spaces, each compared as the
        # text "v1,BASE64"; another scheme's (v1a,...) or a malformed one is passed over.
        items = (delivery.header(signature_name) or "").split(" ")
        given = [_text(item) for item in items if item.startswith("v1,")]
        if not given:
            if any(item.partition(",")[1] == "" or _unb64(item.partition(",")[2]) is None for item in items):
                return Check(Signature.INVALID, f"malformed {signature_name} header (expected v1,BASE64)")
            return Check(Signature.INVALID, f"malformed {signature_name} header: no v1 signature")
        expected = hmac_digest("sha256", self._key(secret), f"{msg_id}.{value}.".encode() + delivery.body)
        return self._matches(("v1," + _b64(expected)).encode(), given)

    def sign(self, delivery: Delivery, secret: str, now: float) -> Headers:
        return self.sign_with_each(delivery, [secret], now)

    def sign_with_each(self, delivery: Delivery, secrets: Sequence[str], now: float) -> Headers:
        # Where a delivery carries both families (svix-* and webhook-*), each is signed afresh:
        # svix reads the one, standardwebhooks the other, and a stale one beside a fresh one
        # would be refused by a receiver reading it.
        both = all(delivery.header(f"{f}-signature") is not None for f in ("svix", "webhook"))
        names = ([[f"{f}-{part}" for part in ("id", "timestamp", "signature")] for f in ("svix", "webhook")] if both
                 else [[self._name(delivery, part) for part in ("id", "timestamp", "signature")]])
        headers = delivery.headers
        for id_name, stamp_name, signature_name in names:
            headers = self._signed(Delivery(delivery.method, delivery.url, headers, delivery.body),
                                   secrets, now, id_name, stamp_name, signature_name)
        return headers

    def _signed(self, delivery: Delivery, secrets: Sequence[str], now: float,
                id_name: str, stamp_name: str, signature_name: str) -> Headers:
        msg_id = delivery.header(id_name)
        if not msg_id:
            raise SignatureError(f"a Standard Webhooks delivery needs a {id_name} header to be signed")
        headers, stamp = stamped(delivery.headers, stamp_name, now)
        usable = [secrets[0], *(s for s in secrets[1:] if self.secret_problem(s) is None)]  # the first's problem raises
        signatures = dict.fromkeys(
            "v1," + _b64(hmac_digest("sha256", self._key(s), f"{msg_id}.{stamp}.".encode() + delivery.body))
            for s in usable)
        return headers.with_set(signature_name, " ".join(signatures))


class Twilio(Provider):
    """Twilio signs the URL it called: replays are signed for the URL they are sent with.

    With the account's Auth Token it signs with HMAC-SHA1; with a SharedKey, the request says so
    in ``X-Twilio-Webhooks-Signature-Settings: key=...,algorithm=HMAC_SHA256`` (what twilio's
    ``RequestValidator`` reads with ``get_signature_algorithm``), and the key is the secret.
    """

    name = "twilio"
    title = "Twilio"
    secret_env = "TWILIO_AUTH_TOKEN"
    signature_headers = ("X-Twilio-Signature",)

    def detects(self, delivery: Delivery) -> bool:
        return self.signed(delivery) or delivery.header("i-twilio-idempotency-token") is not None

    def event_type(self, delivery: Delivery) -> str | None:
        """Twilio's webhooks name no event: the form's ``EventType`` where the product sends one
        (Conversations, TaskRouter), else ``sms.received`` from an incoming message's (or a status
        callback's) ``SmsStatus``, ``call.ringing`` from a call's ``CallStatus``."""
        form = dict(delivery.form())
        if form.get("EventType"):
            return form["EventType"]
        if form.get("SmsStatus"):
            return f"sms.{form['SmsStatus']}"
        if form.get("CallStatus"):
            return f"call.{form['CallStatus']}"
        return None

    def delivery_id(self, delivery: Delivery) -> str | None:
        return delivery.header("i-twilio-idempotency-token")

    @staticmethod
    def _algorithm(delivery: Delivery) -> tuple[str | None, str]:
        """The hash the delivery says it was signed with (``sha1`` without a settings header),
        or None for one Twilio does not name, and the name it gave."""
        for part in (delivery.header("x-twilio-webhooks-signature-settings") or "").split(","):
            key, sep, value = part.partition("=")
            if sep and key.strip() == "algorithm" and value.strip():
                name = value.strip()
                return _TWILIO_ALGORITHMS.get(name.upper()), name
        return "sha1", "HMAC_SHA1"

    @staticmethod
    def _content(delivery: Delivery, url: str | None = None) -> bytes:
        """What Twilio signs: the URL (``url``, else the delivery's), then for a form body each
        parameter's name and value, sorted, a pair sent twice counted once (as twilio's
        ``RequestValidator`` does)."""
        url = delivery.url if url is None else url
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        if "bodySHA256" in query:  # a JSON body: the URL carries the body's hash and alone is signed
            return url.encode()
        params = sorted(set(delivery.form()))
        return (url + "".join(k + v for k, v in params)).encode()

    @staticmethod
    def _spellings(url: str) -> list[str]:
        """``url`` and the spellings of it twilio's ``RequestValidator`` also accepts a signature
        for, Twilio being inconsistent about ports: without its port, and with the scheme's default
        port when it has none."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            return [url]
        if port:
            other = parts._replace(netloc=parts.netloc.split(":")[0]).geturl()
        else:
            other = parts._replace(netloc=f"{parts.netloc}:{443 if parts.scheme == 'https' else 80}").geturl()
        return [url, other]

    def check(self, delivery: Delivery, secret: str, now: float) -> Check:
        given = delivery.header("x-twilio-signature") or ""
        if _unb64(given) is None:
            return Check(Signature.INVALID, "malformed X-Twilio-Signature header (expected base64)")
        query = dict(parse_qsl(urlsplit(delivery.url).query, keep_blank_values=True))
        if "bodySHA256" in query and query["bodySHA256"] != hashlib.sha256(delivery.body).hexdigest():
            return Check(Signature.INVALID, "the body does not match the bodySHA256 in the URL: altered body")
        algorithm, algorithm_name = self._algorithm(delivery)
        if algorithm is None:
            return Check(Signature.INVALID, f"unknown signature algorithm {quoted(algorithm_name[:40])} in "
                                            "X-Twilio-Webhooks-Signature-Settings (expected HMAC_SHA1 or HMAC_SHA256)")
        for url in self._spellings(delivery.url):
            check = self._matches(_b64(hmac_digest(algorithm, secret.encode(), self._content(delivery, url))).encode(),
                                  [_text(given)])
            if check.signature is Signature.VALID:
                return check
        if check.signature is Signature.INVALID:
            return Check(Signature.INVALID, "signature does not match: wrong token, altered body, or another URL "
                                            f"({delivery.url})")
        return check

    def sign(self, delivery: Delivery, secret: str, now: float) -> Headers:
        parts = urlsplit(delivery.url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if any(k == "bodySHA256" for k, _ in query) and dict(query)["bodySHA256"] != hashlib.sha256(delivery.body).hexdigest():
            raise SignatureError("this Twilio request carries bodySHA256 in its URL: an edited body needs a new URL")
        algorithm, algorithm_name = self._algorithm(delivery)
        if algorithm is None:
            raise SignatureError(f"X-Twilio-Webhooks-Signature-Settings names an unknown algorithm, "
                                 f"{quoted(algorithm_name[:40])}")
        digest = hmac_digest(algorithm, secret.encode(), self._content(delivery))
        return delivery.headers.with_set("X-Twilio-Signature", _b64(digest))
