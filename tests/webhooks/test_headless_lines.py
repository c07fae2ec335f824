"""``devtunnel http PORT --no-tui``'s log as users read it when webhooks arrive: after a delivery's
own line, a second line names the provider, event type, delivery id and signature verdict, once
the recorder has judged it; a request that is no webhook keeps its one line.

The agent runs as a subprocess with an embedded relay, forwarding to a receiver that verifies
with the providers' own libraries; deliveries are made by ``devtunnel send``.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import httpx

from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc
from tests.test_send import send
from tests.webhooks.receivers import RECEIVER_SECRETS, receiver

STRIPE_SECRET = RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]
GITHUB_SECRET = RECEIVER_SECRETS["GITHUB_WEBHOOK_SECRET"]

LINE = re.compile(r"^\d\d:\d\d:\d\d  ([0-9A-Z]{13})  (.*)$")
"""Every exchange line and webhook line: time, the short id ``devtunnel show`` takes, the rest."""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS and not k.startswith("DEVTUNNEL_")}
    # The agent knows Stripe's secret only: GitHub deliveries stay unverified.
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               STRIPE_WEBHOOK_SECRET=STRIPE_SECRET)
    return env


def _headless_agent(tmp_path: Path, env: dict[str, str], receiver_url: str) -> tuple[Proc, re.Match[str]]:
    """``devtunnel http PORT --no-tui --name hooks`` in front of the receiver, once it says
    Forwarding; returns it and the Forwarding line's match (public URL, port)."""
    agent = Proc([*DEVTUNNEL, "http", receiver_url.rsplit(":", 1)[1], "--no-tui", "--name", "hooks", "--api-port", "0",
                  "--db", str(tmp_path / "c.db")], env)
    try:
        match = FORWARDING.match(agent.line(lambda line: line.startswith("Forwarding")))
        assert match is not None
    except BaseException:
        agent.kill()
        raise
    return agent, match


def _lines_of(agent: Proc, path: str) -> tuple[str, str]:
    """The id and the rest of the exchange line of the one request to ``path``, and the rest of the
    webhook line with the same id (waited for)."""
    own = agent.line(lambda line: f"  {path}  " in line)
    match = LINE.match(own)
    assert match is not None, own
    short = match.group(1)
    follow = agent.line(lambda line: line.startswith(own[:8] + f"  {short}  -->"), timeout=20)
    assert agent.out.index(own) < agent.out.index(follow)  # the delivery's line first, then its verdict
    rest = LINE.match(follow)
    assert rest is not None, follow
    return match.group(2), rest.group(2)


def test_a_delivery_gets_a_line_with_provider_event_id_and_verdict_and_a_plain_request_keeps_one_line(
        tmp_path: Path) -> None:
    env = _env(tmp_path)
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps({"id": "evt_\u202ehostile", "object": "event",
                                   "type": "invoice.paid\x1b]0;owned\x07\x1b[2J", "data": {"object": {}}}))
    with receiver() as rx:
        agent, match = _headless_agent(tmp_path, env, rx.url)
        try:
            public, port = match.group(1), match.group(3)

            plain = httpx.get(f"http://127.0.0.1:{port}/plain?q=1", headers={"Host": f"hooks.localhost:{port}"},
                              trust_env=False)
            assert plain.status_code == 404  # the receiver knows no such path; the tunnel forwarded it
            plain_line = agent.line(lambda line: "/plain?q=1" in line)
            assert re.match(r"^\d\d:\d\d:\d\d  [0-9A-Z]{13}  GET     /plain\?q=1  404  [\d.]+ (ms|s)$", plain_line), \
                plain_line

            sends = [  # (path the delivery is sent to, what the sender is given)
                ("/valid", {"STRIPE_WEBHOOK_SECRET": STRIPE_SECRET}, ("stripe", "invoice.paid")),
                ("/wrong", {"STRIPE_WEBHOOK_SECRET": "whsec_somebody_else"}, ("stripe", "invoice.paid")),
                ("/nosecret", {"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET}, ("github", "pull_request")),
                ("/hostile", {"STRIPE_WEBHOOK_SECRET": STRIPE_SECRET},
                 ("stripe", "invoice.paid", "--data", f"@{hostile}")),
            ]
            ids = {}
            for path, secrets, args in sends:
                done = send(*args, "--to", public + path, **secrets)
                assert done.stdout.startswith("sent "), done.stdout + done.stderr
                ids[path] = re.search(r"\((\S+)\)", done.stdout).group(1)  # type: ignore[union-attr]

            own, verdict = _lines_of(agent, "/valid")
            assert re.match(r"^POST +/valid  404  [\d.]+ (ms|s)$", own), own  # the delivery's own line, as before
            assert verdict == f"-->     stripe invoice.paid [{ids['/valid']}]  ✓ signature valid"

            _, verdict = _lines_of(agent, "/wrong")
            assert verdict == (f"-->     stripe invoice.paid [{ids['/wrong']}]  ✗ signature invalid: "
                               "signature does not match: wrong secret or altered body")

            _, verdict = _lines_of(agent, "/nosecret")
            assert re.match(r"^-->     github pull_request\.opened \[[0-9a-f-]{36}\]  "
                            r"\? signature unverified: no secret: set GITHUB_WEBHOOK_SECRET$", verdict), verdict

            _, verdict = _lines_of(agent, "/hostile")
            assert verdict == ("-->     stripe invoice.paid\\x1b]0;owned\\x07\\x1b[2J [evt_\\u202ehostile]  "
                               "✓ signature valid")

            assert len([line for line in agent.out if LINE.match(line)]) == 1 + 2 * len(sends)  # nothing else
            assert agent.stop(signal.SIGINT) == 0
        finally:
            agent.kill()
    assert not any(STRIPE_SECRET in line or "\x1b" in line or "\u202e" in line for line in agent.out + agent.err)



def test_a_duplicate_delivery_says_so_and_names_the_first_capture(tmp_path: Path) -> None:
    env = _env(tmp_path)
    event = tmp_path / "event.json"  # one delivery id, sent twice (as a sender retries)
    event.write_text(json.dumps({"id": "evt_twice", "object": "event", "type": "invoice.paid", "data": {"object": {}}}))
    with receiver() as rx:
        agent, match = _headless_agent(tmp_path, env, rx.url)
        try:
            for path in ("/first", "/again"):
                done = send("stripe", "invoice.paid", "--data", f"@{event}", "--to", match.group(1) + path,
                            STRIPE_WEBHOOK_SECRET=STRIPE_SECRET)
                assert done.stdout.startswith("sent "), done.stdout + done.stderr
            first = LINE.match(agent.line(lambda line: "  /first  " in line))
            assert first is not None
            _, verdict = _lines_of(agent, "/again")
            assert verdict == f"-->     stripe invoice.paid [evt_twice]  ✓ signature valid  ≡ duplicate of {first.group(1)}"
            _, verdict = _lines_of(agent, "/first")
            assert "duplicate" not in verdict and "≡" not in verdict
            assert agent.stop(signal.SIGINT) == 0
        finally:
            agent.kill()
