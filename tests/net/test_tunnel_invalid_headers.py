"""Header fields that cannot be written in an HTTP/1.1 head, at each boundary of a real
``devtunnel http`` (subprocess): the local service's response, a rule's headers, and a public
client's request. One rule judges them all (``values.http1.field_problem``)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, wait_for
from tests.kit.procs import FORWARDING, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.kit.servers import Reply, http_server

pytestmark = pytest.mark.timeout(90)


@contextmanager
def raw_service(answers: dict[bytes, bytes]) -> Iterator[tuple[int, list[bytes]]]:
    """A local service on 127.0.0.1 that reads a request head and writes ``answers[path]`` as
    it is, bytes no HTTP library would write; yields its port and the heads it read."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    heads: list[bytes] = []
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            heads.append(data)
            path = data.split(b" ", 2)[1]
            conn.sendall(answers.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], heads
    finally:
        stop.set()
        thread.join(5)
        server.close()


def _tunnel(procs: list[Proc], env: dict[str, str], port: int, *more: str) -> tuple[int, int, Proc]:
    api_port = free_port()
    agent = start(procs, env, "http", str(port), "--no-tui", "--name", "dev", "--api-port", str(api_port),
                  "--db", env["XDG_STATE_HOME"] + "/captures.db", *more)
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None
    agent.line(lambda l: l.startswith("API "))
    return int(match.group(3)), api_port, agent


_OK = b"Content-Length: 2\r\n\r\nok"
_BAD = {
    # path: (the response, what the 502 says is wrong)
    b"/cr": (b"HTTP/1.1 200 OK\r\nX-A: a\rInjected: 1\r\n" + _OK,
             "the value of header 'X-A' holds the control byte 0x0d at 1"),
    b"/nul": (b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n" + _OK, "the value of header 'X-A' holds the control byte 0x00 at 1"),
    b"/ctl": (b"HTTP/1.1 200 OK\r\nX-A: \x1b]0;pwned\x07\r\n" + _OK,
              "the value of header 'X-A' holds the control byte 0x1b at 0"),
    b"/fold": (b"HTTP/1.1 200 OK\r\nX-A: a\r\n Injected: 1\r\n" + _OK,
               "the header line 'Injected: 1' is folded onto the one before it (obs-fold)"),
    b"/space": (b"HTTP/1.1 200 OK\r\nX A: b\r\n" + _OK, "the header name 'X A' is not a token"),
    b"/interim": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A: a\x7fb\r\n" + _OK,
                  "the value of header 'X-A' holds the control byte 0x7f at 1"),
}


def test_a_local_header_that_cannot_be_written_is_a_502_naming_it_and_recorded(env: dict[str, str], procs: list[Proc]) -> None:
    with raw_service({path: answer for path, (answer, _) in _BAD.items()}) as (port, _heads):
        relay_port, api_port, _agent = _tunnel(procs, env, port)
        with httpx.Client(trust_env=False, timeout=20) as client:
            for path, (_, problem) in _BAD.items():
                url = f"http://127.0.0.1:{relay_port}{path.decode()}"
                answer = client.get(url, headers={"Host": f"dev.localhost:{relay_port}"})
                assert answer.status_code == 502, (path, answer.text)
                assert answer.headers["x-devtunnel-error"] == "local_error"
                assert answer.headers["x-content-type-options"] == "nosniff"  # the text quotes the service
                assert "injected" not in answer.headers
                # Escaped once for the client's terminal: the ESC of /ctl arrives as \x1b.
                shown = problem.replace("\x1b", "\\x1b")
                assert answer.text == f"the local service sent an invalid header: {shown}\n", path
            api = f"http://127.0.0.1:{api_port}/api/requests/http"
            wait_for(lambda: len(client.get(api).json()["requests"]) == len(_BAD), timeout=20)
            for capture in client.get(api).json()["requests"]:
                assert capture["error"] == "local_error"
                path = capture["request"]["uri"].encode()
                assert capture["error_message"] == "the local service sent an invalid header: " + _BAD[path][1]


def test_a_rule_setting_a_header_no_head_can_hold_is_refused_when_it_is_made(
    env: dict[str, str], procs: list[Proc], tmp_path: Path
) -> None:
    # It was taken, and every answer it touched was an empty reply from the relay.
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\naction = "headers"\nresponse.set = { "X-Env" = "a\\u0001b" }\n')
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"hello")) as service:
        refused = start(procs, env, "http", str(service.port), "--no-tui", "--rules", str(rules))
        assert refused.wait(30) == 2
        assert refused.err[-1] == (f"devtunnel: {rules}: rule 1: response.set: the value of X-Env must be one line of "
                                   "Latin-1 text without control characters")
        relay_port, api_port, _agent = _tunnel(procs, env, service.port)
        with httpx.Client(trust_env=False, timeout=20) as client:
            for side in ("request", "response"):
                added = client.post(f"http://127.0.0.1:{api_port}/api/tunnels/dev/rules",
                                    json={"action": "headers", side: {"set": {"X-Env": "a\x7fb"}}})
                assert added.status_code == 400, added.text
                assert "without control characters" in added.json()["msg"]
            assert client.get(f"http://127.0.0.1:{api_port}/api/tunnels/dev/rules").json()["rules"] == []
            answer = client.get(f"http://127.0.0.1:{relay_port}/", headers={"Host": f"dev.localhost:{relay_port}"})
            assert answer.text == "hello"


@pytest.mark.parametrize("field", [
    b"X-A: a\r\n Injected: 1", b"X-A: a\rInjected: 1", b"X-A: a\nInjected: 1", b"X-A: a\x00b", b"X-A: a\x01b",
    b"X A: b", b"X-A\t: b", b"Content-Length: 1\r\nTransfer-Encoding: chunked",
])
def test_a_request_header_that_could_smuggle_a_field_never_reaches_the_service(
    env: dict[str, str], procs: list[Proc], field: bytes
) -> None:
    with raw_service({b"/x": b"HTTP/1.1 200 OK\r\n" + _OK}) as (port, heads):
        relay_port, _api_port, _agent = _tunnel(procs, env, port)
        with socket.create_connection(("127.0.0.1", relay_port), timeout=10) as conn:
            conn.sendall(b"GET /x HTTP/1.1\r\nHost: dev.localhost\r\n" + field + b"\r\n\r\n")
            got = b""
            while chunk := conn.recv(65536):
                got += chunk
        assert got.startswith(b"HTTP/1.1 400 "), got
        # A good request after it arrives alone.
        with httpx.Client(trust_env=False, timeout=20) as client:
            assert client.get(f"http://127.0.0.1:{relay_port}/x", headers={"Host": "dev.localhost"}).text == "ok"
        assert len(heads) == 1 and b"Injected" not in heads[0] and b"X-A" not in heads[0]


def test_a_request_line_of_another_http_version_is_505_and_never_reaches_the_service(
    env: dict[str, str], procs: list[Proc]
) -> None:
    """llhttp reads any digit.digit as a version, and HTTP/0.9's bare ``GET /``: ``GET / HTTP/2.0``
    went on to the service as HTTP/1.1 and was recorded as HTTP/2. RFC 9110 15.6.6: 505."""
    with raw_service({b"/x": b"HTTP/1.1 200 OK\r\n" + _OK}) as (port, heads):
        relay_port, _api_port, _agent = _tunnel(procs, env, port)
        for line in (b"GET /x HTTP/2.0", b"GET /x HTTP/0.9", b"GET /x HTTP/1.2", b"GET /x HTTP/9.9", b"GET /x"):
            with socket.create_connection(("127.0.0.1", relay_port), timeout=10) as conn:
                conn.sendall(line + b"\r\nHost: dev.localhost\r\nConnection: close\r\n\r\n")
                got = b""
                while chunk := conn.recv(65536):
                    got += chunk
            if line.endswith((b"2.0", b"0.9", b"/x")):  # versions llhttp parses
                assert got.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), (line, got)
                version = line.rpartition(b"/")[2] if b"HTTP" in line else b"0.9"
                assert got.endswith(b"HTTP/" + version + b" is not supported: send HTTP/1.1 (or 1.0)\n"), got
            else:  # not a version to llhttp: invalid HTTP, as before
                assert got.startswith(b"HTTP/1.1 400 "), (line, got)
        assert heads == []
        with httpx.Client(trust_env=False, timeout=20) as client:  # HTTP/1.1, and 1.0, as ever
            assert client.get(f"http://127.0.0.1:{relay_port}/x", headers={"Host": "dev.localhost"}).text == "ok"
        with socket.create_connection(("127.0.0.1", relay_port), timeout=10) as conn:
            conn.sendall(b"GET /x HTTP/1.0\r\nHost: dev.localhost\r\n\r\n")
            got = b""
            while chunk := conn.recv(65536):
                got += chunk
        assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"ok"), got
        assert len(heads) == 2
