"""An app that crashes at once, run with ``devtunnel http PORT --run CMD --no-tui`` as a real
subprocess: a crash loop is one log line per attempt, and a held request is told the app has not
come up (not that it is restarting)."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtunnel.agent.app_runner import AppLines
from tests.helpers import free_port, wait_for
from tests.kit.procs import env, procs  # noqa: F401  (fixtures)
from tests.kit.procs import FORWARDING, Proc, start

CRASH = "echo boom >&2; exit 3"
ATTEMPTS = 4
"""Crashes watched: the first run's and three restarts' (the backoff grows to a few seconds)."""


def _app_lines(proc: Proc) -> list[str]:
    """The agent's lines about the app, without their time and tunnel (``app crashed (...)``)."""
    return [re.sub(r"^\S+ tunnel \S+: ", "", line) for line in list(proc.err) if re.search(r" tunnel \S+: app ", line)]


@pytest.fixture
def crashing(procs: list[Proc], env: dict[str, str], tmp_path: Path) -> Iterator[Proc]:  # noqa: F811
    proc = start(procs, env, "http", str(free_port()), "--no-tui", "--api-port", "0", "--db", str(tmp_path / "c.db"),
                 "--run", CRASH, "--hold", "1s")
    proc.line(lambda l: FORWARDING.match(l) is not None)
    yield proc
    if proc.popen.poll() is None:
        assert proc.stop(signal.SIGTERM) == 0


def test_a_crash_loop_is_one_line_per_attempt_counted(crashing: Proc) -> None:
    """It was three lines per attempt (starting, crashed, restarting), forever: 19 lines in 20 s."""
    wait_for(lambda: sum(l.startswith("app crashed") for l in _app_lines(crashing)) >= ATTEMPTS,
             timeout=60, what=f"{ATTEMPTS} crashes said")
    lines = _app_lines(crashing)
    crashes = [l for l in lines if l.startswith("app crashed")]
    # Each line of the first ATTEMPTS attempts, in order: the start, then one per crash.
    first = lines[: ATTEMPTS + 1]
    assert first[0] == "app starting", lines
    assert re.fullmatch(r"app crashed \(exited with code 3: boom; restarting in \d+\.\d s\)", first[1]), lines
    for n, line in enumerate(first[2:], start=2):
        assert re.fullmatch(rf"app crashed again \({n} times in a row; exited with code 3: boom; restarting in \d+\.\d s\)",
                            line), lines
    assert len(lines) == 1 + len(crashes), lines  # no "starting" per restart, no separate "crashed"


def test_a_request_held_for_an_app_that_never_came_up_is_not_told_it_is_restarting(crashing: Proc) -> None:
    """A crash at start (or a wrong port) was "local app restarting: the app is still down after 1 s":
    it has never been up, so it is not restarting. The error kind stays app_restarting."""
    wait_for(lambda: any(l.startswith("app crashed") for l in _app_lines(crashing)), timeout=30, what="a crash")
    match = FORWARDING.match(crashing.line(lambda l: FORWARDING.match(l) is not None))
    assert match is not None
    with httpx.Client(timeout=20, trust_env=False) as client:
        response = client.get(f"http://127.0.0.1:{match.group(3)}/hook",
                              headers={"Host": f"{match.group(2)}.localhost:{match.group(3)}"})
    assert response.status_code == 503, response.text
    assert response.headers["X-Devtunnel-Error"] == "app_restarting"
    assert response.text.startswith("local app not up yet: the app has not come up in 1 s ("), response.text
    assert "restarting:" not in response.text


# The lines, state by state, as the supervisor changes them -----------------------------------------


def _said(changes: list[tuple[str, str]]) -> list[str]:
    lines = AppLines()
    return [said for state, message in changes if (said := lines.line(state, message)) is not None]


def test_a_crash_is_said_with_its_restart_and_counting_starts_again_once_ready() -> None:
    crash = ("crashed", "exited with code 1: boom")
    assert _said([
        ("starting", ""), crash, ("restarting", "exited with code 1: boom; restarting in 0.5 s"),
        ("starting", ""), crash, ("restarting", "exited with code 1: boom; restarting in 1.1 s"),
        ("starting", ""), ("ready", ""),
        crash, ("restarting", "exited with code 1: boom; restarting in 0.4 s"), ("starting", ""), ("ready", ""),
        ("stopped", ""),
    ]) == [
        "app starting",
        "app crashed (exited with code 1: boom; restarting in 0.5 s)",
        "app crashed again (2 times in a row; exited with code 1: boom; restarting in 1.1 s)",
        "app ready (after 2 restarts)",
        "app crashed (exited with code 1: boom; restarting in 0.4 s)",
        "app ready (after 1 restart)",
        "app stopped",
    ]


def test_a_start_that_has_something_to_say_is_said_in_a_crash_loop_too() -> None:
    note = "port 8000 accepts no connection after 15 s: does the app listen on 127.0.0.1:8000?"
    assert _said([
        ("starting", ""), ("crashed", "exited with code 1"), ("restarting", "exited with code 1; restarting in 0.5 s"),
        ("starting", ""), ("starting", note), ("starting", note), ("exited", "ended cleanly with code 0: not restarted"),
    ]) == [
        "app starting",
        "app crashed (exited with code 1; restarting in 0.5 s)",
        f"app starting ({note})",
        "app exited (ended cleanly with code 0: not restarted)",
    ]
