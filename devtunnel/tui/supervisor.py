"""Starts the agent as a child process, finds its API, and starts it again when it dies.

The inspector never carries traffic: the agent runs in its own process, writing to a log file
(never to the terminal the inspector draws on), so a slow or crashed screen cannot slow or
drop requests, and a crashed agent loses nothing (captures are in SQLite).

The agent says where its API is on a pipe of its own, as systemd's ``NOTIFY_SOCKET`` tells a
service where to say it is ready: the supervisor passes the pipe's write end and names it in
``DEVTUNNEL_API_FD``; the agent writes ``API http://127.0.0.1:PORT`` there once (and prints it
to the log as before) and closes it. The agent's output stays out of the inspector's process:
a pipe through it would stall the agent behind a busy screen and break under it when the
inspector dies first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from devtunnel.exit_codes import EXIT_TUNNEL_REFUSED
from devtunnel.lifetime import follow_parent
from devtunnel.values.app_state import exit_words
from devtunnel.values.numbers import is_decimal
from devtunnel.values.paths import PRIVATE_FILE_MODE, make_private_folder

AgentState = Literal["starting", "running", "restarting", "stopped", "failed"]

_API_LINE = re.compile(rb"^API (http://127\.0\.0\.1:\d+)\s*$", re.MULTILINE)

API_FD_ENV = "DEVTUNNEL_API_FD"
"""Names the file descriptor a supervised agent writes its ``API http://127.0.0.1:PORT`` line to."""
SUPERVISOR_ENV = "DEVTUNNEL_SUPERVISOR_PID"
"""The inspector's process id, given to the agent it starts: the agent stops when that process
dies, even killed (``follow_supervisor``)."""


@dataclass(frozen=True)
class AgentStatus:
    """What the supervisor knows about its child."""

    state: AgentState
    pid: int | None = None
    api_url: str | None = None
    restarts: int = 0
    """How many times the agent was started again after it died."""
    message: str = ""
    """Why it is restarting (exit code or start failure), for the status line."""


def agent_command(*args: str) -> list[str]:
    """The argv that runs ``devtunnel ARGS`` with this interpreter."""
    return [sys.executable, "-m", "devtunnel", *args]


AGENT_LOG_MAX = 8 << 20
"""Bytes of the agent's log after which the next start moves it to ``agent.log.1`` (replacing
the one before) and begins a new one: every session appends to it, and an agent's warnings
across months of sessions would otherwise grow it without end."""


def keep_log_bounded(path: Path, limit: int = AGENT_LOG_MAX) -> None:
    """Move ``path`` to ``path.1`` when it holds more than ``limit`` bytes (best effort: a log
    that cannot be moved is appended to as before)."""
    try:
        if path.stat().st_size > limit:
            path.replace(path.with_name(path.name + ".1"))
    except OSError:
        pass


class AgentSupervisor:
    """Keeps one agent process running until ``stop()``.

    Args:
        argv: the agent's command line (or a function called before each start that returns it);
            the agent must write ``API http://127.0.0.1:PORT`` to the pipe ``DEVTUNNEL_API_FD``
            names (``tell_api_pipe``).
        log_path: the file that receives the agent's stdout and stderr (appended; moved to
            ``NAME.1`` at a start when it is over ``AGENT_LOG_MAX``).
        on_change: called (in the event loop) with the new status on every change.
        env: variables the agent gets on top of this process's environment (which is left as it is).
        ready_timeout: seconds to wait for the API line before killing and retrying.
        max_backoff: longest pause between two restarts.
        hurry_after: seconds after SIGTERM before a second SIGTERM, which tells the agent to
            stop waiting for the requests it lets finish (it waits up to ``LEAVE_GRACE``, 5 s, on
            the first) and to shut down now, its recorder's last writes included.
        stop_grace: seconds after the second SIGTERM before SIGKILL.
    """

    def __init__(self, argv: Sequence[str] | Callable[[], Sequence[str]], log_path: Path, on_change: Callable[[AgentStatus], object],
                 *, env: Mapping[str, str] | None = None, ready_timeout: float = 20.0, max_backoff: float = 10.0,
                 hurry_after: float = 2.0, stop_grace: float = 5.0) -> None:
        self._argv = argv
        self.env = dict(env or {})
        self.log_path = Path(log_path)
        self._on_change = on_change
        self.ready_timeout = ready_timeout
        self.max_backoff = max_backoff
        self.hurry_after = hurry_after
        self.stop_grace = stop_grace
        self.status = AgentStatus("stopped")
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._offset = 0

    def _set(self, **changes: object) -> None:
        self.status = replace(self.status, **changes)  # type: ignore[arg-type]
        self._on_change(self.status)

    def start(self) -> None:
        """Start the agent and keep it running (returns at once)."""
        self._stopping = False
        self._stopped = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="agent-supervisor")

    async def _run(self) -> None:
        backoff = 0.25
        while not self._stopping:
            started = time.monotonic()
            try:
                returncode = await self._run_once()
            except OSError as exc:
                returncode, message = None, f"could not start the agent: {exc}"
            else:
                message = f"agent {exit_words(returncode)}"
                if last := self._last_line():
                    message += f": {last}"
            if self._stopping:
                break
            if returncode == EXIT_TUNNEL_REFUSED:
                # The relay refused the tunnel for good (token, name): starting again would only
                # be refused again, or take the name back from the agent that holds it now.
                self._set(state="failed", pid=None, api_url=None, message=message)
                return
            if time.monotonic() - started > 30:
                backoff = 0.25  # it ran fine for a while: this is a fresh failure
            self._set(state="restarting", pid=None, api_url=None, restarts=self.status.restarts + 1,
                      message=message)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), backoff)
            backoff = min(self.max_backoff, backoff * 2)
        self._set(state="stopped", pid=None, api_url=None)

    async def _run_once(self) -> int | None:
        argv = list(self._argv() if callable(self._argv) else self._argv)
        make_private_folder(self.log_path.parent)
        keep_log_bounded(self.log_path)
        api_read, api_write = os.pipe()
        try:
            # The agent's log lines name every request: the user's alone, as the captures are.
            with open(os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE), "ab") as log:
                log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {' '.join(argv)}\n".encode())
                log.flush()
                self._offset = log.tell()
                self._process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(api_write,),
                    # its own session: a ctrl-c meant for the terminal is the inspector's to handle
                    start_new_session=True,
                    env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1", API_FD_ENV: str(api_write),
                         SUPERVISOR_ENV: str(os.getpid())},
                )
        except BaseException:
            os.close(api_read)
            raise
        finally:
            os.close(api_write)  # the agent holds its own copy: the pipe ends when it closes it or exits
        process = self._process
        self._set(state="starting", pid=process.pid, api_url=None)
        api_url = await self._wait_for_api(process, api_read)
        if api_url is None and process.returncode is None and not self._stopping:
            self._set(message=f"no API line after {self.ready_timeout:.0f}s; see {self.log_path}")
            await self._terminate(process)
        elif api_url is not None:
            self._set(state="running", api_url=api_url, message="")
        return await process.wait()

    def _last_line(self) -> str:
        """The agent's last line of output in this run (usually why it stopped), cut to 200 chars."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(self._offset, log.seek(0, os.SEEK_END) - 4096))
                lines = [line.strip() for line in log.read().splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1].decode("utf-8", "replace")[:200] if lines else ""

    async def _wait_for_api(self, process: asyncio.subprocess.Process, api_read: int) -> str | None:
        """The API URL the agent writes to the pipe ``api_read`` (which this closes).

        None when the agent exits, ``stop()`` is called or ``ready_timeout`` passes before it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        reader = asyncio.StreamReader(limit=4096)
        pipe = open(api_read, "rb", buffering=0)  # the transport closes it
        try:
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        except BaseException:
            pipe.close()
            raise
        read = asyncio.ensure_future(_read_api_url(reader))
        ended = [asyncio.ensure_future(process.wait()), asyncio.ensure_future(self._stopped.wait())]
        try:
            await asyncio.wait([read, *ended], timeout=self.ready_timeout, return_when=asyncio.FIRST_COMPLETED)
            if read.done() and read.result() is None:
                # The pipe ended without the line: the agent is on its way out; say so once it is out.
                await asyncio.wait(ended, timeout=max(0.0, deadline - loop.time()),
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (read, *ended):
                waiting.cancel()
            transport.close()
        return read.result() if read.done() and not read.cancelled() else None

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        for patience in (self.hurry_after, self.stop_grace):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), patience)
                return
            except asyncio.TimeoutError:
                pass
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()

    async def stop(self) -> None:
        """Stop the agent (SIGTERM, then SIGKILL after a grace period) and stop restarting it."""
        self._stopping = True
        self._stopped.set()
        if self._process is not None:
            await self._terminate(self._process)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def kill_now(self, sig: int = signal.SIGKILL) -> None:
        """Signal the agent at once, without waiting (for when the event loop cannot run any more)."""
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)


async def _read_api_url(reader: asyncio.StreamReader) -> str | None:
    """The URL of the first API line on ``reader``; None if it ends (or overflows) first."""
    while True:
        try:
            line = await reader.readline()
        except (ValueError, OSError):  # a line longer than the reader's limit (not the agent's), a broken pipe
            return None
        if not line:
            return None
        if match := _API_LINE.match(line):
            return match.group(1).decode()


def take_api_pipe() -> int | None:
    """In the agent: the pipe its supervisor named in ``DEVTUNNEL_API_FD``, if any.

    Taken out of the environment, so the programs the agent runs do not see it, and made not
    inheritable, so they do not hold it either (uvloop passes every inheritable descriptor to
    the processes it starts): the supervisor takes the pipe's end for the agent going away, and
    an app started before the API line would keep it open. Anything but an open pipe is ignored.
    """
    value = os.environ.pop(API_FD_ENV, "")
    if not is_decimal(value):
        return None
    fd = int(value)
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return None
        os.set_inheritable(fd, False)
    except (OSError, OverflowError):  # OverflowError: a number no descriptor can have
        return None
    return fd


def follow_supervisor() -> None:
    """In the agent: stop (SIGTERM, the agent's own clean stop) when the inspector that started
    it dies, however it dies. The inspector runs the agent in a session of its own (a ctrl-c is
    the inspector's), so neither a closed terminal nor a killed inspector would reach it
    otherwise, and the agent would keep the tunnel, the API port and the apps it runs. Linux
    only; the variable is taken out of the environment, as ``take_api_pipe`` does."""
    value = os.environ.pop(SUPERVISOR_ENV, "")
    if is_decimal(value):
        follow_parent(int(value))


def tell_api_pipe(fd: int | None, url: str) -> None:
    """In the agent: write ``API URL`` to its supervisor's pipe (from ``take_api_pipe``) and close it."""
    if fd is None:
        return
    try:
        os.write(fd, f"API {url}\n".encode())
    except OSError:
        pass  # the supervisor is gone
    finally:
        os.close(fd)
