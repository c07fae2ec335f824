"""What every webhook provider is made of: a delivery in, a verdict or fresh signature headers out.

A :class:`Provider` describes itself (its name, the variable its secret lives in, the headers that
carry its signature) and knows four things about a :class:`Delivery`: whether it is one of its own,
its event type, its delivery id, and whether its signature holds for a secret. It can also sign a
delivery again, with a fresh timestamp where its scheme has one, keeping the delivery id.

Pure: no clock (``now`` is passed in), no environment (secrets are passed in), no IO.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl

from devtunnel.capture.model import Headers
from devtunnel.capture.verdict import Signature, Verdict, no_secret
from devtunnel.values.media import is_form
from devtunnel.values.numbers import is_decimal
from devtunnel.values.terminal import quoted

__all__ = ["Delivery", "Signature", "Check", "Verdict", "Provider", "SignatureError", "hmac_digest", "json_field",
           "stamped", "timestamp_text"]

DEFAULT_TOLERANCE = 300.0
"""Seconds a signed timestamp may differ from the moment of delivery (Stripe's, Slack's, Svix's)."""


MAX_TIMESTAMP_DIGITS = 15
"""Digits a signed timestamp has at most: seconds since the epoch have 10 until the year 2286,
so 15 still lets a timestamp in milliseconds be judged (as far in the future) rather than called
malformed; more is no timestamp (and a few hundred digits are no float to compare with now)."""


MAX_READINGS = 4
"""Readings of a signature judged at most (``Provider.readings``): a sender repeating a signature
header a thousand times costs a thousand HMACs no more."""

_ORDINALS = ("first", "second", "third", "fourth")


def _ordinal(index: int) -> str:
    """``second`` for 1: the ordinal of a header's value, counted from 0."""
    return _ORDINALS[index] if index < len(_ORDINALS) else f"{index + 1}th"


def timestamp_seconds(text: str) -> int | None:
    """The seconds since the epoch that a signature's timestamp (Stripe's ``t=``, Slack's
    X-Slack-Request-Timestamp, Standard Webhooks' webhook-timestamp, a custom scheme's header)
    says, or None when it is not 1 to ``MAX_TIMESTAMP_DIGITS`` ASCII digits.

    ``int()`` alone also takes a sign, ``_`` between digits, surrounding whitespace and the
    digits of every script (``١٢٣``): a sender signs one spelling of a number, and such a value
    was judged as a number, with "outside the tolerance" for a reason.
    """
    if not 0 < len(text) <= MAX_TIMESTAMP_DIGITS or not is_decimal(text):
        return None
    return int(text)


def timestamp_text(now: float) -> str:
    """A fresh signature timestamp: the whole seconds of ``now`` since the epoch, as ASCII digits."""
    return str(int(now))


def stamped(headers: Headers, name: str, now: float) -> tuple[Headers, str]:
    """``headers`` with the timestamp header ``name`` set afresh (``timestamp_text``), and the
    text that header holds: the one a scheme that signs its timestamp header's text (Slack's
    ``v0:TIMESTAMP:BODY``, a custom template's ``{timestamp}``) puts in what it signs. Re-signing
    makes both here, from one value, so the header sent and the text signed cannot differ."""
    text = timestamp_text(now)
    return headers.with_set(name, text), text


class SignatureError(ValueError):
    """A delivery cannot be signed as asked (a secret in the wrong form, a header the scheme needs)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """The parts of a request a signature covers.

    Attributes:
        method: the request method.
        url: the URL the sender called (``https://hooks.example.com/twilio?x=1``): only Twilio signs it.
        headers: the request headers as sent.
        body: the whole request body.
    """

    method: str
    url: str
    headers: Headers
    body: bytes
    _parsed: list[Any] = field(default_factory=list, init=False, repr=False, compare=False)
    """The body parsed once: the event type, the delivery id and the signature each read it."""

    def header(self, name: str) -> str | None:
        """The first value of header ``name``, stripped, or None."""
        value = self.headers.get(name)
        return value.strip() if value is not None else None

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON (parsed once; do not change the result)."""
        if not self._parsed:
            try:
                self._parsed.append(json.loads(self.body))
            except (ValueError, UnicodeDecodeError, RecursionError):
                self._parsed.append(None)
        return self._parsed[0]

    def form(self) -> list[tuple[str, str]]:
        """The body as ``application/x-www-form-urlencoded`` pairs (empty when it is not a form)."""
        if not is_form(self.header("content-type")):
            return []
        try:
            return parse_qsl(self.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return []


@dataclass(frozen=True, slots=True)
class Check:
    """A signature's state and, unless valid, why."""

    signature: Signature
    reason: str = ""


def hmac_digest(algorithm: str, key: bytes, message: bytes) -> bytes:
    """HMAC of ``message`` with ``key`` (``algorithm``: sha1, sha256 or sha512)."""
    return hmac.new(key, message, getattr(hashlib, algorithm)).digest()


def json_field(data: Any, path: str) -> str | None:
    """The text at a dotted ``path`` of parsed JSON (``event.type``), or None."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    if data is None or isinstance(data, (dict, list)):
        return None
    return str(data)


def _age_text(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class Provider:
    """One webhook provider's scheme. Subclasses set the class attributes and the methods below."""

    name: str
    """The short name used in filters, config and JSON: ``stripe``."""
    title: str
    """The name people write: ``Stripe``."""
    secret_env: str
    """The environment variable receivers conventionally read the secret from."""
    signature_headers: tuple[str, ...]
    """The headers that carry the signature (and its timestamp): re-signing replaces them."""
    tolerance: float | None = None
    """Seconds a signed timestamp may be off at delivery; None for schemes without a timestamp."""
    refuses_future: bool = True
    """Whether a timestamp more than ``tolerance`` ahead of the delivery is refused too; False for
    a scheme whose own libraries refuse only old ones (Stripe's: a receiver accepts it)."""
    text_body: bool = False
    """Whether the provider's own library reads the body as UTF-8 text before it verifies
    (stripe's ``verify_header``, slack_sdk's ``SignatureVerifier``): a body that is not UTF-8
    is refused by the receiver whatever its signature, so it is judged invalid here too."""
    value_markers: Mapping[str, str] = MappingProxyType({})
    """Headers ``detects`` reads that make a request this provider's only with a certain value, by
    name: text that value must contain (Stripe: a ``User-Agent`` holding ``Stripe/``). The recorder
    does not ask about a request whose only headers of those ``detects`` reads are these and whose
    header values nowhere contain their text (``webhooks.context``). Empty: any header it reads is
    reason to ask."""

    def detects(self, delivery: Delivery) -> bool:
        """True when the delivery comes from this provider (by its headers)."""
        raise NotImplementedError

    def event_type(self, delivery: Delivery) -> str | None:
        """The event's type (``payment_intent.succeeded``), or None."""
        return None

    def delivery_id(self, delivery: Delivery) -> str | None:
        """The id the provider gives this delivery (the same on its own retries), or None."""
        return None

    def signed(self, delivery: Delivery) -> bool:
        """True when the delivery carries this provider's signature header."""
        return delivery.header(self.signature_headers[0]) is not None

    def check(self, delivery: Delivery, secret: str, now: float) -> Check:
        """The signature's state for one secret, at ``now`` (seconds since the epoch)."""
        raise NotImplementedError

    def sign(self, delivery: Delivery, secret: str, now: float) -> Headers:
        """The delivery's headers with a fresh signature made with ``secret`` at ``now``.

        Raises:
            SignatureError: the secret or the delivery cannot make a signature of this scheme.
        """
        raise NotImplementedError

    def sign_with_each(self, delivery: Delivery, secrets: Sequence[str], now: float) -> Headers:
        """The delivery's headers signed with each of ``secrets`` where the scheme carries several
        signatures, as the provider signs during a rotation (Stripe's ``v1=..,v1=..``, Standard
        Webhooks' ``v1,.. v1,..``): a receiver holding any one of them accepts it. Other schemes
        sign with the first.

        Raises:
            SignatureError: as ``sign``, for the first secret.
        """
        return self.sign(delivery, secrets[0], now)

    def secret_problem(self, secret: str) -> str | None:
        """Why ``secret`` cannot be a secret of this scheme, or None when it can."""
        return None

    def body_problem(self, body: bytes) -> str | None:
        """Why the provider's library refuses ``body`` whatever its signature, or None: a body
        that is not UTF-8 where it reads the body as text (``text_body``). Verdicts and
        re-signing both ask here."""
        if not self.text_body:
            return None
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return (f"the body is not UTF-8 (byte {exc.start}): {self.title}'s library reads it as text "
                    "and refuses it, whatever the signature")
        return None

    def signed_timestamp(self, delivery: Delivery) -> str | None:
        """The text of the timestamp the delivery's signature covers, or None (no such scheme, or none given)."""
        return None

    def expired(self, delivery: Delivery, now: float) -> str | None:
        """Why the provider's library refuses the delivery's captured signature at ``now`` for its
        timestamp's age alone (``timestamp outside the tolerance: 2.0 h old (tolerance 300 s)``),
        whatever the secret; None when the scheme has no timestamp or it is still within the
        tolerance (or unreadable: that is no matter of time). What an export that sends the
        captured signature again has to say."""
        stamp = self.signed_timestamp(delivery)
        if self.tolerance is None or stamp is None:
            return None
        check = self._timestamp_check(stamp, now)
        if isinstance(check, Check) and check.reason.startswith("timestamp outside the tolerance"):
            return check.reason
        return None

    def read_timestamp(self, text: str) -> tuple[float, str] | None:
        """What a signature's timestamp says, read as the provider's own library reads it: the
        seconds since the epoch judged against the tolerance, and the text that is signed; or
        None where that library refuses it (malformed). Here, for a scheme with no library (a
        custom one): 1 to ``MAX_TIMESTAMP_DIGITS`` ASCII digits, signed as sent."""
        value = timestamp_seconds(text)
        return None if value is None else (value, text)

    def verify(self, delivery: Delivery, secrets: Sequence[str], now: float) -> Check:
        """The signature's state against every known secret (any one may match: rotation)."""
        if not self.signed(delivery):
            return Check(Signature.UNSIGNED, f"no {self.signature_headers[0]} header")
        if not secrets:
            return Check(Signature.UNVERIFIED, no_secret(self.secret_env))
        problem = next((p for p in map(self.secret_problem, secrets) if p), None)
        if problem:
            return Check(Signature.UNVERIFIED, problem)
        problem = self.body_problem(delivery.body)
        if problem:
            return Check(Signature.INVALID, problem)
        first: Check | None = None
        for secret in secrets:
            check = self.check(delivery, secret, now)
            if check.signature is Signature.VALID:
                return check
            first = first or check
        assert first is not None
        return first

    def readings(self, delivery: Delivery) -> list[tuple[str, Delivery]]:
        """The ways receivers may read the delivery's signature, each named, when there are
        several; else empty. The first is what ``check`` judges (the first value of each
        signature header); then each other value of a signature header sent more than once
        (``the second Stripe-Signature header``), at most ``MAX_READINGS`` in all: a framework
        hands a receiver the first value of a repeated header, another the last. A scheme whose
        deliveries carry other headers a receiver may read instead adds those (GitHub's SHA-1)."""
        repeated: list[tuple[str, list[bytes]]] = []
        for name in self.signature_headers:
            key = name.lower().encode("latin-1")
            values = [v for n, v in delivery.headers.fields if n.lower() == key]
            if len(values) > 1:
                repeated.append((name, values))
        if not repeated:
            return []
        first = f"the first {' and '.join(name for name, _ in repeated)} header{'s' if len(repeated) > 1 else ''}"
        found = [(first, delivery)]
        for name, values in repeated:
            for i, value in enumerate(values[1:], 1):
                found.append((f"the {_ordinal(i)} {name} header",
                              Delivery(delivery.method, delivery.url, delivery.headers.with_set(name, value),
                                       delivery.body)))
        return found

    def verdict(self, delivery: Delivery, secrets: Sequence[str], now: float, *, complete: bool = True) -> Verdict:
        """The whole verdict; ``complete=False`` when the body was recorded only in part.

        A delivery whose signature receivers may read in several ways (``readings``: a signature
        header sent twice) is judged each way: where they disagree it is invalid (a receiver
        reading the other refuses it) and the reason says how each fared."""
        if complete:
            check = self.verify(delivery, secrets, now)
            if check.signature in (Signature.VALID, Signature.INVALID):
                check = self._judge_readings(delivery, secrets, now, check)
        elif not self.signed(delivery):
            check = Check(Signature.UNSIGNED, f"no {self.signature_headers[0]} header")
        else:
            check = Check(Signature.UNVERIFIED, "the body was recorded only in part (over --body-cap, or answered before all of it came)")
        return Verdict(self.name, self.event_type(delivery), self.delivery_id(delivery), check.signature, check.reason)

    def _judge_readings(self, delivery: Delivery, secrets: Sequence[str], now: float, check: Check) -> Check:
        readings = self.readings(delivery)
        if not readings:
            return check
        judged = [(readings[0][0], check)]
        judged += [(label, self.verify(other, secrets, now)) for label, other in readings[1:MAX_READINGS]]
        left = len(readings) - len(judged)
        more = f"; {left} more not judged" if left else ""
        if all((c.signature, c.reason) == (check.signature, check.reason) for _, c in judged):
            if not any(len(delivery.headers.get_all(name)) > 1 for name in self.signature_headers):
                return check  # GitHub's two headers, alike: as GitHub sends every delivery
            alike = f"judged alike: {', '.join(label for label, _ in judged)}{more}"
            return Check(check.signature, f"{check.reason}; {alike}" if check.reason else alike)
        each = "; ".join(f"{label} {c.signature.value}" + (f" ({c.reason})" if c.reason else "") for label, c in judged)
        state = check.signature if all(c.signature is check.signature for _, c in judged) else Signature.INVALID
        return Check(state, f"receivers differ on which signature they read: {each}{more}")

    # Helpers for the subclasses ---------------------------------------------------------------

    def _timestamp_check(self, stamp: str | None, now: float) -> Check | str:
        """The text of the timestamp that is signed (``read_timestamp``), or the Check that refuses it."""
        if not stamp:
            return Check(Signature.INVALID, "missing timestamp")
        read = self.read_timestamp(stamp)
        if read is None:
            return Check(Signature.INVALID, f"malformed timestamp {quoted(stamp[:40])}")
        value, signed = read
        tolerance = self.tolerance if self.tolerance is not None else DEFAULT_TOLERANCE
        # Compared, not subtracted: a timestamp of hundreds of digits is an int no float holds.
        old, ahead = value < now - tolerance, value > now + tolerance
        if old or (ahead and self.refuses_future):
            try:
                age = _age_text(float(now - value))
            except OverflowError:
                age = "centuries"
            return Check(Signature.INVALID, f"timestamp outside the tolerance: {age} {'old' if old else 'in the future'} "
                                            f"(tolerance {tolerance:.0f} s)")
        return signed

    @staticmethod
    def _matches(expected: bytes, given: Sequence[bytes]) -> Check:
        if any(hmac.compare_digest(expected, g) for g in given):
            return Check(Signature.VALID)
        return Check(Signature.INVALID, "signature does not match: wrong secret or altered body")
