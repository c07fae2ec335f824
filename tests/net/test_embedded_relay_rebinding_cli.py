"""DNS rebinding against the embedded relay, through the real CLI and curl.

The embedded relay listens on 127.0.0.1, but a page of another site in the developer's browser
reaches it once its name resolves to 127.0.0.1: its requests carry that site's Host. The relay
answers only Hosts that name it (loopback names, a ``--via`` provider's public host) and refuses
the rest with 421 before they reach the tunnel: with ``--host-header rewrite`` the service would
see ``127.0.0.1`` and its own guard against rebinding (Vite's ``allowedHosts``) would not help.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port
from tests.kit.procs import Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.test_via_command import api_tunnel, captured, fake_bin
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)

pytestmark = pytest.mark.timeout(90)


class GuardedService(ThreadingHTTPServer):
    """A dev server that guards itself against rebinding as Vite does: any Host but
    ``localhost`` or ``127.0.0.1`` (any port) gets 403. Records every Host it was sent."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Guarded)
        self.hosts: list[str] = []


class _Guarded(BaseHTTPRequestHandler):
    server: GuardedService

    def do_GET(self) -> None:  # noqa: N802 - http.server's spelling
        host = self.headers.get("Host", "")
        self.server.hosts.append(host)
        allowed = host.rsplit(":", 1)[0] in ("localhost", "127.0.0.1")
        body = b"the secret dev page\n" if allowed else b"Blocked request. This host is not allowed.\n"
        self.send_response(200 if allowed else 403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's spelling
        pass


@pytest.fixture
def guarded() -> Iterator[GuardedService]:
    service = GuardedService()
    thread = threading.Thread(target=service.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.shutdown()
        service.server_close()
        thread.join(10)


def curl(url: str, *headers: str) -> tuple[int, str]:
    """``curl URL`` (each of ``headers`` a ``-H``): the status and the body."""
    args = ["curl", "-sS", "--noproxy", "*", "--max-time", "15", "-w", "\n%{http_code}", url]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
    body, _, status = out.stdout.rpartition("\n")
    return int(status), body


def tunnel_to(procs: list[Proc], env: dict[str, str], port: int, *args: str) -> int:  # noqa: F811
    """``devtunnel http PORT --name vite ARGS`` on an embedded relay; its relay port once online."""
    relay_port = free_port()
    agent = start(procs, env, "http", str(port), "--no-tui", "--name", "vite", "--port", str(relay_port),
                  "--api-port", str(free_port()), "--no-record", *args)
    line = agent.line(lambda l: l.startswith("Forwarding"))
    assert line == f"Forwarding http://vite.localhost:{relay_port} -> http://127.0.0.1:{port}", line
    return relay_port


@pytest.mark.parametrize("host_header", ["rewrite", "preserve"])
def test_a_rebound_host_is_refused_with_421_before_it_reaches_the_service(
    host_header: str, guarded: GuardedService, env: dict[str, str], procs: list[Proc]  # noqa: F811
) -> None:
    relay = tunnel_to(procs, env, guarded.server_address[1], "--host-header", host_header)
    for host in (f"rebind.attacker.example:{relay}", "evil.com", f"127.0.0.1.attacker.example:{relay}"):
        status, body = curl(f"http://127.0.0.1:{relay}/", f"Host: {host}")
        assert status == 421, (host, status, body)
        assert body.startswith(f"devtunnel: this relay does not answer for Host {host}: "), body
        assert f"http://vite.localhost:{relay}/" in body, "it says where the tunnel is served"
    assert guarded.hosts == [], "the service was never reached"


def test_the_names_of_this_machine_still_reach_the_tunnel(
    guarded: GuardedService, env: dict[str, str], procs: list[Proc]  # noqa: F811
) -> None:
    relay = tunnel_to(procs, env, guarded.server_address[1], "--host-header", "rewrite")
    # curl resolves *.localhost to loopback itself; the others name the relay by address
    assert curl(f"http://vite.localhost:{relay}/") == (200, "the secret dev page\n")
    assert curl(f"http://127.0.0.1:{relay}/") == (200, "the secret dev page\n")
    assert curl(f"http://127.0.0.1:{relay}/", f"Host: [::1]:{relay}") == (200, "the secret dev page\n")
    assert curl(f"http://127.0.0.1:{relay}/", "Host: 127.0.0.1") == (200, "the secret dev page\n")
    status, body = curl(f"http://127.0.0.1:{relay}/", f"Host: localhost:{relay}")
    assert status == 200 and body.startswith("devtunnel relay "), "localhost keeps the relay's status page"
    assert guarded.hosts == [f"127.0.0.1:{guarded.server_address[1]}"] * 4


def test_a_via_tunnel_is_served_with_its_public_host_and_refuses_a_rebound_one(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]  # noqa: F811
) -> None:
    ports = tmp_path / "provider-ports"
    env = dict(env, PATH=f"{fake_bin(tmp_path)}{os.pathsep}{env['PATH']}", FAKE_PROVIDER_PORTS=str(ports))
    db, api_port = tmp_path / "c.db", free_port()
    agent = start(procs, env, "http", str(local[0]), "--via", "cloudflared", "--no-tui", "--name", "shop",
                  "--api-port", str(api_port), "--db", str(db))
    url = "https://seasonal-deck-organisms-sf.trycloudflare.com"
    agent.line(lambda l: l == f"Forwarding {url} -> http://127.0.0.1:{local[0]}", timeout=30)
    [forwarder] = [int(p) for p in ports.read_text().split()]
    pinned = api_tunnel(api_port)["via"]["local_port"]

    # Through the provider, with the Host its edge passes on: served (any case, with a port too).
    for host in ("seasonal-deck-organisms-sf.trycloudflare.com", "Seasonal-Deck-Organisms-SF.trycloudflare.com:443"):
        status, body = curl(f"http://127.0.0.1:{forwarder}/echo?via", f"Host: {host}")
        assert status == 200, (host, status, body)
    # A page rebound to the pinned port (or the provider's): refused, never recorded.
    for port in (pinned, forwarder):
        status, body = curl(f"http://127.0.0.1:{port}/echo?rebound", "Host: rebind.attacker.example")
        assert status == 421, (port, status, body)
        assert "and the public host of the --via provider forwarding here only" in body, body
    # The machine's own names still reach the pinned port (a provider told to rewrite the Host).
    assert curl(f"http://127.0.0.1:{pinned}/echo?local", f"Host: 127.0.0.1:{pinned}")[0] == 200
    assert b"/echo?rebound" not in local[1].seen_targets
    assert agent.stop() == 0
    paths = sorted(entry["path"] for entry in captured(env, db))
    assert paths == ["/echo?local", "/echo?via", "/echo?via"]


def test_httpx_sees_the_refusal_as_421_misdirected_request(
    guarded: GuardedService, env: dict[str, str], procs: list[Proc]  # noqa: F811
) -> None:
    relay = tunnel_to(procs, env, guarded.server_address[1])
    r = httpx.get(f"http://127.0.0.1:{relay}/", headers={"Host": "evil.com"}, trust_env=False, timeout=10)
    assert (r.status_code, r.reason_phrase) == (421, "Misdirected Request")
    assert r.headers["content-type"].startswith("text/plain") and r.headers["x-content-type-options"] == "nosniff"
    assert guarded.hosts == []


def test_a_host_the_user_allows_is_answered_and_the_refusal_says_how(
    guarded: GuardedService, env: dict[str, str], procs: list[Proc]  # noqa: F811
) -> None:
    relay = tunnel_to(procs, env, guarded.server_address[1], "--host-header", "rewrite",
                      "--allow-host", "MyApp.test", "--allow-host", ".dev.example")
    # .dev.example: the name and every name under it, as Vite's allowedHosts reads it
    for host in (f"myapp.test:{relay}", "myapp.test", "dev.example", f"api.dev.example:{relay}", "a.b.dev.example"):
        assert curl(f"http://127.0.0.1:{relay}/", f"Host: {host}") == (200, "the secret dev page\n"), host
    for host in ("www.myapp.test", "myapp.test.evil.com", "evilmyapp.test", "notdev.example"):
        status, body = curl(f"http://127.0.0.1:{relay}/", f"Host: {host}:{relay}")
        assert status == 421 and body.endswith(f", or allow this name with --allow-host {host}\n"), (host, body)
    assert len(guarded.hosts) == 5


@pytest.mark.parametrize("value", ["", "a b", "evil.com:80", "http://x.test", "*.example.test", "[::1]"])
def test_a_bad_allow_host_is_refused_with_exit_2_before_anything_starts(
    value: str, guarded: GuardedService, env: dict[str, str], procs: list[Proc]  # noqa: F811
) -> None:
    agent = start(procs, env, "http", str(guarded.server_address[1]), "--no-tui", "--no-record", "--api-port", "0",
                  "--allow-host", value)
    assert agent.wait(30) == 2
    assert any(line.startswith(f"devtunnel: --allow-host '{value}' is not a hostname") for line in agent.err), agent.err
    assert not agent.out
