"""``devtunnel start`` serves the agent API where the ngrok.yml's ``web_addr`` puts ngrok's.

Before: ``start`` served it on 4040 whatever the file said, without a word, so ngrok scripts
pointed at ``localhost:4141`` found nothing; ``config check --config`` did not say either.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc
from tests.kit.servers import Reply, http_server


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVTUNNEL_", "XDG_"))}
    return {**env, "PYTHONUNBUFFERED": "1", "HOME": str(root), "XDG_CONFIG_HOME": str(root / ".config"),
            "XDG_STATE_HOME": str(root / ".state")}


def _start(root: Path, *args: str) -> Proc:
    return Proc([*DEVTUNNEL, "start", "web", "--config", "ngrok.yml", "--no-tui", *args], _env(root), cwd=root)


def _tunnels(port: int) -> list[str]:
    """The names of the tunnels the agent API on ``port`` lists, as an ngrok script asks for them."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/tunnels", headers={"Host": f"localhost:{port}"})
        answer = conn.getresponse()
        assert answer.status == 200
        return [t["name"] for t in json.loads(answer.read())["tunnels"]]
    finally:
        conn.close()


V2 = "version: 2\nweb_addr: {addr}\ntunnels:\n  web:\n    addr: {target}\n"
V3 = "version: 3\nagent:\n  web_addr: {addr}\nendpoints:\n  - name: web\n    upstream: {{url: {target}}}\n"


@pytest.mark.parametrize("text", [V2, V3], ids=["v2", "v3"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_start_serves_the_agent_api_at_the_files_web_addr(tmp_path: Path, text: str, host: str) -> None:
    port = free_port()
    with http_server(lambda request: Reply(200, [], b"ok")) as app:
        (tmp_path / "ngrok.yml").write_text(text.format(addr=f"{host}:{port}", target=app.port))
        proc = _start(tmp_path)
        try:
            assert proc.line(lambda l: l.startswith("API ")) == f"API http://127.0.0.1:{port}"
            proc.line(lambda l: FORWARDING.match(l) is not None)
            assert _tunnels(port) == ["web"]
        finally:
            assert proc.stop(signal.SIGTERM) == 0
    assert not any("web_addr" in line for line in proc.err), proc.err


def test_a_port_the_user_chose_wins_over_web_addr(tmp_path: Path) -> None:
    chosen, web = free_port(), free_port()
    (tmp_path / "ngrok.yml").write_text(V2.format(addr=f"127.0.0.1:{web}", target=9))
    proc = _start(tmp_path, "--api-port", str(chosen))
    try:
        assert proc.line(lambda l: l.startswith("API ")) == f"API http://127.0.0.1:{chosen}"
        assert _tunnels(chosen) == ["web"]
    finally:
        assert proc.stop(signal.SIGTERM) == 0
    assert not any("web_addr" in line for line in proc.err), proc.err
    # devtunnel.toml's agent.api_port too, said once
    (tmp_path / "devtunnel.toml").write_text(f"[agent]\napi_port = {chosen}\n")
    proc = _start(tmp_path)
    try:
        assert proc.line(lambda l: l.startswith("API ")) == f"API http://127.0.0.1:{chosen}"
        assert proc.err[0] == (f"devtunnel: note: web_addr '127.0.0.1:{web}' of ngrok.yml not used: agent.api_port "
                               f"is {chosen}")
    finally:
        assert proc.stop(signal.SIGTERM) == 0


def test_a_web_addr_that_is_taken_is_an_error_as_in_ngrok(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        (tmp_path / "ngrok.yml").write_text(V2.format(addr=f"localhost:{port}", target=9))
        done = subprocess.run([*DEVTUNNEL, "start", "web", "--config", "ngrok.yml", "--no-tui"], capture_output=True,
                              text=True, timeout=60, env=_env(tmp_path), cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "Forwarding" not in done.stdout


def test_web_addr_false_runs_no_api_and_an_address_off_loopback_is_said(tmp_path: Path) -> None:
    with http_server(lambda request: Reply(200, [], b"ok")) as app:
        (tmp_path / "ngrok.yml").write_text(V2.format(addr="false", target=app.port))
        proc = _start(tmp_path)
        try:
            match = FORWARDING.match(proc.line(lambda l: FORWARDING.match(l) is not None))
            assert match is not None
            relay = match.group(3)
            conn = http.client.HTTPConnection("127.0.0.1", int(relay), timeout=10)
            conn.request("GET", "/through", headers={"Host": f"web.localhost:{relay}"})
            assert conn.getresponse().status == 200
            conn.close()
            proc.line(lambda l: "/through" in l)  # the agent is past its start, API or not
        finally:
            assert proc.stop(signal.SIGTERM) == 0
        assert not any(l.startswith("API ") for l in proc.out), proc.out

        off = free_port()
        (tmp_path / "ngrok.yml").write_text(V2.format(addr=f"0.0.0.0:{off}", target=app.port))
        proc = _start(tmp_path)
        try:
            line = proc.line(lambda l: l.startswith("API "))
            assert line != f"API http://127.0.0.1:{off}"
            assert proc.err[0] == (f"devtunnel: note: web_addr '0.0.0.0:{off}' of ngrok.yml not used: devtunnel's "
                                   "agent API listens on 127.0.0.1 only; the agent API takes 127.0.0.1:4040 or the "
                                   "next free port (--api-port PORT chooses one)")
        finally:
            assert proc.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize(("addr", "says"), [
    ("127.0.0.1:4141", "web_addr '127.0.0.1:4141': devtunnel start serves the agent API on 127.0.0.1:4141 (an error "
                       "if it is taken, as in ngrok); --api-port or agent.api_port wins over ngrok.yml"),
    ("false", "web_addr false: devtunnel start runs no agent API, as ngrok (with the inspector, its agent takes a "
              "free port); --api-port or agent.api_port wins over ngrok.yml"),
    ("0.0.0.0:4141", "web_addr '0.0.0.0:4141' not used: devtunnel's agent API listens on 127.0.0.1 only; devtunnel "
                     "start serves the agent API on 127.0.0.1:4040 or the next free port"),
])
def test_config_check_says_where_start_serves_the_api(tmp_path: Path, addr: str, says: str) -> None:
    path = tmp_path / "ngrok.yml"
    path.write_text(V2.format(addr=addr, target=8080))
    done = subprocess.run([*DEVTUNNEL, "config", "check", "--config", str(path)], capture_output=True, text=True,
                          timeout=60, env=_env(tmp_path), cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [f"Valid configuration file at {path}", says]
