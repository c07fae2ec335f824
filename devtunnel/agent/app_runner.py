"""The local app a tunnel runs (``--run CMD``): started, watched, waited for, restarted, stopped.

The command is the user's own, run as ``/bin/sh -c CMD`` in the current folder, in a process
group of its own (see ``children.Child``), with this process's environment plus ``PORT`` (the
target's port) and ``DEVTUNNEL_TUNNEL`` (the tunnel's name). It is ready when ``health`` (a path
on the target) answers 2xx or 3xx, or without ``health`` when the target's port accepts a
connection. It is restarted when it crashes, not when it ends cleanly (status 0: ``exited``,
``devtunnel.values.app_state``), as docker compose's ``restart: on-failure``. Every change of state reaches the tunnel's :class:`~devtunnel.agent.hold.HoldGate`,
which holds requests while the app is not ready, and the tunnel's subscribers (API, inspector).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import ssl
import time
from collections.abc import Callable
from typing import Any

from devtunnel.errors import ConfigError
from devtunnel.agent.children import Child, ChildState, LogLine, LogRing, port_accepts
from devtunnel.agent.forward import ipv6_loopback_hint
from devtunnel.values.app_state import app_state_public, app_state_words, exit_words
from devtunnel.agent.hold import HoldGate
from devtunnel.values.target import Target
from devtunnel.values.health_path import health_path_problem

__all__ = ["HEALTH_TIMEOUT", "AppLines", "AppRunner", "app_json", "check_health_path", "health_status"]

LEFT_BEHIND_WAIT = 30.0
"""Seconds after the app exited with status 0 that its port is looked at (every
``LEFT_BEHIND_EVERY``) for a server it left running: a daemon listens once it has started, which
``docker compose up -d``'s containers or a busy machine's Python may take seconds to do."""
LEFT_BEHIND_EVERY = 0.2
_FINAL_STATES = ("exited", "failed")
"""States the app does not leave by itself (``R`` starts it again): requests are not held for it."""
GUARD = """trap "trap '' TERM; kill -TERM 0; sleep 5; kill -KILL 0" HUP; /bin/sh -c "$1" & wait $!"""
"""The shell devtunnel starts around the user's command (``$1``).

``/bin/sh -c CMD`` forks CMD rather than exec it, and the kernel's death signal reaches only the
process devtunnel started: the shell. So this shell guards the group: it runs the command in the
background and waits; when devtunnel dies (SIGHUP, its death signal) it stops its whole process
group, the app and everything the app started, as devtunnel itself would: SIGTERM, then SIGKILL
5 s later (the shell ignores the SIGTERM it sends, to be there for the SIGKILL), so an app that
ignores SIGTERM does not keep its port. A normal stop signals the group itself, once, and
``wait`` passes the command's exit status on. In the background of a
non-interactive shell the command starts with SIGINT and SIGQUIT ignored; apps that handle them
(uvicorn, node) install their own handlers, and devtunnel stops apps with SIGTERM.
"""

HEALTH_TIMEOUT = 2.0
"""Seconds one health check may take."""
_HEAD_LIMIT = 16 * 1024
_LOOPBACK_URL = re.compile(r"\bhttps?://(localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1?\]):(\d{1,5})\b(?:(?![)\"'<>])[!-~])*")
"""A local URL in the app's output: dev servers print where they listen (Vite's ``Local:
http://localhost:5173/``, ``Uvicorn running on http://127.0.0.1:8000``, Django's ``Starting
development server at http://127.0.0.1:8000/``). Printable ASCII only: the URL goes on into
the app's message, the API and a 502's body, where a control character or a bidi override in
the app's output must not ride along."""
NO_PORT_AFTER = 15.0
"""Seconds a started app may leave the target's port closed before its ``starting`` says so (an
app listening on another port than the target's was "starting" for ever, without a word)."""
LOOK_EVERY = 1.0
"""Seconds between two looks for where an app that is not ready listens instead."""
_SHELL_HINTS = {
    127: "exit code 127: the shell found no such command; check the run command and the PATH",
    126: "exit code 126: the command is not executable",
}


def check_health_path(path: str) -> str:
    """``path`` if it is a usable health path (``/healthz``, ``/ready?full=1``).

    Raises:
        ConfigError: it does not start with ``/``, or holds spaces, control or non-ASCII characters.
    """
    problem = health_path_problem(path)
    if problem is not None:
        raise ConfigError(f"health: {problem}")
    return path


async def health_status(target: Target, path: str, timeout: float = HEALTH_TIMEOUT) -> int | None:
    """The status ``GET path`` on the target answers within ``timeout``; None without an answer."""
    ctx: ssl.SSLContext | None = None
    if target.tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False  # our own app on loopback: whether it answers is the question
        ctx.verify_mode = ssl.CERT_NONE
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(target.host, target.port, ssl=ctx,
                                                           server_hostname=target.host if ctx else None)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {target.authority}\r\nUser-Agent: devtunnel-health\r\n"
                         "Connection: close\r\n\r\n".encode("ascii"))
            line = await reader.readuntil(b"\n")
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
    parts = line[:_HEAD_LIMIT].split(None, 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() and len(parts[1]) == 3:
        return int(parts[1])
    return None


def app_json(state: ChildState, *, command: str, health: str | None, hold: float, log_lines: int,
             waiting: int = 0, ready_count: int = 0) -> dict[str, Any]:
    """The ``app`` object of a tunnel in ``/api/tunnels`` (``waiting``: requests held right now;
    ``ready_count``: how many times the app became ready since the agent started it)."""
    return {
        "command": command,
        "state": state.state,
        "pid": state.pid,
        "restarts": state.restarts,
        "exit_code": state.exit_code,
        "message": state.message,
        "since": state.since,
        "health": health,
        "hold": hold,
        "log_lines": log_lines,
        "waiting": waiting,
        "ready_count": ready_count,
    }


class AppLines:
    """The agent's log lines for one app's changes of state (``devtunnel http --no-tui``).

    A change is one line (``app starting``, ``app ready``, ``app stopped``), but a crash loop is
    one line per attempt, not three (``starting``, ``crashed``, ``restarting``, forever): a crash
    is said with the restart that follows it, which tells how the run ended and when the next
    starts (``app crashed (exited with code 3: boom; restarting in 0.9 s)``), later ones counted
    (``app crashed again (3 times in a row; ...)``), and the start of each restart goes unsaid
    unless it has something to say. Counting starts again once the app is ready.
    """

    def __init__(self) -> None:
        self._last: tuple[str, str] | None = None
        self._crashes = 0
        """Crashes since the app was last ready (or started)."""

    def line(self, state: str, message: str) -> str | None:
        """The line for the app now in ``state`` with ``message`` (the supervisor's), or None:
        nothing new to say. The caller escapes it (``message`` may quote the app)."""
        if self._last == (state, message):
            return None
        self._last = (state, message)
        if state == "crashed":  # the supervisor moves on to restarting at once, saying how it ended
            return None
        if state == "restarting":
            self._crashes += 1
            if self._crashes == 1:
                return f"app crashed ({message})" if message else "app crashed"
            return f"app crashed again ({self._crashes} times in a row" + (f"; {message})" if message else ")")
        if state == "starting" and self._crashes and not message:
            return None  # the restart its crash's line announced
        crashes = self._crashes
        if state != "starting":  # (a start that says something, such as a port already taken, goes on counting)
            self._crashes = 0
        if state == "ready" and crashes:
            return f"app ready (after {crashes} restart{'s' if crashes != 1 else ''})"
        return f"app {state}" + (f" ({message})" if message else "")


class AppRunner:
    """Runs one tunnel's app (see the module's docstring).

    Args:
        command: the shell command line.
        target: where the app listens (readiness is checked there).
        health: a path answering 2xx/3xx when ready, or None to wait for the port.
        gate: told whether the app is ready.
        on_change: called after every change of state.
        env: extra environment variables.
        cwd: the working folder (default: the current one).
        backoff, grace: as ``Child`` takes them.
    """

    def __init__(
        self,
        command: str,
        target: Target,
        *,
        health: str | None = None,
        gate: HoldGate | None = None,
        on_change: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        grace: float = 5.0,
    ) -> None:
        self.command = command
        self.target = target
        self.health = check_health_path(health) if health else None
        self.gate = gate
        self._on_change = on_change
        environment = {**os.environ, "PORT": str(target.port), **(env or {})}
        self.log = LogRing()
        self.log.subscribe(self._line)
        self._said: tuple[str, str, int] | None = None
        """The last local URL the app printed, its host to connect to and its port."""
        self._next_look = 0.0
        self._found = False
        """The last look (``_elsewhere``) said where the app listens instead."""
        self._last_exit = ("", "")
        """How the app's last run ended until it is ready again: as the supervisor said it
        (``exited with code 1: ...``, quoting the app) and in devtunnel's words alone."""
        self._left_behind: asyncio.Task[None] | None = None
        """The look for a server the app left on its port as it exited (``_say_left_behind``)."""
        self._starting_since: float | None = None
        """When this run's ready checks began (``time.monotonic``); None while it is not starting."""
        self.ready_count = 0
        """How many times the app became ready since the agent started (a restart that never got
        there does not count): 0 while it has never been, whose requests are told "not up yet"."""
        self._ready_now = False
        self.child = Child("app", ["/bin/sh", "-c", GUARD, "sh", command], env=environment, cwd=cwd, log=self.log,
                           ready=self._ready, ready_interval=0.1, on_state=self._state_changed,
                           before_start=self._port_taken, restart="on-failure",
                           backoff=backoff, grace=grace, death_signal=signal.SIGHUP, crash_line=True)

    @property
    def state(self) -> ChildState:
        """What the supervisor knows now."""
        return self.child.state

    @property
    def state_text(self) -> str:
        """``starting``, ``ready``, ``restarting (2)``, ``exited (0)`` ... as the panel shows it."""
        state = self.child.state
        return app_state_words(state.state, restarts=state.restarts, exit_code=state.exit_code)

    async def _ready(self) -> bool:
        if self._starting_since is None:
            self._starting_since = time.monotonic()
        if not await port_accepts(self.target.host, self.target.port):
            if not await self._elsewhere() and time.monotonic() - self._starting_since >= NO_PORT_AFTER:
                self.child.note(f"port {self.target.port} accepts no connection after {NO_PORT_AFTER:g} s: does the "
                                f"app listen on {self.target.host}:{self.target.port}? (it gets PORT={self.target.port})")
            return False
        if self.health:
            status = await health_status(self.target, self.health)
            if status is not None and not 200 <= status < 400:
                # The app answers, but not ready: say so, or "starting" forever hides a wrong path.
                self.child.note(f"health {self.health} answered {status}, not 2xx/3xx")
            elif status is None and await port_accepts(self.target.host, self.target.port):
                # The port accepts but the check got no status line: as silent a "starting".
                self.child.note(f"health {self.health} gave no answer within {HEALTH_TIMEOUT:g} s"
                                " (the port accepts connections)")
            return status is not None and 200 <= status < 400
        return True

    def _line(self, line: LogLine) -> None:
        if line.stream != "devtunnel" and "://" in line.text:
            found = _LOOPBACK_URL.search(line.text)
            if found is not None:
                host = found.group(1)
                self._said = (found.group(0), "127.0.0.1" if host in ("0.0.0.0", "[::]") else host.strip("[]"),
                              int(found.group(2)))

    async def _elsewhere(self) -> bool:
        """The target's port does not accept: say where the app listens instead, once it is found.

        A dev server that picked a port of its own (Vite's 5173 for a tunnel to 8000, Next's 3001
        when 3000 is taken) prints its URL; one that took ``localhost`` as ``[::1]`` listens one
        address away. Without this the app stays ``starting`` with nothing said. True when it
        said so (at the last look, between looks)."""
        now = time.monotonic()
        if now < self._next_look:
            return self._found
        self._next_look = now + LOOK_EVERY
        self._found = True
        said = self._said
        if said is not None and said[2] != self.target.port and await port_accepts(said[1], said[2]):
            url, host, port = said
            target = f"{url.split('://', 1)[0]}://[::1]:{port}" if host == "::1" else str(port)
            self.child.note(f"the app says it listens on {url}, not on port {self.target.port}: give devtunnel"
                            f" the target {target}, or have the app listen on port {self.target.port}")
            return True
        ipv6 = (await ipv6_loopback_hint(self.target)).strip()
        if ipv6:
            self.child.note(ipv6)
            return True
        self._found = False
        return False

    async def _port_taken(self) -> str:
        """Before each start: what holds the target's port already, said, not taken for the app.

        The group of the app's last run has ended by then, so what answers is another process
        (an earlier server left running in another terminal): the app will fail to listen, and
        without ``health`` the port answering would read as ``ready`` while requests go to it."""
        if not await port_accepts(self.target.host, self.target.port):
            return ""
        return (f"port {self.target.port} was already taken when the app started: requests go to the"
                " process holding it, and the app may fail to listen there")

    def _state_changed(self, state: ChildState) -> None:
        if state.state != "starting":
            self._starting_since = None
        if state.state == "ready" and not self._ready_now:  # (a note while ready says it again)
            self.ready_count += 1
        self._ready_now = state.state == "ready"
        if state.state == "crashed" and state.exit_code in _SHELL_HINTS:
            self.log.add("devtunnel", _SHELL_HINTS[state.exit_code])
        if state.state == "exited" and self._left_behind is None:
            self._left_behind = asyncio.create_task(self._say_left_behind(), name="app-left-behind")
        if self.gate is not None:
            # A request's 502 while the app is not ready says why (``the app says it listens on ...``).
            ready = state.state == "ready"
            said = self.state_text if ready or not state.message else f"{self.state_text}: {state.message}"
            public = app_state_public(state.state, restarts=state.restarts, exit_code=state.exit_code, message=state.message)
            if state.state == "crashed":
                self._last_exit = (state.message, exit_words(state.exit_code) if state.exit_code is not None else "")
            elif ready:
                self._last_exit = ("", "")
            elif state.state == "starting" and self._last_exit[0]:
                # A crash loop is "starting" half the time: why it keeps going down still shows.
                said += f"; its last run {self._last_exit[0]}"
                if self._last_exit[1]:
                    public += f"; its last run {self._last_exit[1]}"
            self.gate.set_app_state(ready, said, public=public, final=state.state in _FINAL_STATES)
        if self._on_change is not None:
            self._on_change()

    async def _say_left_behind(self) -> None:
        """The app exited with status 0: a server still on its port is one it left running
        (``--daemon``, ``docker compose up -d``): requests go to it, and devtunnel cannot stop it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEFT_BEHIND_WAIT
        try:
            # A daemon may listen a while after its parent exited; a restart (R) ends the look.
            while not await port_accepts(self.target.host, self.target.port):
                if loop.time() >= deadline or self.child.state.state != "exited":
                    return
                await asyncio.sleep(LEFT_BEHIND_EVERY)
            if self.child.state.state == "exited":
                self.child.note(f"ended cleanly with code 0, but port {self.target.port} still accepts connections:"
                                " a process the app left running (daemonized) answers requests, and devtunnel"
                                " cannot stop it when it stops; run the server in the foreground")
        finally:
            self._left_behind = None

    def start(self) -> None:
        """Start the app (in the running loop); returns at once."""
        if self.gate is not None:
            self.gate.set_app_state(False, "starting")
        self.child.start()

    async def stop(self) -> None:
        """Stop the app and every process it started."""
        if self._left_behind is not None:
            self._left_behind.cancel()
        await self.child.stop()

    async def restart(self) -> None:
        """Stop the running app; it is started again at once."""
        await self.child.restart_now()

    def json(self, hold: float) -> dict[str, Any]:
        """The ``app`` object of ``/api/tunnels``."""
        return app_json(self.child.state, command=self.command, health=self.health, hold=hold,
                        log_lines=len(self.log), waiting=self.gate.waiting if self.gate is not None else 0,
                        ready_count=self.ready_count)
