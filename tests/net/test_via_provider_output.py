"""What a ``--via`` provider prints, through ``devtunnel http --via cloudflared`` run as a subprocess.

The public URL comes from the line the provider announces it on, once a process: cloudflared at
debug level logs every request's URL and path, and a public client asking for
``/https://attacker-owned.trycloudflare.com`` put another quick tunnel's URL in such a line, which
became the printed ``Forwarding`` URL and the API's ``public_url``. And the provider's (or the
app's) words in the API are escaped as the tunnel's ``error`` is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, wait_for
from tests.kit.procs import Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.kit.servers import Reply, http_server

pytestmark = pytest.mark.timeout(120)

ATTACKER = "https://attacker-owned.trycloudflare.com"

# A cloudflared at debug level: its banner, then a DBG line for each request as it arrives (its URL
# and path), forwarded to the port it was given. Its first process exits after one request.
DEBUG_CLOUDFLARED = '''\
#!{python}
import os, socket, sys, threading

args = sys.argv[1:]
host, port = args[args.index("--url") + 1].split("://", 1)[1].rsplit(":", 1)
with open(os.environ["FAKE_RUNS"], "a") as f:
    f.write("run\\n")
with open(os.environ["FAKE_RUNS"]) as f:
    run = len(f.read().split())
public = "https://real%d-words-here.trycloudflare.com" % run
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
with open(os.environ["FAKE_PROVIDER_PORTS"], "a") as f:
    f.write(str(listener.getsockname()[1]) + "\\n")
box = "Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):"
for text in ("+" + "-" * (len(box) + 4) + "+", "|  " + box + "  |", "|  " + public.ljust(len(box)) + "  |",
             "+" + "-" * (len(box) + 4) + "+"):
    sys.stderr.write("2026-12-07T10:00:00Z INF " + text + "\\n")
sys.stderr.write("2026-12-07T10:00:01Z INF Registered tunnel connection connIndex=0 location=ams protocol=quic\\n")
sys.stderr.flush()

def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass

while True:
    client, _ = listener.accept()
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        data = client.recv(65536)
        if not data:
            break
        head += data
    method, path = head.split(b" ", 2)[:2]
    path = path.decode()
    sys.stderr.write("2026-12-07T10:00:02Z DBG %s %s%s HTTP/1.1 connIndex=0 event=1 ingressRule=0 "
                     "originService=http://127.0.0.1:%s path=%s\\n" % (method.decode(), public, path, port, path))
    sys.stderr.flush()
    upstream = socket.create_connection((host, int(port)))
    upstream.sendall(head)
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    pipe(upstream, client)
    client.close()
    if run == 1:
        sys.exit(1)
'''


def _api(api_port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{api_port}/api/tunnels", trust_env=False, timeout=10)


def test_a_url_in_a_later_line_of_cloudflared_never_becomes_the_public_url(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "cloudflared"
    program.write_text(DEBUG_CLOUDFLARED.format(python=sys.executable))
    program.chmod(0o755)
    ports = tmp_path / "provider-ports"
    env = dict(env, PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", FAKE_PROVIDER_PORTS=str(ports),
               FAKE_RUNS=str(tmp_path / "runs"))
    api_port = free_port()
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"app")) as app:
        agent = start(procs, env, "http", str(app.port), "--via", "cloudflared", "--no-tui", "--api-port",
                      str(api_port), "--no-record")
        first = "https://real1-words-here.trycloudflare.com"
        agent.line(lambda l: l == f"Forwarding {first} -> http://127.0.0.1:{app.port}", timeout=30)

        # A public client asks for a path that is another quick tunnel's URL: cloudflared logs it.
        forwarder = int(ports.read_text().split()[0])
        answer = httpx.get(f"http://127.0.0.1:{forwarder}/{ATTACKER}", headers={"Host": first[8:], "Connection": "close"},
                           trust_env=False, timeout=20)
        assert (answer.status_code, answer.text) == (200, "app")
        assert app.received[-1].path == f"/{ATTACKER}"
        # That process ends after the request: every line it printed has been read by then.
        agent.line(lambda l: "cloudflared exited with code 1" in l, lines="err", timeout=30)
        assert _api(api_port).json()["tunnels"][0]["via"]["url"] == first

        # A new process of the provider announces a new URL, which is taken.
        second = "https://real2-words-here.trycloudflare.com"
        agent.line(lambda l: l == f"Forwarding {second} -> http://127.0.0.1:{app.port}", timeout=30)
        forwarder = int(ports.read_text().split()[1])
        answer = httpx.get(f"http://127.0.0.1:{forwarder}/{ATTACKER}", headers={"Host": second[8:]},
                           trust_env=False, timeout=20)
        assert answer.status_code == 200
        tunnel = wait_for(lambda: _api(api_port).json()["tunnels"][0], what="the tunnel")
        assert (tunnel["public_url"], tunnel["via"]["url"], tunnel["state"]) == (second, second, "online")
        endpoints = httpx.get(f"http://127.0.0.1:{api_port}/api/endpoints", trust_env=False, timeout=10).json()
        assert [e["url"] for e in endpoints["endpoints"]] == [second]
        assert agent.stop() == 0
    assert [l for l in agent.out if l.startswith("Forwarding")] == [
        f"Forwarding {first} -> http://127.0.0.1:{app.port}", f"Forwarding {second} -> http://127.0.0.1:{app.port}"]
    assert not any("new public URL: https://attacker" in line for line in agent.err), agent.err


def test_the_providers_words_in_the_api_are_escaped_as_the_tunnels_error_is(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "cloudflared"  # refused a quick tunnel, with a status line holding escape sequences
    program.write_text(f"#!{sys.executable}\nimport sys\n"
                       "sys.stderr.write('2026-12-07T10:00:00Z ERR Error unmarshaling QuickTunnel response: '\n"
                       "                 'status_code=\"429 Too Many\\x1b]0;T2\\x07\\x1b[2J\"\\n')\n"
                       "sys.stderr.write('failed to unmarshal quick Tunnel\\x1b[31m red\\n')\n"
                       "sys.exit(1)\n")
    program.chmod(0o755)
    api_port = free_port()
    agent = start(procs, dict(env, PATH=f"{bin_dir}{os.pathsep}{env['PATH']}"), "http", "8000", "--via",
                  "cloudflared", "--no-tui", "--api-port", str(api_port), "--no-record")
    agent.line(lambda l: l.startswith("API "))

    def said() -> httpx.Response | None:
        answer = _api(api_port)
        via = answer.json()["tunnels"][0]["via"]
        return answer if via["message"] and "429" in via["message"] else None

    answer = wait_for(said, timeout=30, what="the provider's failure in the API")
    assert "\\u001b" not in answer.text and "\\u0007" not in answer.text, answer.text
    message = answer.json()["tunnels"][0]["via"]["message"]
    assert "429 Too Many\\x1b]0;T2\\x07\\x1b[2J" in message, message
    assert agent.stop() == 0


def test_the_apps_words_in_the_api_are_escaped_as_the_tunnels_error_is(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]
) -> None:
    api_port, port = free_port(), free_port()
    run = "printf 'boom\\033]0;T2\\007\\033[2J\\n' >&2; exit 3"
    agent = start(procs, env, "http", str(port), "--run", run, "--no-tui", "--api-port", str(api_port),
                  "--no-record")
    agent.line(lambda l: l.startswith("API "))

    def said() -> httpx.Response | None:
        answer = _api(api_port)
        app = answer.json()["tunnels"][0]["app"]
        return answer if app and "boom" in (app["message"] or "") else None

    answer = wait_for(said, timeout=30, what="the app's crash in the API")
    assert "\\u001b" not in answer.text and "\\u0007" not in answer.text, answer.text
    assert "boom\\x1b]0;T2\\x07\\x1b[2J" in answer.json()["tunnels"][0]["app"]["message"]
    assert agent.stop() == 0
