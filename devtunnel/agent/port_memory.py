"""Ports and names remembered between runs, so a tunnel's URL stays the same when devtunnel starts again.

One small JSON file in the state directory (``$XDG_STATE_HOME/devtunnel/ports.json``), a table
per kind of port, each mapping a key (a tunnel name) to the port it keeps between runs, and the names
given to tunnels started without one::

    {"relay": {"payments": 41234}, "relay moved": {"payments": 52810},
     "ssh": {"payments ssh:me@host": 40021}, "name": {"to http://127.0.0.1:8000": "brave-otter-4821"}}

``relay`` is the embedded relay's local port, the tunnel's own: written by the run that gave the
name its first port, or by ``--port``, never by a run that found it taken and moved; ``relay
moved`` the port such a run moved to, the second choice of the runs after it while the first is
taken (``relay_ports``); ``ssh`` the remote port a plain ``ssh:`` server
allocated, keyed by the tunnel's name and the server (``to http://127.0.0.1:8000 ssh:me@host``
for a tunnel without a name of its own); ``name`` the random name a tunnel started without one
got for its target (``devtunnel http 8000`` run again asks for it again: on the embedded relay,
the same ``http://NAME.localhost:PORT``). The file is rewritten atomically (a temporary file renamed over it); a missing,
unreadable or malformed file is an empty memory, never an error: remembering is a courtesy.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Container
from pathlib import Path

from devtunnel.errors import ConfigError
from devtunnel.values.names import random_name, validate_name
from devtunnel.values.paths import make_private_folder, ports_file

__all__ = ["MAX_ENTRIES", "MOVED", "RELAY", "PortMemory"]

RELAY = "relay"
"""The table of the embedded relay's port per tunnel name: the port its URL has."""

MOVED = "relay moved"
"""The table of the port a tunnel's URL moved to in a run that found its own port taken."""

NAMES = "name"
"""The table of names given to unnamed tunnels, by their target."""

MAX_ENTRIES = 200
"""Keys kept per table; the oldest entries go first (tunnel names come and go)."""


class PortMemory:
    """The remembered ports in ``path`` (default: ``ports.json`` in the state directory)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else ports_file()

    def _read(self) -> dict[str, dict[str, int | str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            kind: {key: value for key, value in table.items() if (_is_name if kind == NAMES else _is_port)(value)}
            for kind, table in data.items() if isinstance(kind, str) and isinstance(table, dict)
        }

    def get(self, kind: str, key: str) -> int | None:
        """The port ``key`` had last time, or None."""
        port = self._read().get(kind, {}).get(key)
        return port if isinstance(port, int) else None

    def put(self, kind: str, key: str, port: int) -> None:
        """Remember ``port`` for ``key``; a failure to write is ignored (nothing depends on it)."""
        self._put(kind, key, port)

    def relay_ports(self, name: str) -> list[int]:
        """The ports the embedded relay of tunnel ``name`` tries, in order: the tunnel's own, then
        the one it moved to when a run found its own taken (so that, while a program holds the
        first, run after run gets the same second URL, not a new one each time); none when the
        name has no port yet."""
        data = self._read()
        first, second = data.get(RELAY, {}).get(name), data.get(MOVED, {}).get(name)
        if not isinstance(first, int):
            return []
        return [first, second] if isinstance(second, int) and second != first else [first]

    def name_for(self, target_url: str, *, taken: Container[str] = ()) -> str:
        """The name a tunnel to ``target_url`` started without one gets: the one it had last time,
        else a new random one, remembered. A remembered name in ``taken`` (running here already,
        for another tunnel to the same target) is left to it: this one gets a new name, not
        remembered."""
        key = f"to {target_url}"
        name = self._read().get(NAMES, {}).get(key)
        if isinstance(name, str) and name not in taken:
            return name
        fresh = random_name()
        if not isinstance(name, str):
            self._put(NAMES, key, fresh)
        return fresh

    def _put(self, kind: str, key: str, value: int | str) -> None:
        data = self._read()
        table = data.setdefault(kind, {})
        if table.get(key) == value:
            return
        table.pop(key, None)
        table[key] = value  # newest last
        while len(table) > MAX_ENTRIES:
            del table[next(iter(table))]
        with contextlib.suppress(OSError):
            _write_atomically(self.path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _is_name(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return validate_name(value) == value
    except ConfigError:
        return False


def _write_atomically(path: Path, text: str) -> None:
    make_private_folder(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
