"""``export --format pytest``: a test asserts what the other side expects of the answer, not the
status captured, so a capture of a fault makes a test that fails while the fault is there.

Found by use: a delivery captured while its receiver answered 500 (or 400, its verification
wrong) made a test asserting 500, which passed against the broken receiver and failed once it was
fixed; a Slack url_verification test passed against a receiver that did not echo the challenge.

Each module runs under pytest (a subprocess) against a service on loopback that verifies
deliveries with the providers' own libraries (``tests.webhooks.receivers``), then answers as a
right or a wrong receiver does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

import pytest

from devtunnel.capture.model import Exchange
from devtunnel.export import export
from devtunnel.export.pytest_module import export_pytest
from devtunnel.webhooks import Delivery, Signature, by_name, judge
from devtunnel.webhooks.samples import sample
from tests.kit.exchanges import make_exchange, make_response
from tests.kit.servers import LocalServer, Received, Reply, http_server
from tests.export.test_pytest_forged import PATHS, SENT  # one delivery of each built-in provider
from tests.webhooks.receivers import RECEIVER_SECRETS, _verify

pytestmark = pytest.mark.timeout(300)

WHY = {"stripe": "Stripe retries a delivery not answered 2xx", "github": "GitHub records a delivery not answered 2xx as failed",
       "shopify": "Shopify retries a delivery not answered 2xx",
       "standard": "a Standard Webhooks sender retries a delivery not answered 2xx",
       "slack": "Slack retries an event not answered 2xx",
       "twilio": "Twilio reports a webhook not answered 2xx as failed (error 11200)"}


def _service(behaviour: str, echo: str = "text") -> AbstractContextManager[LocalServer]:
    """A webhook receiver on loopback. It verifies each delivery with its provider's library
    (``receivers._verify``: 400 or 401 when it does not verify), then answers as ``behaviour``:
    ``right`` 200 (a Slack url_verification's challenge echoed as ``echo``: ``text``, ``json`` or
    ``form``), ``fails`` 500, ``refuses`` 400 to every delivery (its verification broken),
    ``lax`` 200 without verifying, ``no-echo`` 200 "ok" to a url_verification too."""

    def answer(request: Received) -> Reply:
        path = request.path.split("?", 1)[0]
        status, reason = _verify(path, request.lower_headers(), request.body, f"http://{request.header('Host')}{request.path}")
        if behaviour == "refuses":
            return Reply(400, [("Content-Type", "text/plain")], b"verification failed")
        if status != 200 and behaviour != "lax":
            return Reply(status, [("Content-Type", "text/plain")], reason.encode())
        if behaviour == "fails":
            return Reply(500, [("Content-Type", "text/plain")], b"Internal Server Error")
        data = json.loads(request.body) if path.startswith("/slack") else None
        if isinstance(data, dict) and data.get("type") == "url_verification" and behaviour == "right":
            challenge = data["challenge"]
            if echo == "json":
                return Reply.json({"challenge": challenge})
            if echo == "form":
                return Reply(200, [("Content-Type", "application/x-www-form-urlencoded")],
                             urlencode({"challenge": challenge}).encode())
            return Reply(200, [("Content-Type", "text/plain")], challenge.encode())
        return Reply(200, [("Content-Type", "text/plain")], b"ok")

    return http_server(answer)


def _captured(base: str, provider_name: str, event: str, status: int, secret: str | None = None) -> Exchange:
    """A delivery signed with ``secret`` (default: the receiver's), as devtunnel recorded it:
    answered ``status`` and judged with the receiver's secrets."""
    provider = by_name(provider_name)
    assert provider is not None
    now = time.time()
    made = sample(provider_name, event, now=now)
    secret = secret if secret is not None else RECEIVER_SECRETS[provider.secret_env]
    headers = provider.sign(Delivery("POST", base + PATHS[provider_name], made.headers, made.body), secret, now)
    exchange = make_exchange("POST", PATHS[provider_name], [("Host", base.split("://", 1)[1]), *headers.items()],
                             made.body, make_response(status), tunnel="hooks", started_at=now, target_url=base,
                             duration=0.01)
    secrets = {p.name: [RECEIVER_SECRETS[p.secret_env]] for p in map(by_name, PATHS) if p}
    return replace(exchange, webhook=judge(exchange.request, scheme="http", now=now, secrets=secrets))


def _run(module: Path, base: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in RECEIVER_SECRETS and k not in ("DEVTUNNEL_BASE_URL", "DEVTUNNEL_SIGN_UNVERIFIED")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(module)],
                          capture_output=True, text=True, timeout=120,
                          env={**clean, "DEVTUNNEL_BASE_URL": base, **RECEIVER_SECRETS, **env}, cwd=module.parent)


def _module(tmp_path: Path, exchanges: list[Exchange], name: str = "test_hooks.py", **options: object) -> Path:
    module = tmp_path / name
    text = export("pytest", exchanges, **options).text
    assert text.isascii()
    module.write_text(text)
    return module


@pytest.mark.parametrize(("captured", "wrong"), [(500, "fails"), (400, "refuses")])
def test_a_delivery_captured_with_a_receivers_fault_passes_once_it_is_fixed_and_fails_saying_why_until_then(
        tmp_path: Path, captured: int, wrong: str) -> None:
    """Captured while the receiver answered 500 (or 400 to genuine deliveries: its verification
    was wrong), each test expects the 2xx its provider counts as delivered."""
    with _service("right") as right:
        exchanges = [_captured(right.url, p, e, captured) for p, e in SENT]
        assert {ex.webhook.signature for ex in exchanges if ex.webhook} == {Signature.VALID}
        module = _module(tmp_path, exchanges)
        text = module.read_text()
        assert text.count("# a webhook delivery: expected 2xx, what its sender counts as delivered "
                          f"(captured {captured})") == len(SENT)
        fixed = _run(module, right.url)
        assert f"{len(SENT)} passed" in fixed.stdout and fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert sorted(r.path for r in right.received) == sorted(PATHS[p] for p, _ in SENT)
    with _service(wrong) as broken:
        still = _run(module, broken.url)
    assert f"{len(SENT)} failed" in still.stdout, still.stdout + still.stderr
    for provider, _ in SENT:
        assert f"AssertionError: expected 2xx: {WHY[provider]}; captured {captured}; the service answered" in still.stdout, \
            (provider, still.stdout)


def test_a_delivery_judged_forged_expects_a_refusal_whatever_the_receiver_answered_then(tmp_path: Path) -> None:
    """Signed with a secret that is not the receiver's, judged invalid when it came, and answered
    200 by a receiver that did not verify: its test expects a refusal and sends the captured
    signature (signed afresh it would be accepted), even with DEVTUNNEL_SIGN_UNVERIFIED=1."""
    forged = {"stripe": "whsec_forger_0123456789", "github": "forger-github", "shopify": "shpss_forger"}
    with _service("right") as right:
        exchanges = [_captured(right.url, p, e, 200, secret=forged[p]) for p, e in SENT if p in forged]
        assert {ex.webhook.signature for ex in exchanges if ex.webhook} == {Signature.INVALID}
        module = _module(tmp_path, exchanges)
        text = module.read_text()
        assert text.count("# its signature was judged invalid when it came: sent as captured, the refusal is checked") == 3
        assert "        secret_env=" not in text  # no test signs one
        for env in ({}, {"DEVTUNNEL_SIGN_UNVERIFIED": "1"}):
            verifying = _run(module, right.url, **env)
            assert "3 passed" in verifying.stdout and verifying.returncode == 0, verifying.stdout + verifying.stderr
        assert sorted({r.path for r in right.received}) == sorted(PATHS[p] for p in forged)
    with _service("lax") as lax:
        accepting = _run(module, lax.url)
    assert "3 failed" in accepting.stdout, accepting.stdout + accepting.stderr
    assert ("AssertionError: expected 4xx: its signature was judged invalid when it came (signature does not match: wrong"
            " secret or altered body): a receiver refuses a delivery it cannot verify; captured 200; the service answered"
            " 'ok'") in accepting.stdout, accepting.stdout


def test_an_unsigned_stripe_delivery_expects_a_refusal_from_a_receiver_that_verifies(tmp_path: Path) -> None:
    """A "Stripe" delivery without Stripe-Signature (a hand-made curl with Stripe's user agent),
    answered 200 by a receiver that did not verify: Stripe signs every delivery, so its test
    expects the refusal of a receiver that verifies with Stripe's library, and sends it unsigned."""
    with _service("right") as right:
        signed = _captured(right.url, "stripe", "invoice.paid", 200)
        fields = [(n, v) for n, v in signed.request.headers if n.lower() != b"stripe-signature"]
        unsigned = make_exchange("POST", PATHS["stripe"], fields, signed.request.body, make_response(200),
                                 tunnel="hooks", started_at=time.time(), target_url=right.url, duration=0.01)
        unsigned = replace(unsigned, webhook=judge(unsigned.request, scheme="http", now=time.time(),
                                                   secrets={"stripe": [RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]]}))
        assert unsigned.webhook is not None and unsigned.webhook.signature is Signature.UNSIGNED
        module = _module(tmp_path, [unsigned])
        assert "# it came unsigned: sent unsigned, as captured" in module.read_text()
        verifying = _run(module, right.url)
        assert "1 passed" in verifying.stdout and verifying.returncode == 0, verifying.stdout + verifying.stderr
        assert not any("stripe-signature" in r.lower_headers() for r in right.received)
    with _service("lax") as lax:
        accepting = _run(module, lax.url)
    assert "1 failed" in accepting.stdout, accepting.stdout + accepting.stderr
    assert ("AssertionError: expected 4xx: it came unsigned, and Stripe signs every delivery (Stripe-Signature): a "
            "receiver refuses it; captured 200; the service answered 'ok'") in accepting.stdout, accepting.stdout


@pytest.mark.parametrize("echo", ["text", "json", "form"])
def test_a_slack_url_verification_passes_only_when_the_challenge_is_echoed(tmp_path: Path, echo: str) -> None:
    with _service("right", echo) as right:
        handshake = _captured(right.url, "slack", "url_verification", 200)
        challenge = json.loads(handshake.request.body)["challenge"]
        module = _module(tmp_path, [handshake])
        assert f"assert _echoes_challenge(response, {challenge!r})" in module.read_text()
        echoed = _run(module, right.url)
        assert "1 passed" in echoed.stdout and echoed.returncode == 0, echoed.stdout + echoed.stderr
        assert right.received[-1].path == "/slack/events"
    with _service("no-echo") as silent:
        unechoed = _run(module, silent.url)
        assert len(silent.received) == 1
    assert "1 failed" in unechoed.stdout, unechoed.stdout + unechoed.stderr
    assert ("AssertionError: expected the challenge echoed: Slack sets an Events API URL only when its url_verification"
            " is answered with the challenge (as text, JSON {\"challenge\": ...} or a form challenge=...); the service"
            " answered 'ok'") in unechoed.stdout, unechoed.stdout


def _request(base: str, target: str, status: int) -> Exchange:
    return make_exchange("GET", target, [("Host", "shop.example"), ("Accept", "application/json")], b"",
                         make_response(status), tunnel="shop", started_at=time.time(), target_url=base, duration=0.01)


def _shop(broken: bool) -> AbstractContextManager[LocalServer]:
    """A service whose /orders answers 200 (500 when ``broken``) and /missing 404 (200 when ``broken``)."""
    def answer(request: Received) -> Reply:
        if request.path == "/orders":
            return Reply(500, body=b"Traceback ...") if broken else Reply.json([])
        return Reply(200, body=b"here after all") if broken else Reply(404, body=b"no such page")

    return http_server(answer)


def test_a_request_captured_with_a_server_error_expects_any_status_but_5xx_and_others_the_captured_one(
        tmp_path: Path) -> None:
    with _shop(broken=False) as fixed:
        exchanges = [_request(fixed.url, "/orders", 500), _request(fixed.url, "/missing", 404)]
        module = _module(tmp_path, exchanges)
        text = module.read_text()
        assert "    # the capture was a server error (500): expected any status but 5xx\n" \
               "    assert response.status_code < 500, " in text
        assert "    assert response.status_code == 404, " in text
        passed = _run(module, fixed.url)
        assert "2 passed" in passed.stdout and passed.returncode == 0, passed.stdout + passed.stderr
    with _shop(broken=True) as broken:
        failed = _run(module, broken.url)
    assert "2 failed" in failed.stdout, failed.stdout + failed.stderr
    assert ("AssertionError: expected any status but 5xx: captured 500, a server error; the service answered"
            " 'Traceback ...'") in failed.stdout, failed.stdout
    assert "AssertionError: expected 404: the status captured; the service answered 'here after all'" in failed.stdout


def test_asserts_captured_makes_a_snapshot_of_the_captured_statuses(tmp_path: Path) -> None:
    with _service("fails") as broken:
        delivery = _captured(broken.url, "stripe", "invoice.paid", 500)
        module = tmp_path / "test_snapshot.py"
        text = export_pytest([delivery, _request(broken.url, "/webhooks/none", 404)], asserts="captured").text
        assert "asserts='captured'" in text and "expected any status but 5xx" not in text
        module.write_text(text)
        same = _run(module, broken.url)
        assert "2 passed" in same.stdout, same.stdout + same.stderr
    with _service("right") as right:
        fixed = _run(module, right.url)
    assert "1 failed, 1 passed" in fixed.stdout, fixed.stdout + fixed.stderr
    assert "AssertionError: expected 500: the status captured (asserts='captured'); the service answered 'ok'" in fixed.stdout
