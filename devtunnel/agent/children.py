"""Child processes devtunnel runs and watches: the local app (``--run``) and public-URL providers.

A :class:`Child` starts its program in a process group of its own, keeps its output in a
bounded :class:`LogRing`, tells when it is ready, restarts it with backoff when it exits, and
stops the whole group (children included) when asked. What "ready" means is the owner's: a
health URL answering, a port accepting connections, or a line in the output (a provider's URL).

States (``devtunnel.values.app_state`` names them): ``starting`` -> ``ready`` -> (``crashed`` ->
``restarting`` -> ``starting`` ...) -> ``stopped``; ``exited`` after an exit with status 0 (restarted
only with ``restart="always"``); ``failed`` when the program cannot be started at all (missing
binary): no retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from devtunnel import lifetime
from devtunnel.values.app_state import exit_state, exit_words, restarting_message

__all__ = ["MAX_LINE", "PRIVATE_VARIABLES", "Child", "ChildState", "LogLine", "LogRing", "group_running", "port_accepts"]

MAX_LINE = 8192
"""Characters of one output line kept; a longer line is cut and marked with ``…``."""
SAID_LINE = 200
"""Characters of an output line a state's message quotes (``last_line``)."""
_STYLING = re.compile(r"\x1b\[[0-9;:]*[mKG]")
"""Colours and line clearing in a program's output (``ESC[32m``, ``ESC[2K``): dropped from its
lines, which are searched (``logs --grep``) and shown as text; any other escape stays, and is
escaped wherever a line is shown."""
STABLE_AFTER = 30.0
"""Seconds a child must run before its restart backoff starts again from the shortest wait."""


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a child's output."""

    time: float
    stream: str
    """``out`` or ``err``; ``devtunnel`` for the supervisor's own notes (started, exited ...)."""
    text: str


class LogRing:
    """The last lines of output, bounded in count and in characters; listeners see new lines."""

    def __init__(self, max_lines: int = 2000, max_chars: int = 1 << 20) -> None:
        self.max_lines = max_lines
        self.max_chars = max_chars
        self._lines: deque[LogLine] = deque()
        self._chars = 0
        self._listeners: list[Callable[[LogLine], None]] = []
        self.dropped = 0
        """Lines pushed out to stay within the bounds."""

    def add(self, stream: str, text: str, now: float | None = None) -> LogLine:
        """Keep one line (cut to ``MAX_LINE``) and tell the listeners."""
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + "…"
        line = LogLine(time.time() if now is None else now, stream, text)
        self._lines.append(line)
        self._chars += len(text)
        while len(self._lines) > self.max_lines or (self._chars > self.max_chars and len(self._lines) > 1):
            self._chars -= len(self._lines.popleft().text)
            self.dropped += 1
        for listener in list(self._listeners):
            listener(line)
        return line

    def __len__(self) -> int:
        return len(self._lines)

    def lines(self, contains: str | None = None) -> list[LogLine]:
        """The kept lines, oldest first; only those containing ``contains`` (case-insensitive) if given."""
        if not contains:
            return list(self._lines)
        needle = contains.lower()
        return [line for line in self._lines if needle in line.text.lower()]

    def subscribe(self, listener: Callable[[LogLine], None]) -> Callable[[], None]:
        """Call ``listener`` with every new line; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None


@dataclass(frozen=True, slots=True)
class ChildState:
    """What the supervisor knows about its child, for the tunnels panel and ``/api/tunnels``."""

    state: str = "stopped"
    pid: int | None = None
    restarts: int = 0
    exit_code: int | None = None
    message: str = ""
    since: float = field(default_factory=time.time)


async def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection at ``host:port``.

    ``asyncio.timeout``, not ``wait_for``: Python 3.11's ``wait_for`` cancelled as the connection
    is refused returns the refusal, which read as "not accepting" and lost the cancellation (a
    Ctrl-C while an app started then waited for the app to end by itself).
    """
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def group_running(pgid: int) -> bool:
    """True while a process of group ``pgid`` runs (zombies, exited but not yet reaped, do not count).

    Orphans are reaped by the system's init, which in a container or a VM may take seconds or
    never come: waiting for the group to be empty would then wait out every grace.
    """
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return True  # no /proc (macOS): the group exists, zombies or not
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False


class _ExitProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The protocol of ``create_subprocess_exec``, which also tells when the program exited.

    ``Process.wait()`` (Python 3.11) returns only once the output pipes closed too, which what
    the program started may keep open (a --reload server's worker).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)  # create_subprocess_exec's default limit
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


PRIVATE_VARIABLES = frozenset({"DEVTUNNEL_TOKEN"})
"""Variables of devtunnel's environment a child never gets: the relay token is devtunnel's alone.
An app (and each program it starts) would otherwise carry it, to print it with its environment
on a crash, send it to an error tracker or show it on a debug page served through the tunnel;
so would a provider's program (cloudflared, ssh). Nothing a child does needs it."""


class Child:
    """One supervised program (see the module's docstring).

    Args:
        name: what the log and messages call it (``app``, ``cloudflared``).
        argv: the program and its arguments (a shell command is ``["/bin/sh", "-c", CMD]``).
        env: the environment (default: this process's), less ``PRIVATE_VARIABLES``.
        cwd: the working directory.
        log: where output goes (a new ring by default).
        ready: an async check run every ``ready_interval`` seconds once started, until true;
            None means ready as soon as started. Lines can also make it ready: see ``on_line``.
        on_line: called with each output line; returning True marks the child ready.
        on_state: called with every new state.
        before_start: awaited before each start; a text it returns says something about this
            start (``port 8000 was already taken ...``): in the log, and the message of the
            ``starting`` and ``ready`` states that follow.
        restart: ``always`` restart after an exit; ``on-failure`` after an exit with a non-zero
            status or by a signal (one with status 0 stays ``exited``, as docker compose's
            policy of that name); ``no`` leaves it ``crashed`` or ``exited``.
        backoff: (first wait, longest wait) in seconds between restarts, with jitter.
        grace: seconds between SIGTERM and SIGKILL when stopping.
        die_with_parent: on Linux, the kernel sends the program SIGTERM if devtunnel dies without
            stopping it (killed outright): an app or a provider must not outlive devtunnel.
        crash_line: a crash's message ends with the last line the run wrote on stderr
            (``exited with code 1: ModuleNotFoundError: No module named 'app'``), so the one
            log line of a crash says why, not only that.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        log: LogRing | None = None,
        ready: Callable[[], Awaitable[bool]] | None = None,
        ready_interval: float = 0.1,
        on_line: Callable[[str], bool | None] | None = None,
        on_state: Callable[[ChildState], None] | None = None,
        before_start: Callable[[], Awaitable[str]] | None = None,
        restart: Literal["always", "on-failure", "no"] = "always",
        backoff: tuple[float, float] = (0.5, 30.0),
        grace: float = 5.0,
        rng: random.Random | None = None,
        die_with_parent: bool = True,
        death_signal: int = signal.SIGTERM,
        crash_line: bool = False,
    ) -> None:
        self.name = name
        self._crash_line = crash_line
        self.argv = list(argv)
        self.env = {k: v for k, v in (os.environ if env is None else env).items() if k not in PRIVATE_VARIABLES}
        self.cwd = cwd
        self.log = log if log is not None else LogRing()
        self._ready_check = ready
        self._ready_interval = ready_interval
        self._on_line = on_line
        self._on_state = on_state
        self._before_start = before_start
        self._start_note = ""
        self._restart = restart
        self._backoff = backoff
        self._grace = grace
        self._rng = rng or random.Random()
        self._preexec = lifetime.die_with_parent(death_signal) if die_with_parent else None
        self.state = ChildState()
        self.ready = asyncio.Event()
        """Set while the child is ready; cleared when it exits."""
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._asked_restart = False
        """``restart_now`` ended the run: it starts again whatever its status and the policy."""
        self._changed = asyncio.Event()
        self._ending: asyncio.Future[None] | None = None
        self._killed = ""
        """Said when the last group ended took SIGKILL (it outlived the grace after SIGTERM)."""

    def _set(self, **changes: object) -> None:
        self.state = replace(self.state, since=time.time(), **changes)  # type: ignore[arg-type]
        self._changed.set()
        if self._on_state is not None:
            self._on_state(self.state)

    def run_lines(self) -> Iterator[LogLine]:
        """This run's output (the last run's, once it ended), last line first."""
        for line in reversed(self.log.lines()):
            if line.stream == "devtunnel" and line.text.startswith("started "):
                return  # the lines before are an earlier run's
            yield line

    def last_line(self, *streams: str, passing_over: tuple[str, ...] = ()) -> str:
        """The last line of this run's output on ``streams`` that is not blank and does not start
        with one of ``passing_over``, stripped and cut to ``SAID_LINE`` characters ("" if none)."""
        text = next((line.text.strip() for line in self.run_lines() if line.stream in streams and line.text.strip()
                     and not line.text.startswith(passing_over)), "")
        return text if len(text) <= SAID_LINE else text[:SAID_LINE] + "…"

    def note(self, message: str) -> None:
        """Say why the child is in its state (``health /healthz answered 404``), in the log once."""
        if message != self.state.message:
            self.log.add("devtunnel", message)
            self._set(message=message)

    async def wait_state(self, *states: str, timeout: float) -> ChildState:
        """Wait until the state is one of ``states``; raises ``TimeoutError`` after ``timeout``."""
        async def reached() -> ChildState:
            while self.state.state not in states:
                self._changed.clear()
                await self._changed.wait()
            return self.state

        return await asyncio.wait_for(reached(), timeout)

    def start(self) -> None:
        """Start supervising (in the running event loop)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._supervise(), name=f"child:{self.name}")

    async def stop(self) -> None:
        """Stop the child and its process group; it is not restarted."""
        self._stopping = True
        self._killed = ""
        await self._terminate()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.state.state != "failed":
            # An app that ignores SIGTERM kept Ctrl-C waiting for the whole grace: say why.
            self._set(state="stopped", pid=None, message=self._killed)

    async def restart_now(self) -> None:
        """Stop the running process; the supervisor starts it again at once. A child that is not
        supervised any more (it could not be started, or exited and was not restarted) starts again."""
        if self._task is None or self._task.done():
            self._task = None
            self.start()
            return
        # This run's end is a restart, whatever its status: uvicorn ends cleanly on SIGTERM.
        self._asked_restart = self._proc is not None
        await self._terminate()

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        await self._end_group_once(proc.pid, self._grace)
        await proc.wait()

    async def _end_group_once(self, pgid: int, grace: float) -> None:
        """End the group, or wait for the ending under way: a second SIGTERM would hurry the
        app (uvicorn exits at once on a second signal) or shorten its grace."""
        if self._ending is None:
            self._ending = asyncio.ensure_future(self._end_group(pgid, grace))
        await asyncio.shield(self._ending)

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            code = await self._run_once()
            if code is None:  # could not start: no retry
                return
            if self._stopping:
                return
            ran = time.monotonic() - started
            failures = 0 if ran >= STABLE_AFTER else failures + 1
            exited = exit_words(code)
            self.log.add("devtunnel", f"{self.name} {exited}")
            state = exit_state(code)
            why = self.last_line("err") if self._crash_line and state == "crashed" else ""
            if why:
                exited += f": {why}"
            asked, self._asked_restart = self._asked_restart, False
            if not asked and (self._restart == "no" or (state == "exited" and self._restart == "on-failure")):
                message = "ended cleanly with code 0: not restarted" if state == "exited" else exited
                self._set(state=state, pid=None, exit_code=code, message=message)
                return
            self._set(state=state, pid=None, exit_code=code, message=exited)
            first, longest = self._backoff
            wait = self._rng.uniform(first / 2, min(longest, first * 2 ** min(failures, 16)))
            self._set(state="restarting", restarts=self.state.restarts + 1, message=restarting_message(exited, wait))
            await asyncio.sleep(wait)

    async def _run_once(self) -> int | None:
        self.ready.clear()
        self._start_note = await self._before_start() if self._before_start is not None else ""
        if self._start_note:
            self.log.add("devtunnel", self._start_note)
        self._set(state="starting", exit_code=None, message=self._start_note)
        loop = asyncio.get_running_loop()
        starting = asyncio.ensure_future(loop.subprocess_exec(
            lambda: _ExitProtocol(loop), *self.argv, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env, cwd=self.cwd,
            start_new_session=True, preexec_fn=self._preexec))
        try:
            transport, exits = await asyncio.shield(starting)
        except asyncio.CancelledError:
            await self._end_started(starting)
            raise
        except OSError as exc:
            message = f"cannot start {self.argv[0]}: {exc.strerror or exc}"
            self.log.add("devtunnel", message)
            self._set(state="failed", pid=None, message=message)
            return None
        proc = asyncio.subprocess.Process(transport, exits, loop)
        self._proc = proc
        self._set(pid=proc.pid)
        self.log.add("devtunnel", f"started {self.name} (pid {proc.pid})")
        if self._stopping:  # stop() came while it was being started, and found nothing to end yet
            self._ending = asyncio.ensure_future(self._end_group(proc.pid, self._grace))
        assert proc.stdout is not None and proc.stderr is not None
        readers = [asyncio.create_task(self._pump(proc.stdout, "out")), asyncio.create_task(self._pump(proc.stderr, "err"))]
        watcher = asyncio.create_task(self._watch_ready(proc))
        exited = asyncio.ensure_future(proc.wait())
        try:
            await exits.exited
            code = proc.returncode
            assert code is not None
            # What it left behind may hold the port and the pipes: end the group before starting again.
            await self._end_group_once(proc.pid, min(self._grace, 2.0))
            await asyncio.wait([exited, *readers], timeout=1.0)
        finally:
            exited.cancel()
            watcher.cancel()
            for reader in readers:
                reader.cancel()
            self.ready.clear()
            self._proc = None
            self._ending = None
        return code

    async def _end_started(self, starting: asyncio.Future[tuple[asyncio.SubprocessTransport, _ExitProtocol]]) -> None:
        """A start cancelled half-way (Ctrl-C): once the program runs, end its whole group.

        Cancelled itself, uvloop's start kills the program it started, the shell around the
        user's command, and leaves the app that shell started running, holding its port.
        """
        try:
            transport, _ = await starting
        except Exception:
            return  # it did not start
        self.log.add("devtunnel", f"{self.name} (pid {transport.get_pid()}) started as it was stopped: ended")
        await self._end_group(transport.get_pid(), min(self._grace, 2.0))
        transport.close()

    async def _end_group(self, pgid: int, grace: float) -> None:
        """SIGTERM the process group, SIGKILL what is still there after ``grace`` seconds.

        The group, not the program devtunnel started, is waited for: that program is a shell
        (``/bin/sh -c``) that SIGTERM ends at once, while the app it started shuts down.
        """
        try:
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return  # nothing left
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline:
            await asyncio.sleep(0.05)  # polled: what is left are not our children, nothing to wait() on
            if not group_running(pgid):
                return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
            self._killed = f"still running {grace:g} s after SIGTERM: killed (SIGKILL)"
            self.log.add("devtunnel", f"{self.name} {self._killed}")

    async def _watch_ready(self, proc: asyncio.subprocess.Process) -> None:
        if self._ready_check is None:
            if self._on_line is None:
                self._mark_ready()
            return
        while proc.returncode is None and not self.ready.is_set():
            if await self._ready_check():
                self._mark_ready()
                return
            await asyncio.sleep(self._ready_interval)

    def _mark_ready(self) -> None:
        if not self.ready.is_set() and self._proc is not None:
            self.ready.set()
            self._set(state="ready", message=self._start_note)

    async def _pump(self, stream: asyncio.StreamReader, name: str) -> None:
        partial = b""
        skipping = False
        """The rest of a line whose start was kept: dropped up to its end, not shown as lines of its own."""
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            if skipping:
                end = chunk.find(b"\n")
                if end < 0:
                    continue
                chunk, skipping = chunk[end + 1:], False
            partial += chunk
            *lines, partial = partial.split(b"\n")
            if len(partial) > MAX_LINE * 4:  # a line without end: keep its start, drop the rest
                lines.append(partial)
                partial, skipping = b"", True
            for raw in lines:
                self._line(name, raw)
        if partial:
            self._line(name, partial)

    def _line(self, stream: str, raw: bytes) -> None:
        text = _STYLING.sub("", raw.rstrip(b"\r").decode("utf-8", "replace"))
        self.log.add(stream, text)
        if self._on_line is not None and self._on_line(text):
            self._mark_ready()
