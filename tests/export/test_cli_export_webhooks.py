"""``devtunnel export`` of webhook deliveries in the formats that send the captured signature
(curl, httpie, HAR, raw): the command run against a receiver that verifies with the provider's
own library, and what the export says when that signature has expired."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from devtunnel.capture.model import Exchange
from devtunnel.capture.store import Store
from devtunnel.webhooks import Delivery, by_name
from devtunnel.webhooks.context import WebhookContext
from devtunnel.webhooks.samples import sample
from tests.kit.exchanges import make_exchange, make_response
from tests.webhooks.receivers import RECEIVER_SECRETS, receiver

DEVTUNNEL = str(Path(sys.executable).parent / "devtunnel")
SECRET = RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]


def _captured(base: str, at: float) -> Exchange:
    """A Stripe delivery signed at ``at`` and judged as the recorder judges it."""
    stripe_ = by_name("stripe")
    assert stripe_ is not None
    made = sample("stripe", "invoice.paid", now=at)
    headers = stripe_.sign(Delivery("POST", base + "/webhooks/stripe", made.headers, made.body), SECRET, at)
    exchange = make_exchange("POST", "/webhooks/stripe", [("Host", base.split("://", 1)[1]), *headers.items()],
                             made.body, make_response(200), tunnel="hooks", started_at=at, target_url=base,
                             duration=0.01)
    return replace(exchange, webhook=WebhookContext(secrets={"stripe": (SECRET,)}).judge(exchange))


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS and "proxy" not in k.lower()}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"), HOME=str(tmp_path))
    return env


def _export(db: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DEVTUNNEL, "export", "--db", str(db), *args], capture_output=True, text=True,
                          cwd=tmp_path, env=_env(tmp_path), timeout=60)


def test_an_exported_curl_of_an_expired_delivery_says_why_its_receiver_refuses_it(tmp_path: Path) -> None:
    with receiver() as rx:
        fresh, stale = _captured(rx.url, time.time()), _captured(rx.url, time.time() - 3600)
        assert fresh.webhook is not None and fresh.webhook.signature.value == "valid"
        assert stale.webhook is not None and stale.webhook.signature.value == "valid"  # when it came
        db = tmp_path / "captures.db"
        store = Store(db)
        store.put_many([fresh, stale])
        store.close()

        # Fresh: the exported command verifies, and nothing is said.
        made = _export(db, tmp_path, fresh.id, "--format", "curl", "--to", "local")
        assert made.returncode == 0 and made.stderr == "", made.stderr
        ran = subprocess.run(["bash", "-c", made.stdout], capture_output=True, env=_env(tmp_path), timeout=30)
        assert ran.returncode == 0 and rx.verdicts[-1][1] == 200, rx.verdicts

        # An hour old: the receiver refuses it (Stripe's own library), and the export said why before.
        made = _export(db, tmp_path, stale.id, "--format", "curl", "--to", "local")
        assert made.returncode == 0, made.stderr
        lines = made.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in made.stderr, made.stderr
        assert lines[0].startswith(f"devtunnel: {stale.id[:9]}") and "Stripe signature" in lines[0], lines
        assert "timestamp outside the tolerance: 60 min old (tolerance 300 s)" in lines[0], lines
        assert f"devtunnel replay {stale.id[:9]}" in lines[0], lines
        ran = subprocess.run(["bash", "-c", made.stdout], capture_output=True, env=_env(tmp_path), timeout=30)
        assert rx.verdicts[-1][1] == 400 and "Timestamp outside the tolerance" in rx.verdicts[-1][2], rx.verdicts

        # HAR through --filter (written as it is read) says it too; a redacted export and a pytest
        # module (signed afresh) have nothing to say.
        har = _export(db, tmp_path, "--filter", "provider:stripe", "--format", "har", "-o", str(tmp_path / "h.har"))
        assert har.returncode == 0 and har.stderr.count("will now refuse") == 1, har.stderr
        for args in (["--format", "curl", "--redact"], ["--format", "pytest"]):
            quiet = _export(db, tmp_path, stale.id, *args)
            assert quiet.returncode == 0 and "refuse" not in quiet.stderr, (args, quiet.stderr)


def test_a_pytest_module_checks_the_refusal_of_a_delivery_whose_signature_was_refused(tmp_path: Path) -> None:
    """A delivery signed with another secret, refused by its receiver (400), was signed afresh in
    the exported module with the receiver's secret: accepted (200), its test failed at once. It is
    sent as captured now, and a valid delivery beside it is still signed afresh."""
    with receiver() as rx:
        now = time.time()
        fine = _captured(rx.url, now - 3600)  # an hour old: passes only signed afresh
        stripe_ = by_name("stripe")
        assert stripe_ is not None
        made = sample("stripe", "invoice.paid", now=now)
        wrong = stripe_.sign(Delivery("POST", rx.url + "/webhooks/stripe", made.headers, made.body),
                             "whsec_" + "x" * 32, now)
        refused = make_exchange("POST", "/webhooks/stripe", [("Host", rx.url.split("://", 1)[1]), *wrong.items()],
                                made.body, make_response(400), tunnel="hooks", started_at=now + 1,
                                target_url=rx.url, duration=0.01)
        refused = replace(refused, webhook=WebhookContext(secrets={"stripe": (SECRET,)}).judge(refused))
        assert refused.webhook is not None and refused.webhook.signature.value == "invalid"
        db = tmp_path / "captures.db"
        store = Store(db)
        store.put_many([fine, refused])
        store.close()

        module = tmp_path / "test_hooks.py"
        made_module = _export(db, tmp_path, fine.id, refused.id, "--format", "pytest", "-o", str(module))
        assert made_module.returncode == 0, made_module.stderr
        assert "sent as captured, the refusal is checked" in module.read_text()
        assert f"DEVTUNNEL_BASE_URL=http://127.0.0.1:8000 pytest {module}\n" in module.read_text()  # how to run it
        env = {**_env(tmp_path), "STRIPE_WEBHOOK_SECRET": SECRET}
        ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                              str(module)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
        assert ran.returncode == 0 and "2 passed" in ran.stdout, ran.stdout + ran.stderr
        assert [status for _, status, _ in rx.verdicts] == [200, 400], rx.verdicts


def test_export_pytest_assert_says_what_each_test_asserts_and_another_format_refuses_it(tmp_path: Path) -> None:
    # A receiver that answered 500 when the delivery came: by default its test asserts a 2xx (what
    # Stripe counts as delivered); with --assert captured it asserts the 500 captured.
    at = time.time()
    failed = replace(_captured("http://127.0.0.1:9", at), response=make_response(500))
    db = tmp_path / "captures.db"
    store = Store(db)
    store.put_many([failed])
    store.close()
    expected = _export(db, tmp_path, failed.id, "--format", "pytest")
    assert expected.returncode == 0, expected.stderr
    assert "200 <= response.status_code < 300" in expected.stdout and "== 500" not in expected.stdout
    captured = _export(db, tmp_path, failed.id, "--format", "pytest", "--assert", "captured")
    assert captured.returncode == 0, captured.stderr
    assert "response.status_code == 500" in captured.stdout and "< 300" not in captured.stdout
    for args, said in ((["--format", "curl", "--assert", "captured"],
                        "--assert applies to the pytest format; the curl format asserts nothing"),
                       (["--format", "pytest", "--assert", "nothing"], "invalid choice: 'nothing'")):
        refused = _export(db, tmp_path, failed.id, *args)
        assert refused.returncode == 2 and said in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stdout == ""
