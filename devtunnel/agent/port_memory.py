"""Ports remembered between runs, so a tunnel's URL stays the same when devtunnel starts again.

One small JSON file in the state directory (``$XDG_STATE_HOME/devtunnel/ports.json``), a table
per kind of port, each mapping a key (a tunnel name) to the port it had last time::

    {"relay": {"payments": 41234}, "ssh": {"payments ssh:me@host": 40021}}

``relay`` is the embedded relay's local port; ``ssh`` the remote port a plain ``ssh:`` server
allocated, keyed by the tunnel's name and the server (``to http://127.0.0.1:8000 ssh:me@host``
for a tunnel without a name of its own). The file is rewritten atomically (a temporary file renamed over it); a missing,
unreadable or malformed file is an empty memory, never an error: remembering is a courtesy.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from devtunnel.values.paths import make_private_folder, ports_file

__all__ = ["MAX_ENTRIES", "PortMemory"]

MAX_ENTRIES = 200
"""Keys kept per table; the oldest entries go first (tunnel names come and go)."""


class PortMemory:
    """The remembered ports in ``path`` (default: ``ports.json`` in the state directory)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else ports_file()

    def _read(self) -> dict[str, dict[str, int]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            kind: {key: port for key, port in table.items() if _is_port(port)}
            for kind, table in data.items() if isinstance(kind, str) and isinstance(table, dict)
        }

    def get(self, kind: str, key: str) -> int | None:
        """The port ``key`` had last time, or None."""
        return self._read().get(kind, {}).get(key)

    def put(self, kind: str, key: str, port: int) -> None:
        """Remember ``port`` for ``key``; a failure to write is ignored (nothing depends on it)."""
        data = self._read()
        table = data.setdefault(kind, {})
        if table.get(key) == port:
            return
        table.pop(key, None)
        table[key] = port  # newest last
        while len(table) > MAX_ENTRIES:
            del table[next(iter(table))]
        with contextlib.suppress(OSError):
            _write_atomically(self.path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


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
