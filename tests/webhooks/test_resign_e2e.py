"""Re-signing on replay, the way a user meets it: ``devtunnel http`` (a subprocess) in front of a receiver
verifying with the providers' own libraries, deliveries signed an hour ago going through the public side,
then ``devtunnel replay`` (a subprocess, secrets in its environment) and the agent API's replay.

An hour-old delivery replayed is accepted (a fresh signature); ``--as-captured`` is refused; an edited
body (``--set``) is accepted and reaches the receiver edited; a wrong secret is refused, and the replay
says why; without a secret the replay says which variable to set, once; a forged delivery (posted to
the public URL without the secret) is not made to pass: sent with its captured signature unless
``--sign-unverified``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest

from devtunnel.capture.model import Headers
from devtunnel.webhooks import Delivery, by_name
from tests.helpers import free_port, wait_for
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc
from tests.webhooks.receivers import RECEIVER_SECRETS, Receiver, receiver

pytestmark = pytest.mark.timeout(180)

HOUR_AGO = time.time() - 3600
SECRET_OF = {"stripe": "STRIPE_WEBHOOK_SECRET", "github": "GITHUB_WEBHOOK_SECRET", "slack": "SLACK_SIGNING_SECRET",
             "shopify": "SHOPIFY_WEBHOOK_SECRET", "standard": "WEBHOOK_SECRET", "twilio": "TWILIO_AUTH_TOKEN"}
TIMESTAMPED = ("stripe", "slack", "standard")


def _clean_env(tmp_path: Path, **secrets: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS and not k.startswith("DEVTUNNEL_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"), **secrets)
    return env


def _delivery(provider: str, public_url: str) -> tuple[str, Headers, bytes]:
    """A delivery of ``provider`` as it sends them, signed an hour ago with the receiver's secret."""
    json_type = [("Content-Type", "application/json")]
    if provider == "stripe":
        path, headers = "/webhooks/stripe", json_type
        body = json.dumps({"id": "evt_" + uuid.uuid4().hex, "object": "event", "type": "payment_intent.succeeded",
                           "data": {"object": {"id": "pi_1", "amount": 2000, "currency": "usd"}}}, indent=2).encode()
    elif provider == "github":
        path, headers = "/webhooks/github", [*json_type, ("X-GitHub-Event", "issues"),
                                             ("X-GitHub-Delivery", str(uuid.uuid4()))]
        body = json.dumps({"action": "opened", "issue": {"number": 7}}).encode()
    elif provider == "slack":
        path, headers = "/slack/events", json_type
        body = json.dumps({"type": "event_callback", "event_id": "Ev1", "event": {"type": "app_mention"}}).encode()
        headers = [*headers, ("X-Slack-Request-Timestamp", "0")]
    elif provider == "shopify":
        path, headers = "/webhooks/shopify", [*json_type, ("X-Shopify-Topic", "orders/create"),
                                              ("X-Shopify-Webhook-Id", str(uuid.uuid4()))]
        body = json.dumps({"id": 820982911946154508, "total_price": "10.00"}).encode()
    elif provider == "standard":
        path, headers = "/webhooks/standard", [*json_type, ("webhook-id", "msg_" + uuid.uuid4().hex)]
        body = json.dumps({"type": "user.created", "data": {"id": "u_1"}}).encode()
    else:
        path, headers = "/twilio/sms", [("Content-Type", "application/x-www-form-urlencoded"),
                                        ("I-Twilio-Idempotency-Token", str(uuid.uuid4()))]
        body = urlencode({"From": "+15550001", "Body": "hello", "MessageSid": "SM1"}).encode()
    signer = by_name(provider)
    assert signer is not None
    signed = signer.sign(Delivery("POST", public_url + path, Headers(headers), body),
                         RECEIVER_SECRETS[SECRET_OF[provider]], HOUR_AGO)
    return path, signed, body


@dataclass
class Setup:
    tmp_path: Path
    db: Path
    api: str
    rx: Receiver
    ids: dict[str, str]
    """Captured exchange id by provider."""
    public: tuple[str, str]
    """Where a delivery is posted to reach the tunnel's public side, and the Host it carries."""


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """``devtunnel http`` before the receiver (the agent knows every secret but Twilio's), one
    hour-old delivery per provider through the public side, each captured."""
    tmp_path = tmp_path_factory.mktemp("resign")
    db = tmp_path / "captures.db"
    agent_secrets = {v: RECEIVER_SECRETS[v] for v in SECRET_OF.values() if v != "TWILIO_AUTH_TOKEN"}
    with receiver() as rx:
        api_port = free_port()
        agent = Proc([*DEVTUNNEL, "http", rx.url.rsplit(":", 1)[1], "--no-tui", "--name", "hooks",
                      "--api-port", str(api_port), "--db", str(db)], _clean_env(tmp_path, **agent_secrets))
        try:
            match = FORWARDING.match(agent.line(lambda line: line.startswith("Forwarding")))
            assert match is not None
            agent.line(lambda line: line.startswith("API "))
            port = match.group(3)
            public_url, host = f"http://hooks.localhost:{port}", f"hooks.localhost:{port}"
            statuses = {}
            with httpx.Client(trust_env=False) as client:
                for provider in SECRET_OF:
                    path, headers, body = _delivery(provider, public_url)
                    answer = client.post(f"http://127.0.0.1:{port}{path}", headers=[*headers.items(), ("Host", host)],
                                         content=body)
                    statuses[provider] = answer.status_code
            # The receiver refuses the hour-old timestamps; the schemes without one still pass.
            assert statuses == {"stripe": 400, "github": 200, "slack": 400, "shopify": 200, "standard": 400,
                                "twilio": 200}

            def recorded() -> list[dict[str, Any]] | None:
                rows = _cli(tmp_path, "requests", "--json", "--db", str(db), "--limit", "0").json
                return rows if len(rows) == len(SECRET_OF) else None

            rows = wait_for(recorded, timeout=20, what="every delivery recorded")
            yield Setup(tmp_path, db, f"http://127.0.0.1:{api_port}", rx, dict(zip(SECRET_OF, (r["id"] for r in rows))),
                        (f"http://127.0.0.1:{port}", host))
        finally:
            agent.stop()


@dataclass
class Done:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


def _cli(tmp_path: Path, *args: str, **secrets: str) -> Done:
    done = subprocess.run([*DEVTUNNEL, *args], env=_clean_env(tmp_path, **secrets), capture_output=True, text=True,
                          check=False, timeout=60)
    assert "Traceback" not in done.stderr
    return Done(done.returncode, done.stdout, done.stderr)


def _replay(setup: Setup, *args: str, **secrets: str) -> Done:
    return _cli(setup.tmp_path, "replay", *args, "--db", str(setup.db), **secrets)


def _last_seen(setup: Setup) -> tuple[str, int, str]:
    return setup.rx.verdicts[-1]


def test_an_hour_old_delivery_of_every_provider_replayed_is_accepted_with_a_fresh_signature(captured: Setup) -> None:
    done = _replay(captured, *captured.ids.values(), "--json", **RECEIVER_SECRETS)
    assert done.code == 0, done.out + done.err
    assert done.err == ""
    results = done.json
    assert [r["status"] for r in results] == [200] * len(SECRET_OF)
    assert [r["resigned"] for r in results] == list(SECRET_OF)
    assert [v[1:] for v in captured.rx.verdicts[-len(SECRET_OF):]] == [(200, "ok")] * len(SECRET_OF)
    # The table and show say it was signed afresh.
    # Wide: on a narrower line the path gives way to the EVENT column.
    listing = _cli(captured.tmp_path, "requests", "--db", str(captured.db), COLUMNS="200").out
    assert listing.count("↻s /webhooks/stripe") == 1 and "↻s /twilio/sms" in listing
    shown = _cli(captured.tmp_path, "show", results[0]["id"], "--db", str(captured.db)).out
    assert "signature re-signed (stripe)" in shown
    plain = _replay(captured, captured.ids["stripe"], **RECEIVER_SECRETS)
    assert "200 OK" in plain.out and "re-signed (stripe)" in plain.out


def test_as_captured_sends_the_old_signature_and_the_receiver_refuses_it(captured: Setup) -> None:
    ids = [captured.ids[p] for p in TIMESTAMPED]
    done = _replay(captured, *ids, "--as-captured", "--json", **RECEIVER_SECRETS)
    assert done.code == 1 and done.err == ""  # each refused: exit 1
    assert [(r["status"], r["resigned"]) for r in done.json] == [(400, None)] * 3
    assert "Timestamp outside the tolerance zone" in captured.rx.verdicts[-3][2]
    # Without a timestamp, the captured signature still fails for an edited body.
    edited = _replay(captured, captured.ids["github"], "--as-captured", "--set", "issue.number=8", "--json",
                     **RECEIVER_SECRETS)
    assert [(r["status"], r["resigned"], r["edited"]) for r in edited.json] == [(401, None, True)]


def test_set_edits_a_json_field_then_the_delivery_is_signed_afresh_and_accepted(captured: Setup) -> None:
    done = _replay(captured, captured.ids["stripe"], "--set", "data.object.amount=999", "--set",
                   "data.object.note=gift", "--json", **RECEIVER_SECRETS)
    assert done.code == 0, done.err
    [result] = done.json
    assert (result["status"], result["resigned"], result["edited"]) == (200, "stripe", True)
    assert _last_seen(captured) == ("/webhooks/stripe", 200, "ok")
    seen = json.loads(captured.rx.bodies[-1])
    assert seen["data"]["object"]["amount"] == 999 and seen["data"]["object"]["note"] == "gift"
    assert captured.rx.bodies[-1].startswith(b'{\n  "id"')  # the captured layout is kept
    # Slack and Standard Webhooks too (each signs the body with its timestamp).
    for provider, field in (("slack", "event.type=reaction_added"), ("standard", "data.id=u_2")):
        again = _replay(captured, captured.ids[provider], "--set", field, "--json", **RECEIVER_SECRETS)
        assert [(r["status"], r["resigned"]) for r in again.json] == [(200, provider)], again.out


def test_a_wrong_secret_is_refused_and_the_replay_says_why(captured: Setup) -> None:
    # The capture was not judged valid (its timestamp an hour old) and the secret does not verify
    # it: it may be forged, so it goes with its captured signature, and the replay says why.
    done = _replay(captured, captured.ids["stripe"], STRIPE_WEBHOOK_SECRET="whsec_not_the_receivers")
    assert done.code == 1  # refused
    assert "400 Bad Request" in done.out and "Timestamp outside the tolerance zone" in done.out
    assert done.err == ("devtunnel: signature not refreshed: STRIPE_WEBHOOK_SECRET does not verify the delivery as "
                        "captured (signature does not match: wrong secret or altered body): it may not come from "
                        "stripe; sent with its captured signature (--sign-unverified signs it anyway)\n")
    # Signed anyway on request: with a secret the receiver does not hold, it refuses the signature.
    anyway = _replay(captured, captured.ids["stripe"], "--sign-unverified",
                     STRIPE_WEBHOOK_SECRET="whsec_not_the_receivers")
    assert "400 Bad Request" in anyway.out and "SignatureVerificationError" in anyway.out
    assert anyway.err == ("devtunnel: signature made with STRIPE_WEBHOOK_SECRET, which did not verify the captured "
                          "delivery: the receiver may hold another secret\n")
    assert "whsec_not_the_receivers" not in done.out + done.err + anyway.out + anyway.err


def test_without_a_secret_the_replay_says_which_variable_once_and_sends_as_captured(captured: Setup) -> None:
    before = len(captured.rx.verdicts)
    # Every Stripe and GitHub delivery and replay so far, each delivery once: one line per variable.
    done = _replay(captured, "--filter", "(path:/webhooks/stripe or path:/webhooks/github) (replay or !replay)", "--json")
    # Said once per variable, after the ids of the replays it concerns.
    [stripe, github] = done.err.splitlines()[-2:]
    assert stripe.startswith("devtunnel: ") and stripe.endswith(": signature not refreshed: set STRIPE_WEBHOOK_SECRET")
    assert github.startswith("devtunnel: ") and github.endswith(": signature not refreshed: set GITHUB_WEBHOOK_SECRET")
    results = done.json
    assert len(results) >= 2 and all(r["resigned"] is None for r in results)
    assert len(captured.rx.verdicts) == before + len(results)
    first = next(r for r in results if r["replay_of"] == captured.ids["stripe"])
    assert first["status"] == 400  # the hour-old signature, sent as captured


def test_a_signature_header_given_by_hand_is_sent_as_given(captured: Setup) -> None:
    done = _replay(captured, captured.ids["github"], "-H", "X-Hub-Signature-256: sha256=00", "--json",
                   **RECEIVER_SECRETS)
    assert done.err == "devtunnel: signature sent as edited (X-Hub-Signature-256 changed by hand)\n"
    assert [(r["status"], r["resigned"]) for r in done.json] == [(401, None)]
    assert _last_seen(captured) == ("/webhooks/github", 401, "bad signature")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--set", "amount"], 2, "--set 'amount': expected PATH=VALUE, e.g. data.object.amount=999"),
        (["--set", "data..x=1"], 2, "has an empty segment"),
        # What was typed does not fit the body: bad usage too, as a missing = or an unreadable --body.
        (["--set", "data.object.amount.value=1"], 2, "data.object.amount is int 2000, not an object"),
        (["--set", "id.x=1"], 2, "--set id.x: id is str"),
        (["--body", "@/nonexistent/body.json"], 2, "cannot read /nonexistent/body.json"),
    ],
)
def test_a_bad_set_is_one_line_and_nothing_is_sent(captured: Setup, args: list[str], code: int, message: str) -> None:
    before = len(captured.rx.verdicts)
    done = _replay(captured, captured.ids["stripe"], *args, **RECEIVER_SECRETS)
    assert (done.code, done.out) == (code, "")
    assert done.err.startswith("devtunnel: ") and message in done.err and done.err.count("\n") == 1
    assert len(captured.rx.verdicts) == before


def test_set_edits_a_forms_fields_then_twilio_signs_them_afresh_and_accepts_them(captured: Setup) -> None:
    done = _replay(captured, captured.ids["twilio"], "--set", "Body=STOP now", "--set", "NumMedia=0", "--json",
                   **RECEIVER_SECRETS)
    assert done.code == 0, done.err
    assert [(r["status"], r["resigned"], r["edited"]) for r in done.json] == [(200, "twilio", True)]
    assert _last_seen(captured) == ("/twilio/sms", 200, "ok")  # twilio's RequestValidator over the new fields
    assert parse_qsl(captured.rx.bodies[-1].decode()) == [
        ("From", "+15550001"), ("Body", "STOP now"), ("MessageSid", "SM1"), ("NumMedia", "0")]


@pytest.mark.parametrize(
    ("provider", "args", "message"),
    [
        ("twilio", ["--set", "payload.action=closed"], "--set payload.action: the form has no field 'payload'"),
        ("twilio", ["--set", "Body.text=x"], "--set Body.text: the form's field 'Body' does not hold JSON"),
        ("stripe", ["--body", "plain words", "--set", "a=1"],
         "--set needs a JSON body (or a form: application/x-www-form-urlencoded); this one is not JSON"),
    ],
)
def test_set_that_does_not_fit_a_form_or_a_body_of_neither_kind_is_refused_before_sending(
    captured: Setup, provider: str, args: list[str], message: str
) -> None:
    before = len(captured.rx.verdicts)
    done = _replay(captured, captured.ids[provider], *args, **RECEIVER_SECRETS)
    assert done.code == 2 and message in done.err and done.err.count("\n") == 1, done.err
    assert len(captured.rx.verdicts) == before


def test_the_agent_api_replay_signs_afresh_edits_and_keeps_the_captured_signature_on_request(captured: Setup) -> None:
    with httpx.Client(base_url=captured.api, trust_env=False, timeout=30) as api:
        def replay(exchange_id: str, body: dict[str, Any]) -> httpx.Response:
            return api.post(f"/api/requests/http/{exchange_id}/replay", json=body)

        fresh = replay(captured.ids["stripe"], {})
        assert fresh.status_code == 201
        got = fresh.json()
        assert (got["response"]["status_code"], got["resigned"], got["signature"]) == (200, "stripe", None)
        assert _last_seen(captured) == ("/webhooks/stripe", 200, "ok")

        edited = replay(captured.ids["stripe"], {"set": ["data.object.amount=999"]}).json()
        assert (edited["resigned"], edited["edited"]) == ("stripe", True)
        assert _last_seen(captured) == ("/webhooks/stripe", 200, "ok")
        assert json.loads(captured.rx.bodies[-1])["data"]["object"]["amount"] == 999
        assert api.get(f"/api/requests/http/{edited['id']}").json()["resigned"] == "stripe"

        kept = replay(captured.ids["standard"], {"as_captured": True}).json()
        assert kept["resigned"] is None and _last_seen(captured)[1] == 400

        # The agent has no Twilio token: sent as captured, and the answer says which variable to set.
        twilio = replay(captured.ids["twilio"], {}).json()
        assert (twilio["resigned"], twilio["signature"]) == (None, "not refreshed: set TWILIO_AUTH_TOKEN")
        assert _last_seen(captured) == ("/twilio/sms", 200, "ok")

        before = len(captured.rx.verdicts)
        for bad, message in (({"set": "a=1"}, "set must be a list of PATH=VALUE texts, not"),
                             ({"set": [1]}, "set: each item is a PATH=VALUE text, not a number"),
                             ({"as_captured": "yes"}, "as_captured must be true or false, not a string"),
                             ({"set": ["nope"]}, "expected PATH=VALUE")):
            refused = replay(captured.ids["stripe"], bad)
            assert refused.status_code == 400 and message in refused.text, refused.text
        assert len(captured.rx.verdicts) == before


def test_during_a_rotation_the_replay_signs_with_the_secret_that_verified_the_capture(captured: Setup) -> None:
    # The new secret first, as docs/webhooks.md shows; the deliveries were signed with the old one,
    # the one the receiver holds: signed with the new one, every replay was refused.
    new = {var: "whsec_" + base64.b64encode(b"the-new-secret-after-rotation!!!").decode() for var in SECRET_OF.values()}
    rotating = {var: f"{new[var]},{RECEIVER_SECRETS[var]}" for var in SECRET_OF.values()}
    done = _replay(captured, *captured.ids.values(), "--json", **rotating)
    assert done.err == ""
    assert [(r["status"], r["resigned"]) for r in done.json] == [(200, p) for p in SECRET_OF]
    assert [v[1:] for v in captured.rx.verdicts[-len(SECRET_OF):]] == [(200, "ok")] * len(SECRET_OF)


def test_a_forged_delivery_is_not_made_to_pass_by_a_replay_unless_asked(captured: Setup) -> None:
    """Anyone can post to the public URL: a delivery signed without the secret (or not signed
    properly at all) is refused by the receiver when it comes, and a replay, even a bulk one of
    every invalid delivery, must not sign it afresh with the real secret."""
    now = int(time.time())
    forged = {"t=%d,v1=%s" % (now, "0" * 64): "evt_forged_1", "garbage": "evt_forged_2"}
    url, host = captured.public
    with httpx.Client(trust_env=False) as client:
        for header, event_id in forged.items():
            body = json.dumps({"id": event_id, "object": "event", "type": "payment_intent.succeeded",
                               "data": {"object": {"id": "pi_forged", "amount": 1, "currency": "usd"}}}).encode()
            answer = client.post(url + "/webhooks/stripe", content=body,
                                 headers={"Host": host, "Content-Type": "application/json", "Stripe-Signature": header})
            assert answer.status_code == 400  # the receiver's own check refuses it

    def forged_ids() -> list[str] | None:
        rows = _cli(captured.tmp_path, "requests", "--json", "--db", str(captured.db), "--limit", "0",
                    "--filter", "path:/webhooks/stripe body:pi_forged !replay").json
        return [r["id"] for r in rows] if len(rows) == 2 else None

    ids = wait_for(forged_ids, timeout=20, what="the forged deliveries recorded")
    # Every invalid Stripe delivery, the genuine hour-old one among them (its secret verifies it:
    # signed afresh) and the two forged ones (sent as captured: refused again).
    before = len(captured.rx.verdicts)
    done = _replay(captured, "--filter", "path:/webhooks/stripe sig:invalid !replay", "--json", **RECEIVER_SECRETS)
    assert done.code == 1, done.err  # the forged ones refused
    by_id = {r["replay_of"]: (r["status"], r["resigned"]) for r in done.json}
    assert by_id == {captured.ids["stripe"]: (200, "stripe"), ids[0]: (400, None), ids[1]: (400, None)}
    assert "STRIPE_WEBHOOK_SECRET does not verify the delivery as captured" in done.err
    assert "it may not come from stripe; sent with its captured signature (--sign-unverified signs it anyway)" in done.err
    assert [v[1] for v in captured.rx.verdicts[before:]].count(200) == 1
    # Asked for, it is signed: the receiver takes it (the user vouches for it).
    anyway = _replay(captured, ids[0], "--sign-unverified", "--json", **RECEIVER_SECRETS)
    assert [(r["status"], r["resigned"]) for r in anyway.json] == [(200, "stripe")]
    both = _replay(captured, ids[0], "--sign-unverified", "--as-captured", **RECEIVER_SECRETS)
    assert both.code == 2 and "give as_captured" in both.err
    # The agent API the same way (the inspector replays through it).
    with httpx.Client(base_url=captured.api, trust_env=False, timeout=30) as api:
        plain = api.post(f"/api/requests/http/{ids[1]}/replay", json={}).json()
        assert (plain["response"]["status_code"], plain["resigned"]) == (400, None)
        assert plain["signature"].startswith("not refreshed: STRIPE_WEBHOOK_SECRET does not verify the delivery")
        asked = api.post(f"/api/requests/http/{ids[1]}/replay", json={"sign_unverified": True}).json()
        assert (asked["response"]["status_code"], asked["resigned"], asked["signature"]) == (200, "stripe", None)
        refused = api.post(f"/api/requests/http/{ids[1]}/replay", json={"sign_unverified": "yes"})
        assert refused.status_code == 400 and "sign_unverified must be true or false" in refused.text
