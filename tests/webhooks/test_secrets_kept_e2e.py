"""A tunnel's own webhook secrets (``[tunnels.NAME.webhooks.PROVIDER]``, in the config file only)
reach nothing a user or another program reads: ``devtunnel http NAME`` as a subprocess, signed,
mis-signed and re-signed deliveries through it to a receiver verifying with the providers'
libraries, then the capture database, the agent's output, every read of the agent API, the CLI's
listings, ``show``, every export format (CLI and API), ``config show`` and ``send``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtunnel.capture.model import Headers
from devtunnel.webhooks import Delivery
from devtunnel.webhooks.providers import StandardWebhooks, Stripe
from tests.helpers import free_port, wait_for
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc
from tests.webhooks.receivers import RECEIVER_SECRETS, receiver

pytestmark = pytest.mark.timeout(180)

STRIPE_SECRET = RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]
STANDARD_SECRET = RECEIVER_SECRETS["WEBHOOK_SECRET"]
ROTATED = "whsec_rotated_out_tunnel_only_7373"
SECRETS = [STRIPE_SECRET, STANDARD_SECRET, ROTATED, STANDARD_SECRET.removeprefix("whsec_")]
EXPORTS = ("pytest", "har", "curl", "raw", "httpie")


def _leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in data]


def test_a_tunnels_own_secrets_reach_no_store_export_log_or_api_answer(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS and not k.startswith("DEVTUNNEL_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    db = tmp_path / "captures.db"
    api_port = free_port()

    def cli(*args: str, **extra: str) -> Any:
        done = subprocess.run([*DEVTUNNEL, *args], env={**env, **extra}, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60, check=False)
        assert "Traceback" not in done.stderr
        assert _leaks(done.stdout + done.stderr) == [], args
        return done

    with receiver() as rx:
        config = tmp_path / "devtunnel.toml"
        config.write_text(f'[tunnels.pay]\ntarget = {rx.url.rsplit(":", 1)[1]}\n'
                          f'[tunnels.pay.webhooks.stripe]\nsecrets = ["{ROTATED}", "{STRIPE_SECRET}"]\n'
                          f'[tunnels.pay.webhooks.standard]\nsecret = "{STANDARD_SECRET}"\n')
        config.chmod(0o600)
        env["DEVTUNNEL_CONFIG"] = str(config)
        agent = Proc([*DEVTUNNEL, "http", "pay", "--no-tui", "--api-port", str(api_port), "--db", str(db)], env)
        try:
            match = FORWARDING.match(agent.line(lambda line: line.startswith("Forwarding")))
            assert match is not None
            agent.line(lambda line: line.startswith("API "))
            public, host = f"http://127.0.0.1:{match.group(3)}", f"pay.localhost:{match.group(3)}"
            body = json.dumps({"id": "evt_" + uuid.uuid4().hex, "object": "event", "type": "invoice.paid"}).encode()
            stripe_headers = Stripe().sign(Delivery("POST", "", Headers([("Content-Type", "application/json")]), body),
                                           STRIPE_SECRET, time.time())
            standard_headers = StandardWebhooks().sign(
                Delivery("POST", "", Headers([("Content-Type", "application/json"), ("webhook-id", "msg_1")]), body),
                STANDARD_SECRET, time.time())
            sent = [("/webhooks/stripe", dict(stripe_headers.items())),
                    ("/webhooks/stripe", {**dict(stripe_headers.items()), "Stripe-Signature": "t=1,v1=00"}),
                    ("/webhooks/standard", dict(standard_headers.items()))]
            with httpx.Client(trust_env=False) as client:
                statuses = [client.post(public + path, content=body, headers={**headers, "Host": host}).status_code
                            for path, headers in sent]
            assert statuses == [200, 400, 200]

            def recorded() -> list[dict[str, Any]] | None:
                rows = json.loads(cli("requests", "--json", "--db", str(db)).stdout)
                return rows if len(rows) == 3 and all(r["webhook"] for r in rows) else None

            rows = wait_for(recorded, timeout=20, what="the deliveries recorded with their verdicts")
            assert sorted(r["webhook"]["signature"] for r in rows) == ["invalid", "valid", "valid"]
            valid = next(r for r in rows if r["webhook"]["provider"] == "stripe" and r["webhook"]["signature"] == "valid")

            # Replays signed afresh with the tunnel's secrets, from the CLI and the API.
            done = cli("replay", valid["id"], "--db", str(db), "--json", "--set", "type=invoice.voided")
            assert done.returncode == 0 and [r["resigned"] for r in json.loads(done.stdout)] == ["stripe"]
            api = f"http://127.0.0.1:{api_port}/api"
            with httpx.Client(trust_env=False) as client:
                replay = client.post(f"{api}/requests/http/{valid['id']}/replay", json={"set": ["type=x.y"]})
                assert replay.status_code == 201 and _leaks(replay.text) == []
                assert rx.verdicts[-2:] == [("/webhooks/stripe", 200, "ok")] * 2
                answers = [client.get(f"{api}{path}") for path in
                           ("", "/status", "/tunnels", "/tunnels/pay", "/endpoints", "/requests/http",
                            f"/requests/http/{valid['id']}", "/tunnels/pay/rules")]
                answers += [client.get(f"{api}/requests/http/{valid['id']}/export", params={"format": fmt})
                            for fmt in ("curl", "har", "raw", "httpie")]
            for answer in answers:
                assert answer.status_code == 200, (answer.url, answer.text[:200])
                assert _leaks(answer.text) == [], answer.url

            cli("show", valid["id"], "--db", str(db))
            cli("show", valid["id"], "--db", str(db), "--json")
            for fmt in EXPORTS:
                assert cli("export", "--db", str(db), "--format", fmt, *(r["id"] for r in rows)).returncode == 0
            shown = cli("config", "show")
            assert shown.returncode == 0 and "[tunnels.pay.webhooks.stripe]" in shown.stdout
            done = cli("send", "stripe", "invoice.paid", "--to", public.replace("127.0.0.1", "pay.localhost")
                       + "/webhooks/stripe", STRIPE_WEBHOOK_SECRET=STRIPE_SECRET)
            assert done.returncode == 0, done.stdout + done.stderr
        finally:
            if agent.popen.poll() is None:
                agent.stop(signal.SIGINT)
            agent.kill()
    assert _leaks("\n".join(agent.out + agent.err)) == []
    assert _leaks(b"".join(p.read_bytes() for p in tmp_path.glob("captures.db*"))) == []
    assert _leaks(b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file())) == []
