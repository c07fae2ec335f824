"""End to end in a real terminal: ``devtunnel http PORT`` in tmux, curl through the tunnel, read the screen."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("tmux") is None or shutil.which("curl") is None, reason="needs tmux and curl"),
]

DEVTUNNEL = str(Path(sys.executable).with_name("devtunnel"))


# Variables that would make the inspector draw at another size than its pane's, or make tmux
# think it is nested: a test run typed in a terminal exports COLUMNS and LINES to its children
# (readline sets them in the C environment, which os.environ does not show), and inside tmux
# TMUX names the caller's server.
_CALLERS_TERMINAL = ("COLUMNS", "LINES", "TMUX", "TMUX_PANE")


class Tmux:
    """One tmux server on its own socket (``-S``, in a folder of its own), so nothing else's
    sessions are touched and nothing is left behind.

    The server and every command that talks to it run with no terminal (stdin from /dev/null),
    no user config (``-f /dev/null``) and an environment without the caller's terminal size:
    the session is exactly ``width`` x ``height`` however the tests are started (typed in a
    terminal, inside tmux, or from CI).
    """

    def __init__(self) -> None:
        # Short: a unix socket's path has room for about 100 bytes, too few for pytest's tmp_path.
        self.folder = Path(tempfile.mkdtemp(prefix="devtunnel-tmux-"))
        self.socket = self.folder / "s"
        self.env = {k: v for k, v in os.environ.items() if k not in _CALLERS_TERMINAL}

    def run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["tmux", "-f", os.devnull, "-S", str(self.socket), *args], capture_output=True,
                              text=True, timeout=10, check=check, stdin=subprocess.DEVNULL, env=self.env)
        return done.stdout

    def close(self) -> None:
        """Stop the server and remove its socket."""
        self.run("kill-server", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def start(self, command: str, width: int, height: int) -> None:
        """Run ``command`` in session ``e2e``, a window of ``width`` x ``height`` that no client resizes."""
        size = f"{width}x{height}"
        self.run("new-session", "-d", "-s", "e2e", "-x", str(width), "-y", str(height), command, ";",
                 "set-option", "-g", "window-size", "manual", ";", "set-option", "-g", "default-size", size)
        shown = self.run("display-message", "-p", "-t", "e2e", "#{window_width}x#{window_height}").strip()
        assert shown == size, f"tmux made a {shown} window, not {size}"

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "e2e", check=False)

    def showing(self, pattern: str) -> str | None:
        """The screen, if ``pattern`` (a regex) is on it."""
        screen = self.screen()
        return screen if re.search(pattern, screen) else None

    def wait_showing(self, pattern: str, timeout: float, what: str) -> str:
        """The screen once ``pattern`` is on it; on timeout the failure shows the screen as it was."""
        try:
            return wait_for(lambda: self.showing(pattern), timeout=timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{self.screen()}") from None


def wait_online(tmux: Tmux, name: str, log_path: Path | None = None) -> str:
    """The relay port of tunnel ``name`` once the inspector shows it online; on timeout the
    failure shows the screen and, with ``log_path``, the end of the agent's log."""
    pattern = rf"http://{re.escape(name)}\.localhost:(\d+).*online"
    try:
        screen = tmux.wait_showing(pattern, timeout=45, what=f"tunnel {name} online on screen")
    except AssertionError as exc:
        if log_path is None:
            raise
        raise AssertionError(f"{exc}\nagent log:\n{_log_tail(log_path)}") from None
    return re.search(pattern, screen).group(1)  # type: ignore[union-attr]


def exit_status(status: Path, timeout: float = 20) -> str:
    """The exit code the pane's shell wrote to ``status`` (``...; echo $? > status``), once written.

    The shell creates the file before it writes the line: waiting for the file alone can read it empty.
    """
    def written() -> str | None:
        text = status.read_text() if status.exists() else ""
        return text.strip() if text.endswith("\n") else None

    return wait_for(written, timeout=timeout, what="the inspector to exit")


def _log_tail(path: Path) -> str:
    """The end of the agent's log at ``path``, for a failure's message."""
    return path.read_text()[-3000:] if path.exists() else "(none)"


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    # A server per test: one killed by the previous test may still be on its way out.
    t = Tmux()
    yield t
    t.close()


def test_the_pane_size_holds_whatever_terminal_the_tests_run_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A caller's COLUMNS/LINES (exported by a terminal) or TMUX must not reach the program under test."""
    for name, value in (("COLUMNS", "200"), ("LINES", "50"), ("TMUX", "/tmp/elsewhere,1,0"), ("TMUX_PANE", "%9")):
        monkeypatch.setenv(name, value)
    tmux = Tmux()
    try:
        tmux.start(f"{sys.executable} -c 'import shutil; print(\"size\", *shutil.get_terminal_size())'; sleep 60",
                   100, 30)
        screen = tmux.wait_showing(r"size \d+ \d+", timeout=20, what="the size the program sees")
        assert "size 100 30" in screen
    finally:
        tmux.close()


def test_http_command_shows_curl_traffic_on_screen_and_quits_with_q(tmp_path: Path, service: int,
                                                                    tmux: Tmux) -> None:
    db = tmp_path / "captures.db"
    command = (f"env XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color "
               f"{DEVTUNNEL} http {service} --db {db} --name e2e; echo $? > {tmp_path / 'status'}")
    tmux.start(command, 120, 36)

    log_path = tmp_path / "state" / "devtunnel" / "agent.log"
    port = wait_online(tmux, "e2e", log_path)

    for path in ("/hello?x=[bold]1", "/teapot"):
        done = subprocess.run(["curl", "-g", "-s", "-i", "-H", f"Host: e2e.localhost:{port}",
                               f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=15)
        assert done.stdout.startswith(("HTTP/1.1 200 ", "HTTP/1.1 418 ")), (
            f"{path}: {done.stdout}\nthe screen:\n{tmux.screen()}\nagent log:\n{_log_tail(log_path)}")

    screen = tmux.wait_showing("/teapot", timeout=20, what="rows on screen")
    rows = [line for line in screen.splitlines() if "e2e" in line and "GET" in line]
    assert any("/hello?x=[bold]1" in row and "200" in row for row in rows), screen
    assert any("/teapot" in row and "418" in row for row in rows), screen
    assert "following" in screen

    tmux.run("send-keys", "-t", "e2e", "q")
    assert exit_status(tmp_path / "status") == "0"
    log = log_path.read_text()
    assert "Forwarding http://e2e.localhost:" in log
    assert "/teapot" not in log  # no line per exchange: the inspector shows them, the file would only grow
    # The agent went with the inspector: nothing listens on the relay port any more.
    wait_for(lambda: subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"],
                                    timeout=15).returncode != 0, timeout=15, what="the agent to stop")


def test_inspect_command_shows_stored_captures_without_an_agent(tmp_path: Path, tmux: Tmux) -> None:
    from tests.tui.app_fixtures import fill, traffic

    db = fill(tmp_path / "captures.db", traffic(12))
    command = (f"env XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color {DEVTUNNEL} inspect --db {db}; "
               f"echo $? > {tmp_path / 'status'}")
    tmux.start(command, 100, 30)
    screen = tmux.wait_showing("/health", timeout=30, what="the stored rows")
    assert "stored captures (no agent)" in screen and "/webhooks/stripe" in screen
    tmux.run("send-keys", "-t", "e2e", "q")
    assert exit_status(tmp_path / "status") == "0"
    assert not (tmp_path / "state" / "devtunnel" / "agent.log").exists()


def test_closing_the_terminal_stops_the_agent(tmp_path: Path, service: int, tmux: Tmux) -> None:
    command = (f"env XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color "
               f"{DEVTUNNEL} http {service} --db {tmp_path / 'captures.db'} --name hup")
    tmux.start(command, 100, 30)
    port = wait_online(tmux, "hup")
    inspector_pid = int(tmux.run("display-message", "-p", "-t", "e2e", "#{pane_pid}").strip())
    tmux.run("kill-session", "-t", "e2e")  # the terminal goes away: SIGHUP
    wait_for(lambda: subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"],
                                    timeout=15).returncode != 0, timeout=20, what="the agent to stop")
    wait_for(lambda: not Path(f"/proc/{inspector_pid}").exists(), timeout=20, what="the inspector to exit")


def test_sigterm_quits_cleanly_and_stops_the_agent(tmp_path: Path, service: int, tmux: Tmux) -> None:
    status = tmp_path / "status"
    command = (f"env XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color "
               f"{DEVTUNNEL} http {service} --db {tmp_path / 'captures.db'} --name term; echo $? > {status}")
    tmux.start(command, 100, 30)
    port = wait_online(tmux, "term")
    shell = tmux.run("display-message", "-p", "-t", "e2e", "#{pane_pid}").strip()
    inspector_pid = int(subprocess.run(["pgrep", "-P", shell], capture_output=True, text=True).stdout.split()[0])
    os.kill(inspector_pid, signal.SIGTERM)
    assert exit_status(status) == "0"
    wait_for(lambda: subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"],
                                    timeout=15).returncode != 0, timeout=20, what="the agent to stop")
