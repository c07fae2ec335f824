"""ngrok's agent log, one record a line, in the shapes scripts and pyngrok read: logfmt or JSON.

ngrok writes (``--log stdout``, logfmt, its default away from a terminal)::

    t=2026-12-06T10:00:00+0000 lvl=info msg="started tunnel" obj=tunnels name=web addr=http://127.0.0.1:8080 url=https://...

and with ``--log-format json`` the same keys as one JSON object, sorted as Go writes a map::

    {"addr":"http://127.0.0.1:8080","lvl":"info","msg":"started tunnel","name":"web","obj":"tunnels","t":"...","url":"..."}

Every record is built here, from ``devtunnel http --log`` and ``devtunnel agent --ngrok-log``
(pyngrok) alike. A value may come from the network (a public URL, a client's path): in JSON it
is escaped as JSON is, every character outside printable ASCII as ``\\uXXXX``; in logfmt a value
that is not plain (a space, ``=``, a quote, a backslash, a control or non-ASCII character) is
written between double quotes with the same escapes, so a line never holds a raw control byte
and a value never ends early.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime

__all__ = ["FORMATS", "LEVELS", "level_at_least", "record", "started_tunnel", "startup_records"]

FORMATS = ("logfmt", "json", "term")
"""ngrok's ``--log-format`` values; ``term`` is devtunnel's own lines here, not ngrok's."""

LEVELS = ("debug", "info", "warn", "error", "crit")
"""ngrok's ``--log-level`` values, least severe first."""

Fields = Sequence[tuple[str, str]]

_PLAIN = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"=", '"', "\\"}


def level_at_least(level: str, threshold: str) -> bool:
    """Whether a record of ``level`` is written under ``--log-level threshold``."""
    return LEVELS.index(level) >= LEVELS.index(threshold)


def _logfmt_value(value: str) -> str:
    if value and _PLAIN.issuperset(value):
        return value
    return json.dumps(value, ensure_ascii=True)  # "...", with \" \\ \n \u001b ... escaped


def record(msg: str, fields: Fields = (), *, fmt: str = "logfmt", level: str = "info", now: float | None = None) -> str:
    """One log line in ngrok's shape: ``t``, ``lvl``, ``msg``, then ``fields`` in order (logfmt),
    or all of them as one JSON object with sorted keys (``fmt="json"``)."""
    stamp = time.time() if now is None else now
    if fmt == "json":
        when = datetime.fromtimestamp(stamp).astimezone().isoformat()
        values = {"t": when, "lvl": level, "msg": msg, **dict(fields)}
        return json.dumps(dict(sorted(values.items())), ensure_ascii=True, separators=(",", ":"))
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(stamp))
    words = [f"t={when}", f"lvl={level}", f"msg={_logfmt_value(msg)}"]
    words += [f"{key}={_logfmt_value(value)}" for key, value in fields]
    return " ".join(words)


def startup_records(api_port: int, fmt: str = "logfmt") -> list[str]:
    """The records that say ngrok's agent is ready, which pyngrok reads to find the API: the web
    service's address, then the sessions (devtunnel's embedded relay needs none: said as ngrok says them)."""
    now = time.time()
    return [record("starting web service", [("obj", "web"), ("addr", f"127.0.0.1:{api_port}")], fmt=fmt, now=now),
            record("tunnel session started", [("obj", "tunnels.session")], fmt=fmt, now=now),
            record("client session established", [("obj", "tunnels.session")], fmt=fmt, now=now)]


def started_tunnel(name: str, addr: str, url: str, fmt: str = "logfmt") -> str:
    """The record a script waits for: the tunnel is online at ``url`` and forwards to ``addr``."""
    return record("started tunnel", [("obj", "tunnels"), ("name", name), ("addr", addr), ("url", url)], fmt=fmt)

