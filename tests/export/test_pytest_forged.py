"""``export --format pytest``: a delivery that may be forged is not signed afresh, and what the
module prints of a service's answer reaches no terminal raw.

The module runs under pytest (a subprocess) against a receiver on loopback that verifies with the
providers' own libraries (``tests.webhooks.receivers``). A delivery anyone posted to the public
URL, signed with another secret or not at all, that the receiver answered 200 when it came (it
did not verify yet): signed afresh with the real secret, it would pass the receiver that now
verifies. The module follows a replay's rule (``webhooks.resign.signs_unverified``): signed
afresh only when the secret verifies it as captured, or it was judged valid when it came, or
``DEVTUNNEL_SIGN_UNVERIFIED=1`` asks for it. One judged invalid when it came is sent as captured,
its test expecting the receiver to refuse it.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from devtunnel.capture.model import Exchange
from devtunnel.capture.store import Store
from devtunnel.export.pytest_module import export_pytest
from devtunnel.webhooks import Delivery, Signature, by_name, judge
from devtunnel.webhooks.samples import sample
from tests.kit.exchanges import make_exchange, make_response
from tests.kit.servers import Received, Reply, http_server
from tests.webhooks.receivers import RECEIVER_SECRETS, receiver

pytestmark = pytest.mark.timeout(300)

SENT = [("stripe", "invoice.paid"), ("github", "push"), ("shopify", "orders/create"), ("standard", "user.created"),
        ("slack", "event_callback"), ("twilio", "sms.received")]
PATHS = {"stripe": "/webhooks/stripe", "github": "/webhooks/github", "shopify": "/webhooks/shopify",
         "standard": "/webhooks/standard", "slack": "/slack/events", "twilio": "/twilio/sms"}
FORGERS = {"STRIPE_WEBHOOK_SECRET": "whsec_forger_0123456789", "GITHUB_WEBHOOK_SECRET": "forger-github",
           "SLACK_SIGNING_SECRET": "0000forger0000forger0000forger00", "SHOPIFY_WEBHOOK_SECRET": "shpss_forger",
           "WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"forger-standard-webhooks-key!!!!").decode(),
           "TWILIO_AUTH_TOKEN": "forger-twilio-token"}
"""Secrets of the same forms as the receiver's that are not the receiver's."""


def _captured(base: str, provider_name: str, event: str, secret: str | None, *, query: str = "",
              judged_with: dict[str, str] | None = None, then: float | None = None) -> Exchange:
    """A delivery of ``provider_name`` signed with ``secret`` (None: unsigned) as devtunnel
    recorded it when it came at ``then``: answered 200, judged with the secrets of
    ``judged_with`` (None: none known, so not verified)."""
    provider = by_name(provider_name)
    assert provider is not None
    then = time.time() if then is None else then
    made = sample(provider_name, event, now=then)
    target = PATHS[provider_name] + query
    headers = made.headers
    if secret is not None:
        headers = provider.sign(Delivery("POST", base + target, made.headers, made.body), secret, then)
    else:
        headers = headers.without(*provider.signature_headers)
    host = base.split("://", 1)[1]
    exchange = make_exchange("POST", target, [("Host", host), *headers.items()], made.body, make_response(200),
                             tunnel="hooks", started_at=then, target_url=base, duration=0.01)
    secrets = {p.name: [judged_with[p.secret_env]] for p in map(by_name, PATHS) if p and judged_with}
    return replace(exchange, webhook=judge(exchange.request, scheme="http", now=then, secrets=secrets))


def _run(module: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in RECEIVER_SECRETS and k not in ("DEVTUNNEL_BASE_URL", "DEVTUNNEL_SIGN_UNVERIFIED")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(module)],
                          capture_output=True, text=True, timeout=120, env={**clean, **env}, cwd=module.parent)


def _secret_of(provider_name: str, secrets: dict[str, str]) -> str:
    provider = by_name(provider_name)
    assert provider is not None
    return secrets[provider.secret_env]


def test_a_forged_delivery_answered_200_is_not_accepted_by_the_verifying_receiver_when_the_module_runs(
        tmp_path: Path) -> None:
    with receiver() as rx:
        genuine = [_captured(rx.url, p, e, _secret_of(p, RECEIVER_SECRETS), query="?genuine") for p, e in SENT]
        # Posted by someone without the secret: devtunnel, knowing the secret, marked it invalid;
        # without a secret when it came, it could not tell.
        invalid = [_captured(rx.url, p, e, _secret_of(p, FORGERS), query="?forged-invalid", judged_with=RECEIVER_SECRETS)
                   for p, e in SENT]
        unverified = [_captured(rx.url, p, e, _secret_of(p, FORGERS), query="?forged-unverified") for p, e in SENT]
        unsigned = _captured(rx.url, "github", "push", None, query="?unsigned")
        assert {ex.webhook.signature for ex in invalid if ex.webhook} == {Signature.INVALID}
        assert {ex.webhook.signature for ex in unverified if ex.webhook} == {Signature.UNVERIFIED}
        assert unsigned.webhook is not None and unsigned.webhook.signature is Signature.UNSIGNED
        text = export_pytest([*genuine, *invalid, *unverified, unsigned]).text
        # Judged invalid: sent as captured, its test expects the receiver's refusal (whatever it answered then).
        assert text.count("# its signature was judged invalid when it came: sent as captured, the refusal is checked") \
            == len(SENT)
        assert text.count("# its signature was not verified when it came") == 2 * len(SENT)
        assert text.count("# it came unsigned: sent unsigned, as captured") == 1
        module = tmp_path / "test_hooks.py"
        module.write_text(text)

        done = _run(module, **RECEIVER_SECRETS)
        forged = len(SENT) + 1  # the unverified and the unsigned: their tests expect the 2xx of a genuine delivery
        assert f"{forged} failed, {2 * len(SENT)} passed" in done.stdout, done.stdout + done.stderr
        refused = [(path, status) for path, status, _ in rx.verdicts if "?genuine" not in path]
        assert len(refused) == forged + len(SENT) and all(status in (400, 401) for _, status in refused), rx.verdicts
        assert [status for path, status, _ in rx.verdicts if "?genuine" in path] == [200] * len(SENT)
        # The failure says why the signature was kept, with the variable to look at.
        assert ("signature not refreshed: STRIPE_WEBHOOK_SECRET does not verify the delivery as captured: it may not"
                " come from stripe; sent with its captured signature (DEVTUNNEL_SIGN_UNVERIFIED=1 signs it anyway)"
                "; the service answered") in done.stdout, done.stdout

        # Asked for, the unverified deliveries are signed afresh (as --sign-unverified does); an unsigned one stays
        # unsigned, and one judged invalid is still sent as captured, its refusal checked.
        seen = len(rx.verdicts)
        anyway = _run(module, DEVTUNNEL_SIGN_UNVERIFIED="1", **RECEIVER_SECRETS)
        assert f"1 failed, {len(SENT) + 2 * len(SENT)} passed" in anyway.stdout, anyway.stdout + anyway.stderr
        assert sorted((p, s) for p, s, _ in rx.verdicts[seen:] if s != 200) == sorted([
            *((PATHS[p] + "?forged-invalid", 401 if p in ("github", "shopify") else 400) for p, _ in SENT),
            ("/webhooks/github?unsigned", 401)])


def test_a_delivery_judged_valid_when_it_came_is_signed_afresh_after_its_secret_was_rotated(tmp_path: Path) -> None:
    """The receiver holds a new secret: the one that signed the captured delivery verifies it no
    more. Judged valid when it came, it is signed afresh with the new one, as a replay is; the same
    delivery not verified when it came goes with its captured signature."""
    old = "whsec_before_the_rotation_000"
    then = time.time() - 3600
    with receiver() as rx:
        vouched = _captured(rx.url, "stripe", "invoice.paid", old, query="?vouched", judged_with={
            **RECEIVER_SECRETS, "STRIPE_WEBHOOK_SECRET": old}, then=then)
        assert vouched.webhook is not None and vouched.webhook.signature is Signature.VALID
        unknown = _captured(rx.url, "stripe", "invoice.paid", old, query="?unknown", then=then)
        module = tmp_path / "test_rotated.py"
        text = export_pytest([vouched, unknown]).text
        assert "# its signature was judged valid when it came: signed afresh from its secret variable" in text
        module.write_text(text)
        done = _run(module, **RECEIVER_SECRETS)
        assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
        assert [(p, s) for p, s, _ in rx.verdicts] == [("/webhooks/stripe?vouched", 200), ("/webhooks/stripe?unknown", 400)]
        assert "signature made with STRIPE_WEBHOOK_SECRET, which did not verify the captured delivery" in done.stdout


HOSTILE = b"\x1b]0;pwned\x07\x1b[2J\x9b31m\xe2\x80\xae evil"
"""An answer that sets the terminal's title, clears the screen, colours (an 8-bit CSI) and turns the text around."""


def test_what_the_service_answered_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    def answer(request: Received) -> Reply:
        return Reply(500, [("Content-Type", "text/plain; charset=utf-8")], HOSTILE)

    with http_server(answer) as service:
        ex = make_exchange("GET", "/status", [("Host", "shop.example")], b"", make_response(200), tunnel="t",
                           started_at=0.0, target_url=service.url, duration=0.01)
        module = tmp_path / "test_answer.py"
        module.write_text(export_pytest([ex]).text)
        done = _run(module)
    shown = done.stdout + done.stderr
    assert "1 failed" in done.stdout, shown
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in shown, ascii(raw)
    assert "the service answered '\\x1b]0;pwned\\x07\\x1b[2J" in shown, shown


def test_a_skip_naming_a_captured_url_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    """A Twilio signature covers the URL it was sent to: without the token, its test is skipped
    naming that URL, which holds what the sender put in the target."""
    with receiver() as rx:
        ex = _captured("http://public.example", "twilio", "sms.received", RECEIVER_SECRETS["TWILIO_AUTH_TOKEN"],
                       query="?x=\x1b]0;pwned\x07")
        module = tmp_path / "test_skip.py"
        module.write_text(export_pytest([ex]).text)
        done = _run(module, DEVTUNNEL_BASE_URL=rx.url)
    shown = done.stdout + done.stderr
    assert "1 skipped" in done.stdout, shown
    assert "\x1b" not in shown and "\x07" not in shown
    assert "covers the URL it was sent to, http://public.example/twilio/sms?x=\\x1b]0;pwned\\x07, not" in shown, shown


def test_the_module_and_the_export_say_it_needs_pytest_and_httpx(tmp_path: Path) -> None:
    ex = make_exchange("GET", "/", [("Host", "shop.example")], b"", make_response(200), tunnel="t",
                       started_at=time.time(), target_url="http://127.0.0.1:9", duration=0.01)
    namespace: dict[str, object] = {}
    exec(compile(export_pytest([ex]).text, "test_x.py", "exec"), namespace)  # noqa: S102 - our own output
    assert "It needs pytest and httpx (pip install pytest httpx)." in str(namespace["__doc__"])
    db = tmp_path / "captures.db"
    store = Store(db)
    store.put_many([ex])
    store.close()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    devtunnel = str(Path(sys.executable).parent / "devtunnel")
    for fmt, said in (("pytest", " (run it with pytest: pip install pytest httpx)"), ("curl", "")):
        out = tmp_path / f"out-{fmt}"
        made = subprocess.run([devtunnel, "export", "--format", fmt, "-o", str(out), "--db", str(db), ex.id],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
        assert made.returncode == 0, made.stderr
        assert made.stderr.splitlines()[-1] == f"wrote {out}{said}", made.stderr
