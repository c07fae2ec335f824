"""``export --format pytest``: the module runs under pytest against a receiver that verifies signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from devtunnel.capture.model import Exchange, RuleMark
from devtunnel.capture.store import Store
from devtunnel.export import export
from devtunnel.export.pytest_module import export_pytest
from devtunnel.webhooks import CustomProvider, Delivery, by_name
from devtunnel.webhooks.context import WebhookContext
from devtunnel.webhooks.samples import sample
from tests.kit.exchanges import make_exchange, make_response
from tests.kit.servers import Received, Reply, http_server
from tests.webhooks.receivers import RECEIVER_SECRETS, receiver

SENT = [("stripe", "invoice.paid"), ("github", "push"), ("shopify", "orders/create"), ("standard", "user.created"),
        ("slack", "event_callback"), ("twilio", "sms.received")]
PATHS = {"stripe": "/webhooks/stripe", "github": "/webhooks/github", "shopify": "/webhooks/shopify",
         "standard": "/webhooks/standard", "slack": "/slack/events", "twilio": "/twilio/sms"}


def _deliver(base: str, provider_name: str, name: str) -> Exchange:
    """A signed sample sent to the receiver, recorded as devtunnel would have captured it."""
    provider = by_name(provider_name)
    assert provider is not None
    made = sample(provider_name, name, now=time.time())
    secret = RECEIVER_SECRETS[provider.secret_env]
    target = PATHS[provider_name]
    url = base + target
    headers = provider.sign(Delivery("POST", url, made.headers, made.body), secret, time.time())
    response = httpx.post(url, headers=headers.items(), content=made.body, trust_env=False)
    host = base.split("://", 1)[1]
    return make_exchange("POST", target, [("Host", host), *headers.items()], made.body,
                         make_response(response.status_code, body=response.content),
                         tunnel="hooks", started_at=time.time(), target_url=base, duration=0.01)


def _run(module: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS and k != "DEVTUNNEL_BASE_URL"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(module)],
                          capture_output=True, text=True, timeout=120, env={**clean, **env}, cwd=module.parent)


def test_the_module_passes_against_the_verifying_receiver_long_after_capture(tmp_path: Path) -> None:
    with receiver() as rx:
        exchanges = [_deliver(rx.url, p, n) for p, n in SENT]
        assert [status for _, status, _ in rx.verdicts] == [200] * len(SENT), rx.verdicts
        text = export("pytest", exchanges).text
        compile(text, "test_hooks.py", "exec")
        module = tmp_path / "test_hooks.py"
        module.write_text(text)
        # Later: every timestamp in the captured signatures is now too old for the receiver.
        stale = time.time() + 3600
        assert all(abs(stale - ex.started_at) > 300 for ex in exchanges)
        done = _run(module, **RECEIVER_SECRETS)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{len(SENT)} passed" in done.stdout
        assert [status for _, status, _ in rx.verdicts[len(SENT):]] == [200] * len(SENT)

        # Without the secrets: timestamped schemes are skipped with the variable to set; the others are sent as captured.
        bare = _run(module)
        assert bare.returncode == 0, bare.stdout + bare.stderr
        assert "3 passed, 3 skipped" in bare.stdout
        assert "set STRIPE_WEBHOOK_SECRET to sign this stripe delivery afresh (its captured signature is timestamped" in bare.stdout


def test_the_base_url_variable_points_the_tests_elsewhere(tmp_path: Path) -> None:
    with receiver() as first:
        exchanges = [_deliver(first.url, "github", "push")]
    module = tmp_path / "test_moved.py"
    module.write_text(export("pytest", exchanges).text)
    with receiver() as second:
        done = _run(module, DEVTUNNEL_BASE_URL=second.url, **RECEIVER_SECRETS)
        assert done.returncode == 0, done.stdout + done.stderr
        assert [status for _, status, _ in second.verdicts] == [200]


def test_a_twilio_delivery_from_the_public_url_is_signed_for_the_base_its_forwarded_host_says_too(tmp_path: Path) -> None:
    """Found by use: the module signed Twilio's URL for the base it sends to while the captured
    X-Forwarded-Host (Forwarded and X-Forwarded-Port too, since the relay sets them) still named
    the public URL, so a receiver behind ProxyFix refused every test;
    without the token its captured signature could not verify at another URL, and it failed instead of
    being skipped; a base of the embedded relay's http://NAME.localhost:PORT did not resolve."""
    with receiver(behind_proxy=True) as rx:
        port = rx.url.rsplit(":", 1)[1]
        public = f"http://hooks.localhost:{port}"
        made = sample("twilio", "sms.received", now=time.time())
        provider = by_name("twilio")
        assert provider is not None
        forwarded = [("X-Forwarded-Host", f"hooks.localhost:{port}"), ("X-Forwarded-Proto", "http"),
                     ("X-Forwarded-Port", port), ("Forwarded", f'for=127.0.0.1;host="hooks.localhost:{port}";proto=http')]
        headers = provider.sign(Delivery("POST", public + "/twilio/sms", made.headers, made.body),
                                RECEIVER_SECRETS["TWILIO_AUTH_TOKEN"], time.time())
        captured = make_exchange("POST", "/twilio/sms", [("Host", f"hooks.localhost:{port}"), *headers.items(), *forwarded],
                                 made.body, make_response(200), tunnel="hooks", started_at=time.time(), target_url=rx.url,
                                 duration=0.01)
        module = tmp_path / "test_twilio.py"
        module.write_text(export("pytest", [captured]).text)
        signed = _run(module, TWILIO_AUTH_TOKEN=RECEIVER_SECRETS["TWILIO_AUTH_TOKEN"])
        assert "1 passed" in signed.stdout, signed.stdout + signed.stderr
        assert rx.verdicts[-1] == ("/twilio/sms", 200, "ok")
        sent = dict(rx.headers[-1])
        assert sent["X-Forwarded-Host"] == f"127.0.0.1:{port}" and sent["X-Forwarded-Proto"] == "http"
        # (Rack reads Forwarded first: it says the base too)
        assert sent["Forwarded"] == f'for=127.0.0.1;host="127.0.0.1:{port}";proto=http' and sent["X-Forwarded-Port"] == port
        bare = _run(module)
        assert "1 skipped" in bare.stdout and (
            f"set TWILIO_AUTH_TOKEN to sign this twilio delivery afresh (its captured signature covers the URL it was"
            f" sent to, {public}/twilio/sms, not {rx.url}/twilio/sms)") in bare.stdout, bare.stdout
        # Sent to the public URL it was captured at (the embedded relay's name: not every resolver
        # knows it), its captured signature verifies as it is.
        seen = len(rx.verdicts)
        there = _run(module, DEVTUNNEL_BASE_URL=public)
        assert "1 passed" in there.stdout, there.stdout + there.stderr
        assert rx.verdicts[seen:] == [("/twilio/sms", 200, "ok")]
        assert dict(rx.headers[-1])["Host"] == f"hooks.localhost:{port}"


def test_hostile_captures_become_literals_and_unreplayable_ones_are_skipped_with_the_reason(tmp_path: Path) -> None:
    hostile = "/x\x1b]0;pwned\x07\"\"\"; import os; os.system('id') #\u202e"
    plain = make_exchange("PUT", hostile, [("X-Evil", "a'b\"c\\\x00")], b"\x00\xff\"\"\"", make_response(418),
                          tunnel="t", started_at=0.0, duration=0.1)
    failed = make_exchange(headers=[], tunnel="t", started_at=0.0, target_url="", error="local_refused")
    cut = make_exchange(headers=[], body=b"ab", body_size=10, body_truncated=True, response=make_response(200),
                        tunnel="t", started_at=0.0, target_url="", duration=0.1)
    text = export_pytest([plain, failed, cut]).text
    compile(text, "x.py", "exec")
    assert "\x1b" not in text and "\u202e" not in text and "\x00" not in text
    assert "os.system('id')" not in text.replace(repr(hostile), "")
    names = [line[4:].split("(")[0] for line in text.splitlines() if line.startswith("def test_")]
    assert len(names) == 3 and all(re.fullmatch(r"test_[a-z0-9_]+", n) for n in names), names
    assert "pytest.skip('no response was recorded (local_refused)')" in text
    assert "pytest.skip('the request body was recorded only in part')" in text
    module = tmp_path / "test_hostile.py"
    module.write_text(text)
    done = _run(module)
    assert done.returncode == 0 and "3 skipped" in done.stdout, done.stdout  # the NUL in X-Evil: httpx cannot send it
    assert "the header 'X-Evil' holds a control byte; httpx cannot send it" in text


@pytest.mark.parametrize(("path", "shown"), [
    (None, "Save it as a test file and run it with the service up:\n\n"
           "    DEVTUNNEL_BASE_URL=http://127.0.0.1:8000 pytest test_captured.py\n"),
    ("tests/test_hooks.py", "Run it with the service up:\n\n"
                            "    DEVTUNNEL_BASE_URL=http://127.0.0.1:8000 pytest tests/test_hooks.py\n"),
    ("my hooks/test_it.py", "pytest 'my hooks/test_it.py'\n"),
    ('a"""b\\c\x1b]0;x\x07.py', "pytest 'a\"\"\"b\\\\c\\x1b]0;x\\x07.py'\n"),
])
def test_the_docstring_says_how_to_run_the_file_it_is_written_to(path: str | None, shown: str) -> None:
    """The module was told to be run with "pytest {this file}". It names the file it is written
    to now, quoted for a shell; a name holding quotes, a backslash or a control character keeps
    the module valid Python and its docstring free of terminal escapes."""
    ex = make_exchange(response=make_response(200), tunnel="t", started_at=0.0, duration=0.1)
    text = export("pytest", [ex], path=path).text
    namespace: dict[str, object] = {}
    exec(compile(text, "x.py", "exec"), namespace)
    doc = str(namespace["__doc__"])
    assert shown in doc, doc
    assert "\x1b" not in text and "\x07" not in text


def test_redact_replaces_credentials_in_what_the_tests_send() -> None:
    ex = make_exchange(headers=[("Authorization", "Bearer sk_live_abc"), ("Cookie", "sid=s3cret")],
                       response=make_response(200), tunnel="t", started_at=0.0, duration=0.1)
    text = export("pytest", [ex], redact=True).text
    assert "sk_live_abc" not in text and "s3cret" not in text


@pytest.mark.parametrize("count", [1, 12])
def test_test_names_are_unique_and_ordered(count: int) -> None:
    ex = make_exchange(target=b"/same", headers=[], response=make_response(200), tunnel="t", started_at=0.0, duration=0.1)
    text = export_pytest([ex] * count).text
    names = [line.split("(")[0][4:] for line in text.splitlines() if line.startswith("def test_")]
    assert len(set(names)) == count and names == sorted(names)


def test_the_module_sends_the_captured_method_target_headers_and_body_byte_for_byte(tmp_path: Path) -> None:
    """What a test sends is what was captured: non-ASCII and non-UTF-8 header values (httpx refused
    the text of any non-ASCII value with UnicodeEncodeError), a target httpx would rewrite (dot
    segments, quotes; non-ASCII bytes percent-encoded), a method it would upper-case, repeated headers in
    order, and no header httpx adds by itself (Host aside, which names the server sent to)."""
    from tests.export.rawserver import RawServer

    target = b'/a/../b/./c?q="<x>"&r=\xff&s=caf\xc3\xa9&t=%zz'
    headers = [(b"Host", b"shop.example"), (b"X-Utf8", "café ✓".encode()), (b"X-Latin1", b"caf\xe9"),
               (b"X-Rep", b"1"), (b"x-rep", b"2"), (b"X-Hidden", "a\u3164b".encode()), (b"Content-Length", b"7")]
    body = b"\x00\xff'''\\N"
    with RawServer() as server:
        ex = make_exchange("patch", target, headers, body, make_response(200), tunnel="t", started_at=0.0,
                           target_url=server.url, duration=0.1)
        text = export_pytest([ex]).text
        assert text.isascii(), [ch for ch in text if not ch.isascii()]  # nothing a terminal could hide
        module = tmp_path / "test_exact.py"
        module.write_text(text)
        done = _run(module)
        assert done.returncode == 0, done.stdout + done.stderr
        [got] = server.received
    sent_target = b'/a/../b/./c?q="<x>"&r=%FF&s=caf%C3%A9&t=%zz'  # h11 refuses raw bytes past ASCII
    assert (got.method, got.target, got.body) == (b"patch", sent_target, body)
    assert got.headers == [(b"Host", f"127.0.0.1:{server.port}".encode()), *headers[1:-1], (b"Content-Length", b"7")]


@pytest.mark.parametrize("body", [b"", b"a=1&b=2"], ids=["get", "post"])
def test_an_http_1_0_request_is_sent_as_http_1_0(tmp_path: Path, body: bytes) -> None:
    """httpx speaks only HTTP/1.1: the module sent a request captured as HTTP/1.0 as 1.1, which a
    service may answer otherwise (keep-alive, a chunked body the 1.0 client cannot read)."""
    from dataclasses import replace

    from tests.export.rawserver import RawServer

    method = "POST" if body else "GET"
    headers = [(b"Host", b"shop.example"), (b"X-A", b"1")] + ([(b"Content-Length", b"7")] if body else [])
    with RawServer() as server:
        ex = make_exchange(method, b"/old?q=1", headers, body, make_response(200), started_at=0.0,
                           target_url=server.url + "/prefix", duration=0.1)
        ex = replace(ex, request=replace(ex.request, http_version="1.0"))
        module = tmp_path / "test_old.py"
        module.write_text(export_pytest([ex]).text)
        done = _run(module)
        assert done.returncode == 0, done.stdout + done.stderr
        [got] = server.received
    assert (got.method, got.target, got.version, got.body) == (method.encode(), b"/prefix/old?q=1", b"HTTP/1.0", body)
    assert got.headers == [(b"Host", f"127.0.0.1:{server.port}".encode()), (b"X-A", b"1"),
                           *([(b"Content-Length", b"7")] if body else [])]


def test_relay_answers_and_requests_httpx_cannot_send_are_skipped_and_the_rest_pass(tmp_path: Path) -> None:
    """Found by exporting real relay traffic: a request a basic-auth rule answered 401 became a test
    asserting 401 from the service (which never saw it, and answers 200); a header value with
    spaces after it (llhttp keeps them, RFC 9110 says they are not part of the value), a method or
    header name that is no token, or a CR in a value failed the test in h11 with a traceback, as
    if the service were broken. An exchange id is a comment only when it is one word."""
    from tests.export.rawserver import RawServer

    def made(method: str, target: str, headers: list[tuple[bytes, bytes]], status: int, **fields: object) -> Exchange:
        return make_exchange(method, target, [(b"Host", b"shop.example"), *headers], b"",
                             make_response(status), tunnel="t", started_at=0.0, target_url=server.url,
                             duration=0.1, **fields)

    with RawServer() as server:
        spaced = made("GET", "/spaced", [(b"X-Spaced", b"v  \t"), (b"X-Inner", b"a  b")], 200)
        refused = made("GET", "/refused", [], 401, rule=RuleMark(1, "basic-auth"))
        routed = made("GET", "/routed", [], 200, rule=RuleMark(2, "forward"))
        bad_method = made('G"ET', "/m", [], 200)
        bad_name = made("GET", "/n", [(b"Bad Name", b"v")], 200)
        crlf = made("GET", "/v", [(b"X-Crlf", b"a\r\nInjected: 1")], 200)
        odd_id = made("GET", "/id", [], 200)
        odd_id.id = "01ABC\nraise SystemExit(3)"
        text = export_pytest([spaced, refused, routed, bad_method, bad_name, crlf, odd_id]).text
        module = tmp_path / "test_relay.py"
        module.write_text(text)
        done = _run(module)
        received = {got.target: got for got in server.received}
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed, 4 skipped" in done.stdout, done.stdout
    assert "rule 1 basic-auth at the relay answered it; it never reached the service" in done.stdout
    assert "its method is not an HTTP token; httpx cannot send it" in done.stdout
    assert "the header 'X-Crlf' holds a control byte; httpx cannot send it" in done.stdout
    assert "the header name 'Bad Name' is not an HTTP token; httpx cannot send it" in done.stdout  # not b'Bad Name'
    assert "# exchange '01ABC\\nraise SystemExit(3)'" in text
    assert sorted(received) == [b"/id", b"/routed", b"/spaced"]
    assert received[b"/spaced"].headers[1:] == [(b"X-Spaced", b"v"), (b"X-Inner", b"a  b")]


def _stale_stripe_delivery(base: str, tunnel: str, secret: str) -> Exchange:
    """A Stripe delivery the receiver accepted an hour ago (its signature's timestamp is that old)."""
    stripe_ = by_name("stripe")
    assert stripe_ is not None
    then = time.time() - 3600
    made = sample("stripe", "invoice.paid", now=then)
    headers = stripe_.sign(Delivery("POST", base + PATHS["stripe"], made.headers, made.body), secret, then)
    return make_exchange("POST", PATHS["stripe"], [("Host", base.split("://", 1)[1]), *headers.items()], made.body,
                         make_response(200), tunnel=tunnel, started_at=then, target_url=base, duration=0.01)


def test_the_cli_module_reads_the_variable_devtunnel_toml_names_for_each_tunnel(tmp_path: Path) -> None:
    # The receiver's code reads PAYMENTS_STRIPE_SECRET (said in [webhooks.stripe]); the tunnel
    # payments' reads PAYMENTS_TEST_STRIPE_SECRET, while STRIPE_WEBHOOK_SECRET holds another
    # service's secret. The module must sign each delivery with the variable its tunnel's receiver reads.
    (tmp_path / "devtunnel.toml").write_text(
        '[webhooks.stripe]\nsecret_env = "PAYMENTS_STRIPE_SECRET"\n\n'
        '[tunnels.payments]\ntarget = 3000\n[tunnels.payments.webhooks.stripe]\nsecret_env = "PAYMENTS_TEST_STRIPE_SECRET"\n')
    right = RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]
    env = {k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS and k != "DEVTUNNEL_BASE_URL"}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               PAYMENTS_STRIPE_SECRET=right, PAYMENTS_TEST_STRIPE_SECRET=right,
               STRIPE_WEBHOOK_SECRET="whsec_another_service")
    with receiver() as rx:
        hooks = _stale_stripe_delivery(rx.url, "hooks", right)
        payments = _stale_stripe_delivery(rx.url, "payments", right)
        db = tmp_path / "captures.db"
        store = Store(db)
        store.put_many([hooks, payments])
        store.close()
        module = tmp_path / "test_hooks.py"
        made = subprocess.run([str(Path(sys.executable).parent / "devtunnel"), "export", "--format", "pytest",
                               "-o", str(module), "--db", str(db), hooks.id, payments.id],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
        assert made.returncode == 0, made.stderr
        text = module.read_text()
        assert "secret_env='PAYMENTS_STRIPE_SECRET'" in text and "secret_env='PAYMENTS_TEST_STRIPE_SECRET'" in text
        assert right not in text and "whsec_another_service" not in text
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(module)],
                              capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2 passed" in done.stdout
        assert [status for _, status, _ in rx.verdicts] == [200, 200], rx.verdicts


ACME_TOML = '''[webhooks.acme]
header = "X-Acme-Signature"
encoding = "base64"
prefix = "v1="
template = "{id}:{timestamp}:{url}:{body}"
timestamp_header = "X-Acme-Timestamp"
id_header = "X-Acme-Delivery"
event_path = "type"
secret_env = "ACME_SIGNING_KEY"
'''


def test_the_cli_module_signs_a_custom_providers_delivery_afresh_from_its_scheme(tmp_path: Path) -> None:
    # A provider described in devtunnel.toml: its receiver checks the timestamp (300 s) and the
    # HMAC over "ID:TS:URL:BODY". Captured an hour ago, the delivery must be signed afresh.
    (tmp_path / "devtunnel.toml").write_text(ACME_TOML)
    key = "acme-key-0123"

    def acme(request: Received) -> Reply:
        stamp = request.header("X-Acme-Timestamp") or "0"
        content = (f"{request.header('X-Acme-Delivery')}:{stamp}:http://{request.header('Host')}{request.path}:"
                   .encode() + request.body)
        expected = "v1=" + base64.b64encode(hmac.new(key.encode(), content, hashlib.sha256).digest()).decode()
        fresh = abs(time.time() - int(stamp)) <= 300
        ok = fresh and hmac.compare_digest(expected, request.header("X-Acme-Signature") or "")
        return Reply(200 if ok else 401, body=b"ok" if ok else b"stale or bad signature")

    env = {k: v for k, v in os.environ.items() if k not in RECEIVER_SECRETS and k != "DEVTUNNEL_BASE_URL"}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"), ACME_SIGNING_KEY=key)
    with http_server(acme) as server:
        then = time.time() - 3600
        body = b'{"type": "order.shipped", "id": 7}'
        host = server.url.split("://", 1)[1]
        content = f"dlv_1:{int(then)}:http://{host}/hooks/acme:".encode() + body
        signature = "v1=" + base64.b64encode(hmac.new(key.encode(), content, hashlib.sha256).digest()).decode()
        captured = make_exchange("POST", "/hooks/acme", [("Host", host), ("Content-Type", "application/json"),
                                                         ("X-Acme-Delivery", "dlv_1"), ("X-Acme-Timestamp", str(int(then))),
                                                         ("X-Acme-Signature", signature)], body,
                                 make_response(200), tunnel="hooks", started_at=then, target_url=server.url, duration=0.01)
        acme_ = CustomProvider("acme", "X-Acme-Signature", encoding="base64", prefix="v1=",
                               template="{id}:{timestamp}:{url}:{body}", timestamp_header="X-Acme-Timestamp",
                               id_header="X-Acme-Delivery", event_path="type")
        captured = replace(captured, webhook=WebhookContext(providers=(acme_,), secrets={"acme": (key,)}).judge(captured))
        assert captured.webhook is not None and captured.webhook.signature.value == "valid"
        db = tmp_path / "captures.db"
        store = Store(db)
        store.put_many([captured])
        store.close()
        module = tmp_path / "test_acme.py"
        made = subprocess.run([str(Path(sys.executable).parent / "devtunnel"), "export", "--format", "pytest",
                               "-o", str(module), "--db", str(db), captured.id],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
        assert made.returncode == 0, made.stderr
        text = module.read_text()
        assert "secret_env='ACME_SIGNING_KEY'" in text and key not in text
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(module)],
                              capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 passed" in done.stdout
        # Without the variable, a timestamped signature (expired by the time the suite runs): skipped, naming the variable.
        del env["ACME_SIGNING_KEY"]
        bare = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(module)],
                              capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        assert "1 skipped" in bare.stdout and "set ACME_SIGNING_KEY to sign this acme delivery" in bare.stdout, bare.stdout
        # Exported where no devtunnel.toml describes acme: the module cannot sign it afresh, and says so.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        away = subprocess.run([str(Path(sys.executable).parent / "devtunnel"), "export", "--format", "pytest",
                               "-o", str(elsewhere / "test_acme.py"), "--db", str(db), captured.id],
                              capture_output=True, text=True, cwd=elsewhere, env=env, timeout=60)
        assert away.returncode == 0, away.stderr
        said = away.stderr.splitlines()[0]
        assert said.startswith(f"devtunnel: {captured.id[:8]}") and said.endswith(
            " its test sends the captured signature: no provider acme is described here "
            "(add [webhooks.acme] to devtunnel.toml)"), away.stderr
