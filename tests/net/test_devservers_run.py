"""``--run`` with a dev server that does not listen where the tunnel points: the app said nothing and stayed ``starting``.

``devtunnel http 8000 --run 'vite'``: Vite listens on 5173 (it reads no ``PORT``), or on
``[::1]`` only (Node 17+ takes ``localhost`` as IPv6 loopback). The app stayed ``starting`` for
ever, and a request's 502 said "not ready (starting)". Now the app's message (in the log, the
tunnels panel, ``/api/tunnels``) and the 502 say where it listens and what to give devtunnel.
The apps below are small Python servers that print their URL as dev servers do.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest
from devtunnel.agent.app_runner import _LOOPBACK_URL

from tests.helpers import free_port, ipv6_loopback
from tests.kit.procs import FORWARDING, Proc, env, procs, start  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(90)

APP = """\
import http.server, socket, sys
class Server(http.server.HTTPServer):
    address_family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
server = Server((sys.argv[1], int(sys.argv[2])), http.server.SimpleHTTPRequestHandler)
host = f"[{sys.argv[1]}]" if ":" in sys.argv[1] else sys.argv[1]
print(f"  VITE v6.4.6  ready in 99 ms\\n\\n  ->  Local:   http://{host}:{sys.argv[2]}/", flush=True)
server.serve_forever()
"""


def run_command(host: str, port: int) -> str:
    return shlex.join([sys.executable, "-c", APP, host, str(port)])


def first_502(proc: Proc) -> str:
    url = FORWARDING.match(proc.line(lambda l: l.startswith("Forwarding")))
    assert url is not None
    return subprocess.run(["curl", "-s", url.group(1) + "/"], capture_output=True, text=True, timeout=20).stdout


def test_an_app_listening_on_another_port_says_which_and_the_502_says_it_too(
    env: dict[str, str], procs: list[Proc]
) -> None:
    target, listens = free_port(), free_port()
    proc = start(procs, env, "http", str(target), "--no-tui", "--api-port", "0", "--db", env["XDG_STATE_HOME"] + "/c.db",
                 "--run", run_command("127.0.0.1", listens))
    said = (f"the app says it listens on http://127.0.0.1:{listens}/, not on port {target}: give devtunnel the target"
            f" {listens}, or have the app listen on port {target}")
    assert proc.line(lambda l: said in l, lines="err").endswith(f"app starting ({said})")
    assert f"is not ready (starting: {said})." in first_502(proc)


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_an_app_on_ipv6_loopback_only_says_so(env: dict[str, str], procs: list[Proc]) -> None:
    port = free_port()
    proc = start(procs, env, "http", str(port), "--no-tui", "--api-port", "0", "--db", env["XDG_STATE_HOME"] + "/c.db",
                 "--run", run_command("::1", port))
    said = f"A service listens on [::1]:{port} (IPv6 loopback, where Node and Vite may put localhost): start devtunnel http http://[::1]:{port}"
    proc.line(lambda l: said in l and "app starting" in l, lines="err")
    assert said in first_502(proc)


@pytest.mark.parametrize(("line", "url"), [
    ("  ->  Local:   http://localhost:5173/", "http://localhost:5173/"),
    ("Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)", "http://127.0.0.1:8000"),
    ("Local: http://localhost:5173/\x1b]0;pwned\x07 now", "http://localhost:5173/"),
    ("Local: http://[::1]:5173/app\u202eexe", "http://[::1]:5173/app"),
    ("Local: http://localhost:5173/a\x9b31m", "http://localhost:5173/a"),
])
def test_the_local_url_an_app_prints_is_read_as_printable_ascii(line: str, url: str) -> None:
    # It goes on into the app's message, the API and the 502 a request gets meanwhile.
    found = _LOOPBACK_URL.search(line)
    assert found is not None and found.group(0) == url
