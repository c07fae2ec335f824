"""A request target longer than the relay parses, as reported: ``devtunnel relay`` and
``devtunnel http`` as subprocesses, curl sending a 100,000-character path through them.

The relay bounds a request head (64 KiB). A request line over that bound by itself is a target
too long: 414 URI Too Long (RFC 9112 3), as nginx answers, not the 431 of header fields too large.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.helpers import free_port
from tests.kit.procs import Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.head_fixtures import recording_service

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def curl(url: str, *extra: str) -> tuple[int, str]:
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", *extra, url],
        capture_output=True, text=True, timeout=30, check=False,
    )
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body


def test_a_target_too_long_gets_414_and_header_fields_too_large_431_through_the_relay_cli(
    env: dict[str, str], procs: list[Proc]  # noqa: F811
) -> None:
    relay_port, api_port = free_port(), free_port()
    relay = start(procs, env, "relay", "--listen", f"127.0.0.1:{relay_port}", "--domain", "localhost", "--token", "good")
    relay.line(lambda l: l.startswith("Relay listening"))
    with recording_service(b"served") as (service_port, seen):
        agent = start(procs, env, "http", str(service_port), "--relay", f"ws://127.0.0.1:{relay_port}",
                      "--token", "good", "--name", "demo", "--no-tui", "--api-port", str(api_port), "--no-record")
        agent.line(lambda l: l.startswith("Forwarding"))
        base = f"http://demo.localhost:{relay_port}"
        code, body = curl(f"{base}/{'a' * 100_000}")
        assert (code, body) == (414, "request target too long: the request line must fit in 64 KiB\n")
        code, body = curl(f"{base}/x", "-H", f"X-Big: {'z' * 70_000}")
        assert (code, body) == (431, "request head larger than 64 KiB\n")
        assert curl(f"{base}/hooks") == (200, "served")
        assert [r.target for r in seen.snapshot()[1]] == [b"/hooks"]
        assert agent.stop() == 0 and relay.stop() == 0
    output = "\n".join(agent.err + agent.out + relay.err + relay.out)
    assert "Traceback" not in output
