"""Differential tests: devtunnel's verdict on odd deliveries against the providers' own libraries.

For every provider devtunnel knows by name (``devtunnel.webhooks.BUILTIN``), deliveries that are
odd in one way each (a timestamp written as ``int()`` or ``float()`` also reads it, an empty or
non-UTF-8 body, several signatures in one header, an item the library cannot read, upper-case
header names, a huge header, an old timestamp) are judged by the library a receiver verifies with
and by devtunnel's recorder path (``webhooks.judge`` on a captured request): the two agree on
valid or not, case by case. Stripe with ``stripe``, Slack with ``slack_sdk``, Standard Webhooks
with ``standardwebhooks`` and ``svix``, Twilio with ``twilio``; GitHub and Shopify, which ship no
Python verifier, with the checks their documentation gives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import slack_sdk.signature
import standardwebhooks
import stripe
import svix.webhooks
from twilio.request_validator import RequestValidator, get_signature_algorithm

from devtunnel.capture.model import Headers, Request
from devtunnel.webhooks import BUILTIN, Delivery, Signature, by_name, judge

URL = "https://hooks.example.com/hook"
STRIPE_SECRET = "whsec_differential_0123456789"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"differential-standard-key-32byte").decode()
GITHUB_SECRET = "It's a Secret to Everybody"
SHOPIFY_SECRET = "shpss_differential"
TWILIO_SECRET = "differential-twilio-token"
JSON = b'{"id": "evt_1", "object": "event", "type": "invoice.paid", "action": "opened"}'
NOT_UTF8 = b'{"id": "evt_1", "name": "Ren\xe9"}'  # Latin-1
ARABIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")

Case = tuple[bytes, list[tuple[str, str]]]
"""A delivery: its body and its headers."""


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    """The value a web framework gives a receiver: the first of that name, in any case, stripped."""
    return next((v.strip() for k, v in headers if k.lower() == name.lower()), None)


def _lowered(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in headers:
        out.setdefault(k.lower(), v.strip())
    return out


# The receivers: each library as a receiver calls it; any exception is a refusal --------------


def _stripe(body: bytes, headers: Sequence[tuple[str, str]]) -> None:
    stripe.WebhookSignature.verify_header(body, _header(headers, "stripe-signature"), STRIPE_SECRET, 300)


def _slack(body: bytes, headers: Sequence[tuple[str, str]]) -> None:
    assert slack_sdk.signature.SignatureVerifier(SLACK_SECRET).is_valid_request(body, _lowered(headers))


def _standard(body: bytes, headers: Sequence[tuple[str, str]]) -> None:
    # The signature alone: json_parse would refuse an empty body as no JSON, a question for the receiver.
    standardwebhooks.Webhook(STANDARD_SECRET).verify(body, _lowered(headers), json_parse=False)


def _svix(body: bytes, headers: Sequence[tuple[str, str]]) -> None:
    svix.webhooks.Webhook(STANDARD_SECRET).verify(body, _lowered(headers))


def _github(body: bytes, headers: Sequence[tuple[str, str]]) -> None:
    # docs.github.com, "Validating webhook deliveries" (Python).
    expected = "sha256=" + hmac.new(GITHUB_SECRET.encode("utf-8"), msg=body, digestmod=hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, _header(headers, "x-hub-signature-256") or "")


def _shopify(body: bytes, headers: Sequence[tuple[str, str]]) -> None:
    # shopify.dev, "Verify webhooks" (Python).
    computed = base64.b64encode(hmac.new(SHOPIFY_SECRET.encode("utf-8"), body, hashlib.sha256).digest())
    assert hmac.compare_digest(computed, (_header(headers, "x-shopify-hmac-sha256") or "").encode("utf-8"))


def _twilio(body: bytes, headers: Sequence[tuple[str, str]]) -> None:
    params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    algorithm = get_signature_algorithm(_header(headers, "x-twilio-webhooks-signature-settings"))
    assert RequestValidator(TWILIO_SECRET).validate(URL, params, _header(headers, "x-twilio-signature") or "", algorithm)


def _accepts(library: Callable[[bytes, Sequence[tuple[str, str]]], None], case: Case) -> bool:
    try:
        library(*case)
    except Exception:  # SignatureVerificationError, UnicodeDecodeError, TypeError, ...: the receiver refuses
        return False
    return True


def _ours(provider: str, case: Case, secret: str, *, upper: bool = False) -> Any:
    body, headers = case
    fields = [(k.upper() if upper else k, v) for k, v in headers]
    request = Request(method="POST", target=b"/hook", headers=Headers([("Host", "hooks.example.com"), *fields]),
                      body=body, body_size=len(body))
    verdict = judge(request, scheme="https", now=time.time(), secrets={provider: [secret]})
    assert verdict is not None and verdict.provider == provider, verdict
    return verdict


def _agree(provider: str, library: Callable[[bytes, Sequence[tuple[str, str]]], None], case: Case,
           secret: str) -> bool:
    """Asserts devtunnel's verdict (header names as sent and in upper case) agrees with the library's."""
    theirs = _accepts(library, case)
    for upper in (False, True):
        verdict = _ours(provider, case, secret, upper=upper)
        assert (verdict.signature is Signature.VALID) is theirs, (theirs, verdict)
        if not theirs:
            assert verdict.reason and "\n" not in verdict.reason
    return theirs


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _as_int(text: str) -> str | None:
    try:
        return str(int(text))
    except ValueError:
        return None


def _shown(stamp: str) -> str:
    """A timestamp in a test id: short, its length when cut."""
    return repr(stamp) if len(stamp) <= 16 else f"{stamp[:8]!r}...({len(stamp)})"


def _odd_stamps(t: int) -> list[str]:
    """Timestamps written as some reader of numbers takes them, around ``t`` (now)."""
    return [str(t), f"+{t}", f" {t}", f"{t} ", f"{t}\t", f"{str(t)[:2]}_{str(t)[2:]}", str(t).translate(ARABIC),
            f"0{t}", f"-{t}", f"{t}.0", f"{t}.9", f"{t}e0", f"{t - 3600}", f"+{t - 3600}", "9" * 20, "9" * 400,
            "9" * 5000, "", " ", "nan", "inf", "0x10", "soon", "\u00b2"]


# Stripe -----------------------------------------------------------------------------------------


def _stripe_cases() -> list[tuple[str, Case]]:
    t = int(time.time())
    cases: list[tuple[str, Case]] = []
    for stamp in _odd_stamps(t):
        # Signed over the number as stripe writes it ("%d"), and over the text as it was sent.
        for signed_as in dict.fromkeys([_as_int(stamp), stamp.strip()]):
            if signed_as is None:
                continue
            sig = _hmac_hex(STRIPE_SECRET, f"{signed_as}.".encode() + JSON)
            cases.append((f"t={_shown(stamp)}-signed-as-{_shown(signed_as)}",
                          (JSON, [("Stripe-Signature", f"t={stamp},v1={sig}")])))
    good = _hmac_hex(STRIPE_SECRET, f"{t}.".encode() + JSON)
    for name, header in [
        ("t-without-equals-first", f"t,t={t},v1={good}"),
        ("t-without-equals-after", f"t={t},v1={good},t"),
        ("v1-without-equals", f"t={t},v1,v1={good}"),
        ("v1-without-equals-after", f"t={t},v1={good},v1"),
        ("upper-case-keys", f"T={t},V1={good}"),
        ("non-ascii-signature-first", f"t={t},v1=\u00e9{good[1:]},v1={good}"),
        ("non-ascii-signature-after", f"t={t},v1={good},v1=\u00e9{good[1:]}"),
        ("several-signatures", f"t={t}," + ",".join(f"v1={'0' * 64}" for _ in range(5)) + f",v1={good}"),
        ("two-timestamps", f"t={t},t=1,v1={good}"),
        ("equals-in-value", f"t={t}=5,v1={good}=x"),
        ("spaces-around-items", f"t={t} , v1={good}"),
        ("space-before-v1-value", f"t={t},v1= {good}"),
        ("huge-header", f"t={t}," + ",".join(f"v0={'a' * 64}" for _ in range(2000)) + f",v1={good}"),
        ("empty", ""),
    ]:
        cases.append((name, (JSON, [("Stripe-Signature", header)])))
    for name, body in [("empty-body", b""), ("not-utf-8", NOT_UTF8), ("lone-surrogate-bytes", b'"\xed\xa0\x80"'),
                       ("bom", b"\xef\xbb\xbf" + JSON), ("utf-8", '{"name": "Ren\u00e9 \u2603"}'.encode())]:
        sig = _hmac_hex(STRIPE_SECRET, f"{t}.".encode() + body)
        cases.append((name, (body, [("Stripe-Signature", f"t={t},v1={sig}")])))
    return cases


@pytest.mark.parametrize(("name", "case"), _stripe_cases(), ids=[n for n, _ in _stripe_cases()])
def test_stripe_verdicts_agree_with_stripes_library(name: str, case: Case) -> None:
    _agree("stripe", _stripe, case, STRIPE_SECRET)


def test_stripe_odd_timestamps_are_judged_as_stripe_reads_them() -> None:
    # The forms int() reads are the number to stripe: a signature over "%d" of it is accepted.
    t = int(time.time())
    for stamp in (f"+{t}", f" {t}", f"{str(t)[:2]}_{str(t)[2:]}", "9" * 400):
        sig = _hmac_hex(STRIPE_SECRET, f"{int(stamp)}.".encode() + JSON)
        assert _agree("stripe", _stripe, (JSON, [("Stripe-Signature", f"t={stamp},v1={sig}")]), STRIPE_SECRET), stamp
    # ... and a signature over the text as written is not.
    sig = _hmac_hex(STRIPE_SECRET, f"+{t}.".encode() + JSON)
    assert not _agree("stripe", _stripe, (JSON, [("Stripe-Signature", f"t=+{t},v1={sig}")]), STRIPE_SECRET)


def test_stripe_a_body_that_is_not_utf8_is_invalid_with_the_reason() -> None:
    t = int(time.time())
    case = (NOT_UTF8, [("Stripe-Signature", f"t={t},v1={_hmac_hex(STRIPE_SECRET, f'{t}.'.encode() + NOT_UTF8)}")])
    assert not _agree("stripe", _stripe, case, STRIPE_SECRET)
    assert _ours("stripe", case, STRIPE_SECRET).reason == (
        "the body is not UTF-8 (byte 28): Stripe's library reads it as text and refuses it, whatever the signature")


# Slack ------------------------------------------------------------------------------------------


def _slack_cases() -> list[tuple[str, Case]]:
    t = int(time.time())
    form = b"token=x&team_id=T1&command=%2Fdeploy&text=prod"
    cases: list[tuple[str, Case]] = []
    for stamp in _odd_stamps(t):
        for signed_as in dict.fromkeys([stamp.strip(), _as_int(stamp)]):
            if signed_as is None:
                continue
            sig = "v0=" + _hmac_hex(SLACK_SECRET, f"v0:{signed_as}:".encode() + form)
            cases.append((f"ts={_shown(stamp)}-signed-as-{_shown(signed_as)}",
                          (form, [("X-Slack-Request-Timestamp", stamp), ("X-Slack-Signature", sig)])))
    good = "v0=" + _hmac_hex(SLACK_SECRET, f"v0:{t}:".encode() + form)
    for name, signature in [("upper-hex", good.upper()), ("upper-version", "V0=" + good[3:]),
                            ("two-signatures", f"{good},{good}"), ("space-inside", "v0= " + good[3:]),
                            ("non-ascii", good[:-1] + "\u00e9"), ("huge", good + "0" * 20000), ("empty", "")]:
        cases.append((name, (form, [("X-Slack-Request-Timestamp", str(t)), ("X-Slack-Signature", signature)])))
    for name, body in [("empty-body", b""), ("not-utf-8", NOT_UTF8), ("json", JSON)]:
        sig = "v0=" + _hmac_hex(SLACK_SECRET, f"v0:{t}:".encode() + body)
        cases.append((name, (body, [("X-Slack-Request-Timestamp", str(t)), ("X-Slack-Signature", sig)])))
    return cases


@pytest.mark.parametrize(("name", "case"), _slack_cases(), ids=[n for n, _ in _slack_cases()])
def test_slack_verdicts_agree_with_slack_sdk(name: str, case: Case) -> None:
    _agree("slack", _slack, case, SLACK_SECRET)


# Standard Webhooks and Svix ---------------------------------------------------------------------


def _standard_sign(msg_id: str, stamp_text: str, body: bytes, secret: str = STANDARD_SECRET) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return "v1," + base64.b64encode(hmac.new(key, f"{msg_id}.{stamp_text}.".encode() + body, hashlib.sha256).digest()).decode()


def _as_float_seconds(text: str) -> str | None:
    try:
        return str(int(datetime.fromtimestamp(float(text), tz=timezone.utc).timestamp() // 1))
    except (ValueError, OverflowError, OSError):
        return None


def _standard_cases(prefix: str) -> list[tuple[str, Case]]:
    t = int(time.time())
    cases: list[tuple[str, Case]] = []
    for stamp in _odd_stamps(t):
        for signed_as in dict.fromkeys([_as_float_seconds(stamp), stamp.strip()]):
            if signed_as is None:
                continue
            cases.append((f"ts={_shown(stamp)}-signed-as-{_shown(signed_as)}",
                          (JSON, [(f"{prefix}-id", "msg_1"), (f"{prefix}-timestamp", stamp),
                                  (f"{prefix}-signature", _standard_sign("msg_1", signed_as, JSON))])))
    good = _standard_sign("msg_1", str(t), JSON)
    for name, signature in [("several", f"v1,AAAA v1a,c2ln {good}"), ("double-space", f"v1,AAAA  {good}"),
                            ("tab-separated", f"v1,AAAA\t{good}"), ("comma-separated", f"v1,AAAA,{good}"),
                            ("upper-version", "V1" + good[2:]), ("non-ascii-first", f"v1,\u00e9 {good}"),
                            ("huge", " ".join(["v1,AAAA"] * 5000) + f" {good}"), ("unreadable-only", "v1,@@@"),
                            ("empty", "")]:
        cases.append((name, (JSON, [(f"{prefix}-id", "msg_1"), (f"{prefix}-timestamp", str(t)),
                                    (f"{prefix}-signature", signature)])))
    for name, body in [("empty-body", b""), ("not-utf-8", NOT_UTF8)]:
        cases.append((name, (body, [(f"{prefix}-id", "msg_1"), (f"{prefix}-timestamp", str(t)),
                                    (f"{prefix}-signature", _standard_sign("msg_1", str(t), body))])))
    cases.append(("id-with-spaces", (JSON, [(f"{prefix}-id", " msg_1 "), (f"{prefix}-timestamp", str(t)),
                                            (f"{prefix}-signature", good)])))
    return cases


@pytest.mark.parametrize(("name", "case"), _standard_cases("webhook"), ids=[n for n, _ in _standard_cases("webhook")])
def test_standard_webhooks_verdicts_agree_with_standardwebhooks(name: str, case: Case) -> None:
    _agree("standard", _standard, case, STANDARD_SECRET)


@pytest.mark.parametrize(("name", "case"), _standard_cases("svix"), ids=[n for n, _ in _standard_cases("svix")])
def test_svix_verdicts_agree_with_svix(name: str, case: Case) -> None:
    _agree("standard", _svix, case, STANDARD_SECRET)


# GitHub and Shopify: their documented checks ----------------------------------------------------


def _github_cases() -> list[tuple[str, Case]]:
    good = "sha256=" + hmac.new(GITHUB_SECRET.encode(), JSON, hashlib.sha256).hexdigest()
    base = [("X-GitHub-Event", "issues"), ("X-GitHub-Delivery", "d-1")]
    cases: list[tuple[str, Case]] = []
    for name, signature in [("good", good), ("upper-hex", "sha256=" + good[7:].upper()), ("upper-scheme", "SHA256" + good[6:]),
                            ("two-signatures", f"{good},{good}"), ("space-inside", "sha256= " + good[7:]),
                            ("non-ascii", good[:-1] + "\u00e9"), ("huge", good + "0" * 20000), ("empty", ""),
                            ("sha1-in-the-256-header", "sha1=" + hmac.new(GITHUB_SECRET.encode(), JSON, hashlib.sha1).hexdigest())]:
        cases.append((name, (JSON, [*base, ("X-Hub-Signature-256", signature)])))
    for name, body in [("empty-body", b""), ("not-utf-8", NOT_UTF8)]:
        cases.append((name, (body, [*base, ("X-Hub-Signature-256",
                                            "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest())])))
    return cases


@pytest.mark.parametrize(("name", "case"), _github_cases(), ids=[n for n, _ in _github_cases()])
def test_github_verdicts_agree_with_githubs_documented_check(name: str, case: Case) -> None:
    _agree("github", _github, case, GITHUB_SECRET)


def _shopify_cases() -> list[tuple[str, Case]]:
    def mac(body: bytes) -> str:
        return base64.b64encode(hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).digest()).decode()

    base = [("X-Shopify-Topic", "orders/create"), ("X-Shopify-Webhook-Id", "w-1")]
    good = mac(JSON)
    cases: list[tuple[str, Case]] = []
    for name, signature in [("good", good), ("unpadded", good.rstrip("=")), ("urlsafe", good.replace("+", "-").replace("/", "_")),
                            ("two-signatures", f"{good},{good}"), ("non-ascii", good[:-1] + "\u00e9"),
                            ("huge", good + "A" * 20000), ("empty", "")]:
        cases.append((name, (JSON, [*base, ("X-Shopify-Hmac-Sha256", signature)])))
    for name, body in [("empty-body", b""), ("not-utf-8", NOT_UTF8)]:
        cases.append((name, (body, [*base, ("X-Shopify-Hmac-Sha256", mac(body))])))
    return cases


@pytest.mark.parametrize(("name", "case"), _shopify_cases(), ids=[n for n, _ in _shopify_cases()])
def test_shopify_verdicts_agree_with_shopifys_documented_check(name: str, case: Case) -> None:
    _agree("shopify", _shopify, case, SHOPIFY_SECRET)


# Twilio -----------------------------------------------------------------------------------------


def _twilio_cases() -> list[tuple[str, Case]]:
    params = {"From": "+15550001", "Body": "hello", "MessageSid": "SM1"}
    body = urlencode(params).encode()
    form = [("Content-Type", "application/x-www-form-urlencoded"), ("I-Twilio-Idempotency-Token", "idem-1")]
    validator = RequestValidator(TWILIO_SECRET)
    good = validator.compute_signature(URL, params)
    cases: list[tuple[str, Case]] = []
    for name, signature in [("good", good), ("unpadded", good.rstrip("=")), ("two-signatures", f"{good},{good}"),
                            ("non-ascii", good[:-1] + "\u00e9"), ("huge", good + "A" * 20000), ("empty", "")]:
        cases.append((name, (body, [*form, ("X-Twilio-Signature", signature)])))
    cases.append(("empty-body", (b"", [*form, ("X-Twilio-Signature", validator.compute_signature(URL, {}))])))
    sha256 = validator.compute_signature(URL, params, "HMAC_SHA256")
    for name, settings_header in [("sha256", "key=k,algorithm=HMAC_SHA256"), ("sha256-lower", "algorithm=hmac_sha256"),
                                  ("sha256-spaces", " key=k , algorithm = HMAC_SHA256 "), ("unknown", "algorithm=HMAC_SHA3")]:
        cases.append((name, (body, [*form, ("X-Twilio-Webhooks-Signature-Settings", settings_header),
                                    ("X-Twilio-Signature", sha256)])))
    return cases


@pytest.mark.parametrize(("name", "case"), _twilio_cases(), ids=[n for n, _ in _twilio_cases()])
def test_twilio_verdicts_agree_with_twilios_validator(name: str, case: Case) -> None:
    _agree("twilio", _twilio, case, TWILIO_SECRET)


# Re-signing after an edit: the library accepts what devtunnel signs ------------------------------

_RESIGN = [
    ("stripe", STRIPE_SECRET, [], _stripe),
    ("slack", SLACK_SECRET, [("X-Slack-Request-Timestamp", "1")], _slack),
    ("standard", STANDARD_SECRET, [("webhook-id", "msg_1")], _standard),
    ("standard", STANDARD_SECRET, [("svix-id", "msg_1"), ("svix-timestamp", "1"), ("svix-signature", "v1,AAAA")], _svix),
    ("github", GITHUB_SECRET, [("X-GitHub-Event", "issues")], _github),
    ("shopify", SHOPIFY_SECRET, [("X-Shopify-Topic", "orders/create")], _shopify),
]


@pytest.mark.parametrize(("provider", "secret", "headers", "library"), _RESIGN,
                         ids=["stripe", "slack", "standard", "svix", "github", "shopify"])
@pytest.mark.parametrize("body", [b"", JSON, '{"name": "Ren\u00e9 \u2603"}'.encode(), b'{"a":' + b" " * 100_000 + b"1}"],
                         ids=["empty", "json", "utf-8", "large"])
def test_a_delivery_signed_afresh_after_an_edit_is_accepted_by_the_library(
        provider: str, secret: str, headers: list[tuple[str, str]], library: Any, body: bytes) -> None:
    scheme = by_name(provider, BUILTIN)
    assert scheme is not None
    if provider == "slack":
        body = body.replace(b'{"', b'payload={"') if body else body
    signed = scheme.sign(Delivery("POST", URL, Headers(headers), body), secret, time.time())
    assert _accepts(library, (body, list(signed.items())))
    assert _ours(provider, (body, list(signed.items())), secret).signature is Signature.VALID


def test_a_twilio_delivery_signed_afresh_after_an_edit_is_accepted_by_its_validator() -> None:
    for settings_header in ([], [("X-Twilio-Webhooks-Signature-Settings", "algorithm=HMAC_SHA256")]):
        body = urlencode({"From": "+15550001", "Body": "edited \u2603"}).encode()
        headers = [("Content-Type", "application/x-www-form-urlencoded"), *settings_header]
        twilio = by_name("twilio", BUILTIN)
        assert twilio is not None
        signed = twilio.sign(Delivery("POST", URL, Headers(headers), body), TWILIO_SECRET, time.time())
        assert _accepts(_twilio, (body, list(signed.items())))


@pytest.mark.parametrize("provider", ["stripe", "slack"])
def test_a_body_that_is_not_utf8_is_not_signed_for_a_library_that_refuses_it(provider: str) -> None:
    from devtunnel.webhooks import SignatureError

    scheme = by_name(provider, BUILTIN)
    assert scheme is not None
    with pytest.raises(SignatureError, match="the body is not UTF-8"):
        scheme.sign(Delivery("POST", URL, Headers([]), NOT_UTF8), "whsec_x", time.time())


_KEY = base64.b64encode(b"differential-standard-key-32byte").decode()


@pytest.mark.parametrize("secret", ["whsec_" + _KEY, _KEY, "whsec_" + _KEY.rstrip("="), "whsec_" + _KEY + "==",
                                    f"whsec_{_KEY[:10]}${_KEY[10:]}", f"whsec_{_KEY} ", "WHSEC_" + _KEY,
                                    "whsec_" + _KEY[:-2] + "-_", "whsec_", "whsec_%%%", "whsec_a"],
                         ids=["whsec", "bare", "unpadded", "extra-padding", "a-dollar-inside", "space-after",
                              "prefix-in-upper-case", "urlsafe-characters", "empty", "no-base64", "one-character"])
def test_standard_webhooks_makes_the_key_of_a_secret_as_its_library_does(secret: str) -> None:
    try:
        key = standardwebhooks.Webhook(secret)._whsecret
    except Exception:  # the library refuses the secret itself: devtunnel cannot verify with it either
        key = None
    t = str(int(time.time()))
    signature = "v1," + base64.b64encode(hmac.new(key or b"k", f"msg_1.{t}.".encode() + JSON, hashlib.sha256).digest()).decode()
    case = (JSON, [("webhook-id", "msg_1"), ("webhook-timestamp", t), ("webhook-signature", signature)])
    verdict = _ours("standard", case, secret)
    if key is None:
        assert verdict.signature is Signature.UNVERIFIED
        assert verdict.reason == "the secret for Standard Webhooks is not whsec_ followed by base64"
        return
    assert _accepts(lambda b, h: standardwebhooks.Webhook(secret).verify(b, _lowered(h)), case)
    assert verdict.signature is Signature.VALID, verdict
    scheme = by_name("standard", BUILTIN)
    assert scheme is not None  # and what devtunnel signs with it, the library accepts
    headers = scheme.sign(Delivery("POST", URL, Headers([("webhook-id", "msg_2")]), JSON), secret, time.time())
    standardwebhooks.Webhook(secret).verify(JSON, dict(headers.items()))


@pytest.mark.parametrize("names", [("svix-id", "webhook-timestamp", "webhook-signature"),
                                   ("webhook-id", "svix-timestamp", "webhook-signature"),
                                   ("webhook-id", "webhook-timestamp", "svix-signature"),
                                   ("svix-id", "svix-timestamp", "webhook-signature")],
                         ids=["svix-id", "svix-timestamp", "svix-signature", "webhook-signature"])
def test_svix_and_webhook_headers_mixed_are_read_header_by_header_as_svix_reads_them(names: tuple[str, str, str]) -> None:
    t = str(int(time.time()))
    id_name, timestamp_name, signature_name = names
    case = (JSON, [(id_name, "msg_1"), (timestamp_name, t), (signature_name, _standard_sign("msg_1", t, JSON))])
    assert _agree("standard", _svix, case, STANDARD_SECRET)
    # Re-signed after an edit, the headers it came with carry the new signature: svix accepts it.
    scheme = by_name("standard", BUILTIN)
    assert scheme is not None
    edited = JSON.replace(b"invoice.paid", b"invoice.voided")
    headers = scheme.sign(Delivery("POST", URL, Headers(case[1]), edited), STANDARD_SECRET, time.time())
    assert [name for name, _ in headers.items()] == list(names)
    assert _accepts(_svix, (edited, list(headers.items())))
