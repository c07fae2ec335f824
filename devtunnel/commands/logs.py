"""``devtunnel logs NAME [-f]``: the output of the app a tunnel runs (``--run``), from the agent API.

The agent keeps the app's last lines (bounded); this command reads them from
``GET /api/tunnels/NAME/logs`` of the agent that runs tunnel NAME: the one at ``--api URL``, or
the first answering on 127.0.0.1 from ``agent.api_port`` (4040) on, as the agent moves to the
next free port when its own is taken. Lines are the app's own output, so every one is escaped
for the terminal before it is printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO
from urllib.parse import quote, urlencode

from devtunnel.commands.config import settings_of
from devtunnel.commands.output import safe
from devtunnel.errors import ConfigError, DevtunnelError, NotFoundError
from devtunnel.values.terminal import quoted
from devtunnel.values.urls import split_url

__all__ = ["PORTS_TRIED", "log_line_text", "run"]

PORTS_TRIED = 10
"""Ports from ``agent.api_port`` on where an agent is looked for without ``--api``."""
_TIMEOUT = 5.0


def log_line_text(line: dict[str, Any]) -> str:
    """``07:01:50 err  Traceback ...``: one line for the terminal, escaped."""
    when = line.get("time")
    clock = time.strftime("%H:%M:%S", time.localtime(when)) if isinstance(when, int | float) else "--:--:--"
    stream = {"out": "out", "err": "err"}.get(str(line.get("stream")), "---")
    return f"{clock} {stream}  {safe(str(line.get('text', '')))}"


def _candidates(args: argparse.Namespace) -> list[tuple[str, int]]:
    if args.api:
        parts = split_url(args.api if "://" in args.api else "http://" + args.api, "--api")
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"--api must be the agent API's http:// URL, e.g. http://127.0.0.1:4040, not {quoted(args.api)}")
        return [(parts.hostname, parts.port or 80)]
    first = settings_of(args).agent.api_port or 4040
    return [("127.0.0.1", port) for port in range(first, min(first + PORTS_TRIED, 65536))]


def _get(host: str, port: int, path: str, timeout: float | None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection(host, port, timeout=_TIMEOUT)
    conn.request("GET", path, headers={"Accept": "application/json"})
    response = conn.getresponse()
    if conn.sock is not None:
        conn.sock.settimeout(timeout)
    return conn, response


def _open(args: argparse.Namespace, path: str, follow: bool) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """The response of the agent that runs the tunnel; raises a DevtunnelError naming what was tried."""
    not_found = ""
    tried = []
    for host, port in _candidates(args):
        tried.append(f"{host}:{port}")
        try:
            conn, response = _get(host, port, path, None if follow else _TIMEOUT)
        except (OSError, http.client.HTTPException):
            continue
        if response.status == 200:
            return conn, response
        try:
            message = str(json.loads(response.read(65536)).get("msg", ""))
        except (ValueError, AttributeError, OSError, http.client.HTTPException):
            message = ""
        conn.close()
        if response.status == 404 and message:
            not_found = not_found or message  # another agent may run it: keep looking
            continue
        raise DevtunnelError(f"the agent API at {host}:{port} answered {response.status}: {message or 'no reason given'}")
    if not_found:
        raise NotFoundError(not_found)
    where = tried[0] if len(tried) == 1 else f"{tried[0]} to {tried[-1]}"
    raise DevtunnelError(f"no devtunnel agent answers at {where}: start one with devtunnel http/up, or give --api URL")


def _lines(response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    while True:
        raw = response.readline(1 << 20)
        if not raw:
            return
        raw = raw.strip()
        if not raw:  # a keep-alive
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            continue
        if isinstance(item, dict):
            yield item


def _print(text: str, out: TextIO) -> None:
    out.write(text + "\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    """``devtunnel logs``; returns the exit code."""
    if args.lines < 0:
        raise ConfigError("--lines must be 0 or more")
    query = {"limit": str(args.lines)}
    if args.grep:
        query["contains"] = args.grep
    if args.follow:
        query["follow"] = "1"
    path = f"/api/tunnels/{quote(args.name, safe='')}/logs?{urlencode(query)}"
    conn, response = _open(args, path, args.follow)
    out = sys.stdout
    try:
        if not args.follow:
            data = json.loads(response.read())
            for line in data.get("lines", []):
                _print(log_line_text(line), out)
            return 0
        for item in _lines(response):
            if "dropped" in item and "text" not in item:
                _print(f"--- {int(item['dropped'])} lines left out (read too slowly)", out)
            else:
                _print(log_line_text(item), out)
        raise DevtunnelError(f"the agent stopped sending the logs of {quoted(args.name)} (tunnel stopped or agent gone)")
    except BrokenPipeError:
        raise  # the reader (head, less) went away: cli.main ends quietly
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DevtunnelError(f"reading the logs of {quoted(args.name)} failed: {exc}") from None
    except KeyboardInterrupt:
        return 0
    finally:
        conn.close()
