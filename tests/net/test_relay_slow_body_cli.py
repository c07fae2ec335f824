"""A request body that stops arriving, as reported: ``devtunnel relay`` and ``devtunnel http`` as
subprocesses, a client that sends 3 bytes of a 100-byte body and waits, then ``devtunnel
requests`` and ``show`` reading what the agent recorded.

The relay answers it 408 after ``--body-timeout``; the record says so (``client_timeout``, with
the relay's reason), not that the public client went away (``client_gone``).
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import free_port, wait_for
from tests.kit.procs import DEVTUNNEL, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.head_fixtures import recording_service


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    return subprocess.run([*DEVTUNNEL, *args], capture_output=True, text=True, env={**env, "COLUMNS": "200"},
                          timeout=60, check=False)


def _stalled_upload(port: int, host: str) -> bytes:
    """Send a head and 3 bytes of a 100-byte body, then nothing; all the relay answers (within 10 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 100\r\n\r\nabc" % host.encode())
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        return answer


def test_a_body_the_relay_timed_out_is_recorded_as_client_timeout_not_client_gone(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]  # noqa: F811
) -> None:
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    relay_port, api_port = free_port(), free_port()
    relay = start(procs, env, "relay", "--listen", f"127.0.0.1:{relay_port}", "--domain", "localhost", "--token", "good",
                  "--body-timeout", "0.5")
    relay.line(lambda l: l.startswith("Relay listening"))
    with recording_service(b"served") as (service_port, _):
        agent = start(procs, env, "http", str(service_port), "--relay", f"ws://127.0.0.1:{relay_port}",
                      "--token", "good", "--name", "demo", "--no-tui", "--api-port", str(api_port))
        agent.line(lambda l: l.startswith("Forwarding"))
        answer = _stalled_upload(relay_port, f"demo.localhost:{relay_port}")
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
        assert answer.endswith(b"\r\n\r\nthe client sent no request body for 0.5 s (after 3 bytes)\n"), answer

        def recorded() -> list[dict[str, Any]] | None:
            done = _cli(env, "requests", "--json")
            assert done.returncode == 0, done.stderr
            rows: list[dict[str, Any]] = json.loads(done.stdout)
            return rows if rows and rows[0]["duration_ms"] is not None else None

        [row] = wait_for(recorded, timeout=15, what="the exchange to be recorded")
        assert (row["path"], row["status"], row["error"]) == ("/upload", None, "client_timeout")
        listed = _cli(env, "requests")
        assert "ERR client_timeout" in listed.stdout and "client_gone" not in listed.stdout, listed.stdout
        shown = _cli(env, "show", row["id"])
        assert shown.returncode == 0, shown.stderr
        assert (
            "error     client_timeout: the relay timed out the public client's request body before the response "
            "ended: the client sent no request body for 0.5 s (after 3 bytes)"
        ) in shown.stdout, shown.stdout
        assert agent.stop() == 0 and relay.stop() == 0
