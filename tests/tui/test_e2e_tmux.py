"""End to end in a real terminal: ``devtunnel http PORT`` in tmux, curl through the tunnel, read the screen."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
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


class Tmux:
    """One tmux server on its own socket, so nothing else's sessions are touched."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10,
                              check=check)
        return done.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "e2e", check=False)

    def showing(self, pattern: str) -> str | None:
        """The screen, if ``pattern`` (a regex) is on it."""
        screen = self.screen()
        return screen if re.search(pattern, screen) else None

@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(f"devtunnel-e2e-{os.getpid()}")
    yield t
    t.run("kill-server", check=False)


def test_http_command_shows_curl_traffic_on_screen_and_quits_with_q(tmp_path: Path, service: int,
                                                                    tmux: Tmux) -> None:
    db = tmp_path / "captures.db"
    command = (f"env XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color "
               f"{DEVTUNNEL} http {service} --db {db} --name e2e; echo $? > {tmp_path / 'status'}")
    tmux.run("new-session", "-d", "-s", "e2e", "-x", "120", "-y", "36", command)

    try:
        screen = wait_for(lambda: tmux.showing(r"http://e2e\.localhost:\d+.*online"), timeout=45,
                          what="the tunnel online on screen")
    except AssertionError:
        log = tmp_path / "state" / "devtunnel" / "agent.log"
        raise AssertionError(f"no tunnel on screen:\n{tmux.screen()}\nagent log:\n"
                             f"{log.read_text()[-3000:] if log.exists() else '(none)'}") from None
    port = re.search(r"http://e2e\.localhost:(\d+)", screen).group(1)  # type: ignore[union-attr]

    for path in ("/hello?x=[bold]1", "/teapot"):
        done = subprocess.run(["curl", "-g", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Host: e2e.localhost:{port}",
                               f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=15)
        assert done.stdout in ("200", "418")

    screen = wait_for(lambda: tmux.showing("/teapot"), timeout=20, what="rows on screen")
    rows = [line for line in screen.splitlines() if "e2e" in line and "GET" in line]
    assert any("/hello?x=[bold]1" in row and "200" in row for row in rows), screen
    assert any("/teapot" in row and "418" in row for row in rows), screen
    assert "following" in screen

    tmux.run("send-keys", "-t", "e2e", "q")
    wait_for(lambda: (tmp_path / "status").exists(), timeout=20, what="the inspector to exit")
    assert (tmp_path / "status").read_text().strip() == "0"
    log = (tmp_path / "state" / "devtunnel" / "agent.log").read_text()
    assert "Forwarding http://e2e.localhost:" in log
    # The agent went with the inspector: nothing listens on the relay port any more.
    wait_for(lambda: subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"],
                                    timeout=15).returncode != 0, timeout=15, what="the agent to stop")


def test_inspect_command_shows_stored_captures_without_an_agent(tmp_path: Path, tmux: Tmux) -> None:
    from tests.tui.app_fixtures import fill, traffic

    db = fill(tmp_path / "captures.db", traffic(12))
    command = (f"env XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color {DEVTUNNEL} inspect --db {db}; "
               f"echo $? > {tmp_path / 'status'}")
    tmux.run("new-session", "-d", "-s", "e2e", "-x", "100", "-y", "30", command)
    screen = wait_for(lambda: tmux.showing("/health"), timeout=30, what="the stored rows")
    assert "stored captures (no agent)" in screen and "/webhooks/stripe" in screen
    tmux.run("send-keys", "-t", "e2e", "q")
    wait_for(lambda: (tmp_path / "status").exists(), timeout=20, what="the inspector to exit")
    assert (tmp_path / "status").read_text().strip() == "0"
    assert not (tmp_path / "state" / "devtunnel" / "agent.log").exists()


def test_closing_the_terminal_stops_the_agent(tmp_path: Path, service: int, tmux: Tmux) -> None:
    command = (f"env XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color "
               f"{DEVTUNNEL} http {service} --db {tmp_path / 'captures.db'} --name hup")
    tmux.run("new-session", "-d", "-s", "e2e", "-x", "100", "-y", "30", command)
    screen = wait_for(lambda: tmux.showing(r"http://hup\.localhost:\d+.*online"), timeout=45, what="the tunnel")
    port = re.search(r"http://hup\.localhost:(\d+)", screen).group(1)  # type: ignore[union-attr]
    inspector_pid = int(tmux.run("display-message", "-p", "-t", "e2e", "#{pane_pid}").strip())
    tmux.run("kill-session", "-t", "e2e")  # the terminal goes away: SIGHUP
    wait_for(lambda: subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"],
                                    timeout=15).returncode != 0, timeout=20, what="the agent to stop")
    wait_for(lambda: not Path(f"/proc/{inspector_pid}").exists(), timeout=20, what="the inspector to exit")


def test_sigterm_quits_cleanly_and_stops_the_agent(tmp_path: Path, service: int, tmux: Tmux) -> None:
    status = tmp_path / "status"
    command = (f"env XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color "
               f"{DEVTUNNEL} http {service} --db {tmp_path / 'captures.db'} --name term; echo $? > {status}")
    tmux.run("new-session", "-d", "-s", "e2e", "-x", "100", "-y", "30", command)
    screen = wait_for(lambda: tmux.showing(r"http://term\.localhost:\d+.*online"), timeout=45, what="the tunnel")
    port = re.search(r"http://term\.localhost:(\d+)", screen).group(1)  # type: ignore[union-attr]
    shell = tmux.run("display-message", "-p", "-t", "e2e", "#{pane_pid}").strip()
    inspector_pid = int(subprocess.run(["pgrep", "-P", shell], capture_output=True, text=True).stdout.split()[0])
    os.kill(inspector_pid, signal.SIGTERM)
    wait_for(status.exists, timeout=20, what="the inspector to exit")
    assert status.read_text().strip() == "0"
    wait_for(lambda: subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"],
                                    timeout=15).returncode != 0, timeout=20, what="the agent to stop")
