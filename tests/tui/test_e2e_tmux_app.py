"""End to end in a real terminal: ``devtunnel http PORT --run CMD`` in tmux shows the app's state,
and quitting the inspector with q stops the app."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_for
from tests.tui.test_e2e_tmux import DEVTUNNEL, Tmux, exit_status, tmux  # noqa: F401 - tmux is a fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

APP = Path(__file__).parent.parent / "net" / "app_fixture.py"


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_app_state_shows_and_q_stops_the_app(tmp_path: Path, tmux: Tmux) -> None:  # noqa: F811
    port = free_port()
    status = tmp_path / "status"
    command = (f"env XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color "
               f"{DEVTUNNEL} http {port} --run '{sys.executable} {APP} {port}' --hold 10s "
               f"--db {tmp_path / 'captures.db'} --name shop; echo $? > {status}")
    tmux.start(command, 120, 30)
    tmux.wait_showing(r"http://shop\.localhost:\d+.*online.*app ready", timeout=45, what="the app ready on screen")
    assert _accepts(port)
    tmux.run("send-keys", "-t", "e2e", "q")
    assert exit_status(status) == "0"
    wait_for(lambda: not _accepts(port), timeout=20, what="the app stopped with the inspector")


def _up_in_tmux(tmp_path: Path, tmux: Tmux, ports: dict[str, int]) -> Path:
    """``devtunnel up`` in tmux for a devtunnel.toml with one tunnel (and its app) per name; the
    file its exit status goes to."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "devtunnel.toml").write_text("\n".join(
        f'[tunnels.{name}]\ntarget = {port}\nrun = "{sys.executable} {APP} {port}"\n' for name, port in ports.items()))
    status = tmp_path / "status"
    command = (f"cd {project} && env XDG_STATE_HOME={tmp_path / 'state'} XDG_CONFIG_HOME={tmp_path / 'config'} "
               f"TERM=xterm-256color {DEVTUNNEL} up --db {tmp_path / 'captures.db'}; echo $? > {status}")
    tmux.start(command, 120, 30)
    return status


def test_up_opens_one_inspector_for_every_tunnel_and_its_app(tmp_path: Path, tmux: Tmux) -> None:  # noqa: F811
    web, api = free_port(), free_port()
    status = _up_in_tmux(tmp_path, tmux, {"web": web, "api": api})
    tmux.wait_showing(r"(?s)http://web\.localhost:\d+.*app ready.*http://api\.localhost:\d+.*app ready", timeout=45,
                      what="both tunnels with their apps ready")
    assert _accepts(web) and _accepts(api)
    tmux.run("send-keys", "-t", "e2e", "q")
    assert exit_status(status) == "0"
    wait_for(lambda: not _accepts(web) and not _accepts(api), timeout=20, what="both apps stopped")


def _app_pid(port: int) -> str:
    """The pid the app answers with; "" while nothing answers."""
    answer = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /pid HTTP/1.0\r\nHost: x\r\n\r\n")
            while chunk := s.recv(4096):
                answer += chunk
    except OSError:
        return ""
    words = answer.partition(b"\r\n\r\n")[2].split()
    return words[1].decode() if len(words) > 1 else ""


def test_r_in_the_tunnels_panel_restarts_the_app_of_a_tunnel_from_the_settings_file(
        tmp_path: Path, tmux: Tmux) -> None:  # noqa: F811
    """R on a tunnel ``up`` started from devtunnel.toml starts its app again and keeps it: it
    stopped the tunnel and started one with the target alone, so the app was gone (502s)."""
    web = free_port()
    status = _up_in_tmux(tmp_path, tmux, {"web": web})
    tmux.wait_showing(r"http://web\.localhost:\d+.*online.*app ready", timeout=45, what="the app ready")
    first = _app_pid(web)
    tmux.run("send-keys", "-t", "e2e", "Tab")
    tmux.wait_showing(r"s Stop R Restart", timeout=10, what="the tunnels panel's keys")
    tmux.run("send-keys", "-t", "e2e", "R")
    wait_for(lambda: _app_pid(web) not in ("", first), timeout=30, what="the app started again")
    tmux.wait_showing(r"http://web\.localhost:\d+.*online.*app ready", timeout=30, what="the app ready again")
    tmux.run("send-keys", "-t", "e2e", "q")
    assert exit_status(status) == "0"
    wait_for(lambda: not _accepts(web), timeout=20, what="the app stopped")


def test_requests_held_for_a_starting_app_are_counted_on_screen_then_go_through(
        tmp_path: Path, tmux: Tmux) -> None:  # noqa: F811
    """The user's view of a restart under --hold: curl requests wait, the tunnels panel says how
    many, and once the app answers they get its answers and the count goes."""
    import re
    import subprocess

    port = free_port()
    ready = tmp_path / "ready"
    status = tmp_path / "status"
    command = (f"env XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color "
               f"{DEVTUNNEL} http {port} --run '{sys.executable} {APP} {port} --ready-file {ready}' "
               f"--health /healthz --hold 30s --db {tmp_path / 'captures.db'} --name shop; echo $? > {status}")
    tmux.start(command, 140, 30)
    screen = tmux.wait_showing(r"http://shop\.localhost:\d+.*online.*app starting", timeout=45,
                               what="the tunnel online, its app starting")
    found = re.search(r"http://shop\.localhost:(\d+)", screen)
    assert found is not None
    relay = found.group(1)
    curls = [subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30",
                               "-H", f"Host: shop.localhost:{relay}", f"http://127.0.0.1:{relay}/webhooks/{i}"],
                              stdout=subprocess.PIPE) for i in range(3)]
    try:
        tmux.wait_showing(r"3 requests held  app starting", timeout=20, what="the three requests counted")
        ready.touch()
        assert [curl.communicate(timeout=30)[0] for curl in curls] == [b"200"] * 3
    finally:
        for curl in curls:
            if curl.poll() is None:
                curl.kill()
                curl.wait()
    tmux.wait_showing(r"app ready", timeout=20, what="the app ready")
    wait_for(lambda: "held" not in tmux.screen(), timeout=10, what="the count gone")
    tmux.run("send-keys", "-t", "e2e", "q")
    assert exit_status(status) == "0"
