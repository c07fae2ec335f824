"""Re-signing a replayed delivery: fresh signature, same delivery id, or one line saying why not."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtunnel.capture.model import Headers, Request
from devtunnel.capture.verdict import Verdict
from devtunnel.webhooks import BUILTIN, Delivery, Signature, by_name
from devtunnel.webhooks.resign import Keys, resign
from tests.kit.exchanges import make_request

T0 = 1_764_600_000.0
LATER = T0 + 3600
URL = "https://hooks.example.com/hook"
SECRETS = {"stripe": "whsec_resign", "github": "gh", "slack": "sl", "shopify": "sh",
           "standard": "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode(), "twilio": "tw"}
BASE_HEADERS = {"standard": [("webhook-id", "msg_p")], "svix": [("svix-id", "msg_s")],
                "github": [("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-1")]}


def request(headers: list[tuple[str, str]], body: bytes) -> Request:
    return req(Headers([("Host", "hooks.example.com"), *headers]), body)


def req(headers: Headers, body: bytes) -> Request:
    return make_request("POST", b"/hook", headers, body)


def signed_request(name: str, body: bytes, now: float = T0, secret: str | None = None) -> Request:
    """A delivery of provider ``name`` signed at ``now``."""
    provider = by_name("standard" if name == "svix" else name)
    assert provider is not None
    headers = BASE_HEADERS.get(name, [])
    if name == "twilio":
        body = urlencode({"Body": body.decode("latin-1")}).encode()
        headers = [("Content-Type", "application/x-www-form-urlencoded")]
    raw = request(headers, body)
    signed = provider.sign(Delivery("POST", URL, raw.headers, raw.body), secret or SECRETS[provider.name], now)
    return req(signed, body)


def keys(**secrets: str) -> Keys:
    return Keys(BUILTIN, {name: [secret] for name, secret in secrets.items()})


def verify(name: str, req: Request, now: float, url: str = URL) -> Signature:
    provider = by_name(name)
    assert provider is not None
    return provider.verify(Delivery(req.method, url, req.headers, req.body), [SECRETS[name]], now).signature


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from([*sorted(SECRETS), "svix"]), body=st.binary(max_size=1024),
       edited=st.binary(max_size=1024), later=st.integers(0, 2**33))
def test_resign_then_verify_round_trips_for_every_provider(name: str, body: bytes, edited: bytes, later: int) -> None:
    provider_name = "standard" if name == "svix" else name
    if by_name(provider_name).text_body:  # type: ignore[union-attr]  # its library reads UTF-8 text (not: below)
        body, edited = body.decode("latin-1").encode(), edited.decode("latin-1").encode()
    old = signed_request(name, body)
    new_body = signed_request(name, edited).body  # the same kind of body (a form for Twilio), edited
    sent = req(old.headers, new_body)
    result = resign(sent, URL, keys=Keys(BUILTIN, {provider_name: [SECRETS[provider_name]]}), now=later)
    assert result.provider == provider_name and result.notice == ""
    assert verify(provider_name, result.request, later) is Signature.VALID
    delivery = Delivery("POST", URL, result.request.headers, new_body)
    provider = by_name(provider_name)
    assert provider is not None
    assert provider.delivery_id(delivery) == provider.delivery_id(Delivery("POST", URL, old.headers, new_body))
    assert result.request.body == new_body and result.request.target == old.target


@pytest.mark.parametrize("name", ["stripe", "slack"])
def test_a_body_edited_into_bytes_that_are_not_utf8_is_sent_as_edited_with_the_reason(name: str) -> None:
    # stripe's and slack_sdk's verifiers read the body as UTF-8 text: no signature makes them accept it.
    old = signed_request(name, b'{"id": "evt_1", "type": "invoice.paid"}')
    sent = req(old.headers, b'{"name": "Ren\xe9"}')
    result = resign(sent, URL, keys=keys(**{name: SECRETS[name]}), now=LATER)
    assert result.provider is None and result.request.headers == old.headers
    assert result.notice.startswith("signature not refreshed: the body is not UTF-8 (byte 13): ")


def test_an_old_stripe_delivery_gets_a_fresh_timestamp_and_keeps_everything_else() -> None:
    old = signed_request("stripe", b'{"id": "evt_1", "type": "invoice.paid"}')
    assert verify("stripe", old, LATER) is Signature.INVALID
    result = resign(old, URL, keys=keys(stripe=SECRETS["stripe"]), now=LATER)
    assert result.request.headers.get("stripe-signature", "").startswith(f"t={int(LATER)},v1=")
    assert verify("stripe", result.request, LATER) is Signature.VALID
    assert result.request.headers.without("stripe-signature") == old.headers.without("stripe-signature")


def test_no_secret_says_which_variable_to_set_and_sends_as_captured() -> None:
    old = signed_request("stripe", b"{}")
    result = resign(old, URL, keys=Keys(), now=LATER)
    assert result == type(result)(old, None, "signature not refreshed: set STRIPE_WEBHOOK_SECRET")
    other = Keys(BUILTIN, {}, {"stripe": "PAYMENTS_HOOK_SECRET"})
    assert resign(old, URL, keys=other, now=LATER).notice == "signature not refreshed: set PAYMENTS_HOOK_SECRET"


def test_the_environment_gives_the_conventional_variables() -> None:
    found = Keys.from_environment({"GITHUB_WEBHOOK_SECRET": "s3cr3t-one,s3cr3t-two", "PATH": "/bin"})
    assert dict(found.secrets) == {"github": ["s3cr3t-one", "s3cr3t-two"]}
    assert "s3cr3t" not in repr(found)


def test_a_request_from_no_provider_or_unsigned_is_sent_as_it_is_without_a_word() -> None:
    plain = request([("Content-Type", "application/json")], b"{}")
    assert resign(plain, URL, keys=keys(stripe="x"), now=LATER) == type(resign(plain, URL, keys=Keys(), now=0))(plain)
    unsigned = request([("X-GitHub-Event", "push")], b"{}")
    assert resign(unsigned, URL, keys=keys(github="x"), now=LATER).request == unsigned


def test_twilio_with_a_body_hash_in_the_url_and_an_edited_body_cannot_be_resigned() -> None:
    body = b'{"a": 1}'
    url = URL + "?bodySHA256=" + hashlib.sha256(body).hexdigest()
    twilio = by_name("twilio")
    assert twilio is not None
    headers = twilio.sign(Delivery("POST", url, Headers([("Content-Type", "application/json")]), body), "tw", T0)
    same = req(headers, body)
    assert resign(same, url, keys=keys(twilio="tw"), now=LATER).provider == "twilio"
    edited = req(headers, b'{"a": 2}')
    result = resign(edited, url, keys=keys(twilio="tw"), now=LATER)
    assert result.provider is None and result.request == edited
    assert result.notice.startswith("signature not refreshed: this Twilio request carries bodySHA256")


def test_twilio_is_signed_for_the_url_it_is_sent_as() -> None:
    old = signed_request("twilio", b"hi")
    other = "http://other.localhost:8000/hook"
    result = resign(old, other, keys=keys(twilio="tw"), now=LATER)
    assert verify("twilio", result.request, LATER, url=other) is Signature.VALID
    assert verify("twilio", result.request, LATER, url=URL) is Signature.INVALID


def test_a_standard_webhooks_secret_of_the_wrong_form_is_named() -> None:
    old = signed_request("standard", b"{}")
    result = resign(old, URL, keys=keys(standard="not base64!"), now=LATER)
    assert result.provider is None
    assert result.notice == "signature not refreshed: the secret for Standard Webhooks is not whsec_ followed by base64"


@pytest.mark.parametrize("name", ["stripe", "github", "slack", "shopify", "standard", "twilio"])
def test_a_secret_that_did_not_verify_the_captured_delivery_is_doubted(name: str) -> None:
    captured = signed_request(name, b"body", secret=("whsec_" + base64.b64encode(b"x" * 32).decode())
                              if name == "standard" else "the receiver's secret")
    wrong = keys(**{name: SECRETS[name]})
    # Not judged valid when it came: it may be forged, so it keeps its captured signature.
    for judged in (None, Verdict(name, None, None, Signature.INVALID, "signature does not match"),
                   Verdict(name, None, None, Signature.UNVERIFIED, "")):
        kept = resign(captured, URL, keys=wrong, now=LATER, captured=captured, captured_url=URL, judged=judged)
        assert (kept.request, kept.provider) == (captured, None)
        variable = by_name(name).secret_env  # type: ignore[union-attr]
        assert kept.notice.startswith(f"signature not refreshed: {variable} does not verify the delivery as captured (")
        assert kept.notice.endswith(f"it may not come from {name}; sent with its captured signature"
                                    " (--sign-unverified signs it anyway)")
    # Judged valid when it came (the secret changed since), or signed anyway on request: signed, doubted.
    for result in (resign(captured, URL, keys=wrong, now=LATER, captured=captured, captured_url=URL,
                          judged=Verdict(name, None, None, Signature.VALID, "")),
                   resign(captured, URL, keys=wrong, now=LATER, captured=captured, captured_url=URL, unverified=True)):
        assert result.provider == name
        assert "did not verify the captured delivery" in result.notice
    right = resign(signed_request(name, b"body"), URL, keys=wrong, now=LATER,  # an hour old, the right secret
                   captured=signed_request(name, b"body"), captured_url=URL)
    assert right.notice == ""


def test_a_signature_changed_by_hand_is_sent_as_edited_and_said_so() -> None:
    captured = signed_request("slack", b"{}")
    by_hand = req(captured.headers.with_set("X-Slack-Request-Timestamp", "1"), b"{}")
    result = resign(by_hand, URL, keys=keys(slack=SECRETS["slack"]), now=LATER, captured=captured, captured_url=URL)
    assert (result.request, result.provider) == (by_hand, None)
    assert result.notice == "signature sent as edited (X-Slack-Request-Timestamp changed by hand)"
    # Only the body changed: signed afresh.
    edited = req(captured.headers, b'{"a": 1}')
    assert resign(edited, URL, keys=keys(slack=SECRETS["slack"]), now=LATER, captured=captured,
                  captured_url=URL).provider == "slack"


def test_each_surface_names_its_own_way_to_sign_a_kept_signature_anyway():
    from devtunnel.webhooks.resign import SIGN_ANYWAY, notice_for

    cli = "signature not refreshed: ... sent with its captured signature (--sign-unverified signs it anyway)"
    api = notice_for(cli, "api")
    assert api.endswith('("sign_unverified": true signs it anyway)') and "--sign" not in api
    inspector = notice_for(api, "inspector")  # the inspector reads the API's words
    assert inspector.endswith(f"({SIGN_ANYWAY['inspector']} signs it anyway)") and "sign_unverified" not in inspector
    assert notice_for(inspector, "cli") == cli
    assert notice_for("signature not refreshed: set STRIPE_WEBHOOK_SECRET", "api") == "signature not refreshed: set STRIPE_WEBHOOK_SECRET"
