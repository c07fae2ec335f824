"""``devtunnel http TARGET`` and ``devtunnel agent`` as real subprocesses."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trustme
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import ServerConnection, serve as ws_serve

from devtunnel.cli import EXIT_TUNNEL_REFUSED

from devtunnel.capture.store import Store
from devtunnel.commands.http import exchange_line
from tests.helpers import free_port, wait_for
from tests.kit.exchanges import make_exchange, make_response
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)


def test_http_prints_forwarding_once_logs_requests_records_them_and_exits_0_on_sigint(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "c.db"
    api_port = free_port()
    agent = start(procs, env, "http", str(local[0]), "--no-tui", "--name", "cli", "--api-port", str(api_port), "--db", str(db))
    line = agent.line(lambda l: l.startswith("Forwarding"))
    match = FORWARDING.match(line)
    assert match is not None, line
    public_url, name, port, target = match.groups()
    assert (name, target) == ("cli", f"http://127.0.0.1:{local[0]}")
    assert agent.line(lambda l: l.startswith("API ")) == f"API http://127.0.0.1:{api_port}"
    assert agent.out.index(line) < agent.out.index(f"API http://127.0.0.1:{api_port}")

    r = httpx.post(f"http://127.0.0.1:{port}/echo?q=1", headers={"Host": f"cli.localhost:{port}"}, content=b"hi", trust_env=False)
    assert r.status_code == 200
    log_line = agent.line(lambda l: "/echo?q=1" in l)
    logged = re.match(r"^\d\d:\d\d:\d\d  ([0-9A-Z]{13})  POST +/echo\?q=1  200  [\d.]+ (ms|s)$", log_line)
    assert logged is not None, log_line
    tunnels = httpx.get(f"http://127.0.0.1:{api_port}/api/tunnels", trust_env=False).json()["tunnels"]
    assert [t["public_url"] for t in tunnels] == [public_url]

    assert agent.stop(signal.SIGINT) == 0
    assert [l for l in agent.out if l.startswith("Forwarding")] == [line]
    store = Store(db, readonly=True)
    try:
        [ex] = store.query()
    finally:
        store.close()
    assert (ex.tunnel, ex.request.target, ex.request.body, ex.status) == ("cli", b"/echo?q=1", b"hi", 200)
    shown = subprocess.run([*DEVTUNNEL, "show", logged.group(1), "--db", str(db)], capture_output=True, text=True,
                           timeout=30, env=env)
    assert shown.stdout.startswith(f"exchange  {ex.id}\n"), shown.stderr  # the log line's id names the exchange


def test_http_exits_0_on_sigterm_without_api(env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]) -> None:
    port = free_port()
    agent = start(procs, env, "http", str(local[0]), "--no-tui", "--api-port", "0", "--no-record", "--port", str(port))
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None and match.group(3) == str(port)  # the embedded relay took --port
    assert agent.stop(signal.SIGTERM) == 0
    assert not any(l.startswith("API ") for l in agent.out)
    state = Path(env["XDG_STATE_HOME"]) / "devtunnel"
    # --no-record: no database; only the tunnel's name, kept for its target (the same URL next run).
    assert [p.name for p in state.iterdir()] == ["ports.json"]
    assert json.loads((state / "ports.json").read_text()) == {
        "name": {f"to http://127.0.0.1:{local[0]}": match.group(2)}, "relay": {match.group(2): port}}


def test_no_record_makes_the_api_say_inspect_false(env: dict[str, str], procs: list[Proc],
                                                    local: tuple[int, LocalState]) -> None:
    # ngrok's config.inspect is whether the tunnel's requests are recorded: with --no-record none
    # are, yet the API said true (it read only the tunnel's own setting).
    api_port = free_port()
    agent = start(procs, env, "http", str(local[0]), "--no-tui", "--api-port", str(api_port), "--no-record")
    agent.line(lambda l: l.startswith("Forwarding"))
    [tunnel] = httpx.get(f"http://127.0.0.1:{api_port}/api/tunnels", timeout=10).json()["tunnels"]
    assert tunnel["config"]["inspect"] is False
    assert agent.stop(signal.SIGTERM) == 0


def relay(procs: list[Proc], env: dict[str, str], port: int, token: str = "good") -> Proc:
    proc = start(procs, env, "relay", "--listen", f"127.0.0.1:{port}", "--token", token)
    proc.line(lambda l: l.startswith("Relay listening"))
    return proc


def test_insecure_for_a_local_target_leaves_the_relay_verified_and_relay_ca_trusts_it(
    env: dict[str, str], procs: list[Proc], tmp_path: Path
) -> None:
    """`devtunnel http https://localhost:8443 --insecure` (the README's line for a self-signed dev
    certificate) with a relay set in the environment turned off the relay's verification too, and
    the token went to whoever answered. The relay is verified; --relay-ca trusts a private CA."""
    ca = trustme.CA()
    pem, ca_pem = tmp_path / "relay.pem", tmp_path / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    port = free_port()
    served = start(procs, env, "relay", "--listen", f"127.0.0.1:{port}", "--token", "good", "--tls-cert", str(pem),
                   "--tls-key", str(pem))
    served.line(lambda l: l.startswith("Relay listening"))
    lax = start(procs, dict(env, DEVTUNNEL_RELAY=f"wss://127.0.0.1:{port}", DEVTUNNEL_TOKEN="good"),
                "http", "9", "--insecure", "--no-tui", "--api-port", "0", "--no-record")
    lax.line(lambda l: "CERTIFICATE_VERIFY_FAILED" in l and "--relay-ca PEM" in l, lines="err")
    assert not any(l.startswith("Forwarding") for l in lax.out)
    assert lax.stop() == 0
    trusting = start(procs, dict(env, DEVTUNNEL_RELAY=f"wss://127.0.0.1:{port}", DEVTUNNEL_TOKEN="good"),
                     "http", "9", "--relay-ca", str(ca_pem), "--no-tui", "--api-port", "0", "--no-record")
    assert trusting.line(lambda l: l.startswith("Forwarding")).startswith("Forwarding https://")
    assert trusting.stop() == 0


def test_refused_token_exits_non_zero_with_the_relays_reason(env: dict[str, str], procs: list[Proc]) -> None:
    port = free_port()
    relay(procs, env, port)
    agent = start(procs, env, "http", "9", "--relay", f"ws://127.0.0.1:{port}", "--token", "bad", "--no-tui", "--api-port", "0")
    assert agent.wait(20) == EXIT_TUNNEL_REFUSED
    errors = "\n".join(agent.err)
    assert "devtunnel: the relay refused the token: it is not one of the relay's tokens" in agent.err, errors
    assert "reconnecting" not in errors
    assert not any(l.startswith("Forwarding") for l in agent.out)


def test_token_revoked_while_reconnecting_exits_with_the_relays_reason(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    port = free_port()
    first = relay(procs, env, port, token="old")
    agent = start(procs, env, "http", str(local[0]), "--relay", f"ws://127.0.0.1:{port}", "--token", "old",
                  "--name", "revoked", "--no-tui", "--api-port", "0", "--no-record")
    agent.line(lambda l: l.startswith("Forwarding"))
    assert first.stop(signal.SIGTERM) == 0
    relay(procs, env, port, token="new")  # the relay came back without the agent's token
    assert agent.wait(45) == EXIT_TUNNEL_REFUSED
    errors = "\n".join(agent.err)
    assert "devtunnel: tunnel revoked stopped: the relay refused the token" in errors


def test_relay_and_token_come_from_the_environment(env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]) -> None:
    port = free_port()
    relay(procs, env, port, token="from-env")
    env = dict(env, DEVTUNNEL_RELAY=f"http://127.0.0.1:{port}", DEVTUNNEL_TOKEN="from-env")
    agent = start(procs, env, "http", str(local[0]), "--no-tui", "--api-port", "0", "--name", "envy", "--no-record")
    assert FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding"))).group(3) == str(port)  # type: ignore[union-attr]
    assert agent.stop() == 0


def test_agent_reconnects_after_relay_restart_and_prints_forwarding_once(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    port = free_port()
    first = relay(procs, env, port)
    agent = start(procs, env, "http", str(local[0]), "--relay", f"ws://127.0.0.1:{port}", "--token", "good",
                  "--name", "again", "--no-tui", "--api-port", "0", "--no-record")
    forwarding = agent.line(lambda l: l.startswith("Forwarding"))
    assert first.stop(signal.SIGTERM) == 0
    agent.line(lambda l: "reconnecting in" in l, lines="err")
    relay(procs, env, port)
    agent.line(lambda l: "back online" in l, lines="err", timeout=45)
    r = httpx.get(f"http://127.0.0.1:{port}/echo", headers={"Host": f"again.localhost:{port}"}, trust_env=False)
    assert r.status_code == 200
    assert agent.stop() == 0
    assert [l for l in agent.out if l.startswith("Forwarding")] == [forwarding]


def test_a_relay_restarting_is_one_log_line_then_back_online(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # The relay says it is going away (GOAWAY) before it closes: the agent says so once, in the
    # line that also says when it reconnects, not a second time as the GOAWAY arrives.
    port = free_port()
    first = relay(procs, env, port)
    agent = start(procs, env, "http", str(local[0]), "--relay", f"ws://127.0.0.1:{port}", "--token", "good",
                  "--name", "told", "--no-tui", "--api-port", "0", "--no-record")
    agent.line(lambda l: l.startswith("Forwarding"))
    assert first.stop(signal.SIGTERM) == 0
    agent.line(lambda l: "reconnecting in" in l, lines="err")
    relay(procs, env, port)
    agent.line(lambda l: "back online" in l, lines="err", timeout=45)
    assert agent.stop() == 0
    going = [l for l in agent.err if "shutting down" in l]
    assert len(going) == 1 and "reconnecting in" in going[0], agent.err


def test_a_request_the_relay_gave_up_on_while_the_agent_was_suspended_is_not_delivered_on_waking(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # A laptop's lid closes (SIGSTOP) with a webhook on its way: the relay waits out its ping
    # timeout, answers the sender 502 and closes. On waking the agent finds the request and the
    # close in its socket: sent on, the app would process a delivery its sender saw fail and
    # will send again.
    port = free_port()
    relay(procs, env, port)
    agent = start(procs, env, "http", str(local[0]), "--relay", f"ws://127.0.0.1:{port}", "--token", "good",
                  "--name", "lid", "--no-tui", "--api-port", "0")
    agent.line(lambda l: l.startswith("Forwarding"))
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        answer = httpx.post(f"http://127.0.0.1:{port}/echo?while-asleep", content=b"evt_1", timeout=60,
                            headers={"Host": f"lid.localhost:{port}"}, trust_env=False)
        assert answer.status_code == 502
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    agent.line(lambda l: "back online" in l, lines="err", timeout=45)
    line = agent.line(lambda l: "while-asleep" in l)
    assert "agent_gone" in line
    after = httpx.post(f"http://127.0.0.1:{port}/echo?awake", content=b"evt_2", timeout=10,
                       headers={"Host": f"lid.localhost:{port}"}, trust_env=False)
    assert after.status_code == 200
    assert local[1].seen_targets == [b"/echo?awake"]
    assert agent.stop() == 0


def test_a_relay_outage_is_one_log_line_however_many_attempts_fail(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    port, api_port = free_port(), free_port()
    first = relay(procs, env, port)
    agent = start(procs, env, "http", str(local[0]), "--relay", f"ws://127.0.0.1:{port}", "--token", "good",
                  "--name", "patient", "--no-tui", "--api-port", str(api_port), "--no-record")
    agent.line(lambda l: l.startswith("API "))
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # gone without a word, as a relay losing its host
    retries: set[float] = set()

    def attempts() -> bool:
        [tunnel] = httpx.get(f"http://127.0.0.1:{api_port}/api/tunnels", trust_env=False).json()["tunnels"]
        if tunnel["state"] == "reconnecting" and tunnel["next_retry_at"]:
            retries.add(tunnel["next_retry_at"])
        return len(retries) >= 4

    wait_for(attempts, timeout=40, what="four reconnection attempts")
    refused = [l for l in agent.err if "cannot reach the relay" in l]
    assert len(refused) == 1 and "reconnecting in" in refused[0], agent.err
    relay(procs, env, port)
    agent.line(lambda l: "back online" in l, lines="err", timeout=45)
    assert agent.stop() == 0
    assert [l for l in agent.err if "cannot reach the relay" in l] == refused


def test_requests_cut_by_a_lost_relay_are_recorded_as_agent_gone_not_client_gone(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    port, db = free_port(), tmp_path / "c.db"
    first = relay(procs, env, port)
    agent = start(procs, env, "http", str(local[0]), "--relay", f"ws://127.0.0.1:{port}", "--token", "good",
                  "--name", "cut", "--no-tui", "--api-port", "0", "--db", str(db))
    agent.line(lambda l: l.startswith("Forwarding"))
    host = f"cut.localhost:{port}"
    assert httpx.get(f"http://127.0.0.1:{port}/echo", headers={"Host": host}, trust_env=False).status_code == 200
    clients = []
    for request in (  # answered from the kept-alive connection's callbacks / by a task / a response under way
        f"GET /slow?quick HTTP/1.1\r\nHost: {host}\r\n\r\n",
        f"POST /slow?task HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\nhi",
        f"GET /sse HTTP/1.1\r\nHost: {host}\r\n\r\n",
    ):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(request.encode())
        clients.append(client)
    wait_for(lambda: {b"/slow?quick", b"/slow?task", b"/sse"} <= set(local[1].seen_targets), what="the local app to see all three")
    assert clients[2].recv(4096).startswith(b"HTTP/1.1 200")  # the event stream's head is through
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    for path in ("/slow?quick", "/slow?task", "/sse"):
        assert "agent_gone" in agent.line(lambda l, path=path: f" {path} " in l)
    for client in clients:
        client.close()
    assert agent.stop() == 0
    store = Store(db, readonly=True)
    try:
        cut = {ex.request.target.decode(): ex for ex in store.query() if ex.request.path != "/echo"}
    finally:
        store.close()
    assert {key: (ex.error, ex.error_message) for key, ex in cut.items()} == {
        "/slow?quick": ("agent_gone", "the connection to the relay was lost before the response ended"),
        "/slow?task": ("agent_gone", "the connection to the relay was lost before the response ended"),
        "/sse": ("agent_gone", "the connection to the relay was lost before the response ended"),
    }


def test_a_websocket_open_when_the_relay_is_lost_is_closed_with_1001_on_the_local_side_and_recorded(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]
) -> None:
    closes: list[tuple[int | None, str | None]] = []

    def echo(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)
        closes.append((ws.close_code, ws.close_reason))

    with ws_serve(echo, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port, db = free_port(), tmp_path / "c.db"
        first = relay(procs, env, port)
        agent = start(procs, env, "http", str(server.socket.getsockname()[1]), "--relay", f"ws://127.0.0.1:{port}",
                      "--token", "good", "--name", "chat", "--no-tui", "--api-port", "0", "--db", str(db))
        agent.line(lambda l: l.startswith("Forwarding"))
        sock = socket.create_connection(("127.0.0.1", port))
        with ws_connect(f"ws://chat.localhost:{port}/live", sock=sock) as public:
            public.send("hi")
            assert public.recv(timeout=10) == "hi"
            assert first.stop(signal.SIGKILL) == -signal.SIGKILL
            wait_for(lambda: closes, what="the local WebSocket to be closed")
        server.shutdown()
    why = "the connection to the relay was lost while the WebSocket was open"
    assert closes == [(1001, why)]
    assert "agent_gone" in agent.line(lambda l: " /live " in l)
    assert agent.stop() == 0
    store = Store(db, readonly=True)
    try:
        [ex] = store.query()
    finally:
        store.close()
    assert (ex.error, ex.error_message, ex.ws_close_code) == ("agent_gone", why, 1001)


def test_agent_command_serves_the_api_with_no_tunnel(tmp_path: Path, env: dict[str, str], procs: list[Proc]) -> None:
    agent = start(procs, env, "agent", "--api-port", "0", "--db", str(tmp_path / "c.db"))
    line = agent.line(lambda l: l.startswith("API "))
    assert re.match(r"^API http://127\.0\.0\.1:\d+$", line)
    assert httpx.get(line[4:] + "/api/tunnels", trust_env=False).json()["tunnels"] == []
    assert agent.stop(signal.SIGTERM) == 0
    assert not any(l.startswith("Forwarding") for l in agent.out)


def test_a_tunnel_naming_the_agents_own_relay_gets_the_agents_token(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # POST /api/tunnels with "relay": the agent's own relay, spelled as the user likes: the token
    # the agent has for that relay goes with it (it was dropped, and the relay answered "no token
    # given ... (--token or DEVTUNNEL_TOKEN)" to an agent started with DEVTUNNEL_TOKEN).
    port = free_port()
    relay(procs, env, port)
    env = dict(env, DEVTUNNEL_RELAY=f"ws://127.0.0.1:{port}", DEVTUNNEL_TOKEN="good")
    agent = start(procs, env, "agent", "--api-port", "0", "--db", str(tmp_path / "c.db"))
    api = agent.line(lambda l: l.startswith("API "))[4:]
    answer = httpx.post(api + "/api/tunnels", json={"addr": str(local[0]), "name": "mine",
                                                    "relay": f"http://127.0.0.1:{port}"}, trust_env=False)
    assert answer.status_code == 201, answer.text
    assert answer.json()["public_url"] == f"http://mine.localhost:{port}"
    # HOST:PORT alone, as `devtunnel http --relay` and the inspector's form take it: the API
    # refused it ("relay must be a ws(s):// or http(s):// URL") with a rule of its own.
    answer = httpx.post(api + "/api/tunnels", json={"addr": str(local[0]), "name": "bare",
                                                    "relay": f"127.0.0.1:{port}"}, trust_env=False)
    assert answer.status_code == 201, answer.text
    assert answer.json()["public_url"] == f"http://bare.localhost:{port}"
    answer = httpx.post(api + "/api/tunnels", json={"addr": str(local[0]), "name": "ftp",
                                                    "relay": f"ftp://127.0.0.1:{port}"}, trust_env=False)
    assert answer.status_code == 400 and "use ws://, wss://, http:// or https://" in answer.json()["msg"], answer.text
    assert agent.stop(signal.SIGTERM) == 0


def test_a_stray_api_pipe_number_is_ignored_without_a_traceback(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    env = dict(env, DEVTUNNEL_API_FD="99999999999999999999")  # no descriptor can have it
    agent = start(procs, env, "http", str(local[0]), "--no-tui", "--api-port", "0", "--no-record")
    agent.line(lambda l: l.startswith("Forwarding"))
    assert agent.stop() == 0
    assert not any("Traceback" in l for l in agent.err), agent.err


def test_a_refused_port_says_when_the_service_listens_on_ipv6_loopback_instead(
    env: dict[str, str], procs: list[Proc]
) -> None:
    # A dev server that took "localhost" as ::1 (Node 17+, Vite) listens on [::1]:PORT only:
    # `devtunnel http PORT` (127.0.0.1) is refused, and "make sure a web service is running there"
    # sends the user looking for a problem where the service runs fine. The answer says where it is.
    listener = socket.socket(socket.AF_INET6)
    listener.bind(("::1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        agent = start(procs, env, "http", str(port), "--no-tui", "--api-port", "0", "--no-record")
        match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
        assert match is not None
        answer = httpx.get(f"http://127.0.0.1:{match.group(3)}/", headers={"Host": f"{match.group(2)}.localhost"},
                           trust_env=False, timeout=10)
        assert answer.status_code == 502 and answer.headers["x-devtunnel-error"] == "local_refused"
        assert f"listens on [::1]:{port}" in answer.text and f"devtunnel http http://[::1]:{port}" in answer.text, answer.text
        assert agent.stop() == 0
    finally:
        listener.close()


def _serve_raw(listener: socket.socket, tls: ssl.SSLContext | None, answer: bytes, firsts: list[bytes]) -> None:
    """Accept on ``listener`` until it closes: TLS first if ``tls`` (a plain request then fails the
    handshake and is reset, as uvicorn --ssl-keyfile does), else read (its first bytes go to
    ``firsts``) and send ``answer``, or reset the connection when it is empty."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            if tls is not None:
                with contextlib.suppress(OSError):
                    tls.wrap_socket(conn, server_side=True).close()
                continue
            with contextlib.suppress(OSError):
                firsts.append(conn.recv(65536)[:2])
                if answer:
                    conn.sendall(answer)
                else:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize(
    ("kind", "says", "not_said"),
    [
        ("tls", "speaks HTTPS: start devtunnel http https://127.0.0.1:{port} (with --insecure for a self-signed", None),
        ("ssh", "invalid HTTP response from the local service: Expected HTTP/, RTSP/ or ICE/ (it sent SSH-2.0-OpenSSH_9.2…)",
         "speaks HTTPS"),
        ("reset", "the local service broke the connection", "speaks HTTPS"),
    ],
)
def test_a_502_from_a_service_that_is_not_plain_http_says_what_it_is(
    env: dict[str, str], procs: list[Proc], kind: str, says: str, not_said: str | None
) -> None:
    """Found by use: `devtunnel http 8443` in front of a dev server started with a certificate
    answered "connection reset by peer" about a service that works; one that is not HTTP at all
    (an ssh port) said only "Expected HTTP/"."""
    tls = None
    if kind == "tls":
        ca = trustme.CA()
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(tls)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    firsts: list[bytes] = []
    server = threading.Thread(target=_serve_raw, args=(listener, tls, b"SSH-2.0-OpenSSH_9.2\r\n" if kind == "ssh" else b"",
                                                       firsts), daemon=True)
    server.start()
    try:
        db = Path(env["XDG_STATE_HOME"]) / "c.db"
        agent = start(procs, env, "http", str(port), "--no-tui", "--api-port", "0", "--db", str(db))
        match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
        assert match is not None
        answer = httpx.get(f"http://127.0.0.1:{match.group(3)}/", headers={"Host": f"{match.group(2)}.localhost"},
                           trust_env=False, timeout=10)
        assert answer.status_code == 502 and answer.headers["x-devtunnel-error"] == "local_error"
        assert says.format(port=port) in answer.text, answer.text
        assert not_said is None or not_said not in answer.text, answer.text
        agent.line(lambda l: "local_error" in l)
        for _ in range(3):  # a burst: the HTTPS probe is made once, and leaves no traceback
            httpx.get(f"http://127.0.0.1:{match.group(3)}/", headers={"Host": f"{match.group(2)}.localhost"},
                      trust_env=False, timeout=10)
        assert agent.stop() == 0
        assert not any("Traceback" in l or "never retrieved" in l for l in agent.err), agent.err
        assert firsts.count(b"\x16\x03") <= 1, firsts  # TLS hellos: one probe for the four 502s
        store = Store(db)
        try:
            recorded = store.query()[0]
        finally:
            store.close()
        assert recorded.error_message is not None and says.format(port=port) in recorded.error_message
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["http", "localhost"], "devtunnel: invalid target 'localhost': the port is missing"),
        (["http", "8080", "--name", "Bad_Name"], "is not a valid DNS label"),
        (["http", "8080", "--body-cap", "lots"], "'lots' is not a size"),
        (["http", "8080", "--body-budget", "lots"], "--body-budget: 'lots' is not a size"),
        (["agent", "--body-budget", "-5"], "--body-budget: a size cannot be negative, got '-5'"),
        (["http", "8080", "--relay", "ftp://x"], "invalid relay URL"),
        (["http", "8080", "--relay", "wss://127.0.0.1:9", "--relay-ca", "/nonexistent/ca.pem"],
         "devtunnel: the relay CA file '/nonexistent/ca.pem' (--relay-ca, relay.ca) cannot be read"),
        (["http", "8080", "--local-timeout", "0"], "--local-timeout: expected a positive number of seconds, not '0'"),
        (["http", "8080", "--local-timeout", "nan"], "--local-timeout: expected a positive number of seconds, not 'nan'"),
        (["http", "99999"], "port 99999 is not between 1 and 65535"),
        (["http", "8080", "--port", "99999"], "--port: expected a port number of 0-65535, not '99999'"),
        (["agent", "--api-port", "-1"], "--api-port: expected a port number of 0-65535, not '-1'"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_line(env: dict[str, str], args: list[str], message: str) -> None:
    extra = ["--no-tui", "--api-port", "0", "--no-record"] if args[0] == "http" else []
    done = subprocess.run([*DEVTUNNEL, *args, *extra], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_exchange_line_escapes_control_characters_in_hostile_paths() -> None:
    ex = make_exchange(
        "GET", b"/\x1b[2J\x1b]0;pwned\x07/\xe2\x80\xaeevil\r\n", [], response=make_response(404),
        id="01", tunnel="t", started_at=0.0, duration=0.0123,
    )
    line = exchange_line(ex)
    assert not any(ord(c) < 0x20 or c == "\u202e" for c in line)
    assert "\\x1b[2J" in line and "\\x07" in line and "\\u202e" in line and "\\r\\n" in line
    assert line.endswith("404  12.3 ms")


def test_local_timeout_flag_turns_a_silent_local_service_into_504(
    env: dict[str, str], procs: list[Proc]
) -> None:
    import socket

    silent = socket.socket()  # accepts connections (the kernel does) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        agent = start(procs, env, "http", str(silent.getsockname()[1]), "--no-tui", "--api-port", "0",
                      "--no-record", "--local-timeout", "0.5")
        match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
        assert match is not None
        name, port = match.group(2, 3)
        r = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": f"{name}.localhost:{port}"}, trust_env=False, timeout=30)
        assert (r.status_code, r.headers["x-devtunnel-error"]) == (504, "local_timeout")
        assert "did not answer within 0.5 s" in r.text
        assert agent.stop() == 0
    finally:
        silent.close()


def _agent_with_a_slow_request(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> tuple[Proc, concurrent.futures.Future[httpx.Response]]:
    """A headless agent, and a GET of ``/slow`` through it (in a thread) that the local app holds
    until released; returns once the request is at the app."""
    agent = start(procs, env, "http", str(local[0]), "--no-tui", "--api-port", "0", "--no-record")
    name, port = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding"))).group(2, 3)  # type: ignore[union-attr]
    pool = concurrent.futures.ThreadPoolExecutor(1)
    slow = pool.submit(httpx.get, f"http://127.0.0.1:{port}/slow", headers={"Host": f"{name}.localhost:{port}"},
                       trust_env=False, timeout=30)
    pool.shutdown(wait=False)
    wait_for(lambda: b"/slow" in local[1].seen_targets, what="the request at the local app")
    return agent, slow


def test_ctrl_c_lets_a_running_request_finish_before_the_agent_exits(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    agent, slow = _agent_with_a_slow_request(env, procs, local)
    agent.popen.send_signal(signal.SIGINT)
    agent.line(lambda l: "letting running requests finish (1, up to 5 s)" in l, lines="err")
    assert agent.popen.poll() is None
    local[1].release_slow.set()
    response = slow.result(30)
    assert (response.status_code, response.text) == (200, "slow done")
    assert agent.wait() == 0
    assert not [l for l in agent.err if "cutting" in l]


def test_a_second_ctrl_c_stops_the_agent_without_waiting_for_running_requests(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    agent, slow = _agent_with_a_slow_request(env, procs, local)
    agent.popen.send_signal(signal.SIGTERM)  # as the inspector stops its agent (tui/supervisor.py)
    agent.line(lambda l: "letting running requests finish" in l, lines="err")
    agent.popen.send_signal(signal.SIGTERM)  # Ctrl-C twice does the same
    agent.line(lambda l: "cutting the requests still running (1, told to stop now)" in l, lines="err")
    assert agent.wait() == 0  # a clean exit, its shutdown done
    with pytest.raises(httpx.HTTPError):
        slow.result(30).raise_for_status()  # cut: the client is told, not left waiting
    assert not [l for l in agent.err if "Traceback" in l]


def test_captures_survive_an_agent_restart(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "c.db"
    first = start(procs, env, "http", str(local[0]), "--no-tui", "--name", "day1", "--api-port", "0", "--db", str(db))
    port = FORWARDING.match(first.line(lambda l: l.startswith("Forwarding"))).group(3)  # type: ignore[union-attr]
    r = httpx.get(f"http://127.0.0.1:{port}/echo?yesterday=1", trust_env=False)
    assert r.status_code == 200
    first.line(lambda l: "/echo?yesterday=1" in l)
    assert first.stop(signal.SIGINT) == 0

    api_port = free_port()
    second = start(procs, env, "http", str(local[0]), "--no-tui", "--name", "day2", "--api-port", str(api_port), "--db", str(db))
    second.line(lambda l: l.startswith("API "))
    # Another session's: the agent lists its own unless asked for the whole store.
    listed = httpx.get(f"http://127.0.0.1:{api_port}/api/requests/http?scope=all", trust_env=False).json()["requests"]
    assert [(c["tunnel_name"], c["request"]["uri"]) for c in listed] == [("day1", "/echo?yesterday=1")]
    assert second.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("chosen_by", ["flag", "file"])
def test_a_chosen_api_port_that_is_taken_is_one_line_and_exit_2_not_another_port(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], chosen_by: str
) -> None:
    # As ngrok's web_addr: the agent once moved on to the next free port, so scripts and
    # bookmarks of the port the user chose reached another agent, or none.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        marker = tmp_path / "app-ran"
        app = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close(); import time; time.sleep(60)"]
        if chosen_by == "flag":
            flags = ["--api-port", str(busy)]
        else:
            (tmp_path / "my.toml").write_text(f"[agent]\napi_port = {busy}\n")
            env = {**env, "DEVTUNNEL_CONFIG": str(tmp_path / "my.toml")}
            flags = []
        agent = start(procs, env, "http", str(free_port()), "--no-tui", *flags, "--run", shlex.join(app),
                      "--db", str(tmp_path / "c.db"))
        assert agent.wait() == 2
    assert agent.err == [f"devtunnel: cannot listen on 127.0.0.1:{busy} for the agent API: the port is taken "
                         "(another devtunnel agent?): give another --api-port or agent.api_port, or leave both "
                         "unset for the first free port from 4040"]
    assert not any(line.startswith(("Forwarding", "API ")) for line in agent.out)
    assert not marker.exists()  # said before the app was started


def test_the_default_api_port_moves_on_when_taken_and_says_where(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    with contextlib.ExitStack() as stack:
        taken = stack.enter_context(socket.socket())
        ours = True
        # As the agent binds: connections of an earlier test left in TIME_WAIT on 4040 would
        # refuse a plain bind (though the port is free) and the agent would get 4040 itself.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("127.0.0.1", 4040))
            taken.listen()
        except OSError:  # already taken by another process: as good, while it holds it
            ours = False
        agent = start(procs, env, "http", str(local[0]), "--no-tui", "--db", str(tmp_path / "c.db"))
        line = agent.line(lambda l: l.startswith("API "))
        match = re.match(r"^API http://127\.0\.0\.1:(\d+)$", line)
        assert match is not None, line
        api_port = int(match.group(1))
        if api_port == 4040 and not ours:
            pytest.skip("the other process let port 4040 go before the agent started")
        assert api_port > 4040
        agent.line(lambda l: l.endswith(f" 127.0.0.1:4040 is taken: the agent API listens on port {api_port}"), "err")
        assert httpx.get(f"http://127.0.0.1:{api_port}/api/tunnels", trust_env=False).status_code == 200
    assert agent.stop(signal.SIGINT) == 0


def _corrupt(path: Path) -> None:
    path.write_bytes(b"this is not sqlite" * 100)


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("command", ["http", "agent"])
@pytest.mark.parametrize(("damage", "says"), [
    (_corrupt, "is not a devtunnel database"),
    (_foreign, "is not a devtunnel database"),
])
def test_an_unusable_database_stops_the_agent_with_one_line_naming_the_file(
    tmp_path: Path, env: dict[str, str], local: tuple[int, LocalState], command: str,
    damage: Callable[[Path], None], says: str,
) -> None:
    db = tmp_path / "c.db"
    damage(db)
    before = db.read_bytes()
    args = ["http", str(local[0]), "--no-tui"] if command == "http" else ["agent"]
    done = subprocess.run([*DEVTUNNEL, *args, "--api-port", "0", "--db", str(db)],
                          capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("devtunnel: ") and str(db) in line and says in line and "--db" in line
    assert not any(l.startswith("Forwarding") for l in done.stdout.splitlines())
    assert db.read_bytes() == before


def test_a_locked_database_stops_the_agent_with_one_line_naming_the_file(
    tmp_path: Path, env: dict[str, str], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "c.db"
    Store(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode=DELETE")
        holder.execute("BEGIN EXCLUSIVE")
        done = subprocess.run([*DEVTUNNEL, "http", str(local[0]), "--no-tui", "--api-port", "0", "--db", str(db)],
                              capture_output=True, text=True, timeout=60, env=env)
    finally:
        holder.close()
    assert done.returncode == 1, (done.stdout, done.stderr)
    [line] = done.stderr.strip().splitlines()
    assert line == f"devtunnel: {db} is locked by another process (database is locked); close it or pass --db"


def test_ctrl_c_with_a_stream_in_flight_exits_0_and_records_it(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "c.db"
    agent = start(procs, env, "http", str(local[0]), "--no-tui", "--api-port", "0", "--db", str(db))
    port = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding"))).group(3)  # type: ignore[union-attr]
    with httpx.stream("GET", f"http://127.0.0.1:{port}/sse", trust_env=False, timeout=30) as response:
        first = next(response.iter_raw())
        assert first.startswith(b"data: first")
        assert agent.stop(signal.SIGINT, timeout=15) == 0
    store = Store(db, readonly=True)
    try:
        [ex] = store.query()
    finally:
        store.close()
    assert (ex.request.target, ex.status) == (b"/sse", 200)
    assert ex.response is not None and ex.response.body.startswith(b"data: first")
    assert ex.error is not None  # it did not end normally


def test_garbage_to_the_api_port_is_one_escaped_line_of_devtunnels_own_log(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    """uvicorn's warning goes through devtunnel's handler (``HH:MM:SS message``, escaped), not a
    stderr handler of uvicorn's own (``WARNING:  message``)."""
    api_port = free_port()
    agent = start(procs, env, "http", str(local[0]), "--no-tui", "--api-port", str(api_port), "--no-record")
    agent.line(lambda l: l.startswith("API "))
    with socket.create_connection(("127.0.0.1", api_port), timeout=10) as sock:
        sock.sendall(b"\x00\x1b[2J garbage\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    line = agent.line(lambda l: "Invalid HTTP request received." in l, lines="err")
    assert re.fullmatch(r"\d\d:\d\d:\d\d Invalid HTTP request received\.", line), line
    assert agent.stop() == 0
    assert not any(l.startswith("WARNING:") for l in agent.err), agent.err
