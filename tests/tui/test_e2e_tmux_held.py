"""End to end in a real terminal: a request held while the app devtunnel runs is not ready
(``--run`` with ``--hold``) shows as held on the inspector's table, not as a slow request in
flight, and its detail says how long it waited once the app is back."""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port
from tests.tui.test_e2e_tmux import DEVTUNNEL, Tmux, exit_status, tmux  # noqa: F401 - tmux is a fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

APP = Path(__file__).parent.parent / "net" / "app_fixture.py"


def test_a_request_held_for_the_app_shows_held_then_its_wait(tmp_path: Path, tmux: Tmux) -> None:  # noqa: F811
    port = free_port()
    ready = tmp_path / "ready"
    status = tmp_path / "status"
    command = (f"env XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color "
               f"{DEVTUNNEL} http {port} --run '{sys.executable} {APP} {port} --ready-file {ready}' "
               f"--health /healthz --hold 60s --db {tmp_path / 'captures.db'} --name shop; echo $? > {status}")
    tmux.start(command, 120, 30)
    screen = tmux.wait_showing(r"http://shop\.localhost:\d+.*app starting", timeout=45, what="the app starting")
    public = re.search(r"http://shop\.localhost:(\d+)", screen)
    assert public is not None
    answers: list[int] = []

    def get() -> None:  # held until the app is ready: a thread, so the test goes on meanwhile
        with httpx.Client(timeout=90, trust_env=False) as client:
            response = client.get(f"http://127.0.0.1:{public.group(1)}/orders",
                                  headers={"Host": f"shop.localhost:{public.group(1)}"})
            answers.append(response.status_code)

    thread = threading.Thread(target=get, daemon=True)
    thread.start()
    try:
        screen = tmux.wait_showing(r"GET +/orders +HLD", timeout=30, what="the request shown held")
        assert not re.search(r"/orders +…", screen)
        ready.touch()
        tmux.wait_showing(r"GET +/orders +200", timeout=30, what="the request answered once the app is ready")
        tmux.run("send-keys", "-t", "e2e", "Enter")
        # The detail's tabs, not "GET /orders": the table's row matched that at once, and the 3
        # sent then reached the table before the detail was open.
        tmux.wait_showing(r"Request +Response +Timing", timeout=10, what="the detail")
        tmux.run("send-keys", "-t", "e2e", "3")
        tmux.wait_showing(r"Held +\d+(\.\d+)? (ms|s) while the app was down", timeout=10, what="the wait in Timing")
    finally:
        ready.touch()  # the held request is let go whatever failed
        thread.join(30)
    assert answers == [200]
    tmux.run("send-keys", "-t", "e2e", "Escape")
    tmux.wait_showing(r"filter:", timeout=10, what="the table again")
    tmux.run("send-keys", "-t", "e2e", "q")
    assert exit_status(status) == "0"
