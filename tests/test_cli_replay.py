"""``devtunnel replay`` as a subprocess against a real local service: edits, notices, bad flags."""

from __future__ import annotations

import gzip
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from devtunnel.capture.model import Exchange, new_id
from devtunnel.capture.verdict import Signature, Verdict
from devtunnel.capture.store import Store
from devtunnel.config import load, set_value, to_toml
from devtunnel.errors import ConfigError
from tests.kit.exchanges import make_exchange, make_response
from tests.kit.servers import Received, Reply, http_server, rude_server
from tests.test_cli_captures import DEVTUNNEL, assert_one_line_error, cli

HOSTILE_ERROR = b'\x1b]0;pwned\x07boom \x1b[31mred\nsecond line\n'


@dataclass
class Service:
    url: str
    seen: list[Received] = field(default_factory=list)
    builds: int = 0


@pytest.fixture
def service() -> Iterator[Service]:
    """Answers ``ok`` with a fresh Date; ``/build`` adds an X-Build that changes every time; ``/fail`` a 500."""
    state = Service("")

    def answer(request: Received) -> Reply:
        out, status = (HOSTILE_ERROR, 500) if request.path == "/fail" else (b"ok", 200)
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))]
        if request.path == "/build":
            state.builds += 1
            headers.append(("X-Build", str(state.builds)))
        return Reply(status, headers, out)  # also sent: Server and a Date of now

    with http_server(answer, server_version="test-service") as server:
        state.url, state.seen = server.url, server.received
        yield state


def captured(service: Service, target: bytes = b"/", headers: list[tuple[str, str]] | None = None,
             response_headers: list[tuple[str, str]] | None = None) -> Exchange:
    """An exchange as if captured from ``service`` yesterday."""
    fields = headers if headers is not None else [("Host", "shop.localhost"), ("Content-Type", "application/json"),
                                                   ("Content-Length", "7"), ("Stripe-Signature", "t=1,v1=abc")]
    response = make_response(200, response_headers or [
        ("Server", "test-service"), ("Date", "Mon, 01 Dec 2025 10:00:00 GMT"), ("Content-Type", "text/plain"), ("Content-Length", "2"),
    ], b"ok", reason="OK")
    return make_exchange("POST", target, fields, b'{"a":1}', response, tunnel="shop", started_at=1.0, target_url=service.url)


def put(db: Path, *exchanges: Exchange) -> None:
    store = Store(db)
    try:
        store.put_many(exchanges)
    finally:
        store.close()


def stored(db: Path) -> list[Exchange]:
    store = Store(db, readonly=True)
    try:
        return store.query()
    finally:
        store.close()


def replay_of(db: Path, original: Exchange) -> Exchange:
    """The newest replay of ``original`` (ids sort by time only within one process)."""
    return [ex for ex in stored(db) if ex.replay_of == original.id][-1]


def test_only_a_new_date_is_the_same_response(service: Service, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    ex = captured(service)
    put(db, ex)
    proc = cli(None, "replay", ex.id, db=db)
    assert proc.returncode == 0, proc.stderr
    new = replay_of(db, ex)
    assert new.response is not None and new.response.headers.get("date") != "Mon, 01 Dec 2025 10:00:00 GMT"
    assert proc.stdout == f"{ex.id} -> {new.id}  200 OK  {proc.stdout.split('  ')[2]}  same response\n"


@pytest.mark.parametrize("how", ["reset", "close"])
def test_a_service_that_drops_the_connection_is_said_so_naming_its_url(how: str, tmp_path: Path) -> None:
    """A local service that resets or closes the connection without answering: before, "ERR replay_failed"
    and "replay to URL failed: ReadError" (a reset named nothing); now local_error, as the agent records
    it for a live request, and what happened. Exit 1, the replay recorded."""
    db = tmp_path / "c.db"
    with rude_server(how) as url:
        ex = captured(Service(url))
        put(db, ex)
        proc = cli(None, "replay", ex.id, db=db)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)
    new = replay_of(db, ex)
    assert new.error == "local_error" and new.response is None
    done = "reset" if how == "reset" else "closed"
    [line] = proc.stdout.splitlines()
    assert line.startswith(f"{ex.id} -> {new.id}  ERR local_error  ")
    assert f"  failed: the local service at {url} {done} the connection without answering (" in line


def test_diff_agrees_with_same_response_a_new_date_is_shown_but_exits_0(service: Service, tmp_path: Path) -> None:
    """replay said "same response" and ``devtunnel diff`` of the two exited 1, as if they
    differed: the Date a replay gets is always new. It is shown, and counts with --strict."""
    db = tmp_path / "c.db"
    ex = captured(service)
    put(db, ex)
    assert cli(None, "replay", ex.id, db=db).stdout.rstrip().endswith("same response")
    new = replay_of(db, ex)
    diff = cli(None, "diff", ex.id, new.id, db=db)
    assert diff.returncode == 0, (diff.stdout, diff.stderr)
    assert "-Date: Mon, 01 Dec 2025 10:00:00 GMT\n" in diff.stdout and "\n+Date: " in diff.stdout
    assert "?only volatile headers differ, not counted: Date\n" in diff.stdout
    strict = cli(None, "diff", ex.id, new.id, "--strict", db=db)
    assert strict.returncode == 1 and "only volatile" not in strict.stdout, strict.stdout


def test_diff_does_not_count_the_headers_the_config_leaves_out_of_replays(service: Service, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    ex = captured(service, b"/build", response_headers=[("Server", "test-service"), ("Content-Type", "text/plain"),
                                                       ("Content-Length", "2"), ("X-Build", "0")])
    put(db, ex)
    assert cli(None, "replay", ex.id, db=db).returncode == 0
    new = replay_of(db, ex)
    assert cli(None, "diff", ex.id, new.id, db=db).returncode == 1  # X-Build is not volatile of itself
    config = tmp_path / "devtunnel.toml"
    config.write_text('[replay]\nignore_headers = ["X-Build"]\n')
    env = {**os.environ, "DEVTUNNEL_CONFIG": str(config)}
    proc = subprocess.run([DEVTUNNEL, "diff", ex.id, new.id, "--db", str(db)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "?only volatile headers differ, not counted: Date, X-Build\n" in proc.stdout


def test_ignore_header_leaves_a_changing_header_out_of_the_notice(service: Service, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    ex = captured(service, b"/build", response_headers=[("Server", "test-service"), ("Content-Type", "text/plain"),
                                                       ("Content-Length", "2"), ("X-Build", "0")])
    put(db, ex)
    differs = cli(None, "replay", ex.id, db=db)
    assert differs.returncode == 0, differs.stderr
    new = replay_of(db, ex)
    assert f"response differs: devtunnel diff {ex.id} {new.id}" in differs.stdout
    same = cli(None, "replay", ex.id, "--ignore-header", "x-build", "--ignore-header", "Server", db=db)
    assert same.stdout.rstrip().endswith("same response"), same.stdout


def test_an_error_shows_its_reason_and_the_first_line_of_its_body_escaped(service: Service, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    ex = captured(service, b"/fail")
    put(db, ex)
    proc = cli(None, "replay", ex.id, db=db)
    assert proc.returncode == 1, proc.stderr  # answered, but with an error: as send exits
    first, second = proc.stdout.splitlines()
    assert "  500 Internal Server Error  " in first and first.endswith(f"response differs: devtunnel diff {ex.id} {replay_of(db, ex).id}")
    assert second == "  \\x1b]0;pwned\\x07boom \\x1b[31mred"
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout


def test_header_flags_set_and_delete_and_the_method_is_sent_as_typed(service: Service, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    ex = captured(service)
    put(db, ex)
    proc = cli(None, "replay", ex.id, "--method", "purge", "--header", "X-Debug: 1", "--header", "Host: edited",
               "--header", "Stripe-Signature:", "--body", "{}", db=db)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    method, path, headers, body = service.seen[-1]
    assert (method, path, body) == ("purge", "/", b"{}")
    assert headers == [("Host", "edited"), ("Content-Type", "application/json"), ("Content-Length", "2"), ("X-Debug", "1")]
    new = replay_of(db, ex)
    assert new.edited and new.replay_of == ex.id
    assert f"edited replay of {ex.id}  (devtunnel diff {ex.id} {new.id})" in cli(None, "show", new.id, db=db).stdout
    listed = cli(None, "requests", db=db).stdout.splitlines()
    assert next(line for line in listed if line.split() and new.id.startswith(line.split()[0])).endswith("↻✎ /")
    assert next(line for line in listed if line.split() and ex.id.startswith(line.split()[0])).endswith(" /")


def test_a_plain_replay_is_not_marked_edited(service: Service, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    ex = captured(service)
    put(db, ex)
    assert cli(None, "replay", ex.id, db=db).returncode == 0
    assert replay_of(db, ex).edited is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "GET /x"], "invalid method 'GET /x'"),
        # said with the flag as typed, not the edit's field ("set_headers, item 2: ...")
        (["--header", "X-A: 1", "--header", "Bad Name: 1"],
         "devtunnel: --header 'Bad Name: 1': invalid header name 'Bad Name'"),
        (["--header", "Bad Name:"], "devtunnel: --header 'Bad Name:': invalid header name 'Bad Name'"),
        (["--header", "X-Debug: 1\r\nInjected: yes"],
         "devtunnel: --header 'X-Debug: 1\\r\\nInjected: yes': invalid value for header X-Debug"),
        (["--header", "X-A: 1", "--header", "X-A:"], "header x-a is both set and removed"),
        (["--header", "no colon"], "--header takes 'NAME: VALUE'"),
        (["--ignore-header", "Bad: name"], "--ignore-header takes a header name"),
        (["--path", "/a b"], "invalid target '/a b'"),
        (["--body", "@"], "--body @FILE: give the file's path after @"),
    ],
)
def test_bad_edits_are_one_line_errors_and_send_nothing(service: Service, tmp_path: Path, args: list[str],
                                                        message: str) -> None:
    db = tmp_path / "c.db"
    ex = captured(service)
    put(db, ex)
    assert message in assert_one_line_error(cli(None, "replay", ex.id, *args, db=db), code=2)  # bad usage
    assert service.seen == [] and len(stored(db)) == 1


@pytest.mark.parametrize("path", ["/a b", "/v1\x7f", "/x\x1b[2J"])
def test_a_destination_whose_path_cannot_be_sent_is_refused_before_anything_is_sent(
        service: Service, tmp_path: Path, path: str) -> None:
    """``--to URL/PATH`` puts PATH before the request's target. A space or a control character
    in it was found only when sending: a failed replay was recorded ('the replay is not a valid
    HTTP/1.1 request, nothing was sent: Illegal target characters'), where a bad --path is
    refused before anything is read (and the agent API's ``to`` answered 201, not 400). Bad
    usage, as a --to that is no http:// URL (exit 2)."""
    db = tmp_path / "c.db"
    ex = captured(service)
    put(db, ex)
    message = assert_one_line_error(cli(None, "replay", ex.id, "--to", service.url + path, db=db), code=2)
    assert "cannot replay to" in message and "space or a control character" in message, message
    assert service.seen == [] and len(stored(db)) == 1


@pytest.mark.parametrize(("to", "says"), [
    ("http://[::1", "devtunnel: --to: cannot replay to 'http://[::1': Invalid IPv6 URL"),
    ("http://", "devtunnel: --to: cannot replay to 'http://': give an http:// or https:// URL"),
    ("http://127.0.0.1:99999/", "devtunnel: --to: cannot replay to 'http://127.0.0.1:99999/': Port out of range 0-65535"),
    ("ftp://x", "devtunnel: --to must be an http:// or https:// URL, not 'ftp://x'"),
])
def test_a_malformed_destination_is_bad_usage_as_one_that_is_no_http_url(
        service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, to: str, says: str) -> None:
    """Exit 2, as for ``--to ftp://x``. Before: ``http://[::1`` exited 1, as if a replay had failed."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    db = tmp_path / "c.db"
    ex = captured(service)
    put(db, ex)
    assert assert_one_line_error(cli(None, "replay", ex.id, "--to", to, db=db), code=2) == says
    assert service.seen == [] and len(stored(db)) == 1


# replay.ignore_headers in devtunnel.toml ---------------------------------------------------


def test_the_config_key_adds_headers_to_leave_out(service: Service, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    ex = captured(service, b"/build", response_headers=[("Server", "test-service"), ("Content-Type", "text/plain"),
                                                       ("Content-Length", "2"), ("X-Build", "0")])
    put(db, ex)
    config = tmp_path / "devtunnel.toml"
    config.write_text('[replay]\nignore_headers = ["X-Build"]\n')
    env = {**os.environ, "DEVTUNNEL_CONFIG": str(config)}
    proc = subprocess.run([DEVTUNNEL, "replay", ex.id, "--db", str(db)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("same response"), proc.stdout


def test_config_key_values_are_checked_and_set_as_a_list(tmp_path: Path) -> None:
    path = tmp_path / "devtunnel.toml"
    path.write_text('[replay]\nignore_headers = ["Bad Name"]\n')
    with pytest.raises(ConfigError, match=r":2: replay\.ignore_headers: expected header names such as X-Build, got 'Bad Name'"):
        load(environ={"DEVTUNNEL_CONFIG": str(path), "HOME": str(tmp_path)}, cwd=tmp_path)
    path.write_text("")
    assert set_value(path, "replay.ignore_headers", "X-Build, ETag") == ["X-Build", "ETag"]
    settings = load(environ={"DEVTUNNEL_CONFIG": str(path), "HOME": str(tmp_path)}, cwd=tmp_path)
    assert settings.replay.ignore_headers == ("X-Build", "ETag")
    assert 'ignore_headers = [\n    "X-Build",\n    "ETag",\n]' in to_toml(settings) or \
        'ignore_headers = ["X-Build", "ETag"]' in to_toml(settings)


def test_a_header_value_captured_with_spaces_after_it_is_replayed_without_them(service: Service, tmp_path: Path) -> None:
    # llhttp keeps the spaces after a value (real clients send them); h11 refuses such a value,
    # so the replay failed with "nothing was sent". The spaces are no part of the value (RFC 9110 5.5).
    db = tmp_path / "c.db"
    ex = captured(service, headers=[("Host", "shop.localhost"), ("Content-Type", "application/json"),
                                    ("Content-Length", "7"), ("X-Trace", "abc \t "), ("X-Inner", "a  b  ")])
    put(db, ex)
    proc = cli(None, "replay", ex.id, db=db)
    assert proc.returncode == 0, proc.stderr
    new = replay_of(db, ex)
    assert new.error is None and new.response is not None and new.response.status == 200, new.error_message
    seen = dict(service.seen[-1].headers)
    assert seen["X-Trace"] == "abc" and seen["X-Inner"] == "a  b"


def test_set_on_a_gzip_body_says_it_is_compressed_and_sends_nothing(service: Service, tmp_path: Path) -> None:
    # The message was "this one is not JSON ('utf-8' codec can't decode byte 0x8b ...)".
    db = tmp_path / "c.db"
    body = gzip.compress(b'{"amount": 1}')
    ex = make_exchange("POST", b"/hook", [("Host", "shop.localhost"), ("Content-Encoding", "gzip"),
                                          ("Content-Type", "application/json")], body, tunnel="shop", target_url=service.url)
    put(db, ex)
    err = assert_one_line_error(cli(None, "replay", ex.id, "--set", "amount=2", db=db), code=2)
    assert "gzip-compressed" in err and "--body" in err and "utf-8" not in err
    assert service.seen == []


def test_a_filter_that_matches_a_websocket_session_says_how_to_leave_it_out(service: Service, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    hook = captured(service, b"/hook")
    live = make_exchange("GET", b"/live", [("Host", "shop.localhost"), ("Upgrade", "websocket")], tunnel="shop",
                         target_url=service.url, websocket=True)
    put(db, hook, live)
    err = assert_one_line_error(cli(None, "replay", "--filter", "tunnel:shop", db=db), code=1)
    assert "WebSocket session" in err and "!ws" in err and service.seen == []
    done = cli(None, "replay", "--filter", "tunnel:shop !ws", db=db)
    assert done.returncode == 0 and len(service.seen) == 1, done.stderr


def test_limit_replays_the_newest_matches_oldest_first(service: Service, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    hooks = [captured(service, f"/hook/{i}".encode()) for i in range(5)]
    put(db, *hooks)
    done = cli(None, "replay", "--filter", "tunnel:shop", "--limit", "2", db=db)
    assert done.returncode == 0, done.stderr
    assert [r.path for r in service.seen] == ["/hook/3", "/hook/4"]
    assert [line.split()[0] for line in done.stdout.splitlines()] == [hooks[3].id, hooks[4].id]


def test_a_filter_matching_more_than_the_bound_sends_nothing_without_limit(service: Service, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    put(db, *(captured(service, f"/hook/{i}".encode()) for i in range(101)))
    err = assert_one_line_error(cli(None, "replay", "--filter", "tunnel:shop", db=db), code=2)
    assert "101 exchanges match" in err and "--limit" in err and service.seen == []
    err = assert_one_line_error(cli(None, "replay", "ID", "--limit", "1", db=db), code=2)
    assert "--limit applies to --filter" in err and service.seen == []
    done = cli(None, "replay", "--filter", "tunnel:shop", "--limit", "0", db=db)
    assert done.returncode == 0 and len(service.seen) == 101, done.stderr


def test_a_custom_providers_delivery_replayed_where_it_is_not_described_says_why_it_is_not_signed_afresh(
        service: Service, tmp_path: Path) -> None:
    """Found by use: a delivery judged acme's in the project folder, replayed from another folder
    (no [webhooks.acme] there), went out with its hour-old signature and not a word."""
    from devtunnel.webhooks import CustomProvider
    from devtunnel.webhooks.context import WebhookContext

    acme = CustomProvider("acme", "X-Acme-Signature", template="{timestamp}.{body}", timestamp_header="X-Acme-Ts")
    from devtunnel.capture.model import Headers
    from devtunnel.webhooks import Delivery

    signed = acme.sign(Delivery("POST", "", Headers([("Host", "shop.localhost")]), b"{}"), "k", 1.0)
    captured_signature = signed.get("X-Acme-Signature")
    ex = make_exchange("POST", "/hooks/acme", signed.items(), b"{}", make_response(200, body=b"ok"),
                       tunnel="shop", started_at=1.0, target_url=service.url)
    verdict = WebhookContext(providers=(acme,), secrets={"acme": ("k",)}).judge(ex)
    assert verdict is not None and verdict.provider == "acme" and verdict.signature.value == "valid"
    db = tmp_path / "c.db"
    put(db, replace(ex, webhook=verdict))
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "devtunnel.toml").write_text('[webhooks.acme]\nheader = "X-Acme-Signature"\n'
                                            'template = "{timestamp}.{body}"\ntimestamp_header = "X-Acme-Ts"\n')
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "ACME_WEBHOOK_SECRET": "k"}

    def replay(cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DEVTUNNEL, "replay", ex.id, "--db", str(db)], capture_output=True, text=True,
                              cwd=cwd, env=env, timeout=60)

    away = replay(elsewhere)
    assert away.returncode == 0, away.stderr
    assert away.stderr == ("devtunnel: signature not refreshed: no provider acme is described here "
                           "(add [webhooks.acme] to devtunnel.toml)\n")
    assert service.seen[-1].header("X-Acme-Signature") == captured_signature  # as captured, as it said
    home = replay(project)
    assert home.returncode == 0 and home.stderr == "", home.stderr
    assert "re-signed (acme)" in home.stdout and service.seen[-1].header("X-Acme-Ts") != "1"


def test_a_filter_sends_each_delivery_once_and_leaves_earlier_replays_out(service: Service, tmp_path: Path) -> None:
    """Found by use: ``replay --filter 'provider:stripe status:5xx'`` sent the provider's retries of a
    delivery beside it, and ``--filter error`` the failed replays of the replays before it, so
    the receiver took one event six times. As ``stripe events resend``, each delivery goes once."""
    db = tmp_path / "c.db"

    def hook(delivery: str, target: bytes, at: float, signature: Signature = Signature.VALID,
             replay_of: str | None = None) -> Exchange:
        ex = replace(captured(service, target), started_at=at, replay_of=replay_of,
                     webhook=Verdict("stripe", "invoice.paid", delivery, signature))
        return replace(ex, id=new_id(at))

    first = hook("evt_1", b"/first", 1.0)
    retry = hook("evt_1", b"/retry", 2.0)
    earlier_replay = replace(hook("evt_1", b"/replayed", 3.0, replay_of=first.id), error="local_refused")
    forged = hook("evt_1", b"/forged", 4.0, Signature.INVALID)  # claims the id: sent, as captured
    other = hook("evt_2", b"/other", 5.0)
    put(db, first, retry, earlier_replay, forged, other)
    done = cli(None, "replay", "--filter", "tunnel:shop", db=db)
    assert done.returncode == 0, done.stderr
    assert [r.path for r in service.seen] == ["/first", "/forged", "/other"]
    assert done.stderr.splitlines()[0] == (
        "devtunnel: 1 match repeats a delivery sent in this replay (the same provider and delivery id: the provider's"
        " retries), left out: each delivery is sent once; give their ids to send them too")
    # A filter that names replays sends them; one that matches nothing but replays says so.
    service.seen.clear()
    err = assert_one_line_error(cli(None, "replay", "--filter", "error", db=db), code=1)
    assert err.endswith("no exchange matches 'error' but replays, left out (add replay to the filter to send them)")
    assert service.seen == []
    done = cli(None, "replay", "--filter", "error replay", db=db)
    assert done.returncode == 0 and [r.path for r in service.seen] == ["/replayed"], done.stderr
    # A delivery id names its one capture (replays of it left out), as stripe events resend takes an event id.
    service.seen.clear()
    done = cli(None, "replay", "evt_2", db=db)
    assert done.returncode == 0 and [r.path for r in service.seen] == ["/other"], done.stderr
    service.seen.clear()
    err = assert_one_line_error(cli(None, "replay", "evt_1", db=db), code=1)
    assert "'evt_1' is not an exchange id but a webhook delivery id, captured as" in err and service.seen == []


def test_to_the_embedded_relays_localhost_name_connects_to_loopback_with_the_name_in_host(
        service: Service, tmp_path: Path) -> None:
    """Found by use: ``replay --to http://NAME.localhost:PORT``, the URL devtunnel prints, failed with
    "Name or service not known" where the resolver does not know *.localhost names."""
    db = tmp_path / "c.db"
    port = service.url.rsplit(":", 1)[1]
    with_host = captured(service)
    without = replace(captured(service, b"/bare", headers=[("Content-Type", "application/json")]), id=new_id(2.0))
    put(db, with_host, without)
    for ex, host in ((with_host, "shop.localhost"), (without, f"pay.localhost:{port}")):
        done = cli(None, "replay", ex.id, "--to", f"http://pay.localhost:{port}", db=db)
        assert done.returncode == 0, done.stdout + done.stderr
        assert dict(service.seen[-1].headers)["Host"] == host  # the captured one, else the URL's name
        assert replay_of(db, ex).target_url == f"http://pay.localhost:{port}"


def test_a_body_recorded_in_part_is_not_sent_cut_and_the_error_says_how_to_give_it(service: Service, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    whole_capture = captured(service)
    cut = replace(whole_capture, request=replace(whole_capture.request, body=b'{"a"', body_size=7, body_truncated=True))
    put(db, cut)
    err = assert_one_line_error(cli(None, "replay", cut.id, db=db), code=1)
    assert err.endswith(f"only 4 of 7 body bytes of {cut.id} were recorded; give the whole body to replay it"
                        " (devtunnel replay --body @FILE; the agent API's body or body_base64)")
    assert service.seen == []
    whole = tmp_path / "body.json"
    whole.write_bytes(b'{"a":1}')
    done = cli(None, "replay", cut.id, "--body", f"@{whole}", db=db)
    assert done.returncode == 0 and service.seen[-1].body == b'{"a":1}', done.stderr
