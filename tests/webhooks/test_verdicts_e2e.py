"""Verdicts on real deliveries: ``devtunnel http`` as a subprocess with secrets in its environment,
deliveries through the public side to a receiver verifying with the providers' own libraries,
then ``devtunnel requests --json --filter ...``, ``show --json`` and the agent API as users read them.
Secrets appear in none of them, nor in the capture database or the agent's output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtunnel.capture.model import Headers
from devtunnel.webhooks import Delivery
from devtunnel.webhooks.providers import GitHub, StandardWebhooks, Stripe
from tests.helpers import free_port, wait_for
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc
from tests.webhooks.receivers import RECEIVER_SECRETS, Receiver, receiver

STRIPE_SECRET = RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]
GITHUB_SECRET = RECEIVER_SECRETS["GITHUB_WEBHOOK_SECRET"]
CONFIG_SECRET = "whsec_only_in_the_config_file_4242"
SECRETS = [STRIPE_SECRET, GITHUB_SECRET, CONFIG_SECRET, RECEIVER_SECRETS["WEBHOOK_SECRET"]]
CONVENTIONAL = ("STRIPE_WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET", "SLACK_SIGNING_SECRET", "SHOPIFY_WEBHOOK_SECRET",
                "WEBHOOK_SECRET", "TWILIO_AUTH_TOKEN")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONVENTIONAL and not k.startswith("DEVTUNNEL_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               STRIPE_WEBHOOK_SECRET=STRIPE_SECRET, GITHUB_WEBHOOK_SECRET=GITHUB_SECRET)
    return env  # no WEBHOOK_SECRET: Standard Webhooks deliveries stay unverified


def _stripe(event_id: str, secret: str, at: float) -> tuple[str, dict[str, str], bytes]:
    body = json.dumps({"id": event_id, "object": "event", "type": "invoice.paid",
                       "data": {"object": {"id": "in_1", "amount_paid": 2000}}}).encode()
    headers = Stripe().sign(Delivery("POST", "", Headers([("Content-Type", "application/json")]), body), secret, at)
    return "/webhooks/stripe", dict(headers.items()), body


def _github(delivery_id: str, *, signed: bool = True) -> tuple[str, dict[str, str], bytes]:
    body = json.dumps({"action": "opened", "number": 7}).encode()
    headers = Headers([("Content-Type", "application/json"), ("X-GitHub-Event", "pull_request"),
                       ("X-GitHub-Delivery", delivery_id)])
    if signed:
        headers = GitHub().sign(Delivery("POST", "", headers, body), GITHUB_SECRET, time.time())
    return "/webhooks/github", dict(headers.items()), body


def _standard() -> tuple[str, dict[str, str], bytes]:
    body = json.dumps({"type": "user.created", "data": {"id": "u_1"}}).encode()
    headers = Headers([("Content-Type", "application/json"), ("webhook-id", "msg_" + uuid.uuid4().hex)])
    headers = StandardWebhooks().sign(Delivery("POST", "", headers, body), RECEIVER_SECRETS["WEBHOOK_SECRET"], time.time())
    return "/webhooks/standard", dict(headers.items()), body


def _cli(env: dict[str, str], cwd: Path, *args: str, code: int = 0) -> Any:
    done = subprocess.run([*DEVTUNNEL, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr
    assert not any(s in done.stdout + done.stderr for s in SECRETS)
    return json.loads(done.stdout) if "--json" in args else done.stdout


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def test_deliveries_through_the_tunnel_get_verdicts_with_reasons_duplicates_and_no_secret_anywhere(
        tmp_path: Path, hooks: Receiver) -> None:
    env = _env(tmp_path)
    db = tmp_path / "captures.db"
    config = tmp_path / "config" / "devtunnel" / "devtunnel.toml"
    config.parent.mkdir(parents=True)
    # A second, rotated secret for Stripe only in the (private) config file: known, never shown.
    config.write_text(f'[webhooks.stripe]\nsecrets = ["{CONFIG_SECRET}"]\n')
    config.chmod(0o600)
    api_port = free_port()
    port_of_receiver = hooks.url.rsplit(":", 1)[1]
    agent = Proc([*DEVTUNNEL, "http", port_of_receiver, "--no-tui", "--name", "hooks", "--api-port", str(api_port),
                  "--db", str(db)], env)
    try:
        match = FORWARDING.match(agent.line(lambda line: line.startswith("Forwarding")))
        assert match is not None
        agent.line(lambda line: line.startswith("API "))
        public = f"http://127.0.0.1:{match.group(3)}"
        host = f"hooks.localhost:{match.group(3)}"
        now = time.time()
        deliveries = [
            _stripe("evt_valid", STRIPE_SECRET, now),
            _stripe("evt_rotated", CONFIG_SECRET, now),
            _stripe("evt_wrong", "whsec_somebody_else", now),
            _stripe("evt_old", STRIPE_SECRET, now - 7200),
            _github("d-1"),
            _github("d-1"),  # GitHub delivers the same delivery again
            _github("d-2", signed=False),
            _standard(),
        ]
        with httpx.Client(trust_env=False) as client:
            statuses = [client.post(public + path, headers={**headers, "Host": host}, content=body).status_code
                        for path, headers, body in deliveries]
        # The receiver, verifying with the providers' own libraries, agrees with the verdicts below
        # (it knows the Standard Webhooks secret the agent was not given).
        assert statuses == [200, 400, 400, 400, 200, 200, 401, 200]

        def recorded() -> list[dict[str, Any]] | None:
            rows = _cli(env, tmp_path, "requests", "--json", "--db", str(db), "--limit", "0")
            return rows if len(rows) == len(deliveries) and all(r["webhook"] for r in rows) else None

        rows = wait_for(recorded, timeout=20, what="every delivery recorded with its verdict")
        by_path = [(r["path"], r["webhook"]["signature"]) for r in rows]
        assert by_path == [("/webhooks/stripe", "valid"), ("/webhooks/stripe", "valid"), ("/webhooks/stripe", "invalid"),
                           ("/webhooks/stripe", "invalid"), ("/webhooks/github", "valid"),
                           ("/webhooks/github", "valid"), ("/webhooks/github", "unsigned"),
                           ("/webhooks/standard", "unverified")]

        invalid = _cli(env, tmp_path, "requests", "--json", "--db", str(db), "--filter", "sig:invalid")
        assert [r["webhook"]["delivery_id"] for r in invalid] == ["evt_wrong", "evt_old"]
        assert invalid[0]["webhook"]["reason"] == "signature does not match: wrong secret or altered body"
        assert invalid[1]["webhook"]["reason"] == "timestamp outside the tolerance: 2.0 h old (tolerance 300 s)"
        assert invalid[0]["webhook"] == {"provider": "stripe", "event_type": "invoice.paid", "delivery_id": "evt_wrong",
                                         "signature": "invalid", "reason": invalid[0]["webhook"]["reason"],
                                         "duplicate_of": None}

        [unsigned] = _cli(env, tmp_path, "requests", "--json", "--db", str(db), "--filter", "sig:unsigned")
        assert unsigned["webhook"]["reason"] == "no X-Hub-Signature-256 header"
        [unverified] = _cli(env, tmp_path, "requests", "--json", "--db", str(db), "--filter", "sig:unverified")
        assert unverified["webhook"]["provider"] == "standard"
        assert unverified["webhook"]["reason"] == "no secret: set WEBHOOK_SECRET"

        [dup] = _cli(env, tmp_path, "requests", "--json", "--db", str(db), "--filter", "dup")
        first = next(r for r in rows if r["webhook"]["delivery_id"] == "d-1")
        assert dup["webhook"]["duplicate_of"] == first["id"] != dup["id"]
        assert dup["webhook"]["event_type"] == "pull_request.opened"
        assert [r["id"] for r in _cli(env, tmp_path, "requests", "--json", "--db", str(db),
                                      "--filter", "provider:github event:pull_request.*")] == [first["id"], dup["id"],
                                                                                               unsigned["id"]]
        shown = _cli(env, tmp_path, "show", dup["id"], "--json", "--db", str(db))
        assert shown["webhook"] == dup["webhook"]
        # The same verdicts as text, as people read them: an EVENT column, and show's lines.
        env_wide = {**env, "COLUMNS": "160"}
        listed = _cli(env_wide, tmp_path, "requests", "--db", str(db), "--limit", "0").splitlines()
        assert listed[0].split() == ["ID", "TIME", "TUNNEL", "METHOD", "STATUS", "DURATION", "SIZE", "EVENT", "PATH"]
        at, end = listed[0].index("EVENT"), listed[0].index("PATH")
        events = [line[at:end].strip() for line in listed[1:]]
        assert events == ["✓ stripe invoice.paid", "✓ stripe invoice.paid", "✗ stripe invoice.paid",
                          "✗ stripe invoice.paid", "✓ github pull_request.opened", "✓≡ github pull_request.opened",
                          "– github pull_request.opened", "? standard user.created"]
        text = _cli(env, tmp_path, "show", dup["id"], "--db", str(db)).splitlines()
        assert "webhook   github pull_request.opened  (delivery d-1)" in text
        assert "signature ✓ valid" in text
        assert f"duplicate ≡ of {first['id']}  (the first capture of this delivery id)" in text
        text = _cli(env, tmp_path, "show", invalid[1]["id"], "--db", str(db)).splitlines()
        assert "signature ✗ invalid: timestamp outside the tolerance: 2.0 h old (tolerance 300 s)" in text

        # A replay of the old delivery as captured: judged at its own time, not a duplicate.
        [replayed] = _cli(env, tmp_path, "replay", invalid[1]["id"], "--as-captured", "--json", "--db", str(db),
                          code=1)  # refused (400)
        assert replayed["replay_of"] == invalid[1]["id"] and replayed["status"] == 400
        assert replayed["webhook"]["reason"] == "timestamp outside the tolerance: 2.0 h old (tolerance 300 s)"
        assert replayed["webhook"]["duplicate_of"] is None
        assert [r["id"] for r in _cli(env, tmp_path, "requests", "--json", "--db", str(db), "--filter", "dup")] == [dup["id"]]
        assert [r["id"] for r in _cli(env, tmp_path, "requests", "--json", "--db", str(db),
                                      "--filter", "delivery:evt_old")] == [invalid[1]["id"], replayed["id"]]

        api = httpx.get(f"http://127.0.0.1:{api_port}/api/requests/http", params={"filter": "provider:stripe"},
                        trust_env=False)
        assert [r["webhook"]["delivery_id"] for r in api.json()["requests"]] == [
            "evt_old", "evt_old", "evt_wrong", "evt_rotated", "evt_valid"]  # newest first: the replay, then the rest
        assert not any(s in api.text for s in SECRETS)
        for fmt in ("pytest", "har", "curl", "raw", "httpie"):  # _cli checks the output holds no secret
            assert "evt_valid" in _cli(env, tmp_path, "export", "--db", str(db), "--filter", "provider:stripe",
                                       "--format", fmt)
        shown_config = _cli(env, tmp_path, "config", "show")
        assert "[webhooks.stripe]" in shown_config and CONFIG_SECRET[-4:] in shown_config
    finally:
        if agent.popen.poll() is None:
            agent.stop(signal.SIGINT)
        agent.kill()
    logs = "\n".join(agent.out + agent.err)
    assert "/webhooks/stripe" in logs and not any(s in logs for s in SECRETS)
    assert any(line.endswith("verifying webhook signatures of github, stripe") for line in agent.err), agent.err
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("captures.db*"))
    assert b"evt_valid" in stored  # the bodies are there, as recorded
    assert not any(s.encode() in stored for s in SECRETS)


def test_a_secret_in_a_file_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    env = _env(tmp_path)
    config = tmp_path / "config" / "devtunnel" / "devtunnel.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[webhooks.stripe]\nsecret = "{CONFIG_SECRET}"\n')
    config.chmod(0o644)
    done = subprocess.run([*DEVTUNNEL, "http", "8000", "--no-tui", "--db", str(tmp_path / "c.db")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"devtunnel: {config}:2: webhooks.stripe.secret: the file holds a webhook secret but other users can read it "
        f"(mode 644): run chmod 600 {config}, or move the secret to an environment variable and name it with secret_env")
    assert CONFIG_SECRET not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_a_named_tunnels_secret_applies_under_another_name_too(tmp_path: Path, hooks: Receiver) -> None:
    env = _env(tmp_path)
    env.pop("STRIPE_WEBHOOK_SECRET")
    db = tmp_path / "captures.db"
    project = tmp_path / "named.toml"
    env["DEVTUNNEL_CONFIG"] = str(project)
    port_of_receiver = hooks.url.rsplit(":", 1)[1]
    project.write_text(f'[tunnels.pay]\ntarget = {port_of_receiver}\n'
                       f'[tunnels.pay.webhooks.stripe]\nsecret = "{STRIPE_SECRET}"\n')
    project.chmod(0o600)
    agent = Proc([*DEVTUNNEL, "http", "pay", "--name", "pay-test", "--no-tui", "--api-port", "0", "--db", str(db)], env)
    try:
        match = FORWARDING.match(agent.line(lambda line: line.startswith("Forwarding")))
        assert match is not None and match.group(2) == "pay-test"
        path, headers, body = _stripe("evt_named", STRIPE_SECRET, time.time())
        r = httpx.post(f"http://127.0.0.1:{match.group(3)}{path}", content=body, trust_env=False,
                       headers={**headers, "Host": f"pay-test.localhost:{match.group(3)}"})
        assert r.status_code == 200
        rows = wait_for(lambda: _cli(env, tmp_path, "requests", "--json", "--db", str(db)) or None, timeout=20,
                        what="the delivery recorded")
        assert rows[0]["webhook"]["signature"] == "valid"
    finally:
        if agent.popen.poll() is None:
            agent.stop(signal.SIGINT)
        agent.kill()
