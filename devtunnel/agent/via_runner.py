"""A tunnel's public-URL provider (``--via``) run beside it, with devtunnel still in the path.

The provider (cloudflared, or ssh to localhost.run, pinggy, serveo or your own server) does not
reach the app directly: the embedded relay listens on one more port pinned to the tunnel
(``Relay.pin``) and the provider forwards public traffic there, so every request is captured,
filtered and replayable as with devtunnel's own relay. :class:`ViaRunner` runs the provider as a
supervised :class:`~devtunnel.agent.children.Child` (own process group, bounded log, restarts with
backoff, stopped with the tunnel) and reads the public URL from its output (``Via.url_in``).

Plain ``ssh:`` keeps its URL: the first connection asks for any remote port (``-R 0:...``) and
the one the server allocated is asked for again at every restart, and remembered for the next
run (``PortMemory``); a port that cannot be had again falls back to any free one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import urlsplit

from devtunnel.errors import ConfigError
from devtunnel.agent.children import Child, ChildState, LogLine
from devtunnel.agent.port_memory import PortMemory
from devtunnel.values.terminal import quoted
from devtunnel.via import Via

__all__ = ["ENV_SSH_OPTIONS", "PinningRelay", "ViaRunner", "ViaStatus", "find_program", "ssh_options"]

log = logging.getLogger("devtunnel.agent")

ENV_SSH_OPTIONS = "DEVTUNNEL_SSH_OPTIONS"
"""More options for every ssh-based provider, as a shell would split them
(e.g. ``-i ~/.ssh/tunnel_key -o UserKnownHostsFile=~/.ssh/tunnel_hosts``)."""
FIXED_PORT_TRIES = 5
"""Runs in a row the server refuses the remote port it gave before, before asking for any."""
REMEMBERED_PORT_TRIES = 3
"""Runs asking for a port remembered from an earlier run of the tunnel before any port is taken
(the restarts' waits between them: at most 1 s, then 2 s)."""
_SSH_CHATTER = ("debug", "Transferred: sent ", "Bytes per second: ")
"""What ``ssh -v`` prints besides errors: its debug lines and, as it exits, its statistics."""
NO_URL_AFTER = 30.0
"""Seconds a provider may run without printing its URL before devtunnel says so (once a run):
a provider that prints its URL in a form devtunnel does not know, or never, is otherwise silent."""


@dataclass(frozen=True, slots=True)
class ViaStatus:
    """The provider of one tunnel, as the API and the tunnels panel show it."""

    provider: str
    """As a user writes it: ``cloudflared``, ``ssh:me@host:2222``."""
    state: str = "starting"
    """``starting``, ``online``, ``restarting``, ``failed`` (will not retry) or ``stopped``."""
    url: str | None = None
    """The public URL it printed last (kept while it restarts)."""
    pid: int | None = None
    """The provider process, while it runs."""
    restarts: int = 0
    message: str = ""
    """Why it is not online: its exit and last error line, or what to install."""
    port: int | None = None
    """The local port it forwards to (pinned to the tunnel in the embedded relay)."""


class PinningRelay(Protocol):
    """What the runner needs of the embedded relay (``devtunnel.relay.server.Relay``)."""

    async def pin(self, name: str, port: int = 0, *, forwarded: bool = False) -> int: ...

    def unpin(self, port: int) -> None: ...

    def serve_host(self, port: int, public_url: str) -> None: ...


def ssh_options(env: Mapping[str, str]) -> tuple[str, ...]:
    """The extra ssh options ``DEVTUNNEL_SSH_OPTIONS`` holds in ``env``.

    Raises:
        ConfigError: the value cannot be split (an unclosed quote).
    """
    text = env.get(ENV_SSH_OPTIONS, "")
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise ConfigError(f"{ENV_SSH_OPTIONS}={quoted(text)}: {exc}") from None


def find_program(via: Via, env: Mapping[str, str]) -> str:
    """The path of the program ``via`` runs, looked up on ``env``'s PATH.

    Raises:
        ConfigError: it is not installed (the message says how to get it).
    """
    assert via.program is not None
    found = shutil.which(via.program, path=env.get("PATH", os.defpath))
    if found is None:
        raise ConfigError(f"--via {via.describe()}: {via.install_hint}")
    return found


class ViaRunner:
    """Runs the provider of tunnel ``name`` (see the module's docstring).

    Args:
        via: the provider.
        name: the tunnel its traffic goes to.
        relay: the embedded relay (``pin`` / ``unpin``).
        on_change: called after every change of ``status``.
        env: the provider's environment (default: this process's); its PATH finds the program.
        memory: where plain ``ssh:`` remembers its remote port between runs (None: nowhere).
        remember_as: what names the tunnel from one run to the next in ``memory`` (default:
            ``name``; a tunnel whose name is new each run gives its target).
        backoff: (first, longest) seconds between restarts.
        no_url_after: seconds a run may go without printing its URL before the status and the
            log say so.
    """

    def __init__(
        self,
        via: Via,
        name: str,
        relay: PinningRelay,
        *,
        on_change: Callable[[], None],
        env: Mapping[str, str] | None = None,
        memory: PortMemory | None = None,
        backoff: tuple[float, float] = (1.0, 30.0),
        no_url_after: float = NO_URL_AFTER,
        remember_as: str | None = None,
    ) -> None:
        self.via = via
        self.name = name
        self.relay = relay
        self.env = dict(os.environ if env is None else env)
        self.memory = memory
        self.child: Child | None = None
        self.status = ViaStatus(via.describe())
        self._on_change = on_change
        self._backoff = backoff
        self._remote_port = 0  # plain ssh: the port asked for (0: any)
        self._fixed_failures = 0  # runs in a row the server refused that port
        self._fixed_tries = FIXED_PORT_TRIES
        self._failures = 0  # exits in a row since the provider was last online (or started)
        self._failure_said = ""  # the reason the log gave last in this outage
        self._run_refused = False  # this run was refused the port it asked for
        self._run_got_url = False
        self._run_url: str | None = None  # the URL this run of the provider announced
        self._no_url_after = no_url_after
        self._no_url_timer: asyncio.TimerHandle | None = None
        self._memory_key = f"{remember_as or name} {via.describe()}"
        self._argv: Callable[[], list[str]] = list  # the provider's argv, once started

    def _update(self, **changes: object) -> None:
        self.status = replace(self.status, **changes)  # type: ignore[arg-type]
        self._on_change()

    async def start(self) -> None:
        """Pin a relay port to the tunnel and start the provider; a missing program (or a bad
        ``DEVTUNNEL_SSH_OPTIONS``) leaves the status ``failed`` with the reason."""
        port = await self.relay.pin(self.name, forwarded=self.via.forwards_client_address)
        self._update(port=port)
        try:
            program = find_program(self.via, self.env)
            extra = ssh_options(self.env) if program and self.via.program == "ssh" else ()
        except ConfigError as exc:
            log.error("tunnel %s: %s", self.name, exc)
            self._update(state="failed", message=str(exc))
            return
        if self.via.kind == "ssh" and self.memory is not None:
            self._remote_port = self.memory.get("ssh", self._memory_key) or 0
            # Remembered from another run: someone else may have it now, or the server still holds
            # it for the run just ended (sshd frees a forward once its session is gone): a few tries.
            self._fixed_tries = REMEMBERED_PORT_TRIES
        self._argv = lambda: self.via.command(port, program=program, extra_ssh=extra, remote_port=self._remote_port)
        self.child = Child(
            self.via.describe(), self._argv(), env=self.env, on_line=self._line, on_state=self._child_changed,
            backoff=self._backoff, die_with_parent=True,
        )
        self.child.start()

    async def stop(self) -> None:
        """Stop the provider and the pinned port."""
        self._disarm()
        if self.child is not None:
            await self.child.stop()
        if self.status.port is not None:
            self.relay.unpin(self.status.port)
        self._update(state="stopped", pid=None)

    def _line(self, text: str) -> bool:
        url = self.via.url_in(text)
        if url is None:
            self._run_refused = self._run_refused or self.via.forward_refused(text)
            return False
        if self._run_url is not None:
            # One process announces one URL, before any traffic: a later line that reads as another
            # quotes a request (cloudflared's debug log of ``GET /https://other.trycloudflare.com``).
            return url == self._run_url
        self._run_url = url
        self._run_got_url = True
        self._disarm()
        if self.via.kind == "ssh":
            remote = urlsplit(url).port or 0
            if remote and remote != self._remote_port:
                self._remote_port = remote
                assert self.child is not None
                self.child.argv = self._argv()  # every restart asks for this port again
            self._fixed_failures, self._fixed_tries = 0, FIXED_PORT_TRIES
            if self.memory is not None and remote:
                self.memory.put("ssh", self._memory_key, remote)
        changed = url != self.status.url
        if self.status.port is not None:  # the provider passes its public Host on to the pinned port
            self.relay.serve_host(self.status.port, url)
        self._update(url=url)
        if changed and self.status.restarts:
            log.warning("tunnel %s: %s gave a new public URL: %s", self.name, self.via.describe(), url)
        return True

    def _child_changed(self, child: ChildState) -> None:
        if child.state == "ready":
            if self.status.state == "restarting":
                log.warning("tunnel %s: %s back online at %s", self.name, self.via.describe(), self.status.url)
            self._failures, self._failure_said = 0, ""
            self._update(state="online", pid=child.pid, restarts=child.restarts, message="")
        elif child.state == "starting":
            self._run_got_url = self._run_refused = False
            self._run_url = None  # a new process may announce a new URL
            self._disarm()
            self._no_url_timer = asyncio.get_running_loop().call_later(self._no_url_after, self._no_url)
            self._update(state="restarting" if child.restarts else "starting", pid=child.pid,
                         restarts=child.restarts)
        elif child.state in ("crashed", "exited"):  # a provider is restarted whatever its status
            self._disarm()
            self._crashed(child)
        elif child.state == "restarting":
            self._update(state="restarting", pid=None, restarts=child.restarts,
                         message=self._why(child.message))
        elif child.state == "failed":
            self._disarm()
            message = child.message
            if "No such file" in message or "not found" in message:
                message = f"--via {self.via.describe()}: {self.via.install_hint}"
            log.error("tunnel %s: %s", self.name, message)
            self._update(state="failed", pid=None, message=message)

    def _disarm(self) -> None:
        if self._no_url_timer is not None:
            self._no_url_timer.cancel()
            self._no_url_timer = None

    def _no_url(self) -> None:
        """The run has printed no URL in ``no_url_after`` seconds: say so, with its last line."""
        self._no_url_timer = None
        if self._run_got_url or self.child is None:
            return
        last = self._last_line("out", "err")
        why = f"no public URL after {self._no_url_after:g} s ({f'last line: {last}' if last else 'no output'})"
        log.warning("tunnel %s: %s printed %s", self.name, self.via.describe(), why)
        self._update(message=why)

    def _crashed(self, child: ChildState) -> None:
        why = self._why(child.message)
        self._failures += 1
        if self._failures == 1 or why != self._failure_said:
            log.warning("tunnel %s: %s %s; restarting", self.name, self.via.describe(), why)
            self._failure_said = why
        elif self._failures & (self._failures - 1) == 0:  # the same again: said at 2, 4, 8 ... exits
            log.warning("tunnel %s: %s failed %d times in a row (%s); restarting", self.name, self.via.describe(),
                        self._failures, why)
        self._update(state="restarting", pid=None, message=why)
        if self.via.kind != "ssh" or not self._remote_port or self.child is None:
            return
        if self._run_got_url or not self._run_refused:
            return  # a connection that failed (server down, login refused) says nothing of the port
        self._fixed_failures += 1
        if self._fixed_failures >= self._fixed_tries:  # the port is not coming back: take any
            log.warning("tunnel %s: the server would not give port %d again; asking for any port (the URL changes)",
                        self.name, self._remote_port)
            self._remote_port, self._fixed_failures = 0, 0
            self.child.argv = self._argv()

    def _why(self, exit_message: str) -> str:
        """``exited with code 255 (<its last error line>)``."""
        known = next(filter(None, (self.via.failure_in(line.text) for line in self._run_lines())), None)
        error = known or self._last_line("err")
        return f"{exit_message} ({error})" if error else exit_message

    def _run_lines(self) -> Iterator[LogLine]:
        """This run's output, last line first."""
        return iter(()) if self.child is None else self.child.run_lines()

    def _last_line(self, *streams: str) -> str:
        """The last line of this run's output on ``streams`` that can say what went wrong ("" if none)."""
        return "" if self.child is None else self.child.last_line(*streams, passing_over=_SSH_CHATTER)
