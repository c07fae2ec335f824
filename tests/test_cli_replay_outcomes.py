"""``devtunnel replay``, ``show`` and ``send`` as subprocesses against receivers on loopback that verify
webhook signatures: the exit status says whether every replay was answered, bulk messages name the
exchanges they concern, an edit that does not fit one capture leaves that one out, a delivery
recorded without a secret is judged again once the secret is known, GitHub's SHA-1 header
is made and re-made beside the SHA-256 one, and a replay the hold of an app ran out on (by the
running agent's word, from a stand-in for its API) says the app's state as the agent does."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import given, strategies as st

from devtunnel.agent.app_runner import app_json
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.info import TunnelInfo, TunnelState
from devtunnel.agent.children import ChildState
from devtunnel.capture.model import Exchange
from devtunnel.capture.store import Store
from devtunnel.values.terminal import unescape
from devtunnel.export.agent_json import tunnel_json
from devtunnel.values.app_state import restarting_message
from devtunnel.values.terminal import escape
from devtunnel.webhooks import BUILTIN, Delivery, by_name
from devtunnel.webhooks.context import WebhookContext
from devtunnel.webhooks.samples import sample
from tests.helpers import free_port
from tests.kit.exchanges import make_exchange, make_response
from tests.kit.procs import DEVTUNNEL
from tests.kit.servers import Received, Reply, http_server
from tests.webhooks.receivers import RECEIVER_SECRETS, receiver

GITHUB_SECRET = RECEIVER_SECRETS["GITHUB_WEBHOOK_SECRET"]
SLACK_SECRET = RECEIVER_SECRETS["SLACK_SIGNING_SECRET"]


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``devtunnel ARGS --db tmp_path/c.db`` (``send``: no database) in a folder and environment of its own (no secret unless given)."""
    clean = {k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS and not k.startswith("DEVTUNNEL_")}
    environment = {**clean, "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state"),
                   "COLUMNS": "200", **env}
    db = [] if args[0] == "send" else ["--db", str(tmp_path / "c.db")]
    return subprocess.run([*DEVTUNNEL, *args, *db], capture_output=True, text=True, timeout=60, env=environment,
                          cwd=tmp_path)


def put(tmp_path: Path, *exchanges: Exchange) -> None:
    store = Store(tmp_path / "c.db")
    try:
        store.put_many(exchanges)
    finally:
        store.close()


def short_ids(tmp_path: Path, *exchanges: Exchange) -> list[str]:
    store = Store(tmp_path / "c.db", readonly=True)
    try:
        short = store.short_ids(ex.id for ex in exchanges)
    finally:
        store.close()
    return [short[ex.id] for ex in exchanges]


def delivery(provider: str, name: str, target_url: str, *, secret: str, judged_with: str | None, status: int = 200,
             started_at: float | None = None) -> Exchange:
    """A sample delivery of ``provider`` as if captured from ``target_url``, signed with ``secret``,
    its verdict the one the recorder gives knowing ``judged_with`` (None: no secret known)."""
    when = time.time() - 60 if started_at is None else started_at
    made = sample(provider, name, now=when)
    signer = by_name(provider, BUILTIN)
    assert signer is not None
    headers = signer.sign(Delivery("POST", f"http://hooks.localhost{made.info.path}", made.headers, made.body), secret, when)
    fields = [("Host", "hooks.localhost"), *headers.items(), ("Content-Length", str(len(made.body)))]
    ex = make_exchange("POST", made.info.path, fields, made.body, make_response(status, [("Content-Length", "0")], b""),
                       tunnel="hooks", started_at=when, target_url=target_url)
    secrets = {provider: (judged_with,)} if judged_with else {}
    ex = replace(ex, duration=0.012)
    return replace(ex, webhook=WebhookContext(secrets=secrets).judge(ex))


# Exit status -----------------------------------------------------------------------------------


def test_a_replay_its_receiver_refuses_exits_1_as_send_does(tmp_path: Path) -> None:
    """``replay ID`` exited 0 when the receiver answered 401, while ``send`` of the same exits 1."""
    with receiver() as rx:
        forged = delivery("github", "push", rx.url, secret="not-the-receivers", judged_with=GITHUB_SECRET, status=401)
        put(tmp_path, forged)
        proc = run(tmp_path, "replay", forged.id, GITHUB_WEBHOOK_SECRET=GITHUB_SECRET)
        sent = run(tmp_path, "send", "github", "push", "--to", rx.url + "/webhooks/github", "--secret-env", "NOPE",
                   NOPE="not-the-receivers")
    assert [v[1] for v in rx.verdicts] == [401, 401]
    assert "  401 Unauthorized  " in proc.stdout, proc.stdout
    assert (proc.returncode, sent.returncode) == (1, 1), (proc.stdout, proc.stderr, sent.stdout, sent.stderr)


def test_a_bulk_replay_of_refused_deliveries_exits_1_and_names_each_in_its_notice(tmp_path: Path) -> None:
    """``replay --filter sig:invalid`` of three 401s exited 0, and its three notices named none of them."""
    with receiver() as rx:
        forged = [delivery("github", "push", rx.url, secret=f"forger-{i}", judged_with=GITHUB_SECRET, status=401,
                           started_at=time.time() - 60 + i) for i in range(3)]
        put(tmp_path, *forged)
        proc = run(tmp_path, "replay", "--filter", "sig:invalid", GITHUB_WEBHOOK_SECRET=GITHUB_SECRET)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert [v[1] for v in rx.verdicts] == [401, 401, 401]
    notices = [line for line in proc.stderr.splitlines() if "signature not refreshed" in line]
    assert notices, proc.stderr
    named = " ".join(line.split(": signature not refreshed")[0] for line in notices)
    for short in short_ids(tmp_path, *forged):
        assert short in named, (short, proc.stderr)
    assert all(line.startswith("devtunnel: ") for line in notices), proc.stderr


def test_every_replay_answered_exits_0_a_redirect_included(tmp_path: Path) -> None:
    """A redirect is not followed: it is the answer, not an error (a request that is no delivery)."""
    def answer(request: Received) -> Reply:
        if request.path == "/login":
            return Reply(302, [("Location", "/home"), ("Content-Length", "0")], b"")
        return Reply(500 if request.path == "/fail" else 200, [("Content-Length", "2")], b"ok")

    with http_server(answer) as server:
        made = [make_exchange("GET", path, [("Host", "app.localhost")], b"", make_response(200), tunnel="app",
                              started_at=1.0 + i, target_url=server.url) for i, path in enumerate(["/", "/login"])]
        failing = make_exchange("GET", "/fail", [("Host", "app.localhost")], b"", make_response(200), tunnel="app",
                                started_at=5.0, target_url=server.url)
        put(tmp_path, *made, failing)
        answered = run(tmp_path, "replay", *(ex.id for ex in made))
        one_fails = run(tmp_path, "replay", *(ex.id for ex in made), failing.id)
    assert answered.returncode == 0, (answered.stdout, answered.stderr)
    assert "  302 Found  " in answered.stdout
    assert one_fails.returncode == 1, (one_fails.stdout, one_fails.stderr)
    assert len(one_fails.stdout.splitlines()) >= 3  # each replay still printed


def test_replay_help_says_what_the_exit_status_means(tmp_path: Path) -> None:
    proc = run(tmp_path, "replay", "--help")
    assert proc.returncode == 0
    assert "exit status: 0" in proc.stdout and "1 when" in proc.stdout, proc.stdout


# An edit that does not fit one capture of many -------------------------------------------------


def _slack(rx_url: str, name: str, offset: float) -> Exchange:
    return delivery("slack", name, rx_url, secret=SLACK_SECRET, judged_with=SLACK_SECRET,
                    started_at=time.time() - 60 + offset)


def test_a_set_that_does_not_fit_one_capture_leaves_it_out_named_and_sends_the_others(tmp_path: Path) -> None:
    """``replay --filter provider:slack --set event.text=hi`` stopped at the slash command's form,
    sent nothing and did not say which capture it was."""
    with receiver() as rx:
        event = _slack(rx.url, "event_callback", 0)
        command = _slack(rx.url, "slash_command", 1)
        put(tmp_path, event, command)
        proc = run(tmp_path, "replay", "--filter", "provider:slack", "--set", "event.text=hi",
                   SLACK_SIGNING_SECRET=SLACK_SECRET)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)  # not every capture was replayed
    [short_command] = short_ids(tmp_path, command)
    [skipped] = [line for line in proc.stderr.splitlines() if "not sent" in line]
    assert skipped == f"devtunnel: {short_command}: not sent: --set event.text: the form has no field 'event'", proc.stderr
    assert [v[1] for v in rx.verdicts] == [200], rx.verdicts
    assert b'"text": "hi"' in rx.bodies[0]
    assert proc.stdout.startswith(event.id + " -> "), proc.stdout


def test_a_set_that_fits_none_of_the_captures_sends_nothing_exits_2_and_names_them(tmp_path: Path) -> None:
    with receiver() as rx:
        commands = [_slack(rx.url, "slash_command", i) for i in range(2)]
        put(tmp_path, *commands)
        proc = run(tmp_path, "replay", "--filter", "provider:slack", "--set", "event.text=hi",
                   SLACK_SIGNING_SECRET=SLACK_SECRET)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert rx.verdicts == [] and proc.stdout == ""
    shorts = short_ids(tmp_path, *commands)
    assert proc.stderr == f"devtunnel: {', '.join(shorts)}: not sent: --set event.text: the form has no field 'event'\n"


# A verdict recorded without a secret, judged again ---------------------------------------------


def test_show_judges_a_delivery_recorded_without_its_secret_again_once_it_is_set(tmp_path: Path) -> None:
    """``show`` said "set GITHUB_WEBHOOK_SECRET" after it was set, while ``replay`` verified with it."""
    genuine = delivery("github", "push", "http://127.0.0.1:9", secret=GITHUB_SECRET, judged_with=None)
    forged = delivery("github", "push", "http://127.0.0.1:9", secret="forger", judged_with=None,
                      started_at=time.time() - 30)
    put(tmp_path, genuine, forged)
    before = run(tmp_path, "show", genuine.id)
    assert "signature ? unverified: no secret: set GITHUB_WEBHOOK_SECRET\n" in before.stdout, before.stdout
    valid = run(tmp_path, "show", genuine.id, GITHUB_WEBHOOK_SECRET=GITHUB_SECRET)
    assert valid.returncode == 0, valid.stderr
    assert ("signature ✓ valid  (judged now; unverified when captured, before GITHUB_WEBHOOK_SECRET was set)\n"
            in valid.stdout), valid.stdout
    invalid = run(tmp_path, "show", forged.id, GITHUB_WEBHOOK_SECRET=GITHUB_SECRET)
    assert ("signature ✗ invalid: signature does not match: wrong secret or altered body  (judged now; unverified when"
            " captured, before GITHUB_WEBHOOK_SECRET was set)\n" in invalid.stdout), invalid.stdout


def test_requests_marks_a_delivery_judged_again_with_a_secret_set_since(tmp_path: Path) -> None:
    genuine = delivery("github", "push", "http://127.0.0.1:9", secret=GITHUB_SECRET, judged_with=None)
    put(tmp_path, genuine)
    before = run(tmp_path, "requests")
    assert "? github push" in before.stdout and "judged now" not in before.stdout, before.stdout
    after = run(tmp_path, "requests", GITHUB_WEBHOOK_SECRET=GITHUB_SECRET)
    assert after.returncode == 0, after.stderr
    assert "✓* github push" in after.stdout, after.stdout
    assert after.stdout.endswith("* judged now: unverified when captured, before GITHUB_WEBHOOK_SECRET was set"
                                 " (devtunnel show ID)\n"), after.stdout
    # The record keeps the verdict given when it came: the filters and --json read that one.
    assert genuine.id[:8] in run(tmp_path, "requests", "--filter", "sig:unverified",
                                 GITHUB_WEBHOOK_SECRET=GITHUB_SECRET).stdout


# GitHub's SHA-1 header -------------------------------------------------------------------------


def test_a_github_sample_carries_both_signatures_and_a_sha1_receiver_accepts_it(tmp_path: Path) -> None:
    with receiver() as rx:
        sha1 = run(tmp_path, "send", "github", "push", "--to", rx.url + "/webhooks/github-sha1",
                   GITHUB_WEBHOOK_SECRET=GITHUB_SECRET)
        sha256 = run(tmp_path, "send", "github", "push", "--to", rx.url + "/webhooks/github",
                     GITHUB_WEBHOOK_SECRET=GITHUB_SECRET)
    assert (sha1.returncode, sha256.returncode) == (0, 0), (sha1.stdout, sha1.stderr, rx.verdicts)
    assert [v[1] for v in rx.verdicts] == [200, 200]
    names = [[name.lower() for name, _ in fields] for fields in rx.headers]
    assert all(n.count("x-hub-signature") == 1 and n.count("x-hub-signature-256") == 1 for n in names), names


def test_a_replayed_github_delivery_with_both_headers_gets_both_fresh(tmp_path: Path) -> None:
    with receiver() as rx:
        captured = delivery("github", "push", rx.url, secret=GITHUB_SECRET, judged_with=GITHUB_SECRET)
        assert {n.lower() for n, _ in captured.request.headers.items()} >= {"x-hub-signature", "x-hub-signature-256"}
        captured = replace(captured, request=replace(captured.request, target=b"/webhooks/github-sha1"))
        put(tmp_path, captured)
        proc = run(tmp_path, "replay", captured.id, "--set", "ref=refs/heads/edited",
                   GITHUB_WEBHOOK_SECRET=GITHUB_SECRET)
    assert proc.returncode == 0, (proc.stdout, proc.stderr, rx.verdicts)
    assert rx.verdicts == [("/webhooks/github-sha1", 200, "ok")]
    body, fields = rx.bodies[0], dict((n.lower(), v) for n, v in rx.headers[0])
    assert b"refs/heads/edited" in body
    assert fields["x-hub-signature"] == "sha1=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha1).hexdigest()
    assert fields["x-hub-signature-256"] == "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()


# Waiting out an app's hold (the agent's state, from its API) ----------------------------------------


def _agent_listing(state: ChildState, target_url: str, hold: float, ready_count: int | None) -> dict[str, Any]:
    """``/api/tunnels`` of a running agent with one tunnel, ``web`` (to ``target_url``), whose app
    devtunnel runs with ``hold`` is in ``state``, ready ``ready_count`` times so far (None: an
    agent from before ``ready_count``): the JSON the agent writes (its ``tunnel_json`` and
    ``app_json``, which escape the app's message)."""
    app = app_json(state, command="app", health=None, hold=hold, log_lines=0, ready_count=ready_count or 0)
    if ready_count is None:
        del app["ready_count"]
    facts = SimpleNamespace(name="web", public_url="http://web.localhost:1", target_url=target_url, state="online",
                            error=None, next_retry_at=None, requests=1, config=None, via=None, pool_members=None,
                            waiting=0, hints=(), app=app)
    return {"tunnels": [tunnel_json(facts)], "uri": "/api/tunnels"}


def test_the_agent_api_says_a_tunnels_hold_at_the_tunnel_with_run_or_without() -> None:
    def listed(config: TunnelConfig, app: dict[str, Any] | None = None) -> Any:
        return tunnel_json(TunnelInfo(name="web", public_url=None, target_url="http://127.0.0.1:8080",
                                      state=TunnelState.ONLINE, config=config, app=app, waiting=2))["hold"]

    assert listed(TunnelConfig("8080")) is None
    assert listed(TunnelConfig("8080", hold=30.0)) == {"timeout": 30.0, "waiting": 2}  # no app: it was nowhere
    app = app_json(ChildState(state="ready"), command="app", health=None, hold=30.0, log_lines=0, ready_count=1)
    assert listed(TunnelConfig("8080", run="app", hold=30.0), app) == {"timeout": 30.0, "waiting": 2}
    assert listed(TunnelConfig("8080", run="app"), {**app, "hold": 0.0}) is None


def _replay_held_off(tmp_path: Path, state: ChildState, ready_count: int | None) -> tuple[subprocess.CompletedProcess[str], str]:
    """``devtunnel replay`` of a capture of tunnel ``web`` while a stand-in for the running agent's
    API on loopback (its port in devtunnel.toml, where the command looks) says the app is in
    ``state`` (``_agent_listing``), with a hold of 0.3 s: what the command printed, and ``show`` of the replay."""
    target = f"http://127.0.0.1:{free_port()}"
    original = make_exchange("POST", "/hooks/order", [("Host", "web.localhost"), ("Content-Length", "2")], b"{}",
                             make_response(200, [("Content-Length", "0")], b""), tunnel="web", target_url=target)
    put(tmp_path, original)
    listing = _agent_listing(state, target, 0.3, ready_count)
    with http_server(lambda request: Reply.json(listing) if request.path == "/api/tunnels" else Reply(404)) as agent:
        (tmp_path / "devtunnel.toml").write_text(f"[agent]\napi_port = {agent.url.rsplit(':', 1)[1]}\n")
        done = run(tmp_path, "replay", original.id)
    assert done.returncode == 1, (done.stdout, done.stderr)
    replay_id = done.stdout.split(" -> ", 1)[1].split()[0]
    return done, run(tmp_path, "show", replay_id).stdout


def test_a_cli_replay_the_hold_runs_out_on_says_an_app_in_its_first_start_is_not_up_yet(tmp_path: Path) -> None:
    # It said "local app restarting" of an app that had never been ready, where the agent's own
    # held requests say "not up yet".
    done, shown = _replay_held_off(tmp_path, ChildState(state="starting", message="health /healthz answered 503"), 0)
    assert "tunnel web: its app is not up yet; the replay waits for it, up to 0.3 s (--hold)" in done.stderr
    reason = "local app not up yet: the app has not come up in 0.3 s (starting: health /healthz answered 503)"
    assert "ERR app_restarting" in done.stdout and f"failed: {reason}\n" in done.stdout, done.stdout
    assert reason in shown, shown


def test_a_cli_replay_the_hold_runs_out_on_says_an_app_that_was_ready_is_restarting_as_the_agent_does(
        tmp_path: Path) -> None:
    # It said "local app down" of an app that had been ready, where the agent's own held requests
    # say "local app restarting": the agent API did not say whether the app was ever ready.
    state = ChildState(state="starting", restarts=1, message="health /healthz answered 503")
    done, shown = _replay_held_off(tmp_path, state, 1)
    assert "tunnel web: its app is restarting; the replay waits for it, up to 0.3 s (--hold)" in done.stderr
    reason = "local app restarting: the app is still down after 0.3 s (starting: health /healthz answered 503)"
    assert f"failed: {reason}\n" in done.stdout, done.stdout
    assert reason in shown, shown


def test_a_cli_replay_the_hold_runs_out_on_says_the_apps_words_escaped_once_and_no_more_than_it_knows(
        tmp_path: Path) -> None:
    # The app's message, escaped by the agent API, was escaped again: a backslash shown as four.
    # And an agent from before ``ready_count`` does not say whether an app that restarted was ever
    # ready (it may crash each time it starts): "restarting" is not said of it.
    said = "exited with code 1: C:\\srv\\app.py \x1b]0;owned\x07\u202e done\r"
    state = ChildState(state="restarting", restarts=2, exit_code=1, message=restarting_message(said, 0.9))
    done, shown = _replay_held_off(tmp_path, state, None)
    assert "tunnel web: its app is not ready; the replay waits for it, up to 0.3 s (--hold)" in done.stderr
    reason = f"local app down: the app is still down after 0.3 s (restarting (2): {said})"
    assert f"failed: {escape(reason)}\n" in done.stdout, done.stdout
    assert "C:\\\\srv\\\\app.py \\x1b]0;owned\\x07\\u202e done\\r)" in done.stdout  # each backslash of the app's: two
    assert escape(reason) in shown, shown
    for text in (done.stdout, done.stderr, shown):
        assert not any(ch in text for ch in "\x1b\x07\u202e\r"), text


@given(st.text(st.characters(blacklist_categories=["Cs"])))
def test_the_agent_apis_escaped_text_reads_back_as_it_was_written(text: str) -> None:
    # (``escape`` with its defaults: what the agent API does to an app's message)
    assert unescape(escape(text)) == text


def test_escaped_text_from_the_agent_api_that_no_store_takes_reads_as_replacement_characters() -> None:
    assert unescape("a\\ud800b \\U00110000 \\q") == "a\ufffdb \\U00110000 \\q"


def test_a_hold_another_process_says_is_read_only_as_a_finite_positive_number() -> None:
    # /api/tunnels is another process's answer: a hold of NaN, infinity, true or text would make
    # the CLI replay wait for ever or fail with a traceback where it should send at once.
    from devtunnel.commands.captures import _hold_of

    for hold in (float("nan"), float("inf"), True, "30", -5, 0, None, [30], {"timeout": 30}):
        assert _hold_of({"hold": {"timeout": hold}, "app": {"hold": hold}}) == 0.0, hold
    assert _hold_of({"hold": "30", "app": "x"}) == 0.0
    assert _hold_of({"hold": {"timeout": 2.5}}) == 2.5
    assert _hold_of({"hold": None, "app": {"hold": 7}}) == 7.0  # an agent from before the tunnel's field
