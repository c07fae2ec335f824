"""A delivery carrying its signature twice (two ``Stripe-Signature`` headers, GitHub's SHA-1 and
SHA-256 headers disagreeing, Svix's and Standard Webhooks' headers side by side): receivers differ
on which they read (the receiver here reads the last value of a repeated header, as many
frameworks do; another reads the first). Through a running agent, the verdict says how each
reading fared (``requests --json``, ``show``, the agent API); a replay signs afresh in one header
each, and the providers' own libraries accept it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
import stripe

from devtunnel.capture.model import Headers
from devtunnel.webhooks import Delivery
from devtunnel.webhooks.providers import GitHub, StandardWebhooks, Stripe
from tests.helpers import free_port, wait_for
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc
from tests.webhooks.receivers import RECEIVER_SECRETS, receiver

pytestmark = pytest.mark.timeout(180)

STRIPE_SECRET = RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]
GITHUB_SECRET = RECEIVER_SECRETS["GITHUB_WEBHOOK_SECRET"]
STANDARD_SECRET = RECEIVER_SECRETS["WEBHOOK_SECRET"]
DIFFER = "receivers differ on which signature they read: "
NO_MATCH = "signature does not match: wrong secret or altered body"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS and not k.startswith("DEVTUNNEL_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"), **RECEIVER_SECRETS)
    return env


def _cli(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run([*DEVTUNNEL, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def _deliveries(now: float) -> list[tuple[str, list[tuple[str, str]], bytes]]:
    json_type = [("Content-Type", "application/json")]
    stripe_body = json.dumps({"id": "evt_twice", "object": "event", "type": "invoice.paid",
                              "data": {"object": {"id": "in_1"}}}).encode()

    def stripe_signature(secret: str) -> str:
        signed = Stripe().sign(Delivery("POST", "", Headers(json_type), stripe_body), secret, now)
        return signed.get("stripe-signature") or ""

    github_body = json.dumps({"action": "opened", "number": 7}).encode()
    github = GitHub().sign(Delivery("POST", "", Headers([*json_type, ("X-GitHub-Event", "pull_request"),
                                                         ("X-GitHub-Delivery", "d-both"), ("X-Hub-Signature-256", ""),
                                                         ("X-Hub-Signature", "")]), github_body), GITHUB_SECRET, now)
    github = github.with_set("X-Hub-Signature", "sha1=" + "0" * 40)  # a stale SHA-1 beside a good SHA-256
    standard_body = json.dumps({"type": "user.created", "data": {"id": "u_1"}}).encode()
    msg = "msg_" + uuid.uuid4().hex
    standard = StandardWebhooks().sign(Delivery("POST", "", Headers([*json_type, ("svix-id", msg)]), standard_body),
                                       STANDARD_SECRET, now)
    stale = StandardWebhooks().sign(Delivery("POST", "", Headers([("webhook-id", msg)]), standard_body),
                                    "whsec_" + "QUJD" * 8, now)
    return [
        # The first valid, the second made with another secret: this receiver reads the second.
        ("/webhooks/stripe", [*json_type, ("Stripe-Signature", stripe_signature(STRIPE_SECRET)),
                              ("Stripe-Signature", stripe_signature("whsec_another_endpoint"))], stripe_body),
        ("/webhooks/github-sha1", github.items(), github_body),
        ("/webhooks/standard", [*standard.items(), *stale.items()], standard_body),
    ]


def test_signatures_sent_twice_are_each_judged_and_a_replay_signs_each_header_once(tmp_path: Path) -> None:
    env = _env(tmp_path)
    db = tmp_path / "captures.db"
    api_port = free_port()
    with receiver() as rx:
        agent = Proc([*DEVTUNNEL, "http", rx.url.rsplit(":", 1)[1], "--no-tui", "--name", "hooks",
                      "--api-port", str(api_port), "--db", str(db)], env)
        try:
            match = FORWARDING.match(agent.line(lambda line: line.startswith("Forwarding")))
            assert match is not None
            agent.line(lambda line: line.startswith("API "))
            port = match.group(3)
            deliveries = _deliveries(time.time())
            with httpx.Client(trust_env=False) as client:
                statuses = [client.post(f"http://127.0.0.1:{port}{path}", content=body,
                                        headers=[*headers, ("Host", f"hooks.localhost:{port}")]).status_code
                            for path, headers, body in deliveries]
            # The receivers, reading the last Stripe-Signature, the SHA-1 header and the webhook-*
            # headers, refuse all three, though each carries a signature that is valid.
            assert statuses == [400, 401, 400]

            def recorded() -> list[dict[str, Any]] | None:
                rows = _cli(env, "requests", "--json", "--db", str(db), "--limit", "0")
                return rows if len(rows) == len(deliveries) and all(r["webhook"] for r in rows) else None

            rows = wait_for(recorded, timeout=20, what="every delivery recorded with its verdict")
            assert [r["webhook"]["signature"] for r in rows] == ["invalid"] * 3
            reasons = [r["webhook"]["reason"] for r in rows]
            assert reasons[0] == (f"{DIFFER}the first Stripe-Signature header valid; the second Stripe-Signature "
                                  f"header invalid ({NO_MATCH})")
            assert reasons[1] == f"{DIFFER}X-Hub-Signature-256 valid; X-Hub-Signature invalid ({NO_MATCH})"
            assert reasons[2] == f"{DIFFER}svix-signature valid; webhook-signature invalid ({NO_MATCH})"
            # show, as people read it, and the agent API's verdict field say the same.
            shown = _cli(env, "show", rows[0]["id"], "--db", str(db)).splitlines()
            assert f"signature ✗ invalid: {reasons[0]}" in shown
            with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", trust_env=False, timeout=30) as api:
                listed = api.get("/api/requests/http", params={"limit": 10}).json()["requests"]
                assert sorted(r["webhook"]["reason"] for r in listed) == sorted(reasons)
                wait_for(lambda: "".join(agent.out).count(DIFFER) == 3, what="the agent's lines")

                # A replay signs afresh: one header each, the duplicates gone, none stale.
                notices = []
                for row in rows:
                    replayed = api.post(f"/api/requests/http/{row['id']}/replay", json={})
                    assert replayed.status_code == 201, replayed.text
                    notices.append(replayed.json()["signature"])
                assert notices == ["made afresh in one Stripe-Signature (2 in the capture)", None, None]
            assert [status for _, status, _ in rx.verdicts[-3:]] == [200, 200, 200], rx.verdicts[-3:]
        finally:
            agent.stop()
    sent = [Headers(h) for h in rx.headers[-3:]]
    stripe_sent, github_sent, standard_sent = sent
    assert len(stripe_sent.get_all("Stripe-Signature")) == 1
    stripe.Webhook.construct_event(rx.bodies[-3], stripe_sent.get("Stripe-Signature"), STRIPE_SECRET)
    assert len(github_sent.get_all("X-Hub-Signature")) == len(github_sent.get_all("X-Hub-Signature-256")) == 1
    for family in ("svix", "webhook"):  # each family signed afresh, as each library reads it
        headers = {f"webhook-{part}": standard_sent.get(f"{family}-{part}") or "" for part in ("id", "timestamp", "signature")}
        assert all(len(standard_sent.get_all(f"{family}-{part}")) == 1 for part in ("id", "timestamp", "signature"))
        standardwebhooks.Webhook(STANDARD_SECRET).verify(rx.bodies[-1], headers)
