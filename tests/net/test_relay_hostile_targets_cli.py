"""The reported forgery, as reported: ``devtunnel relay`` and ``devtunnel http`` as subprocesses,
curl sending a request target that names another local port.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.net.head_fixtures import recording_service
from tests.kit.procs import Proc, env, procs, start  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")

UPGRADE = ["-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
           "-H", "Sec-WebSocket-Version: 13"]


def curl(port: int, target: str, host: str, *extra: str) -> tuple[int, str]:
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", "--request-target", target,
         "-H", f"Host: {host}", *extra, f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body


def test_request_targets_naming_another_port_never_reach_it_through_the_relay_cli(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]  # noqa: F811
) -> None:
    relay_port, api_port = free_port(), free_port()
    relay = start(procs, env, "relay", "--listen", f"127.0.0.1:{relay_port}", "--domain", "localhost",
                  "--token", "good", "--token", "other")
    relay.line(lambda l: l.startswith("Relay listening"))
    with recording_service(b"victim") as (victim_port, victim), recording_service(b"SECRET") as (second_port, second):
        agent = start(procs, env, "http", str(victim_port), "--relay", f"ws://127.0.0.1:{relay_port}", "--token", "good",
                      "--name", "victim", "--no-tui", "--api-port", str(api_port), "--no-record")
        agent.line(lambda l: l.startswith("Forwarding"))
        host = f"victim.localhost:{relay_port}"
        for target in (f"*@127.0.0.1:{second_port}/internal-admin?secret=1", f"*@127.0.0.1:{api_port}/api/events",
                       f"@127.0.0.1:{second_port}/x", f"http://u@127.0.0.1:{second_port}/x"):
            for extra in ([], UPGRADE):
                code, body = curl(relay_port, target, host, *extra)
                assert code == 400, (target, extra, code, body)
                assert "SECRET" not in body and "tunnels" not in body
        # An absolute-form target's authority is the Host (RFC 9112 3.2.2): it routes, and names
        # no tunnel here; it never says where a request goes.
        for target in (f"http://127.0.0.1:{second_port}/x", "http://x/"):
            code, body = curl(relay_port, target, host, *UPGRADE)
            assert code == 404 and "SECRET" not in body, (target, code, body)
        code, body = curl(relay_port, "/hooks?x=1", host)
        assert (code, body) == (200, "victim")
        assert second.snapshot()[0] == 0
        assert [r.target for r in victim.snapshot()[1]] == [b"/hooks?x=1"]
        assert agent.stop() == 0 and relay.stop() == 0
    output = "\n".join(agent.err + agent.out + relay.err + relay.out)
    assert "Traceback" not in output and "ValueError" not in output
