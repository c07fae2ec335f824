"""How a process devtunnel runs ended, as the log, the panel and the API say it."""

from __future__ import annotations

import pytest

from devtunnel.values.app_state import app_state_public, app_state_words, exit_state, exit_words, restarting_message


@pytest.mark.parametrize(("code", "words", "state"), [
    (0, "exited with code 0", "exited"),
    (1, "exited with code 1", "crashed"),
    (-15, "killed by SIGTERM", "crashed"),
    (-9, "killed by SIGKILL", "crashed"),
    (-200, "killed by signal 200", "crashed"),  # a number that names no signal
    (143, "exited with code 143, its command killed by SIGTERM", "crashed"),  # sh -c's 128 + 15
    (137, "exited with code 137, its command killed by SIGKILL", "crashed"),
    (128, "exited with code 128", "crashed"),
    (255, "exited with code 255", "crashed"),  # 127 names no signal (ssh's own error code)
])
def test_a_signal_is_named_not_given_as_a_negative_exit_code(code: int, words: str, state: str) -> None:
    assert exit_words(code) == words
    assert exit_state(code) == state


def test_a_restarting_app_is_said_with_how_it_ended_not_when_it_starts_again() -> None:
    message = restarting_message("exited with code 1: ModuleNotFoundError: No module named 'fastapi'", 1.23)
    assert message == "exited with code 1: ModuleNotFoundError: No module named 'fastapi'; restarting in 1.2 s"
    assert app_state_words("restarting", restarts=2, message=message) == (
        "restarting (2): exited with code 1: ModuleNotFoundError: No module named 'fastapi'")
    assert app_state_words("restarting", restarts=2) == "restarting (2)"  # the hold messages pass none


@pytest.mark.parametrize(("state", "restarts", "code", "message", "public"), [
    ("restarting", 2, 1, "exited with code 1: KeyError: 'sk_live_123'; restarting in 1.2 s", "restarting (2): exited with code 1"),
    ("crashed", 0, -9, "killed by SIGKILL: Traceback in /srv/app.py", "crashed: killed by SIGKILL"),
    ("starting", 1, 1, "the app says it listens on http://localhost:5173/, not on port 8000",  # devtunnel's words
     "starting: the app says it listens on http://localhost:5173/, not on port 8000"),
    ("exited", 0, 0, "ended cleanly with code 0: not restarted", "exited (0): ended cleanly with code 0: not restarted"),
    ("failed", 0, None, "cannot start /bin/sh: No such file or directory", "failed: cannot start /bin/sh: No such file or directory"),
])
def test_what_public_clients_are_told_of_the_app_never_quotes_its_output(
    state: str, restarts: int, code: int | None, message: str, public: str
) -> None:
    assert app_state_public(state, restarts=restarts, exit_code=code, message=message) == public
