"""The SQLite store of captured exchanges (WAL mode; many readers, one writer).

CONTRACT (implementation pending): the signatures and docstrings below are fixed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devtunnel.capture.model import Exchange

DEFAULT_MAX_EXCHANGES = 100_000
DEFAULT_MAX_BYTES = 2 * 1024 * 1024 * 1024


def default_db_path() -> Path:
    """``$XDG_STATE_HOME/devtunnel/captures.db`` (``~/.local/state/devtunnel/`` when unset)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "devtunnel" / "captures.db"


@dataclass(frozen=True, slots=True)
class Row:
    """The light form of an exchange used by list views (no headers, no bodies)."""

    id: str
    tunnel: str
    started_at: float
    method: str
    target: str
    host: str
    status: int | None
    duration: float | None
    size: int
    error: str | None
    replay_of: str | None
    websocket: bool


class Store:
    """Captured exchanges in one SQLite file.

    ``Store(path)`` creates the file (and its folder) if needed. Every sqlite3 error is raised
    as ``StoreError`` with a one-line message naming the file and what to do. Thread-safe: one
    connection per thread. ``filter`` arguments are a filter expression string or a compiled
    ``devtunnel.capture.filters.Filter``; ``None`` matches everything. Order is by id (oldest
    first) unless ``newest_first``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_exchanges: int = DEFAULT_MAX_EXCHANGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        readonly: bool = False,
    ) -> None:
        raise NotImplementedError

    path: Path

    def put(self, exchange: Exchange) -> None:
        """Insert or replace one exchange (by id), then apply retention."""
        raise NotImplementedError

    def put_many(self, exchanges: Iterable[Exchange]) -> None:
        """Insert or replace many exchanges in one transaction, then apply retention."""
        raise NotImplementedError

    def get(self, exchange_id: str) -> Exchange:
        """The exchange with this id (a unique prefix also works); NotFoundError otherwise."""
        raise NotImplementedError

    def query(self, filter: object = None, *, limit: int | None = None, offset: int = 0,
              newest_first: bool = False) -> list[Exchange]:
        """Full exchanges matching ``filter``."""
        raise NotImplementedError

    def rows(self, filter: object = None, *, limit: int | None = None, offset: int = 0,
             newest_first: bool = False) -> list[Row]:
        """Light rows matching ``filter`` (fast: no bodies are read)."""
        raise NotImplementedError

    def rows_by_id(self, ids: Sequence[str]) -> list[Row]:
        """Light rows for these ids, in the given order (missing ids are skipped)."""
        raise NotImplementedError

    def ids(self, filter: object = None) -> list[str]:
        """Every matching id, oldest first (what a virtualised list holds)."""
        raise NotImplementedError

    def count(self, filter: object = None) -> int:
        """How many exchanges match."""
        raise NotImplementedError

    def delete(self, ids: Iterable[str]) -> int:
        """Delete these exchanges; returns how many were deleted."""
        raise NotImplementedError

    def clear(self) -> None:
        """Delete every exchange."""
        raise NotImplementedError

    def close(self) -> None:
        """Close this thread's connection."""
        raise NotImplementedError


class Recorder:
    """Writes exchanges to a store from a background thread, so traffic never waits on disk.

    ``submit`` never blocks; the writer commits whatever is queued as one transaction, as soon
    as the previous commit ends (so a ``kill -9`` loses only exchanges still in flight).
    Listeners are called from the writer thread with the ids just committed.
    """

    def __init__(self, store: Store) -> None:
        raise NotImplementedError

    def submit(self, exchange: Exchange) -> None:
        """Queue an exchange (new or updated) for writing."""
        raise NotImplementedError

    def subscribe(self, listener: Callable[[list[str]], None]) -> Callable[[], None]:
        """Call ``listener(ids)`` after each commit; returns an unsubscribe function."""
        raise NotImplementedError

    def flush(self, timeout: float = 5.0) -> None:
        """Block until everything submitted so far is committed."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush and stop the writer thread."""
        raise NotImplementedError
