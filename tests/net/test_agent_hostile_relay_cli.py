"""``devtunnel http --relay URL`` as the user runs it (a child process), pointed at a hostile relay:
a websockets server on loopback speaking the tunnel protocol with the protocol's own encoder,
which welcomes each connection of the agent, then sends it one broken or forged thing.

Whatever it sends, the agent says so in one escaped line and connects again: no traceback, no
byte of the relay's reaching the terminal as a control character, and no connection to anything
but the configured local service (a second one, on another port, is named by the forgeries).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve

from devtunnel.protocol import frames as f
from devtunnel.protocol.events import ResponseReceived
from devtunnel.protocol.relay_side import RelayConnection
from tests.helpers import async_wait_for, free_port
from tests.kit.procs import DEVTUNNEL, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.head_fixtures import recording_service
from tests.net.tunnel_fixtures import read_hello

ESCAPES = b"\x1b]8;;http://evil.localhost/\x07x\x1b[2J\x9b1m"


def _request(sid: int, *, method: bytes = b"GET", target: bytes = b"/", headers: tuple[tuple[bytes, bytes], ...] = (
        (b"Host", b"h.localhost"),), remote: str = "203.0.113.9", scheme: str = "http", flags: int = f.END_STREAM,
        version: bytes = b"1.1") -> bytes:
    return f.frame(f.REQUEST, flags, sid, f.encode_request(method, target, version, headers, remote, scheme))


def _forgeries(other: int) -> list[tuple[str, list[bytes]]]:
    text = ESCAPES.decode("latin-1")
    return [
        ("unknown frame type", [f.frame(0x7F, 0, 0, b"x")]),
        ("data on a stream never opened", [f.frame(f.DATA, 0, 5, b"abc")]),
        ("ping of 3 bytes", [f.frame(f.PING, 0, 0, b"abc")]),
        ("second welcome", [f.frame(f.WELCOME, 0, 0, f.encode_json({"version": 1, "name": "x", "url": "http://x",
                                                                      "info": {}}))]),
        ("reset reason not UTF-8", [_request(1, flags=0), f.frame(f.RESET, 0, 1, f.U32.pack(1) + b"\xff" + ESCAPES)]),
        ("request fields cut short", [f.frame(f.REQUEST, f.END_STREAM, 1,
                                              f.REQUEST_PREFIX.pack(3, 1, 3, 4, 0, 65535) + b"GET/1.1http")]),
        ("target naming another port", [_request(1, target=b"http://127.0.0.1:%d/x" % other)]),
        ("connect to another port", [_request(1, method=b"CONNECT", target=b"127.0.0.1:%d" % other)]),
        ("escapes in the target", [_request(1, target=b"/" + ESCAPES)]),
        ("escapes in the client address", [_request(1, remote=text)]),
        ("escapes in the scheme", [_request(1, scheme="ht\x1btp")]),
        # Written after "HTTP/" by the record: httpie's export printed it raw in a comment.
        ("escapes in the version", [_request(1, version=b"1.1" + ESCAPES)]),
        ("reset with escapes", [_request(1, flags=0), f.frame(f.RESET, 0, 1, f.U32.pack(0xDEADBEEF) + ESCAPES)]),
        ("going away with escapes", [f.frame(f.GOAWAY, 0, 0, f.U32.pack(0xDEADBEEF) + ESCAPES)]),
    ]


async def test_nothing_a_hostile_relay_sends_breaks_the_agent_process_or_reaches_another_port(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]  # noqa: F811
) -> None:
    with recording_service(b"local") as (local_port, local), recording_service(b"other") as (other_port, other):
        forgeries = _forgeries(other_port)
        done: list[str] = []

        async def relay(ws: ServerConnection) -> None:
            conn = RelayConnection()
            hello = await read_hello(ws, conn)
            assert hello is not None and hello.name
            conn.send_welcome(hello.name, f"http://{hello.name}.localhost", {})
            await ws.send(conn.data_to_send())
            if len(done) == len(forgeries):
                await ws.wait_closed()  # the agent is left online: it has taken everything
                return
            what, frames = forgeries[len(done)]
            for frame in frames:
                await ws.send(frame)
            # The agent ends the connection for a broken frame; a forged request it answers.
            try:
                async with asyncio.timeout(0.5):
                    async for _ in ws:
                        pass
            except TimeoutError:
                pass
            done.append(what)
            await ws.close()

        async with serve(relay, "127.0.0.1", 0, max_size=None, compression=None) as server:
            relay_port = server.sockets[0].getsockname()[1]
            agent = start(procs, env, "http", str(local_port), "--relay", f"ws://127.0.0.1:{relay_port}", "--no-tui",
                          "--api-port", str(free_port()), "--db", str(tmp_path / "captures.db"))
            await async_wait_for(lambda: len(done) == len(forgeries) or agent.returncode is not None, timeout=120,
                                 what="the agent to take every forgery")
            assert agent.returncode is None, (done, agent.err)
            assert agent.stop() == 0, agent.err
    output = "\n".join(agent.out + agent.err)
    assert "Traceback" not in output and "Error:" not in output, output
    for byte in "\x1b\x07\x9b":
        assert byte not in output, (byte, output)
    assert other.snapshot()[0] == 0, "a forgery reached the other port"
    assert local.snapshot()[0] >= 1  # the forgeries that were requests, refused or not, went here alone
    # What was recorded, exported as the user would print it.
    for fmt in ("httpie", "raw", "curl"):
        exported = subprocess.run([*DEVTUNNEL, "export", "--db", str(tmp_path / "captures.db"), "--filter", "method:GET",
                                   "--limit", "100", "--format", fmt], capture_output=True, env=env, timeout=60, cwd=tmp_path)
        assert exported.returncode == 0 and exported.stdout, (fmt, exported)
        for byte in (b"\x1b", b"\x07", "\x9b".encode()):
            assert byte not in exported.stdout, (fmt, byte, exported.stdout)
    assert b"# captured as HTTP/" not in exported_httpie(tmp_path, env), "a refused version was recorded as it came"


def exported_httpie(tmp_path: Path, env: dict[str, str]) -> bytes:
    return subprocess.run([*DEVTUNNEL, "export", "--db", str(tmp_path / "captures.db"), "--filter", "method:GET",
                           "--limit", "100", "--format", "httpie"], capture_output=True, env=env, timeout=60, cwd=tmp_path).stdout


async def test_header_names_that_are_no_tokens_never_reach_the_local_service(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]  # noqa: F811
) -> None:
    # The public side of a relay refuses them (400); a hostile relay sends them in a REQUEST
    # frame. Before, the agent wrote each that held no colon, CR, LF or NUL: ": empty",
    # "X Spaced: v", "Transfer-Encoding : chunked", which one local server reads as a field of
    # that name (a chunked body, where the agent framed none) and another refuses or ignores,
    # on a connection the agent keeps alive for the next request.
    forged = ((b"", b"empty"), (b"X Spaced", b"v"), (b"Transfer-Encoding ", b"chunked"), (b"X\x01Ctl", b"v"),
              (b"X-\xc3\x89", b"v"), (b"X-Ok", b"1"))
    heads = [((b"Host", b"h.localhost"), *forged), ((b"Host", b"h.localhost"), *forged[2:])]
    answers: list[int] = []

    async def relay(ws: ServerConnection) -> None:
        conn = RelayConnection()
        hello = await read_hello(ws, conn)
        assert hello is not None and hello.name
        conn.send_welcome(hello.name, f"http://{hello.name}.localhost", {})
        for headers in heads:  # one after the other: the second on the kept-alive connection
            conn.open_request(b"GET", b"/", b"1.1", headers, end_stream=True)
            await ws.send(conn.data_to_send())
            async for message in ws:
                answers.extend(e.status for e in conn.receive_data(message) if isinstance(e, ResponseReceived))  # type: ignore[arg-type]
                if conn.wants_to_send:
                    await ws.send(conn.data_to_send())
                if len(answers) == heads.index(headers) + 1:
                    break
        await ws.wait_closed()

    with recording_service(b"local") as (local_port, local):
        async with serve(relay, "127.0.0.1", 0, max_size=None, compression=None) as server:
            relay_port = server.sockets[0].getsockname()[1]
            agent = start(procs, env, "http", str(local_port), "--relay", f"ws://127.0.0.1:{relay_port}", "--no-tui",
                          "--api-port", str(free_port()), "--no-record")
            await async_wait_for(lambda: len(answers) == 2 or agent.returncode is not None, timeout=60,
                                 what="both requests answered")
            assert agent.stop() == 0, agent.err
        connections, requests, raw = local.snapshot()
    assert answers == [200, 200], (answers, raw)
    assert [r.header(b"x-ok") for r in requests] == [[b"1"], [b"1"]], raw
    for name, _ in forged[:-1]:
        assert b"\r\n" + name + b":" not in raw, (name, raw)
    assert b"chunked" not in raw and b"Spaced" not in raw, raw
    output = "\n".join(agent.out + agent.err)
    assert "Traceback" not in output, output
