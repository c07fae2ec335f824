"""Public URLs without a relay of your own: the providers ``--via`` names, what to run, and its URL.

Pure: a :class:`Via` says which program to start (its argv, never a shell line) to carry
traffic for a local port, and :meth:`Via.url_in` reads the public URL from one line of that
program's output. Starting, watching and restarting the program is the agent's job.

====================  =========================================================================
``cloudflared``       ``cloudflared tunnel --url http://127.0.0.1:PORT``; prints a box with
                      ``|  https://<words>.trycloudflare.com  |`` on a line of its own
``localhost.run``     ``ssh -R 80:127.0.0.1:PORT nokey@localhost.run``; prints
                      ``<id>.lhr.life tunneled with tls termination, https://<id>.lhr.life``
                      (``localhost.run`` too, its former domain)
``pinggy``            ``ssh -p 443 -R0:127.0.0.1:PORT a.pinggy.io``; prints
                      ``https://<id>.a.free.pinggy.link`` (also an http:// line)
``serveo``            ``ssh -R 80:127.0.0.1:PORT serveo.net``; prints
                      ``Forwarding HTTP traffic from https://<id>.serveo.net``
                      (``serveousercontent.com`` too)
``ssh:USER@HOST[:P]`` ``ssh -N -R 0:127.0.0.1:PORT USER@HOST``; OpenSSH prints
                      ``Allocated port N for remote forward to 127.0.0.1:PORT``: the URL is
                      ``http://HOST:N`` (the server needs ``GatewayPorts yes`` to serve others).
                      Asked for that port again (``-R N:...``), OpenSSH prints nothing at its
                      usual level: run with ``-v``, it logs ``remote forward success for:
                      listen N, connect 127.0.0.1:PORT``
====================  =========================================================================
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass

from devtunnel.errors import ConfigError
from devtunnel.values.terminal import quoted

__all__ = ["Via", "parse_via", "VIA_NAMES", "SSH_OPTIONS"]

VIA_NAMES = ("relay", "cloudflared", "localhost.run", "pinggy", "serveo", "ssh:USER@HOST[:PORT]")

SSH_OPTIONS = (
    "-o", "ExitOnForwardFailure=yes",
    "-o", "ServerAliveInterval=15",
    "-o", "ServerAliveCountMax=3",
    "-o", "StrictHostKeyChecking=accept-new",
    "-o", "BatchMode=yes",
    "-o", "LogLevel=INFO",
)
"""What every ssh-based provider runs with: fail instead of running without the forward, notice
a dead connection within ~45 s, trust a host key on first use, never prompt (no terminal), and
print ``Allocated port N`` (an INFO line) whatever LogLevel ``~/.ssh/config`` sets."""

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_URL_END = r"(?![\w@:-]|\.[\w-])"
"""Where a provider's URL ends: not in the middle of a longer host (``...trycloudflare.com.evil.com``),
a login (``...@evil.com``) or a port."""
# Each provider's URL is read from the line that announces it, whole, never from anywhere in a
# line: cloudflared at debug level logs every request's URL, and a request for
# ``/https://other.trycloudflare.com`` puts another quick tunnel's URL in its line.
_CLOUDFLARED = re.compile(r"^(?:\S+ +){0,2}\|  (https://(?!api\.)[a-z0-9-]+\.trycloudflare\.com) {2,}\|$")
"""The URL line of cloudflared's box (``AsciiBox`` in its ``quick_tunnel.go``), after at most a time
and a level (``2024-12-20T10:30:18Z INF |  https://<words>.trycloudflare.com   |``). A quick tunnel's
URL is its name alone: ``https://api.trycloudflare.com/tunnel`` is where cloudflared asks for one,
in the error it prints when it cannot (offline, refused)."""
_CLOUDFLARED_BOX = re.compile(r"^\|  (https://(?!api\.)[a-z0-9-]+\.trycloudflare\.com) {2,}\|$")
"""The same box line as the ``message`` of a JSON log record (cloudflared's ``--output json``)."""
_LHR = re.compile(r"^\s*[A-Za-z0-9.-]+ tunneled with tls termination, "
                  r"(https://(?:[A-Za-z0-9-]+\.)+(?:lhr\.life|localhost\.run))" + _URL_END)
_PINGGY = re.compile(r"^\s*(https://(?:[A-Za-z0-9-]+\.)+pinggy\.(?:link|online))\s*$")
_SERVEO = re.compile(r"^\s*Forwarding HTTP traffic from "
                     r"(https://(?:[A-Za-z0-9-]+\.)+(?:serveo\.net|serveousercontent\.com))" + _URL_END)
_RATE_LIMITED = re.compile(r'status_code="(429 [^"]*)"')
"""cloudflared's ERR line when trycloudflare.com turns a quick tunnel down for too many requests;
the line it exits with (``failed to unmarshal quick Tunnel: invalid character 'e' ...``) hides it."""
_ALLOCATED = re.compile(r"^Allocated port (\d+) for remote forward to ")
_FORWARDED = re.compile(r"^debug1: remote forward success for: listen (\d+), connect ")
_REFUSED = re.compile(r"^(?:Error|Warning): remote port forwarding failed for listen port \d+"
                      r"|^debug1: remote forward failure for: listen \d+, connect ")
_USER_HOST = re.compile(r"(?:([A-Za-z0-9._-]+)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?")


@dataclass(frozen=True, slots=True)
class Via:
    """How a tunnel's public URL is provided.

    Attributes:
        kind: ``relay`` (devtunnel's own), ``cloudflared``, ``localhost.run``, ``pinggy``,
            ``serveo`` or ``ssh``.
        user, host, port: the server of ``ssh:`` (port None: ssh's default).
    """

    kind: str
    user: str | None = None
    host: str | None = None
    port: int | None = None

    @property
    def program(self) -> str | None:
        """The executable it runs (None for the relay)."""
        if self.kind == "relay":
            return None
        return "cloudflared" if self.kind == "cloudflared" else "ssh"

    @property
    def forwards_client_address(self) -> bool:
        """Whether each request arrives with the client's address appended to X-Forwarded-For by
        the provider's edge, where no client can write it: Cloudflare's, for cloudflared (its
        ``CF-Connecting-IP`` holds the same). The ssh services and plain ``ssh:`` promise no such
        header: behind them every client is the provider's program on this machine."""
        return self.kind == "cloudflared"

    @property
    def install_hint(self) -> str:
        """One line saying how to get the program."""
        if self.kind == "cloudflared":
            return ("cloudflared is not installed: get it from Cloudflare's downloads or your package manager "
                    "(e.g. `brew install cloudflared`, or the cloudflared .deb/.rpm)")
        return "ssh is not installed: install the OpenSSH client (e.g. `apt install openssh-client`)"

    def describe(self) -> str:
        """``ssh:me@host:2222`` / ``cloudflared``: as a user writes it."""
        if self.kind != "ssh":
            return self.kind
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh:{user}{self.host}{port}"

    def command(
        self, local_port: int, *, program: str | None = None, extra_ssh: tuple[str, ...] = (), remote_port: int = 0
    ) -> list[str]:
        """The argv that carries public traffic to ``127.0.0.1:local_port``.

        Args:
            local_port: where devtunnel listens for this tunnel's public traffic.
            program: the executable's path when not on PATH by its name.
            extra_ssh: more ssh options (tests pass an identity file and a known-hosts file).
            remote_port: plain ``ssh:`` only: ask the server for this port (the one it
                allocated last time, so the URL stays the same) instead of any free one.
        """
        exe = program or self.program
        if exe is None:
            raise ValueError("the relay runs no program")
        target = f"127.0.0.1:{local_port}"
        if self.kind == "cloudflared":
            return [exe, "tunnel", "--no-autoupdate", "--url", f"http://{target}"]
        ssh = [exe, *SSH_OPTIONS, *extra_ssh]
        if self.kind == "localhost.run":
            return [*ssh, "-R", f"80:{target}", "nokey@localhost.run"]
        if self.kind == "pinggy":
            return [*ssh, "-p", "443", "-R", f"0:{target}", "a.pinggy.io"]
        if self.kind == "serveo":
            return [*ssh, "-R", f"80:{target}", "serveo.net"]
        port = ["-p", str(self.port)] if self.port else []
        login = f"{self.user}@{self.host}" if self.user else str(self.host)
        verbose = ["-v"] if remote_port else []  # the only way OpenSSH says a fixed forward is up
        return [*ssh, *verbose, "-N", *port, "-R", f"{remote_port}:{target}", login]

    def forward_refused(self, line: str) -> bool:
        """True if ``line`` of ssh's output says the server refused the remote port asked for
        (``Error: remote port forwarding failed for listen port N``): taken by someone else."""
        return self.program == "ssh" and _REFUSED.search(_ANSI.sub("", line)) is not None

    def failure_in(self, line: str) -> str | None:
        """Why the provider failed, if ``line`` says it better than its last line would."""
        match = _RATE_LIMITED.search(line) if self.kind == "cloudflared" else None
        if match is None:
            return None
        return f"trycloudflare.com refused a new quick tunnel: {match.group(1)} (too many from this address; retrying)"

    def url_in(self, line: str) -> str | None:
        """The public URL if ``line`` of the program's output announces it, else None."""
        line = _ANSI.sub("", line).rstrip()
        if self.kind == "cloudflared":
            match = _CLOUDFLARED.match(line) or _cloudflared_json(line)
        elif self.kind == "localhost.run":
            match = _LHR.search(line)
        elif self.kind == "pinggy":
            match = _PINGGY.search(line)
        elif self.kind == "serveo":
            match = _SERVEO.search(line)
        elif self.kind == "ssh":
            allocated = _ALLOCATED.search(line) or _FORWARDED.search(line)
            if allocated is None or not 0 < int(allocated.group(1)) < 65536:
                return None
            host = f"[{self.host}]" if self.host and ":" in self.host else self.host
            return f"http://{host}:{allocated.group(1)}"
        else:
            return None
        return match.group(1) if match else None


def _cloudflared_json(line: str) -> re.Match[str] | None:
    """The box line of a JSON log record (``{"level":"info","message":"|  https://...  |",...}``)."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("level") != "info" or not isinstance(record.get("message"), str):
        return None
    return _CLOUDFLARED_BOX.match(record["message"].rstrip())


def _bracketed_ok(host: str) -> bool:
    """``[...]`` holds an IPv6 address; other hosts are checked by the pattern."""
    if not host.startswith("["):
        return True
    try:
        ipaddress.IPv6Address(host[1:-1])
    except ValueError:
        return False
    return True


def parse_via(text: str) -> Via:
    """Read ``--via`` / ``tunnels.NAME.via``.

    Raises:
        ConfigError: an unknown provider or a malformed ``ssh:`` server (the message lists the forms).
    """
    value = text.strip()
    lowered = value.lower()
    if lowered in ("relay", "cloudflared", "localhost.run", "pinggy", "serveo"):
        return Via(lowered)
    if lowered in ("cloudflare", "trycloudflare"):
        return Via("cloudflared")
    if lowered in ("lhr", "localhostrun"):
        return Via("localhost.run")
    if lowered.startswith("ssh:"):
        user_part, at, server = value[4:].rpartition("@")
        # ssh:me:PASSWORD@host: the password (what follows a colon in the user part) is never quoted.
        shown = quoted(f"{value[:4]}…@{server}" if at and ":" in user_part else value)
        match = _USER_HOST.fullmatch(value[4:])
        user, host, port = match.groups() if match else (None, "", None)
        # Nothing may read as an option, to ssh or to a ProxyCommand given %h / %r (``me@-oX``).
        if match is None or (user or "").startswith("-") or host[:1] in ("-", ".") or not _bracketed_ok(host):
            raise ConfigError(f"--via {shown}: expected ssh:USER@HOST or ssh:USER@HOST:PORT")
        port_number = int(port) if port else None
        if port_number is not None and not 0 < port_number < 65536:
            raise ConfigError(f"--via {shown}: the port must be 1-65535")
        return Via("ssh", user=user, host=host.strip("[]") if host.startswith("[") else host, port=port_number)
    raise ConfigError(f"--via {quoted(text)}: expected one of {', '.join(VIA_NAMES)}")
