"""commands/output.py: text from captures made safe for a terminal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from devtunnel.commands.http import exchange_line
from devtunnel.commands.output import display_width, safe
from devtunnel.exit_codes import EXIT_TUNNEL_REFUSED
from devtunnel.protocol import frames
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.handshake import PROTOCOL_VERSION, encode_welcome
from tests.helpers import wait_for
from tests.kit.exchanges import make_exchange, make_response
from tests.net.tunnel_fixtures import LoopThread


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/webhooks/stripe?id=42&x=[/y]", "/webhooks/stripe?id=42&x=[/y]"),  # printable ASCII as it is
        ("/a\\b", "/a\\\\b"),  # a literal backslash is doubled, so it cannot pose as an escape
        ("/\x1b[31mred", "/\\x1b[31mred"),
        ("/del\x7f", "/del\\x7f"),
        ("/tab\there\r\n", "/tab\\there\\r\\n"),
        ("/caf\u00e9", "/caf\u00e9"),  # printable non-ASCII stays
        ("/\u202egnp.exe", "/\\u202egnp.exe"),  # a bidi override is made visible
        ("/c1\x9b", "/c1\\x9b"),
        ("", ""),
    ],
)
def test_safe_escapes_exactly_the_characters_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert safe(text) == shown


def test_safe_can_keep_newlines_for_bodies() -> None:
    assert safe("a\n\tb\x1b", keep_newlines=True) == "a\n\tb\\x1b"


def test_the_log_line_of_a_hostile_request_is_one_safe_line() -> None:
    ex = make_exchange(
        "GE\x1bT", b"/x\n\x1b]0;pwned\x07", [], response=make_response(200, reason="OK"),
        id="01ARYZ6S41TSV4RRFFQ69G5FAV", tunnel="demo", started_at=1469918176.385,
        duration=0.0123,
    )
    line = exchange_line(ex)
    assert "\n" not in line and "\x1b" not in line and "\x07" not in line
    assert "GE\\x1bT" in line and "/x\\n\\x1b]0;pwned\\x07" in line and "200" in line and "12.3 ms" in line


@pytest.mark.parametrize(("method", "target", "websocket"), [
    ("GET", b"/plain?q=1", False),
    ("GE\x1bT", b"/clean", False),  # only the method needs escaping
    ("POST", b"/a\\b\xe2\x80\xae", False),  # only the path: a backslash and a bidi override
    ("PROPFIND", b"/\xff\xfe", False),  # not UTF-8: each byte as \xNN (it was latin-1 text, /ÿþ)
    ("GET", b"/a\xc2\xa0b", False),  # a no-break space: not isprintable(), shown as it is
    ("GET", b"/\xe3\x85\xa4", True),  # a WebSocket with an invisible letter in its path
])
def test_the_log_line_escapes_method_and_path_each_as_safe_does(method: str, target: bytes, websocket: bool) -> None:
    ex = make_exchange(method, target, [], response=make_response(201), id="01ARYZ6S41TSV4RRFFQ69G5FAV",
                       tunnel="demo", started_at=1469918176.385, duration=1.5, websocket=websocket)
    shown = "WS" if websocket else safe(ex.request.method)
    assert exchange_line(ex).split("  ", 2)[2] == f"{shown:<7} {safe(ex.request.display_url)}  201  1.50 s"
    if target == b"/\xff\xfe":
        assert "PROPFIND /\\xff\\xfe  201" in exchange_line(ex)


def test_the_log_line_of_a_huge_path_or_method_stays_one_short_line() -> None:
    """A public client controls the path (tens of KB pass the relay); one request must not fill
    the screen. The short id leads to all of it (``devtunnel show``)."""
    ex = make_exchange("X" * 5000, b"/long" + b"\xe4\xb8\xad" * 20000 + b"?q=1", [], response=make_response(200),
                       id="01ARYZ6S41TSV4RRFFQ69G5FAV", tunnel="demo", started_at=1469918176.385, duration=0.0123)
    line = exchange_line(ex)
    assert display_width(line) < 400, display_width(line)
    assert "/long中中" in line and "…" in line and line.endswith("  200  12.3 ms")



def test_the_log_line_of_a_request_held_while_the_app_restarted_says_how_long() -> None:
    """Found by use: only ``show`` said a request had waited for the app (``--hold``), and the
    line's duration, the wait included, looked like a slow app."""
    ex = make_exchange("POST", b"/hook", [], response=make_response(200), id="01ARYZ6S41TSV4RRFFQ69G5FAV",
                       tunnel="demo", started_at=1469918176.385, duration=6.24, held=6.1)
    assert exchange_line(ex).endswith("POST    /hook  200  6.24 s  held 6.10 s")
    assert "held" not in exchange_line(make_exchange("GET", b"/", [], response=make_response(200), duration=0.01))


def test_the_log_line_names_the_tunnel_in_a_column_when_an_agent_carries_several() -> None:
    ex = make_exchange("GET", b"/x", [], response=make_response(200), id="01ARYZ6S41TSV4RRFFQ69G5FAV",
                       tunnel="api", started_at=1469918176.385, duration=0.0123)
    alone = exchange_line(ex)
    start, rest = alone[:len("00:00:00  0123456789ABC  ")], alone[len("00:00:00  0123456789ABC  "):]
    assert exchange_line(ex, 8) == f"{start}api       {rest}"  # padded to 8 columns, then two spaces
    assert rest == "GET     /x  200  12.3 ms"


def test_the_log_line_marks_a_replay_and_a_request_a_rule_decided_as_the_listings_do() -> None:
    from devtunnel.capture.model import RuleMark

    def rest(**fields: object) -> str:
        ex = make_exchange("POST", b"/hooks", [], response=make_response(200), id="01ARYZ6S41TSV4RRFFQ69G5FAV",
                           started_at=1469918176.385, duration=0.0123, **fields)
        return exchange_line(ex)[len("00:00:00  0123456789ABC  "):]

    assert rest() == "POST    /hooks  200  12.3 ms"
    assert rest(replay_of="01ARYZ6S41TSV4RRFFQ69G5FAA") == "POST    ↻ /hooks  200  12.3 ms"
    assert rest(replay_of="01ARYZ6S41TSV4RRFFQ69G5FAA", edited=True, resigned="stripe") == "POST    ↻✎s /hooks  200  12.3 ms"
    assert rest(rule=RuleMark(1, "deny")) == "POST    ⊘ /hooks  200  12.3 ms"
    assert rest(rule=RuleMark(2, "forward")) == "POST    → /hooks  200  12.3 ms"


# -- text from a hostile relay never drives the terminal --------------------------------------------------

_TITLE_AND_CLIPBOARD = "\x1b]0;owned\x07\x1b]52;c;cm0gLXJmIH4K\x07\x1b[2J\u202e"


class HostileRelay:
    """A WebSocket server on loopback that speaks just enough of the tunnel protocol to lie.

    ``mode`` says what it does after the agent's HELLO:
    ``refuse``: GOAWAY "token refused" with an escape-laden reason;
    ``welcome-then-take``: WELCOME with an escape-laden name and URL (another name than the one
    asked for, which the agent refuses), then GOAWAY "name taken";
    ``going-away``: GOAWAY "shutting down" (the agent retries and logs the reason).
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.hellos = 0
        self.thread = LoopThread()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

        async def start() -> Server:
            return await serve(self._handle, sock=self.sock, compression=None)

        self.server = self.thread.call(start())

    def _goaway(self, code: ErrorCode, reason: str) -> bytes:
        return frames.frame(frames.GOAWAY, 0, 0, frames.U32.pack(code) + reason.encode())

    async def _handle(self, ws: ServerConnection) -> None:
        await ws.recv()  # the HELLO
        self.hellos += 1
        if self.mode == "refuse":
            await ws.send(self._goaway(ErrorCode.AUTH_FAILED, f"bad token{_TITLE_AND_CLIPBOARD}"))
        elif self.mode == "welcome-then-take":
            welcome = encode_welcome(PROTOCOL_VERSION, f"x{_TITLE_AND_CLIPBOARD}", f"http://x{_TITLE_AND_CLIPBOARD}", {})
            await ws.send(frames.frame(frames.WELCOME, 0, 0, welcome))
            await ws.send(self._goaway(ErrorCode.NAME_TAKEN, f"mine now{_TITLE_AND_CLIPBOARD}"))
        else:
            await ws.send(self._goaway(ErrorCode.SHUTTING_DOWN, f"brb{_TITLE_AND_CLIPBOARD}"))
        await ws.close()  # as a relay does after a GOAWAY

    def close(self) -> None:
        self.server.close()
        self.thread.close()


@pytest.fixture
def hostile_relay(request: pytest.FixtureRequest) -> Iterator[HostileRelay]:
    relay = HostileRelay(request.param)
    yield relay
    relay.close()


def _agent(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    env.pop("DEVTUNNEL_RELAY", None)
    env.pop("DEVTUNNEL_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "devtunnel", "http", "9", "--no-tui", "--api-port", "0", "--no-record",
                             "--relay", f"ws://127.0.0.1:{port}", "--token", "t"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _assert_inert(output: bytes) -> None:
    assert b"\x1b" not in output and b"\x07" not in output and "\u202e".encode() not in output, output


@pytest.mark.parametrize("hostile_relay", ["refuse", "welcome-then-take"], indirect=True)
def test_a_relays_refusal_reaches_the_terminal_escaped(tmp_path: Path, hostile_relay: HostileRelay) -> None:
    agent = _agent(tmp_path, hostile_relay.port)
    try:
        out, err = agent.communicate(timeout=30)
    finally:
        agent.kill()
    assert agent.returncode == EXIT_TUNNEL_REFUSED, (out, err)
    _assert_inert(out)
    _assert_inert(err)
    assert b"\\x1b]0;owned\\x07\\x1b]52;c;" in err  # the reason is there, to be read, not obeyed
    assert b"Traceback" not in err
    # Escaped once: an ESC reads \x1b, never \\x1b (the message quoted the value escaped, then the
    # log escaped the message again).
    assert b"\\\\" not in err, err
    if hostile_relay.mode == "welcome-then-take":
        # The WELCOME names another tunnel than the one asked for: refused, never printed as Forwarding.
        assert b"Forwarding" not in out, out
        assert b"with the name 'x\\x1b]0;owned\\x07" in err and b"refused the tunnel" in err, err


@pytest.mark.parametrize("hostile_relay", ["going-away"], indirect=True)
def test_a_relays_reason_for_going_away_is_logged_escaped(tmp_path: Path, hostile_relay: HostileRelay) -> None:
    agent = _agent(tmp_path, hostile_relay.port)
    try:
        # A second HELLO: the agent took the first GOAWAY as a reason to retry, and logged it.
        wait_for(lambda: hostile_relay.hellos >= 2, timeout=30, what="the agent to retry")
        agent.send_signal(signal.SIGINT)
        out, err = agent.communicate(timeout=30)
    finally:
        agent.kill()
    assert agent.returncode == 0
    _assert_inert(out)
    _assert_inert(err)
    assert b"brb\\x1b]0;owned" in err


def test_warnings_of_other_loggers_in_the_agent_are_escaped_too() -> None:
    code = ("import logging\n"
            "from devtunnel.commands.http import _setup_logging\n"
            "_setup_logging()\n"
            "logging.getLogger('websockets.client').warning('peer said %s', '\\x1b]0;owned\\x07')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=True)
    _assert_inert(done.stderr)
    assert done.stderr.endswith(b"peer said \\x1b]0;owned\\x07\n"), done.stderr


def test_a_newline_in_a_logged_message_cannot_start_a_line_of_its_own() -> None:
    # A relay's reason for going away is logged; with a newline it printed a line of its own
    # ("Forwarding https://evil.example -> ..."), which the formatter let through before.
    code = ("import logging\n"
            "from devtunnel.commands.http import _setup_logging\n"
            "_setup_logging()\n"
            "log = logging.getLogger('devtunnel.agent')\n"
            "log.warning('the relay is going away: %s', 'brb\\nForwarding https://evil.example -> http://127.0.0.1:9')\n"
            "try:\n"
            "    raise ValueError('boom')\n"
            "except ValueError:\n"
            "    log.exception('failed: %s', 'x\\ry')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=True)
    lines = done.stderr.decode().splitlines()
    assert lines[0].endswith("the relay is going away: brb\\nForwarding https://evil.example -> http://127.0.0.1:9")
    assert not any(line.startswith("Forwarding") for line in lines)
    assert lines[1].endswith("failed: x\\ry")
    assert lines[2] == "Traceback (most recent call last):" and lines[-1] == "ValueError: boom"  # still readable


CRASH = """
import sys, threading
from devtunnel import cli
from devtunnel.commands import captures

HOSTILE = "header X-Evil: \\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\u009b31m\\u202eRTL"

def crash(args):
    worker = threading.Thread(target=lambda: (_ for _ in ()).throw(ValueError(HOSTILE)), name="recorder")
    worker.start()
    worker.join()
    raise RuntimeError(HOSTILE)

captures.run = crash  # a bug in a command, its message quoting a request: nothing catches it
sys.exit(cli.main(["requests"]))
"""


def test_a_traceback_nothing_caught_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    # Python's own hooks printed the message as it was: a bug's traceback quoting a captured header
    # wrote the clipboard (OSC 52) and cleared the screen.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVTUNNEL_", "XDG_"))}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), PYTHONPATH=str(Path(__file__).parent.parent))
    done = subprocess.run([sys.executable, "-c", CRASH], capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path)
    assert done.returncode == 1, done
    assert not {"\x1b", "\x07", "\x9b", "\u202e"} & set(done.stderr), done.stderr
    assert "Exception in thread recorder:" in done.stderr
    assert done.stderr.count("header X-Evil: \\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\x9b31m\\u202eRTL") == 2, done.stderr
