"""The states of an app devtunnel runs (``--run``), as ``/api/tunnels`` names them and the panel says them.

One table for the supervisor (``agent.children``), the agent's hold messages and the inspector::

    starting    started; waiting for its port or health path
    ready       answering
    crashed     exited with a non-zero status or by a signal; restarted after a wait
    restarting  crashed, waiting to start again
    exited      ended cleanly (status 0): not restarted, as docker compose's ``on-failure``
                and systemd's ``Restart=on-failure`` leave it; restart it by hand
    stopped     stopped by devtunnel (its tunnel stopped, devtunnel exiting)
    failed      could not be started at all (no such program): not retried
"""

from __future__ import annotations

import signal

__all__ = ["APP_STATES", "app_state_public", "app_state_words", "exit_state", "exit_words", "restarting_message"]

APP_STATES = ("starting", "ready", "crashed", "restarting", "exited", "stopped", "failed")
"""Every state, in the order of the table above."""


def exit_state(code: int) -> str:
    """The state of an app that exited with ``code`` (negative: killed by that signal)."""
    return "exited" if code == 0 else "crashed"


def exit_words(code: int) -> str:
    """How a process ended, from its return code: ``exited with code 1``, or for a negative
    code (``subprocess``'s for a signal) ``killed by SIGTERM``, not ``exited with code -15``.

    An app runs under ``/bin/sh -c``, and a shell whose command a signal killed exits with
    128 + the signal: ``exited with code 143, its command killed by SIGTERM``. The code stays
    first (a program may exit 143 itself); the words say what it most often means."""
    if code > 128:
        try:
            return f"exited with code {code}, its command killed by {signal.Signals(code - 128).name}"
        except ValueError:
            return f"exited with code {code}"
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


_RESTART_AFTER = "; restarting in "


def restarting_message(exited: str, wait: float) -> str:
    """The message of an app waiting to start again: how it ended (``exit_words`` and its last
    line on stderr) and when it starts again: ``exited with code 1: ...; restarting in 1.2 s``."""
    return f"{exited}{_RESTART_AFTER}{wait:.1f} s"


def app_state_words(state: str, *, restarts: int = 0, exit_code: int | None = None, message: str = "") -> str:
    """``ready``, ``restarting (2)``, ``exited (0)``, ``failed: cannot start ...``: a state as it is shown.

    ``message`` (the reason the supervisor gave) follows a failure, a crash or a start; it is
    the caller's to escape for its screen.
    """
    if state == "restarting":
        # How it ended, not when it starts again: a line drawn once would keep a stale "in 1.2 s".
        why = message.rpartition(_RESTART_AFTER)[0] if _RESTART_AFTER in message else message
        return f"restarting ({restarts})" + (f": {why}" if why else "")
    if state == "exited":
        return f"exited ({0 if exit_code is None else exit_code})"
    if state in ("failed", "crashed", "starting") and message:
        return f"{state}: {message}"
    return state


_QUOTING = ("crashed", "restarting")
"""States whose message quotes what the app wrote: how its run ended, with its last line on
stderr. The others' are devtunnel's own words (``the app says it listens on
http://localhost:5173/, not on port 8000: ...``, a local URL read as one; ``ended cleanly with
code 0``; ``cannot start /bin/sh: ...``), which the developer reading a 502 in a browser needs."""


def app_state_public(state: str, *, restarts: int = 0, exit_code: int | None = None, message: str = "") -> str:
    """The app's state in devtunnel's words alone, for the public client of a 502 or 503:
    ``restarting (2): exited with code 1``, ``starting``, ``exited (0): ended cleanly ...``.

    Never what the app wrote: a crash's message quotes its last line on stderr, and the app's
    output is the developer's, not something to hand to whoever calls the public URL (a
    traceback line may name a file, a host or a key). The record and the inspector keep the
    whole message."""
    words = app_state_words(state, restarts=restarts, exit_code=exit_code)
    if state not in _QUOTING:
        return f"{words}: {message}" if message else words
    if exit_code is not None:
        words += f": {exit_words(exit_code)}"
    return words
