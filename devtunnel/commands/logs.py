"""``devtunnel logs NAME [-f]``: the output of the app a tunnel runs (``--run``), from the agent API.

The agent keeps the app's last lines (bounded); this command reads them from
``GET /api/tunnels/NAME/logs`` of the agent that runs tunnel NAME: the one at ``--api URL``, or
the first answering on 127.0.0.1 from ``agent.api_port`` (4040) on, as the agent moves to the
next free port when the default is taken. What answers there is asked first whether it is an
agent at all (``agent_api.agent_tunnels``, as ``send`` asks): another server on that port is not
read for logs. Lines are the app's own output, so every one is escaped for the terminal before it
is printed.
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

from devtunnel.commands.agent_api import PORTS_TRIED, TIMEOUT, agent_tunnels, candidates, get, no_agent
from devtunnel.commands.config import settings_of
from devtunnel.commands.output import safe
from devtunnel.errors import ConfigError, DevtunnelError, NotFoundError
from devtunnel.values.terminal import quoted

__all__ = ["PORTS_TRIED", "log_line_text", "run"]

def log_line_text(line: dict[str, Any]) -> str:
    """``07:01:50 err  Traceback ...``: one line for the terminal, escaped."""
    when = line.get("time")
    clock = time.strftime("%H:%M:%S", time.localtime(when)) if isinstance(when, int | float) else "--:--:--"
    stream = {"out": "out", "err": "err"}.get(str(line.get("stream")), "---")
    return f"{clock} {stream}  {safe(str(line.get('text', '')))}"


def _open(args: argparse.Namespace, path: str, follow: bool) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """The response of the agent that runs the tunnel; raises a DevtunnelError naming what was tried."""
    not_found = ""
    places = candidates(args.api, settings_of(args).agent.api_port)
    for host, port in places:
        if agent_tunnels(host, port) is None:
            continue  # nothing there, or another server: its answer to the logs' path means nothing
        try:
            conn, response = get(host, port, path, None if follow else TIMEOUT)
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
    raise no_agent(places)


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
            lines = data.get("lines") if isinstance(data, dict) else None
            if not isinstance(lines, list):
                raise DevtunnelError(f"reading the logs of {quoted(args.name)} failed: the agent's answer holds no lines")
            for line in lines:
                if isinstance(line, dict):
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
