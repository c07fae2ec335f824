"""The background writer between live traffic and the store.

Traffic must never wait on disk, so ``submit`` only puts the exchange in a dict under a lock
held for a few instructions. One writer thread takes everything queued, writes it in one
transaction and starts again: while a commit runs, new submits pile up and go into the next
one. Several submits of the same id (an exchange updated as it progresses) coalesce into the
newest version.

The writer lets a batch gather for up to ``LINGER`` seconds before it writes (group commit):
under load one wake of the thread and one transaction then cover many exchanges, instead of
the thread taking the GIL from the event loop for every single request.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from devtunnel.capture.model import Exchange
from devtunnel.errors import StoreError

if TYPE_CHECKING:
    from devtunnel.capture.store import Store

__all__ = ["Recorder"]

log = logging.getLogger("devtunnel.capture")

_RETRY_FIRST = 0.2
_RETRY_MAX = 5.0

LINGER = 0.02
"""Seconds a batch may gather before it is written; ``flush`` and ``close`` cut it short."""
MAX_BATCH = 2000
"""A batch this large is written at once, without waiting out ``LINGER``."""
TRIM_AFTER = 1 << 20
"""Body bytes written in one batch after which freed memory is handed back to the system."""


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where there is no such function.

    Large recorded bodies leave the allocator's arenas fragmented; glibc keeps the freed pages
    unless asked, so an agent that recorded a few 10 MiB bodies would hold on to them.
    """
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


_TRIM = _malloc_trim()
_M_ARENA_MAX = -8  # glibc's mallopt() parameter number


def _one_malloc_arena() -> None:
    """Have glibc serve every thread of the process from one arena (where it is glibc).

    A body is received in the event loop's thread and written by the recorder's thread; with an
    arena per thread, memory freed by one is not reused by the other: three 1 GiB uploads and
    three downloads in a row peaked about 6 MiB higher. Small objects come from Python's own
    allocator under the GIL, so the threads hardly contend for the one arena.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt(_M_ARENA_MAX, 1)


def _body_bytes(batch: dict[str, Exchange]) -> int:
    return sum(len(ex.request.body) + (len(ex.response.body) if ex.response is not None else 0)
               for ex in batch.values())


def _is_transient(exc: BaseException) -> bool:
    """True when retrying later may succeed (another process holds the lock, disk full)."""
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    text = str(cause).lower()
    return isinstance(cause, sqlite3.OperationalError) and any(
        word in text for word in ("locked", "busy", "disk i/o", "full")
    )


class Recorder:
    """Writes exchanges to a store from a background thread, so traffic never waits on disk.

    ``submit`` never blocks; the writer commits whatever is queued as one transaction, at most
    ``LINGER`` seconds after it was submitted (so a ``kill -9`` loses the exchanges still in flight
    and at most the last 20 ms of finished ones).
    Listeners are called from the writer thread with the ids just committed.

    A failing write is logged once (not once per exchange). Exchanges that failed because the
    database was busy or the disk full stay queued and are retried with backoff; an exchange
    that can never be stored is dropped, with its id in the log.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cond = threading.Condition(threading.Lock())
        self._pending: dict[str, Exchange] = {}
        self._submitted = 0
        self._done = 0
        self._closing = False
        self._hurry = 0  # flush() calls waiting: write now instead of lingering
        self._listeners: list[Callable[[list[str]], None]] = []
        self._last_error: str | None = None
        _one_malloc_arena()  # before the thread's first allocation gives it an arena of its own
        self._thread = threading.Thread(target=self._run, name="devtunnel-recorder", daemon=True)
        self._thread.start()

    def submit(self, exchange: Exchange) -> None:
        """Queue an exchange (new or updated) for writing."""
        with self._cond:
            if self._closing:
                raise StoreError(f"{self.store.path}: the recorder is closed")
            # Re-inserting moves nothing: a dict keeps the first position, the value is the newest.
            pending = self._pending
            pending[exchange.id] = exchange
            self._submitted += 1
            # The writer waits only while the queue is empty (or a full batch wakes it early):
            # waking it for every submit would hand it the GIL once per request.
            if len(pending) == 1 or len(pending) == MAX_BATCH:
                self._cond.notify_all()

    def subscribe(self, listener: Callable[[list[str]], None]) -> Callable[[], None]:
        """Call ``listener(ids)`` after each commit; returns an unsubscribe function."""
        with self._cond:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._cond:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def flush(self, timeout: float = 5.0) -> None:
        """Block until everything submitted so far is committed.

        Raises:
            StoreError: when that did not happen within ``timeout`` seconds (the store is
                locked or failing; the exchanges stay queued).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            self._hurry += 1
            try:
                self._cond.notify_all()  # a writer lingering or waiting to retry writes now
                while self._done < target:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        reason = f" ({self._last_error})" if self._last_error else ""
                        raise StoreError(
                            f"{self.store.path}: {target - self._done} exchange(s) not written after "
                            f"{timeout:g}s{reason}"
                        )
                    self._cond.wait(left)
            finally:
                self._hurry -= 1

    def close(self, timeout: float = 5.0) -> None:
        """Flush and stop the writer thread."""
        try:
            self.flush(timeout)
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        """How many exchanges wait to be written."""
        with self._cond:
            return len(self._pending)

    # --- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        retry = _RETRY_FIRST
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    self._linger()
                    if self._closing and (not self._pending or self._last_error):
                        return
                    batch, self._pending = self._pending, {}
                    upto = self._submitted
                kept = self._write(batch)
                if _TRIM is not None and _body_bytes(batch) >= TRIM_AFTER:
                    del batch
                    _TRIM()
                with self._cond:
                    if kept:
                        # Newer submits of the same id win over the failed version.
                        self._pending = {**kept, **self._pending}
                    else:
                        self._done = upto
                    self._cond.notify_all()
                    if kept and not self._closing:
                        self._cond.wait(retry)
                retry = min(retry * 2, _RETRY_MAX) if kept else _RETRY_FIRST
        finally:
            self.store.close()

    def _linger(self) -> None:
        """Let the batch grow for up to ``LINGER`` seconds (called holding the lock)."""
        deadline = time.monotonic() + LINGER
        while not self._closing and not self._hurry and len(self._pending) < MAX_BATCH:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _write(self, batch: dict[str, Exchange]) -> dict[str, Exchange]:
        """Write a batch; returns what must be retried later."""
        try:
            self.store.put_many(batch.values())
        except Exception as exc:  # noqa: BLE001 - the writer must survive anything
            if _is_transient(exc):
                self._report(exc)
                return batch
            # One bad exchange must not sink the others: write them one by one.
            return self._write_each(batch)
        self._committed(list(batch))
        return {}

    def _write_each(self, batch: dict[str, Exchange]) -> dict[str, Exchange]:
        kept: dict[str, Exchange] = {}
        written: list[str] = []
        for ex_id, ex in batch.items():
            try:
                self.store.put(ex)
            except Exception as exc:  # noqa: BLE001
                if _is_transient(exc):
                    kept[ex_id] = ex
                    self._report(exc)
                else:
                    log.error("dropped exchange %s: %s", ex_id, exc)
            else:
                written.append(ex_id)
        if written:
            self._committed(written)
        return kept

    def _report(self, exc: Exception) -> None:
        message = str(exc)
        if message != self._last_error:
            log.error("cannot write captures: %s", message)
            self._last_error = message

    def _committed(self, ids: list[str]) -> None:
        if self._last_error is not None:
            log.info("writing captures again")
            self._last_error = None
        with self._cond:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(ids)
            except Exception:  # noqa: BLE001 - a broken listener must not stop recording
                log.exception("capture listener %r failed", listener)
