"""Finding a running agent's API from a command (``devtunnel logs``, ``send``, ``replay``).

The agent listens on 127.0.0.1 from ``agent.api_port`` (4040) on, moving to the next free port
when the default is taken, so a command looks at ``--api URL`` if given, else at the first
``PORTS_TRIED`` ports from there. What answers there is taken for an agent only when it answers
``/api/tunnels`` as one does (``agent_tunnels``): another server on that port is no agent. Answers
come from another process: what is read of them is checked before it is used (a tunnel's public
URL must be an http(s) URL with a host).
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any

from devtunnel.errors import ConfigError, DevtunnelError
from devtunnel.values.terminal import quoted
from devtunnel.values.urls import split_url

__all__ = ["PORTS_TRIED", "RunningTunnel", "agent_tunnels", "candidates", "get", "no_agent", "places_text",
           "running_tunnels"]

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


def agent_tunnels(host: str, port: int) -> list[dict[str, Any]] | None:
    """The tunnels the devtunnel agent at ``host:port`` runs (its ``/api/tunnels``), those that are
    JSON objects; None when no agent answers there: nothing listens, or what answers is not one
    (no 200, no JSON object with a ``tunnels`` list: another server on that port). Each field of
    a tunnel is another process's word: checked where it is read."""
    try:
        conn, response = get(host, port, "/api/tunnels", TIMEOUT)
    except (OSError, http.client.HTTPException):
        return None
    try:
        data = json.loads(response.read(_MAX_ANSWER)) if response.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        data = None
    finally:
        conn.close()
    tunnels = data.get("tunnels") if isinstance(data, dict) else None
    return [t for t in tunnels if isinstance(t, dict)] if isinstance(tunnels, list) else None


def places_text(tried: list[tuple[str, int]]) -> str:
    """Where a command looked for an agent: ``127.0.0.1:4040 to 127.0.0.1:4049``, or the one place."""
    first, last = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in (tried[0], tried[-1]))
    return first if len(tried) == 1 else f"{first} to {last}"


def no_agent(tried: list[tuple[str, int]], then: str = "give --api URL") -> DevtunnelError:
    """The error of a command that found no agent at ``tried``."""
    return DevtunnelError(f"no devtunnel agent answers at {places_text(tried)}: start one with devtunnel http/up, or {then}")


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
        tunnels = agent_tunnels(host, port)
        if tunnels is None:
            continue
        answered = True
        for item in tunnels:
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
