"""Finding a running agent's API from a command (``devtunnel logs``, ``devtunnel send``).

The agent listens on 127.0.0.1 from ``agent.api_port`` (4040) on, moving to the next free port
when the default is taken, so a command looks at ``--api URL`` if given, else at the first
``PORTS_TRIED`` ports from there. Answers come from another process: what is read of them is
checked before it is used (a tunnel's public URL must be an http(s) URL with a host).
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass

from devtunnel.errors import ConfigError, DevtunnelError
from devtunnel.values.terminal import quoted
from devtunnel.values.urls import split_url

__all__ = ["PORTS_TRIED", "RunningTunnel", "candidates", "get", "no_agent", "running_tunnels"]

PORTS_TRIED = 10
"""Ports from ``agent.api_port`` on where an agent is looked for without ``--api``."""
TIMEOUT = 5.0
"""Seconds to connect to an agent and read its answer's head."""
_MAX_ANSWER = 4 << 20
"""Bytes of an agent's ``/api/tunnels`` answer read at most."""


def candidates(api: str | None, first_port: int) -> list[tuple[str, int]]:
    """Where to look for the agent: ``api`` (``--api``), else 127.0.0.1 from ``first_port`` on."""
    if api:
        parts = split_url(api if "://" in api else "http://" + api, "--api")
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"--api must be the agent API's http:// URL, e.g. http://127.0.0.1:4040, not {quoted(api)}")
        return [(parts.hostname, parts.port or 80)]
    first = first_port or 4040
    return [("127.0.0.1", port) for port in range(first, min(first + PORTS_TRIED, 65536))]


def get(host: str, port: int, path: str, timeout: float | None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """``GET path`` from the agent at ``host:port``; the body is read with ``timeout`` (None: no limit)."""
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
    except BaseException:
        conn.close()
        raise
    if conn.sock is not None:
        conn.sock.settimeout(timeout)
    return conn, response


def no_agent(tried: list[tuple[str, int]], then: str = "give --api URL") -> DevtunnelError:
    """The error of a command that found no agent at ``tried``."""
    first, last = (f"{host}:{port}" for host, port in (tried[0], tried[-1]))
    where = first if len(tried) == 1 else f"{first} to {last}"
    return DevtunnelError(f"no devtunnel agent answers at {where}: start one with devtunnel http/up, or {then}")


@dataclass(frozen=True)
class RunningTunnel:
    """A tunnel an agent runs, as its ``/api/tunnels`` says."""

    name: str
    public_url: str
    state: str
    table: str | None = None
    """The ``[tunnels.NAME]`` of devtunnel.toml it was started from (``config.table``), or None."""


def running_tunnels(places: list[tuple[str, int]]) -> list[RunningTunnel]:
    """The tunnels of every agent answering at ``places``, in their order; raises ``no_agent``'s
    error when none answers. What does not read as a tunnel with an http(s) URL is left out."""
    found: list[RunningTunnel] = []
    answered = False
    for host, port in places:
        try:
            conn, response = get(host, port, "/api/tunnels", TIMEOUT)
        except (OSError, http.client.HTTPException):
            continue
        try:
            if response.status != 200:
                continue
            data = json.loads(response.read(_MAX_ANSWER))
        except (OSError, http.client.HTTPException, ValueError):
            continue
        finally:
            conn.close()
        tunnels = data.get("tunnels") if isinstance(data, dict) else None
        if not isinstance(tunnels, list):
            continue
        answered = True
        for item in tunnels:
            if not isinstance(item, dict):
                continue
            name, url, state = item.get("name"), item.get("public_url"), item.get("state", "")
            config = item.get("config")
            table = config.get("table") if isinstance(config, dict) else None
            if isinstance(name, str) and isinstance(url, str) and isinstance(state, str) and _web_url(url):
                found.append(RunningTunnel(name, url, state, table if isinstance(table, str) else None))
    if not answered:
        raise no_agent(places, "give --to URL")
    return found


def _web_url(text: str) -> bool:
    try:
        parts = split_url(text, "public_url")
    except ConfigError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
