"""The local service's kept-alive connection, through ``devtunnel http PORT --no-tui`` run as the
user runs it (its own event loop, uvloop), driven with curl."""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.kit.procs import FORWARDING, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.tunnel_fixtures import StrayBodyService, raw_server

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("stray", [b"", b"hello"], ids=["no body", "a body written after the head"])
def test_a_304_with_a_content_length_keeps_the_local_connection(env: dict[str, str], procs: list[Proc], stray: bytes) -> None:
    # A 304's Content-Length is the length the 200 would have had (RFC 9110 8.6): the agent
    # closed the local connection after it, so every revalidation cost the service a new one.
    # Bytes a service writes after the head anyway (here at the front of the next response)
    # are dropped, up to that length, and the next request is answered as sent.
    service = StrayBodyService(b"/same", b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 1234\r\n\r\n',
                               stray)
    with raw_server(service) as port:
        agent = start(procs, env, "http", str(port), "--no-tui", "--api-port", "0", "--no-record")
        match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
        assert match is not None
        url = f"http://127.0.0.1:{match.group(3)}"
        out = subprocess.run(
            ["curl", "-sS", "-i", "--max-time", "20", f"{url}/first", "-H", 'If-None-Match: "v1"', f"{url}/same",
             f"{url}/after"],
            capture_output=True, timeout=30, check=True,
        ).stdout
        assert agent.stop(signal.SIGINT) == 0
    answers = out.split(b"HTTP/1.1 ")[1:]
    assert [a.split(b" ", 1)[0] for a in answers] == [b"200", b"304", b"200"], out
    assert answers[0].endswith(b"\r\n\r\nnext") and answers[2].endswith(b"\r\n\r\nnext"), out
    assert b"content-length: 1234\r\n" in answers[1].lower() and answers[1].endswith(b"\r\n\r\n"), out
    assert service.connections == 1, "the 304 closed the local connection"
    assert not any("Traceback" in line for line in agent.err)
