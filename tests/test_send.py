"""``devtunnel send`` as a subprocess, against receivers verifying with the providers' own libraries."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest

from devtunnel.commands.send import send_url
from devtunnel.errors import ConfigError
from tests.helpers import free_port, wait_for
from tests.kit.procs import DEVTUNNEL, Proc
from tests.webhooks.receivers import RECEIVER_SECRETS, receiver


def send(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS}
    return subprocess.run([*DEVTUNNEL, "send", *args], capture_output=True, text=True, timeout=60, env={**clean, **env},
                          cwd=cwd)


@pytest.mark.parametrize(
    ("provider", "event", "path"),
    [
        ("stripe", "invoice.paid", "/webhooks/stripe"),
        ("stripe", "checkout.session.completed", "/webhooks/stripe"),
        ("stripe", "invoice.payment_failed", "/webhooks/stripe"),
        ("stripe", "charge.refunded", "/webhooks/stripe"),
        ("github", "pull_request", "/webhooks/github"),
        ("shopify", "orders/create", "/webhooks/shopify"),
        ("standard", "user.created", "/webhooks/standard"),
        ("slack", "url_verification", "/slack/events"),
        ("twilio", "sms.received", "/twilio/sms"),
        ("twilio", "sms.delivered", "/twilio/status"),
        ("github", "installation", "/webhooks/github"),
        ("github", "workflow_run", "/webhooks/github"),
        ("twilio", "call.ringing", "/twilio/voice"),
        ("slack", "slash_command", "/slack/commands"),
        ("slack", "block_actions", "/slack/interactivity"),
        ("shopify", "customers/redact", "/webhooks/shopify"),
        ("shopify", "customers/data_request", "/webhooks/shopify"),
        ("shopify", "shop/redact", "/webhooks/shopify"),
        ("shopify", "app/uninstalled", "/webhooks/shopify"),
    ],
)
def test_a_sent_sample_is_accepted_by_a_verifying_receiver(provider: str, event: str, path: str) -> None:
    with receiver() as rx:
        done = send(provider, event, "--to", rx.url + path, **RECEIVER_SECRETS)
        assert done.returncode == 0, done.stdout + done.stderr
        assert rx.verdicts == [(path, 200, "ok")]
        assert done.stdout.startswith(f"sent {provider} {event}") and f"signed, to {rx.url}{path}: 200 OK" in done.stdout


def test_set_and_data_change_the_body_and_it_is_still_signed(tmp_path: Path) -> None:
    body = tmp_path / "event.json"
    body.write_text(json.dumps({"id": "evt_custom", "object": "event", "type": "invoice.paid", "data": {"object": {}}}))
    with receiver() as rx:
        done = send("stripe", "invoice.paid", "--to", rx.url + "/webhooks/stripe", "--data", f"@{body}",
                    "--set", "data.object.amount_paid=999", **RECEIVER_SECRETS)
        assert done.returncode == 0, done.stderr
        assert "(evt_custom)" in done.stdout and rx.verdicts[-1][1] == 200


def test_set_changes_a_form_samples_fields_and_twilio_accepts_the_signature() -> None:
    with receiver() as rx:
        done = send("twilio", "sms.received", "--to", rx.url + "/twilio/sms", "--set", "Body=hello there",
                    "--set", "From=+14155550100", **RECEIVER_SECRETS)
        assert done.returncode == 0, done.stderr
        assert rx.verdicts == [("/twilio/sms", 200, "ok")]
        fields = dict(parse_qsl(rx.bodies[-1].decode()))
        assert (fields["Body"], fields["From"], fields["SmsStatus"]) == ("hello there", "+14155550100", "received")


def test_a_wrong_secret_is_refused_by_the_receiver_and_exits_1_with_its_reason() -> None:
    with receiver() as rx:
        done = send("stripe", "invoice.paid", "--to", rx.url + "/webhooks/stripe", STRIPE_WEBHOOK_SECRET="whsec_wrong")
        assert done.returncode == 1
        assert ": 400 Bad Request" in done.stdout and "SignatureVerificationError" in done.stdout


def test_a_development_server_error_page_prints_its_text_not_its_doctype() -> None:
    # Python's http.server on loopback (nothing listens for POST): its HTML 501 page.
    import http.server
    import threading

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = send("stripe", "invoice.paid", "--to", f"http://127.0.0.1:{server.server_address[1]}/hook",
                    STRIPE_WEBHOOK_SECRET="whsec_x")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1
    assert ": 501 Unsupported method ('POST')\n  Error response — Error code: 501 Message: Unsupported method ('POST')." in done.stdout
    assert "DOCTYPE" not in done.stdout


def test_no_secret_is_bad_usage_unless_unsigned() -> None:
    with receiver() as rx:
        done = send("stripe", "invoice.paid", "--to", rx.url + "/webhooks/stripe")
        assert done.returncode == 2 and rx.verdicts == []
        assert done.stderr == ("devtunnel send: no secret for Stripe: set STRIPE_WEBHOOK_SECRET to the receiver's "
                               "secret (or --unsigned to send without a signature)\n")
        unsigned = send("github", "ping", "--to", rx.url + "/webhooks/github", "--unsigned")
        assert unsigned.returncode == 1 and "unsigned" in unsigned.stdout and rx.verdicts[-1][1] == 401
        other = send("github", "ping", "--to", rx.url + "/webhooks/github", "--secret-env", "MY_GH",
                     MY_GH=RECEIVER_SECRETS["GITHUB_WEBHOOK_SECRET"])
        assert other.returncode == 0, other.stdout + other.stderr


def test_the_secrets_of_devtunnel_toml_sign_a_sample_as_they_sign_a_replay(tmp_path: Path) -> None:
    """send read only the conventional variable: a project's secret_env or secret was ignored."""
    config = tmp_path / "devtunnel.toml"
    github_secret = RECEIVER_SECRETS["GITHUB_WEBHOOK_SECRET"]
    config.write_text(f'[webhooks.stripe]\nsecret_env = "PAYMENTS_STRIPE_SECRET"\n\n[webhooks.github]\nsecret = "{github_secret}"\n')
    config.chmod(0o600)
    home = {"XDG_CONFIG_HOME": str(tmp_path / "user-config")}
    with receiver() as rx:
        stripe = send("stripe", "invoice.paid", "--to", rx.url + "/webhooks/stripe", cwd=tmp_path, **home,
                      PAYMENTS_STRIPE_SECRET=RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"])
        assert stripe.returncode == 0, stripe.stdout + stripe.stderr
        github = send("github", "push", "--to", rx.url + "/webhooks/github", cwd=tmp_path, **home)
        assert github.returncode == 0, github.stdout + github.stderr
        assert rx.verdicts == [("/webhooks/stripe", 200, "ok"), ("/webhooks/github", 200, "ok")]
        missing = send("stripe", "invoice.paid", "--to", rx.url + "/webhooks/stripe", cwd=tmp_path, **home)
        assert missing.returncode == 2 and len(rx.verdicts) == 2
        assert missing.stderr == ("devtunnel send: no secret for Stripe: set PAYMENTS_STRIPE_SECRET to the receiver's "
                                  "secret (or --unsigned to send without a signature)\n")


def test_unsigned_sends_no_signature_even_with_a_secret_set() -> None:
    """--unsigned was ignored when the provider's variable was set: the sample went out signed."""
    with receiver() as rx:
        done = send("stripe", "invoice.paid", "--to", rx.url + "/webhooks/stripe", "--unsigned", **RECEIVER_SECRETS)
        assert done.returncode == 1 and ", unsigned, to " in done.stdout
        assert rx.verdicts[-1][:2] == ("/webhooks/stripe", 400)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["paypal", "x", "--to", "http://127.0.0.1:9"], "unknown provider 'paypal'; known: stripe, github"),
        (["stripe", "nope", "--to", "http://127.0.0.1:9"], "no stripe sample named 'nope'; stripe has: "),
        # Said before a running agent is looked for: it was "no devtunnel agent answers" (exit 1).
        (["stripe", "nope", "--api", "http://127.0.0.1:9"], "no stripe sample named 'nope'; stripe has: "),
        (["paypal", "x", "--api", "http://127.0.0.1:9"], "unknown provider 'paypal'; known: stripe, github"),
        (["stripe"], "give PROVIDER EVENT (devtunnel send --list shows the samples)"),
        (["stripe", "invoice.paid", "--to", "http://127.0.0.1:9/", "--tunnel", "shop"], "--to URL sends there"),
        (["stripe", "invoice.paid", "--api", "ftp://127.0.0.1:9"], "--api must be the agent API's http:// URL"),
        (["stripe", "invoice.paid", "--to", "ftp://x"], "expected an http:// or https:// URL"),
        (["stripe", "invoice.paid", "--to", "http://u:p@x/"], "user info in the URL is not supported"),
        (["stripe", "invoice.paid", "--to", "http://x:99999/"], "the port is not a number"),
        (["stripe", "invoice.paid", "--to", "http://x/", "--set", "id.x=1"], "--set id.x: id is str"),
        (["stripe", "invoice.paid", "--to", "http://x/", "--data", "@/nonexistent"], "cannot read it"),
        # "@" alone read the current folder: "--data @: cannot read it (Is a directory)".
        (["stripe", "invoice.paid", "--to", "http://x/", "--data", "@"], "--data @FILE: give the file's path after @"),
        # An empty --secret-env (a variable unset in a script) signed with the usual secret instead.
        (["stripe", "invoice.paid", "--to", "http://127.0.0.1:9/", "--secret-env", ""], "--secret-env: expected non-empty text"),
        (["stripe", "invoice.paid", "--to", "http://127.0.0.1:9/", "--secret-env", "MY SECRET"],
         "--secret-env: expected an environment variable name such as STRIPE_WEBHOOK_SECRET (letters, digits and _,"
         " not starting with a digit); the value is not shown: it may be a secret"),
        # socket.settimeout refused these: a ValueError traceback (0: "Operation now in progress").
        (["stripe", "invoice.paid", "--to", "http://127.0.0.1:9/", "--timeout", "-1"], "--timeout: expected a positive number of seconds, not '-1'"),
        (["stripe", "invoice.paid", "--to", "http://127.0.0.1:9/", "--timeout", "0"], "--timeout: expected a positive number of seconds, not '0'"),
        (["stripe", "invoice.paid", "--to", "http://127.0.0.1:9/", "--timeout", "nan"], "--timeout: expected a positive number of seconds"),
        (["stripe", "invoice.paid", "--to", "http://127.0.0.1:9/", "--timeout", "inf"], "--timeout: expected a positive number of seconds"),
        # httpx refused these (InvalidURL) or the resolver did (UnicodeError): each was a traceback.
        (["stripe", "invoice.paid", "--to", "http://127.0.0.1:9/hook\x1b[31m"], "not a valid URL"),
        (["stripe", "invoice.paid", "--to", "http://127.0.0.1:9/\x7f"], "not a valid URL"),
        (["stripe", "invoice.paid", "--to", "http://a..b/"], "not a valid URL"),
        (["stripe", "invoice.paid", "--to", "http://" + "a" * 64 + ".example.com/"], "not a valid URL"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = send(*args, **RECEIVER_SECRETS)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_timeout_too_long_for_a_socket_waits_instead_of_failing() -> None:
    """1e12 seconds overflowed socket.settimeout (OverflowError, a traceback)."""
    with receiver() as rx:
        done = send("github", "ping", "--to", rx.url + "/webhooks/github", "--timeout", "1e12", **RECEIVER_SECRETS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rx.verdicts == [("/webhooks/github", 200, "ok")]


def test_list_shows_every_sample() -> None:
    done = send("--list")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["PROVIDER", "NAME", "EVENT", "PATH"]
    assert any(line.split()[:2] == ["shopify", "orders/create"] for line in lines)


@pytest.mark.parametrize(("given", "path", "shown"), [
    ("{url}", "/webhooks/github", "{url}/webhooks/github"),
    ("{url}/", "/webhooks/github", "{url}/webhooks/github"),
    ("{url}?a=1#frag", "/webhooks/github?a=1", "{url}/webhooks/github?a=1"),
    ("{url}/hook", "/hook", "{url}/hook"),
])
def test_the_line_names_the_url_the_sample_was_sent_to(given: str, path: str, shown: str) -> None:
    """A URL without a path got the sample's path, but the line printed the URL as given."""
    from tests.export.rawserver import RawServer

    with RawServer() as server:
        done = send("github", "ping", "--to", given.format(url=server.url), "--unsigned")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r.target for r in server.received] == [path.encode()]
    assert done.stdout.splitlines()[0].endswith(f", unsigned, to {shown.format(url=server.url)}: 200 OK"), done.stdout


def test_an_unreachable_receiver_is_one_line_and_exit_1() -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = send("github", "ping", "--to", f"http://127.0.0.1:{port}/hook", **RECEIVER_SECRETS)
    assert done.returncode == 1 and done.stderr.startswith(f"devtunnel send: github ping to http://127.0.0.1:{port}/hook failed")
    assert "Traceback" not in done.stderr


def test_localhost_names_are_reached_on_loopback_with_their_host_kept() -> None:
    assert send_url("http://payments.localhost:41234", "/webhooks/stripe") == (
        "http://127.0.0.1:41234/webhooks/stripe", "payments.localhost:41234")
    assert send_url("https://hooks.example.com/in?x=1", "/p") == ("https://hooks.example.com/in?x=1", "hooks.example.com")
    with pytest.raises(ConfigError):
        send_url("payments.localhost", "/")


def test_a_localhost_name_that_is_not_ascii_is_sent_as_its_idna_form() -> None:
    """'http://ü.localhost:PORT' put the name in Host as typed: httpx refused it (UnicodeEncodeError, a traceback)."""
    from tests.export.rawserver import RawServer

    with RawServer() as server:
        done = send("github", "ping", "--to", f"http://ü.localhost:{server.port}/hook", "--unsigned")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [dict(r.headers)[b"Host"] for r in server.received] == [f"xn--tda.localhost:{server.port}".encode()]


def test_a_sample_sent_to_a_tunnels_public_url_is_captured_like_a_delivery(tmp_path: Path) -> None:
    from tests.kit.procs import FORWARDING, Proc

    db = tmp_path / "c.db"
    env = {**{k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS}, "XDG_STATE_HOME": str(tmp_path)}
    with receiver() as rx:
        agent = Proc([*DEVTUNNEL, "http", rx.url, "--no-tui", "--name", "pay", "--api-port", "0", "--db", str(db)], env)
        try:
            match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
            assert match is not None
            public = match.group(1)
            done = send("stripe", "payment_intent.succeeded", "--to", public, **RECEIVER_SECRETS)
            assert done.returncode == 0, done.stdout + done.stderr
            # The URL it was sent to: the public URL had no path, the sample's was added.
            assert f"to {public}/webhooks/stripe: 200 OK" in done.stdout and rx.verdicts[-1] == ("/webhooks/stripe", 200, "ok")
            agent.line(lambda l: "/webhooks/stripe" in l)
        finally:
            agent.stop()
    listed = subprocess.run([*DEVTUNNEL, "requests", "--json", "--db", str(db)], capture_output=True, text=True,
                            timeout=30, env=env)
    rows = json.loads(listed.stdout)
    assert [(r["method"], r["path"], r["status"], r["host"]) for r in rows] == [
        ("POST", "/webhooks/stripe", 200, public.split("://", 1)[1])]


@pytest.mark.parametrize(("reason", "shown"), [("Größe".encode(), "418 Größe"), (b"Gr\xf6\xdfe\x1b[2J", "418 Gr\\xf6\\xdfe\\x1b[2J")])
def test_the_receivers_reason_reads_as_utf8_where_it_is_and_escaped_where_not(reason: bytes, shown: str) -> None:
    """httpx reads a reason as ASCII and drops the rest: 'Größe' printed as 'Gre'."""
    from tests.export.rawserver import RawServer

    answer = b"HTTP/1.1 418 " + reason + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    with RawServer(answer) as server:
        done = send("github", "ping", "--to", server.url + "/hook", "--unsigned")
    assert done.returncode == 1, done.stderr
    assert done.stdout.rstrip("\n").endswith(f": {shown}"), done.stdout
    assert "\x1b" not in done.stdout


def _agent(tmp_path: Path, target: str) -> tuple[Proc, int]:
    """``devtunnel http TARGET --no-tui`` in ``tmp_path``, whose devtunnel.toml puts its API on a free port."""
    api = free_port()
    (tmp_path / "devtunnel.toml").write_text(f"[agent]\napi_port = {api}\n")
    clean = {k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS and k != "DEVTUNNEL_CONFIG"}
    proc = Proc([*DEVTUNNEL, "http", target, "--no-tui", "--name", "shop", "--db", str(tmp_path / "c.db")],
                {**clean, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config")},
                cwd=tmp_path)
    proc.line(lambda line: line.startswith("API http://127.0.0.1:"))
    return proc, api


def test_without_to_a_sample_goes_to_the_running_tunnel_like_stripe_trigger(tmp_path: Path) -> None:
    """Found by use: `devtunnel send stripe invoice.paid` beside a running `devtunnel http` asked for
    --to; it goes through the agent's tunnel, captured and verified like a delivery."""
    with receiver() as rx:
        proc, api = _agent(tmp_path, rx.url)
        try:
            done = send("stripe", "invoice.paid", cwd=tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"),
                        **RECEIVER_SECRETS)
            assert done.returncode == 0, done.stdout + done.stderr
            assert re.search(r"signed, to http://shop\.localhost:\d+/webhooks/stripe: 200 OK", done.stdout), done.stdout
            assert rx.verdicts == [("/webhooks/stripe", 200, "ok")]
            wait_for(lambda: "stripe invoice.paid" in "".join(proc.out), what="the delivery in the agent's output")
            # A second tunnel: which one is no longer clear.
            second = httpx.post(f"http://127.0.0.1:{api}/api/tunnels", json={"addr": rx.url, "name": "other"}, timeout=10)
            assert second.status_code == 201, second.text
            both = send("stripe", "invoice.paid", cwd=tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"),
                        **RECEIVER_SECRETS)
            assert both.returncode == 2
            assert "several tunnels are running ('shop', 'other'): choose one with --tunnel NAME" in both.stderr
            chosen = send("stripe", "invoice.paid", "--tunnel", "other", "--api", f"127.0.0.1:{api}", **RECEIVER_SECRETS)
            assert chosen.returncode == 0, chosen.stderr
            assert "to http://other.localhost:" in chosen.stdout
            # A path of the running tunnel's URL (stripe listen --forward-to HOST/PATH), --tunnel beside it.
            pathed = send("stripe", "invoice.paid", "--to", "/webhooks/stripe/v2", "--tunnel", "other",
                          "--api", f"127.0.0.1:{api}", **RECEIVER_SECRETS)
            assert pathed.returncode == 0, pathed.stderr
            assert re.search(r"signed, to http://other\.localhost:\d+/webhooks/stripe/v2: 200 OK", pathed.stdout), pathed.stdout
            assert rx.verdicts[-1] == ("/webhooks/stripe/v2", 200, "ok")
            url = send("stripe", "invoice.paid", "--to", "http://127.0.0.1:9/", "--tunnel", "other", **RECEIVER_SECRETS)
            assert url.returncode == 2 and "(--to /PATH sends to a path of it)" in url.stderr
            missing = send("stripe", "invoice.paid", "--tunnel", "nope", "--api", f"http://127.0.0.1:{api}",
                           **RECEIVER_SECRETS)
            assert missing.returncode == 1
            assert missing.stderr == ("devtunnel send: no running tunnel is named 'nope' (running: 'shop', 'other')\n")
        finally:
            assert proc.stop() == 0


def test_without_to_and_no_agent_running_it_says_where_it_looked(tmp_path: Path) -> None:
    api = free_port()
    done = send("stripe", "invoice.paid", "--api", f"127.0.0.1:{api}", **RECEIVER_SECRETS)
    assert done.returncode == 1
    assert done.stderr == (f"devtunnel send: no devtunnel agent answers at 127.0.0.1:{api}: start one with "
                           "devtunnel http/up, or give --to URL\n")


@pytest.mark.parametrize("name", [None, "other"])
def test_a_sample_to_a_running_tunnel_is_signed_with_that_tunnels_own_secret(tmp_path: Path, name: str | None) -> None:
    """Found by use: [tunnels.shop.webhooks.stripe] secret_env = "SHOP_STRIPE_SECRET" made the agent
    judge shop's deliveries with that secret, but `send --tunnel shop` signed with the global
    STRIPE_WEBHOOK_SECRET: the receiver answered 400 and the agent said "wrong secret".

    Renamed (`devtunnel http shop --name other`), the agent judges other's deliveries with shop's
    secret, but `send --tunnel other` (and `send` alone) looked for [tunnels.other] and signed with
    the global secret: 400 again. The API's tunnel says which table it came from; send signs with it."""
    right = RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]
    tunnel = name or "shop"
    with receiver() as rx:
        api = free_port()
        (tmp_path / "devtunnel.toml").write_text(
            f"[agent]\napi_port = {api}\n\n[tunnels.shop]\ntarget = {rx.url.rsplit(':', 1)[1]}\n"
            '[tunnels.shop.webhooks.stripe]\nsecret_env = "SHOP_STRIPE_SECRET"\n')
        env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "SHOP_STRIPE_SECRET": right,
               "STRIPE_WEBHOOK_SECRET": "whsec_another_service"}
        clean = {k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS and k != "DEVTUNNEL_CONFIG"}
        renamed = ["--name", name] if name else []
        proc = Proc([*DEVTUNNEL, "http", "shop", *renamed, "--no-tui", "--db", str(tmp_path / "c.db")],
                    {**clean, **env, "XDG_STATE_HOME": str(tmp_path / "state")}, cwd=tmp_path)
        try:
            proc.line(lambda line: line.startswith("API http://127.0.0.1:"))
            listed = httpx.get(f"http://127.0.0.1:{api}/api/tunnels", timeout=10).json()["tunnels"]
            assert [(t["name"], t["config"]["table"]) for t in listed] == [(tunnel, "shop")]
            for args in ([], ["--tunnel", tunnel]):
                done = send("stripe", "invoice.paid", *args, cwd=tmp_path, **env)
                assert done.returncode == 0, done.stdout + done.stderr
                assert f"to http://{tunnel}.localhost:" in done.stdout
            assert [status for _, status, _ in rx.verdicts] == [200, 200], rx.verdicts
            wait_for(lambda: "".join(proc.out).count("✓ signature valid") == 2, what="both judged valid by the agent")
        finally:
            assert proc.stop() == 0


def test_a_sample_is_also_named_by_the_event_send_list_shows() -> None:
    """Found by use: `send --list` shows slack's event_callback sample with the EVENT app_mention;
    `devtunnel send slack app_mention` answered "no slack sample named 'app_mention'"."""
    with receiver() as rx:
        done = send("slack", "app_mention", "--to", rx.url, **RECEIVER_SECRETS)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("sent slack event_callback (") and rx.verdicts == [("/slack/events", 200, "ok")]
