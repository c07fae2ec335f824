"""Deliveries the providers' own libraries accept (or refuse), through ``devtunnel http`` as a user
runs it: the verdict devtunnel records agrees with the receiver, and a replay it signs afresh is
accepted. Each delivery is signed by the provider's library, sent through the public side to a
receiver verifying with the same libraries (``tests.webhooks.receivers``), then read back with
``devtunnel requests --json`` and replayed with ``devtunnel replay`` (subprocesses).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import standardwebhooks
import stripe
from twilio.request_validator import RequestValidator

from tests.helpers import wait_for
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc
from tests.webhooks.receivers import RECEIVER_SECRETS, Receiver, receiver

pytestmark = pytest.mark.timeout(180)


@dataclass
class Tunnel:
    tmp_path: Path
    env: dict[str, str]
    db: Path
    public_url: str
    rx: Receiver

    def deliver(self, path: str, headers: list[tuple[str, str]], body: bytes) -> tuple[int, dict[str, Any]]:
        """POST through the public side; the receiver's status and the delivery's recorded verdict."""
        before = len(self.rows())
        port = self.public_url.rsplit(":", 1)[1]
        with httpx.Client(trust_env=False) as client:
            status = client.post(f"http://127.0.0.1:{port}{path}", content=body,
                                 headers=[*headers, ("Host", self.public_url.split("//", 1)[1])]).status_code

        def recorded() -> dict[str, Any] | None:
            rows = self.rows()
            return rows[-1] if len(rows) > before and rows[-1]["webhook"] else None

        return status, wait_for(recorded, timeout=20, what="the delivery recorded with its verdict")

    def rows(self) -> list[dict[str, Any]]:
        return json.loads(self.cli("requests", "--json", "--db", str(self.db), "--limit", "0").stdout)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*DEVTUNNEL, *args], env=self.env, capture_output=True, text=True, timeout=60,
                              check=False)
        assert "Traceback" not in done.stderr
        return done


@pytest.fixture(scope="module")
def tunnel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tunnel]:
    """``devtunnel http`` before the verifying receiver, knowing the receiver's secrets."""
    tmp_path = tmp_path_factory.mktemp("edges")
    env = {k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS and not k.startswith("DEVTUNNEL_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"), **RECEIVER_SECRETS)
    db = tmp_path / "captures.db"
    with receiver() as rx:
        agent = Proc([*DEVTUNNEL, "http", rx.url.rsplit(":", 1)[1], "--no-tui", "--name", "edges", "--db", str(db)],
                     env)
        try:
            match = FORWARDING.match(agent.line(lambda line: line.startswith("Forwarding")))
            assert match is not None
            yield Tunnel(tmp_path, env, db, match.group(1), rx)
        finally:
            agent.stop()


def test_a_twilio_delivery_signed_with_a_shared_key_hmac_sha256_is_judged_and_re_signed_as_such(
        tunnel: Tunnel) -> None:
    # Signed as twilio's RequestValidator computes it for the algorithm the settings header names.
    path, params = "/twilio/sms", {"From": "+15550001", "Body": "hello", "MessageSid": "SM" + uuid.uuid4().hex}
    signature = RequestValidator(RECEIVER_SECRETS["TWILIO_AUTH_TOKEN"]).compute_signature(
        tunnel.public_url + path, params, "HMAC_SHA256")
    headers = [("Content-Type", "application/x-www-form-urlencoded"), ("I-Twilio-Idempotency-Token", str(uuid.uuid4())),
               ("X-Twilio-Webhooks-Signature-Settings", "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"),
               ("X-Twilio-Signature", signature)]
    status, row = tunnel.deliver(path, headers, urlencode(params).encode())
    assert status == 200
    assert (row["webhook"]["signature"], row["webhook"]["reason"]) == ("valid", None)
    # An edited body, signed afresh with the same algorithm: the receiver accepts it.
    done = tunnel.cli("replay", row["id"], "--db", str(tunnel.db), "--json",
                      "--body", urlencode({**params, "Body": "edited"}))
    assert done.returncode == 0 and done.stderr == ""
    assert [(r["status"], r["resigned"]) for r in json.loads(done.stdout)] == [(200, "twilio")]
    assert tunnel.rx.verdicts[-1] == (path, 200, "ok")
    # The exported test signs it afresh the same way, and passes against the receiver.
    run = _exported_run(tunnel, [row["id"]])
    assert run.returncode == 0, run.stdout[-2000:]
    assert tunnel.rx.verdicts[-1] == (path, 200, "ok")


def test_a_github_delivery_signed_with_sha1_alone_is_judged_replayed_and_exported_as_such(tunnel: Tunnel) -> None:
    # GitHub Enterprise Server before 3.0 sends X-Hub-Signature (HMAC-SHA1) without the SHA-256
    # header: the delivery was "unsigned" and its replays went unsigned for the SHA-1 header.
    body = json.dumps({"action": "opened", "issue": {"number": 1}}).encode()
    digest = hmac.new(RECEIVER_SECRETS["GITHUB_WEBHOOK_SECRET"].encode(), body, hashlib.sha1).hexdigest()
    headers = [("Content-Type", "application/json"), ("X-GitHub-Event", "issues"),
               ("X-GitHub-Delivery", str(uuid.uuid4())), ("X-Hub-Signature", "sha1=" + digest)]
    status, row = tunnel.deliver("/webhooks/github-sha1", headers, body)
    assert status == 200
    assert (row["webhook"]["provider"], row["webhook"]["signature"], row["webhook"]["reason"]) == ("github", "valid", None)
    status, wrong = tunnel.deliver("/webhooks/github-sha1", [*headers[:3], ("X-Hub-Signature", "sha1=" + "0" * 40)], body)
    assert status == 401 and wrong["webhook"]["signature"] == "invalid"
    edited = json.dumps({"action": "closed", "issue": {"number": 1}})
    done = tunnel.cli("replay", row["id"], "--db", str(tunnel.db), "--json", "--body", edited)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert [(r["status"], r["resigned"]) for r in json.loads(done.stdout)] == [(200, "github")]
    assert tunnel.rx.verdicts[-1] == ("/webhooks/github-sha1", 200, "ok")
    run = _exported_run(tunnel, [row["id"]])
    assert run.returncode == 0, run.stdout[-2000:]
    assert tunnel.rx.verdicts[-1] == ("/webhooks/github-sha1", 200, "ok")


def _exported_run(tunnel: Tunnel, ids: list[str], **environ: str) -> subprocess.CompletedProcess[str]:
    """``devtunnel export --format pytest`` of ``ids``, then pytest on the module against the receiver."""
    module = tunnel.tmp_path / f"test_export_{uuid.uuid4().hex[:8]}.py"
    assert tunnel.cli("export", "--format", "pytest", "-o", str(module), *ids, "--db", str(tunnel.db)).returncode == 0
    return subprocess.run([*DEVTUNNEL[:-2], "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)],
                          env={**tunnel.env, "DEVTUNNEL_BASE_URL": tunnel.rx.url, "PYTHONPATH": "", **environ},
                          capture_output=True, text=True, timeout=60, check=False, cwd=tunnel.tmp_path)


def _stripe_header(body: bytes, at: float, shape: str) -> list[tuple[str, str]]:
    t = int(at)
    sig = stripe.WebhookSignature._compute_signature(f"{t}.{body.decode()}", RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"])
    return [("Stripe-Signature", shape.format(t=t, sig=sig, SIG=sig.upper()))]


def _stripe_stamp(body: bytes, written: str) -> list[tuple[str, str]]:
    """A Stripe-Signature whose t= is ``written`` ({t}: now; {head} and {tail}: its first two
    digits and the others), signed as stripe's library reads it: over "%d" of int(t=)."""
    t = str(int(time.time()))
    stamp = written.format(t=t, head=t[:2], tail=t[2:])
    message = f"{int(stamp)}.".encode() + body
    return [("Stripe-Signature", f"t={stamp},v1=" + hmac.new(RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"].encode(), message,
                                                              hashlib.sha256).hexdigest())]


def _github_header(body: bytes, upper: bool) -> list[tuple[str, str]]:
    digest = hmac.new(RECEIVER_SECRETS["GITHUB_WEBHOOK_SECRET"].encode(), body, hashlib.sha256).hexdigest()
    return [("X-GitHub-Event", "issues"), ("X-GitHub-Delivery", str(uuid.uuid4())),
            ("X-Hub-Signature-256", "sha256=" + (digest.upper() if upper else digest))]


def _standard_header(body: bytes, before: str = "") -> list[tuple[str, str]]:
    msg_id, now = "msg_" + uuid.uuid4().hex, datetime.now(tz=timezone.utc)
    signature = standardwebhooks.Webhook(RECEIVER_SECRETS["WEBHOOK_SECRET"]).sign(msg_id, now, body)
    return [("webhook-id", msg_id), ("webhook-timestamp", str(int(now.timestamp()))),
            ("webhook-signature", f"{before} {signature}".lstrip())]


@pytest.mark.parametrize(
    ("path", "make", "accepted"),
    [
        ("/webhooks/stripe", lambda b: _stripe_header(b, time.time(), "t={t},v1={sig},junk"), True),
        ("/webhooks/stripe", lambda b: _stripe_header(b, time.time(), "t={t},v1=zz,v1={sig}"), True),
        ("/webhooks/stripe", lambda b: _stripe_header(b, time.time() + 3600, "t={t},v1={sig}"), True),
        ("/webhooks/stripe", lambda b: _stripe_header(b, time.time(), "t={t}, v1={sig}"), False),
        ("/webhooks/stripe", lambda b: _stripe_header(b, time.time(), "t={t},v1={SIG}"), False),
        ("/webhooks/stripe", lambda b: _stripe_stamp(b, "+{t}"), True),
        ("/webhooks/stripe", lambda b: _stripe_stamp(b, " {t}"), True),
        ("/webhooks/stripe", lambda b: _stripe_stamp(b, "{head}_{tail}"), True),
        ("/webhooks/stripe", lambda b: _stripe_stamp(b, "{t}"), False),  # the body made not UTF-8, below
        ("/webhooks/github", lambda b: _github_header(b, upper=True), False),
        ("/webhooks/standard", lambda b: _standard_header(b, "v1,@@@"), True),
    ],
    ids=["stripe-junk-item", "stripe-unreadable-v1-first", "stripe-an-hour-ahead", "stripe-space-before-v1",
         "stripe-upper-case-hex", "stripe-plus-timestamp", "stripe-space-in-timestamp", "stripe-underscore-timestamp",
         "stripe-body-not-utf-8", "github-upper-case-hex", "standard-unreadable-signature-first"],
)
def test_the_verdict_agrees_with_the_receivers_library(tunnel: Tunnel, path: str, make: Any, accepted: bool,
                                                       request: pytest.FixtureRequest) -> None:
    body = json.dumps({"id": "evt_" + uuid.uuid4().hex, "type": "invoice.paid", "action": "opened"}).encode()
    if request.node.callspec.id.endswith("not-utf-8"):
        body = body.replace(b"invoice.paid", b"invoice.pa\xefd")  # Latin-1, as some senders' bodies are
    status, row = tunnel.deliver(path, [("Content-Type", "application/json"), *make(body)], body)
    assert (status == 200) is accepted, tunnel.rx.verdicts[-1]
    assert (row["webhook"]["signature"] == "valid") is accepted, row["webhook"]


def test_set_on_a_crlf_body_changes_only_the_field_and_the_receiver_accepts_it(tunnel: Tunnel) -> None:
    body = b'{\r\n  "type": "user.created",\r\n  "data": {\r\n    "id": "u_1",\r\n    "name": "Ren\\u00e9"\r\n  }\r\n}\r\n'
    status, row = tunnel.deliver("/webhooks/standard", [("Content-Type", "application/json"),
                                                        *_standard_header(body)], body)
    assert status == 200 and row["webhook"]["signature"] == "valid"
    done = tunnel.cli("replay", row["id"], "--db", str(tunnel.db), "--json", "--set", "data.id=u_2")
    assert done.returncode == 0 and done.stderr == ""
    assert [(r["status"], r["resigned"]) for r in json.loads(done.stdout)] == [(200, "standard")]
    assert tunnel.rx.bodies[-1] == body.replace(b'"u_1"', b'"u_2"')


def test_an_exported_delivery_is_signed_with_the_secret_that_made_it_during_a_rotation(tunnel: Tunnel) -> None:
    ids = []
    for path, make in (("/webhooks/stripe", lambda b: _stripe_header(b, time.time(), "t={t},v1={sig}")),
                       ("/webhooks/github", lambda b: _github_header(b, upper=False)),
                       ("/webhooks/standard", _standard_header)):
        body = json.dumps({"id": "evt_" + uuid.uuid4().hex, "type": "invoice.paid"}).encode()
        status, row = tunnel.deliver(path, [("Content-Type", "application/json"), *make(body)], body)
        assert status == 200
        ids.append(row["id"])
    # The new secrets first, as during a rotation; the receiver still holds the old ones.
    new = "whsec_" + base64.b64encode(b"the-new-secret-after-rotation!!!").decode()
    rotating = {var: f"{new},{RECEIVER_SECRETS[var]}"
                for var in ("STRIPE_WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET", "WEBHOOK_SECRET")}
    run = _exported_run(tunnel, ids, **rotating)
    assert run.returncode == 0, run.stdout[-2000:]
    assert [v[1:] for v in tunnel.rx.verdicts[-3:]] == [(200, "ok")] * 3


@pytest.mark.parametrize(("provider", "variable", "to"), [("stripe", "STRIPE_WEBHOOK_SECRET", "/webhooks/stripe"),
                                                          ("standard", "WEBHOOK_SECRET", "/webhooks/standard")])
def test_send_during_a_rotation_signs_with_each_secret_as_the_provider_does(tunnel: Tunnel, provider: str,
                                                                             variable: str, to: str) -> None:
    # The new secret first (docs/webhooks.md); the receiver still holds the old one. Stripe and
    # Standard Webhooks carry a signature per secret during a rotation: the receiver accepts one.
    new = "whsec_" + base64.b64encode(b"the-new-secret-after-rotation!!!").decode()
    event = "invoice.paid" if provider == "stripe" else "user.created"
    done = subprocess.run([*DEVTUNNEL, "send", provider, event, "--to", tunnel.public_url + to],
                          env={**tunnel.env, variable: f"{new},{RECEIVER_SECRETS[variable]}"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert tunnel.rx.verdicts[-1] == (to, 200, "ok")



def test_a_twilio_signature_made_for_the_url_without_its_port_is_valid_as_the_receiver_finds(tunnel: Tunnel) -> None:
    # Twilio is inconsistent about ports; its RequestValidator accepts either spelling.
    path, params = "/twilio/sms", {"From": "+15550001", "Body": "port", "MessageSid": "SM" + uuid.uuid4().hex}
    portless = tunnel.public_url.rsplit(":", 1)[0] + path
    signature = RequestValidator(RECEIVER_SECRETS["TWILIO_AUTH_TOKEN"]).compute_signature(portless, params)
    status, row = tunnel.deliver(path, [("Content-Type", "application/x-www-form-urlencoded"),
                                        ("I-Twilio-Idempotency-Token", str(uuid.uuid4())),
                                        ("X-Twilio-Signature", signature)], urlencode(params).encode())
    assert status == 200
    assert row["webhook"]["signature"] == "valid", row["webhook"]
