"""The background writer between live traffic and the store.

Traffic must never wait on disk, so ``submit`` only puts the exchange in a dict under a lock
held for a few instructions. One writer thread takes everything queued, writes it in one
transaction and starts again: while a commit runs, new submits pile up and go into the next
one. Several submits of the same id (an exchange updated as it progresses) coalesce into the
newest version.

The writer lets a batch gather for up to ``LINGER`` seconds before it writes (group commit):
under load one wake of the thread and one transaction then cover many exchanges, instead of
the thread taking the GIL from the event loop for every single request.

Given a webhook context (``Recorder(store, webhooks=...)``), the writer also judges each
finished exchange before writing it: the provider, event, delivery id and signature verdict,
at the time the exchange began. That costs the writer's thread, never the forwarding path.
``subscribe_verdicts`` hears of each delivery judged (the headless agent's follow-up log line).

While writes fail (a full disk, a database locked by another process, a damaged file) exchanges
wait in memory to be retried, within two bounds: past ``UNWRITTEN_BYTES`` of bodies the oldest bodies
are dropped (the exchange itself is kept, marked truncated), past ``UNWRITTEN_EXCHANGES`` the
oldest exchanges are. Both are counted, and said once in the log.

Before it writes, at most once every ``FOLLOW_EVERY`` seconds, the writer looks whether the
database file is still the one at its path (``Store.follow_path``): deleted, a new one is created
there; replaced by another capture file, that one is written from then on; cut to 0 bytes
(``: > captures.db``), it is made a new, empty store; replaced by a file the store refuses, writes fail (and wait, bounded) until the path holds a usable file again.

The recorder is a run (``capture.runs``): every exchange it stores keeps the run's id (what the agent
API lists and clears as this agent's own: ``runs.RecordedBy``), and those it stores unfinished are
claimed by it and released when it stores them finished. While it holds any, it says every ``runs.HEARTBEAT`` seconds
that it is alive; every ``store.GONE_EVERY`` seconds (the first within a second of its start) it ends the exchanges of
runs that are gone (another agent on the file, killed) and tells its listeners their ids.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, TypeVar

from devtunnel.capture.model import Exchange, body_bytes, cut_bodies
from devtunnel.capture.runs import HEARTBEAT, this_run
from devtunnel.capture.store import GONE_EVERY, Store
from devtunnel.errors import StoreError

if TYPE_CHECKING:
    from devtunnel.capture.verdict import Verdict

__all__ = ["Recorder", "Judge", "one_malloc_arena"]

log = logging.getLogger("devtunnel.capture")

_RETRY_FIRST = 0.2
_RETRY_MAX = 5.0

LINGER = 0.02
"""Seconds a batch may gather before it is written; ``flush`` and ``close`` cut it short."""
MAX_BATCH = 2000
"""A batch this large is written at once, without waiting out ``LINGER``."""
TRIM_AFTER = 1 << 20
"""Body bytes written in one batch after which freed memory is handed back to the system."""
UNWRITTEN_BYTES = 32 << 20
"""Body bytes (request, response, WebSocket payloads) kept in memory while writes fail."""
UNWRITTEN_EXCHANGES = 5000
"""Exchanges kept in memory while writes fail, their bodies dropped first (about 4 KiB each)."""
WAL_WARN = 512 << 20
"""Size of the database's ``-wal`` file past which the writer says, once, that a program keeps a
read open: SQLite then cannot fold the log back into the database, and it grows with every write."""
FOLLOW_EVERY = 1.0
"""Seconds between two looks (one ``stat``) at whether the database file is still at its path while
nothing is written; a write looks right before and after it (``Recorder._write_at_path``)."""


class Judge(Protocol):
    """What judges webhook deliveries (``devtunnel.webhooks.context.WebhookContext``)."""

    def judge(self, exchange: Exchange) -> Verdict | None:
        """The verdict on a finished exchange, or None when it is no webhook delivery."""
        ...


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


def one_malloc_arena() -> None:
    """Have glibc serve every thread of the process from one arena (where it is glibc).

    A body is received in the event loop's thread and written by the recorder's thread; with an
    arena per thread, memory freed by one is not reused by the other: three 1 GiB uploads and
    three downloads in a row peaked about 6 MiB higher. Small objects come from Python's own
    allocator under the GIL, so the threads hardly contend for the one arena.

    It changes the whole process, so a ``Recorder`` does not do it: the agent's entry point
    (``devtunnel.commands.http``) calls it before it makes its recorder.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt(_M_ARENA_MAX, 1)


def _total_body_bytes(exchanges: Iterable[Exchange]) -> int:
    return sum(body_bytes(ex) for ex in exchanges)


_T = TypeVar("_T")


def _mib(n: int) -> str:
    if n >= 1000 << 20:
        return f"{n / (1 << 30):.3g} GiB"
    return f"{n / (1 << 20):.3g} MiB"


def _about_the_file(exc: BaseException) -> bool:
    """True when a write failed because of the database file, not of an exchange it held.

    The file's troubles (another process holds the lock, the disk is full, the file is damaged,
    read-only or refused) fail every write alike: the batch waits, to be retried, and the log says
    so once; the user can fix them (free space, move the file away) and nothing is lost meanwhile.
    An exchange the store cannot take (text that cannot be encoded, a number too big for SQLite,
    a value it cannot bind) fails alone, and only it is dropped (a body too big for SQLite is
    stored cut: ``rows.write_exchanges``).
    """
    if not isinstance(exc, StoreError):
        return False  # a fault of ours on one exchange
    cause = exc.__cause__
    if cause is None:
        return True  # refused before SQLite was asked: a directory, a read-only file or folder
    # Locked, busy, full, I/O, read-only: OperationalError; damaged or no database: DatabaseError
    # itself. Its other kinds (DataError, IntegrityError, ProgrammingError ...) are about a row.
    return isinstance(cause, sqlite3.OperationalError) or type(cause) is sqlite3.DatabaseError


def _disk_full(exc: BaseException) -> bool:
    """True when SQLite said the disk is full (``SQLITE_FULL``): a smaller write may still fit."""
    code = getattr(exc.__cause__, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL


class Recorder:
    """Writes exchanges to a store from a background thread, so traffic never waits on disk.

    ``submit`` never blocks; the writer commits whatever is queued as one transaction, at most
    ``LINGER`` seconds after it was submitted (so a ``kill -9`` loses at most the last 20 ms of
    finished exchanges; those still in flight keep what their live snapshot stored, and are ended as
    ``agent_gone`` by the next reader or recorder that finds this process gone: ``capture.runs``).
    Listeners are called from the writer thread with the ids just committed.

    A failing write is logged once (not once per exchange). Exchanges that failed because of the
    file (busy, the disk full, damaged, refused) stay queued and are retried with backoff; an
    exchange that can never be stored is dropped, with its id in the log.

    While writes fail, what waits in memory is bounded: past ``max_unwritten_bytes`` of bodies
    the oldest exchanges lose their bodies (they are stored later marked truncated), past
    ``max_unwritten`` exchanges the oldest are dropped whole. ``dropped_bodies`` and
    ``dropped_exchanges`` count them; the log says so once per outage, and again with the
    totals when writing works again.
    """

    def __init__(
        self, store: Store, *, max_unwritten_bytes: int = UNWRITTEN_BYTES, max_unwritten: int = UNWRITTEN_EXCHANGES,
        webhooks: Judge | None = None, max_wal_bytes: int = WAL_WARN,
    ) -> None:
        self.store = store
        self.webhooks = webhooks
        """Judges each finished exchange before it is written; None records no verdicts."""
        self._judge_failed = False
        self.max_unwritten_bytes = max_unwritten_bytes
        self.max_unwritten = max_unwritten
        self.max_wal_bytes = max_wal_bytes
        self._wal_said = False  # the -wal's growth was said, and it has not shrunk below the bound since
        self._lock = threading.Lock()
        """``_cond``'s lock: ``submit`` takes it itself (``Condition.__enter__`` and ``__exit__`` are
        two Python calls a request on the event loop)."""
        self._cond = threading.Condition(self._lock)
        self._pending: dict[str, Exchange] = {}
        self._pending_bytes = 0  # body bytes held by the exchanges in _pending
        self._failing = False  # the last write failed and will be retried: the bounds apply
        self._dropped_bodies = 0
        self._dropped_exchanges = 0
        self._outage_drops: tuple[int, int] | None = None  # the counts when this outage's dropping began
        self._submitted = 0
        self._done = 0
        self._closing = False
        self._hurry = 0  # flush() calls waiting: write now instead of lingering
        self._listeners: list[Callable[[list[str]], None]] = []
        self._verdict_listeners: list[Callable[[list[Exchange]], None]] = []
        self._last_error: str | None = None
        self._next_look = time.monotonic() + FOLLOW_EVERY  # when the writer looks at the path again
        self._next_wal_look = self._next_look  # and at the size of the -wal (``_watch_wal``)
        self._refused = False  # the file at the path was refused: look again before every retry
        self._moved = False  # the last look at the path moved to another file (``_follow``)
        self.run = this_run()
        """What claims the exchanges this recorder stores unfinished (``capture.runs``)."""
        self._next_beat = 0.0  # when the writer says next that its run is alive (while it holds any in flight)
        self._next_gone_look = 0.0  # when it looks next for runs of other agents that are gone
        self._thread = threading.Thread(target=self._run, name="devtunnel-recorder", daemon=True)
        self._thread.start()

    def submit(self, exchange: Exchange) -> None:
        """Queue an exchange (new or updated) for writing."""
        with self._lock:  # (``_cond``'s: notify_all below holds the condition)
            if self._closing:
                raise StoreError(f"{self.store.path}: the recorder is closed")
            # Re-inserting moves nothing: a dict keeps the first position, the value is the newest.
            pending = self._pending
            old = pending.get(exchange.id)
            pending[exchange.id] = exchange
            self._pending_bytes += body_bytes(exchange) - (body_bytes(old) if old is not None else 0)
            self._submitted += 1
            # The writer waits only while the queue is empty (or a full batch wakes it early):
            # waking it for every submit would hand it the GIL once per request.
            if len(pending) == 1 or len(pending) == MAX_BATCH:
                self._cond.notify_all()
            note = self._bound() if self._failing else None
        if note is not None:
            log.warning("%s", note)

    def subscribe(self, listener: Callable[[list[str]], None]) -> Callable[[], None]:
        """Call ``listener(ids)`` after each commit; returns an unsubscribe function."""
        return self._add(self._listeners, listener)

    def subscribe_verdicts(self, listener: Callable[[list[Exchange]], None]) -> Callable[[], None]:
        """Call ``listener(exchanges)`` with the webhook deliveries of each batch as soon as they are
        judged (each carrying its ``webhook`` verdict, ``duplicate_of`` as the store will set it when
        they are written), before they are written; returns an unsubscribe function.

        It is called from the writer thread, once per batch that holds a delivery: traffic that is no
        webhook never calls it.
        """
        return self._add(self._verdict_listeners, listener)

    def _add(self, listeners: list[Callable[[_T], None]], listener: Callable[[_T], None]) -> Callable[[], None]:
        """Add ``listener`` to ``listeners`` (under the lock); returns the function that takes it out."""
        with self._cond:
            listeners.append(listener)

        def unsubscribe() -> None:
            with self._cond:
                if listener in listeners:
                    listeners.remove(listener)

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

    @property
    def failing(self) -> bool:
        """True while the last write failed and is being retried (the memory bounds apply)."""
        with self._cond:
            return self._failing

    @property
    def unwritten_bytes(self) -> int:
        """Body bytes held by the exchanges waiting to be written."""
        with self._cond:
            return self._pending_bytes

    @property
    def dropped_bodies(self) -> int:
        """Exchanges whose bodies were dropped from memory because they could not be written."""
        with self._cond:
            return self._dropped_bodies

    @property
    def dropped_exchanges(self) -> int:
        """Exchanges dropped from memory whole because they could not be written."""
        with self._cond:
            return self._dropped_exchanges

    def _bound(self) -> str | None:
        """Drop the oldest unwritten bodies, then exchanges, beyond the bounds (holding the lock).

        Each bound, once passed, is brought a quarter (bodies) or an eighth (exchanges) below
        itself, so the scan from the oldest runs once per many submits, not on every one.
        Returns what to log when this starts an outage's dropping.
        """
        pending = self._pending
        over_bytes = self._pending_bytes > self.max_unwritten_bytes
        over_count = len(pending) > self.max_unwritten
        if not over_bytes and not over_count:
            return None
        starting = self._outage_drops is None
        if starting:
            self._outage_drops = (self._dropped_bodies, self._dropped_exchanges)
        if over_bytes:
            goal = self.max_unwritten_bytes * 3 // 4
            for ex_id, ex in pending.items():  # oldest first; replacing values keeps the order
                if self._pending_bytes <= goal:
                    break
                size = body_bytes(ex)
                if size:
                    pending[ex_id] = cut_bodies(ex, 0)
                    self._pending_bytes -= size
                    self._dropped_bodies += 1
        if over_count:
            oldest = list(itertools.islice(pending, len(pending) - self.max_unwritten * 7 // 8))
            for ex_id in oldest:
                self._pending_bytes -= body_bytes(pending.pop(ex_id))
            self._dropped_exchanges += len(oldest)
        if not starting:
            return None
        return (
            f"captures cannot be written ({self._last_error or 'the store is failing'}): keeping at most "
            f"{_mib(self.max_unwritten_bytes)} of bodies and {self.max_unwritten} exchanges in memory, "
            "dropping the oldest bodies first"
        )

    # --- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        retry = _RETRY_FIRST
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        left = self._next_look - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    idle = not self._pending and not self._closing
                    if not idle:
                        self._linger()
                        if self._closing and (not self._pending or self._last_error):
                            return
                        batch, self._pending = self._pending, {}
                        batch_bytes, self._pending_bytes = self._pending_bytes, 0  # what the batch's bodies hold
                        upto = self._submitted
                if idle:  # nothing to write: look at the path all the same, to notice a deletion soon
                    self._follow()
                    self._keep_runs()
                    continue
                if self.webhooks is not None:
                    judged = self._judge(batch)
                    if judged:
                        self._announce_verdicts(judged)
                kept = self._write_at_path(batch)
                self._keep_runs()
                if _TRIM is not None and batch_bytes >= TRIM_AFTER:
                    del batch
                    _TRIM()
                note = None
                with self._cond:
                    self._failing = bool(kept)
                    if kept:
                        # Newer submits of the same id win over the failed version.
                        self._pending = {**kept, **self._pending}
                        self._pending_bytes = _total_body_bytes(self._pending.values())
                        note = self._bound()
                    else:
                        self._done = upto
                    self._cond.notify_all()
                if note is not None:
                    log.warning("%s", note)
                with self._cond:
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

    def _judge(self, batch: dict[str, Exchange]) -> list[Exchange]:
        """Give each finished exchange of the batch its webhook verdict (in place in the batch);
        returns the exchanges that were given one.

        A live snapshot is left alone: its request body may still be arriving. So is an exchange
        judged already: one kept for a retry may since have lost its body to the memory bounds.
        """
        judge = self.webhooks.judge  # type: ignore[union-attr]
        judged: list[Exchange] = []
        for ex_id, ex in batch.items():
            if ex.duration is None or ex.webhook is not None:
                continue
            try:
                verdict = judge(ex)
            except Exception as exc:  # noqa: BLE001 - a verdict must never cost a capture
                if not self._judge_failed:
                    self._judge_failed = True
                    log.error("cannot judge webhook deliveries (first failure on %s): %s", ex_id, type(exc).__name__)
                continue
            if verdict is not None:
                batch[ex_id] = judged_ex = replace(ex, webhook=verdict)
                judged.append(judged_ex)
        return judged

    def _announce_verdicts(self, judged: list[Exchange]) -> None:
        with self._cond:
            listeners = list(self._verdict_listeners)
        if not listeners:
            return
        try:
            firsts = self.store.first_deliveries(judged)
        except Exception as exc:  # noqa: BLE001 - a store that cannot be read now is reported by the write
            log.debug("cannot look up earlier deliveries: %s", exc)
            firsts = {}
        if firsts:  # the listeners' copies only: the store sets the column itself when it writes
            judged = [replace(ex, webhook=replace(ex.webhook, duplicate_of=firsts[ex.id]))  # type: ignore[type-var]
                      if ex.id in firsts else ex for ex in judged]
        for listener in listeners:
            try:
                listener(judged)
            except Exception:  # noqa: BLE001 - a broken listener must not stop recording
                log.exception("verdict listener %r failed", listener)

    def _write_at_path(self, batch: dict[str, Exchange]) -> dict[str, Exchange]:
        """Write a batch into the file at the store's path; returns what must be retried later.

        The path is looked at (one ``stat``) right before the write, so nothing is written into
        a file deleted before it, and right after: a batch that went into a file deleted while it
        was written is written again into the new one (rows are upserts by id).
        """
        if not self._follow(at_once=True):
            return batch
        kept = self._write(batch)
        if kept or not self._follow(at_once=True) or not self._moved:
            return kept
        return self._write(batch)

    def _follow(self, at_once: bool = False) -> bool:
        """Follow the database file to what is at its path now (``at_once``, or at most every
        ``FOLLOW_EVERY`` seconds; on every retry while it is refused); False while that file is
        refused. ``_moved`` says whether this call moved to another file."""
        self._moved = False
        now = time.monotonic()
        if not at_once and not self._refused and now < self._next_look:
            return True
        companions = now >= self._next_wal_look
        if companions:
            self._watch_wal()
            self._next_wal_look = now + FOLLOW_EVERY
        self._next_look = now + FOLLOW_EVERY
        try:
            change = self.store.follow_path()
            which = self.store.follow_companions() if change is None and companions else None
            if which == "-wal":
                log.warning("%s-wal was deleted or replaced; what it held is now in the capture database, and recording "
                            "goes on with a new one", self.store.path)
            elif which == "-shm":
                log.warning("%s-shm was deleted or replaced; recording goes on with a new one, which every program "
                            "reading the capture database takes up", self.store.path)
        except Exception as exc:  # noqa: BLE001 - the writer must survive anything
            self._refused = True
            self._report(exc)
            return False
        self._refused = False
        self._moved = change is not None
        if change == "deleted":
            log.warning("the capture database %s was moved or deleted; recording into a new one there", self.store.path)
        elif change == "replaced":
            log.warning("another capture database is at %s; recording into it", self.store.path)
        elif change == "emptied":
            log.warning("the capture database %s was emptied (cut to 0 bytes); recording into it as a new, empty one",
                        self.store.path)
        return True

    def _keep_runs(self) -> None:
        """Every ``HEARTBEAT`` seconds say that this run is alive, while it holds exchanges in flight;
        every ``GONE_EVERY`` seconds (the first look at its first wake) end those of the runs that are gone
        (another agent on the file, killed), telling the listeners their ids."""
        now = time.monotonic()
        try:
            if now >= self._next_beat:
                self._next_beat = now + HEARTBEAT
                self.store.heartbeat(self.run)
            if now >= self._next_gone_look:
                self._next_gone_look = now + GONE_EVERY
                ended = self.store.end_gone_runs()
                if ended:
                    log.info("ended %d exchange(s) left in flight by an agent that is gone", len(ended))
                    self._tell(ended)
        except Exception as exc:  # noqa: BLE001 - the writes say what is wrong with the file
            log.debug("cannot keep the runs of %s: %s", self.store.path, exc)

    def _watch_wal(self) -> None:
        """Say once when the ``-wal`` has grown past ``max_wal_bytes`` (again once it shrank back)."""
        size = self.store.wal_bytes()
        if size <= self.max_wal_bytes:
            self._wal_said = False
        elif not self._wal_said and self.store.wal_held():  # not one large transaction, folded already
            self._wal_said = True
            log.warning("%s-wal has grown to %s: a program keeps a read of the capture database open (an sqlite3 "
                        "shell, a database browser?), so SQLite cannot fold the log back into it; close that program",
                        self.store.path, _mib(size))

    def _write(self, batch: dict[str, Exchange]) -> dict[str, Exchange]:
        """Write a batch; returns what must be retried later."""
        try:
            self.store.put_many(batch.values(), run=self.run)
        except Exception as exc:  # noqa: BLE001 - the writer must survive anything
            if _about_the_file(exc) and not (_disk_full(exc) and len(batch) > 1):
                self._report(exc)
                return batch
            # One bad exchange must not sink the others: write them one by one. On a full disk,
            # as many of the oldest as the space freed since takes, the others kept for a retry.
            return self._write_each(batch)
        self._committed(list(batch))
        return {}

    def _write_each(self, batch: dict[str, Exchange]) -> dict[str, Exchange]:
        """Write a batch one exchange at a time, oldest first; returns what must be retried later.

        A file that refuses one (locked, damaged) refuses the rest alike: they wait, untried. On a
        full disk a smaller exchange may still fit where a larger one did not: each one with fewer
        body bytes than the smallest that failed is tried. One that failed while a smaller one behind
        it went in is too large for the space there is: it is stored without its bodies (marked cut,
        their real sizes kept, as past the body cap), said once, rather than wait and hold the
        space's worth of the others back on every retry.
        """
        kept: dict[str, Exchange] = {}
        written: list[str] = []
        stopped = False  # the file refused one: the rest waits, untried
        no_room: int | None = None  # the fewest body bytes a write failed for on a full disk
        too_big: list[str] = []  # failed on a full disk: too big if one behind it goes in
        for ex_id, ex in batch.items():
            if stopped or (no_room is not None and body_bytes(ex) >= no_room):
                kept[ex_id] = ex
                continue
            try:
                self.store.put(ex, run=self.run)
            except Exception as exc:  # noqa: BLE001
                if _about_the_file(exc):
                    kept[ex_id] = ex
                    self._report(exc)
                    if _disk_full(exc):
                        no_room = body_bytes(ex)
                        too_big.append(ex_id)
                    else:
                        stopped = True
                else:
                    log.error("dropped exchange %s: %s", ex_id, exc)
            else:
                written.append(ex_id)
                for big in too_big:
                    self._store_cut(kept, big, written)
                too_big.clear()
        if written:
            self._committed(written)
        return kept

    def _store_cut(self, kept: dict[str, Exchange], ex_id: str, written: list[str]) -> None:
        """Store ``kept[ex_id]``, found too big for the space left on a full disk, without its bodies;
        on success it leaves ``kept`` for ``written``. Still refused, it waits cut: it holds nothing
        back any more."""
        ex = kept[ex_id]
        size = body_bytes(ex)
        if not size:
            return
        kept[ex_id] = cut = cut_bodies(ex, 0)
        with self._cond:
            self._dropped_bodies += 1
        log.warning("exchange %s does not fit in the space left on the disk (%s of bodies) while smaller ones do: "
                    "its bodies are dropped, the exchange is kept (marked cut)", ex_id, _mib(size))
        try:
            self.store.put(cut, run=self.run)
        except Exception:  # noqa: BLE001 - waits with the others, said by _report
            return
        del kept[ex_id]
        written.append(ex_id)

    def _report(self, exc: Exception) -> None:
        message = str(exc)
        if message != self._last_error:
            log.error("cannot write captures: %s", message)
            self._last_error = message

    def _committed(self, ids: list[str]) -> None:
        with self._cond:
            listeners = list(self._listeners)
            since = self._outage_drops
            self._outage_drops = None
            bodies, exchanges = self._dropped_bodies, self._dropped_exchanges
        if since is not None:
            log.warning(
                "writing captures again; while they could not be written %d exchange(s) lost their "
                "bodies and %d were dropped whole", bodies - since[0], exchanges - since[1],
            )
            self._last_error = None
        elif self._last_error is not None:
            log.info("writing captures again")
            self._last_error = None
        self._tell(ids, listeners)

    def _tell(self, ids: list[str], listeners: list[Callable[[list[str]], None]] | None = None) -> None:
        """Call each listener with the ids of exchanges that changed in the store."""
        if listeners is None:
            with self._cond:
                listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(ids)
            except Exception:  # noqa: BLE001 - a broken listener must not stop recording
                log.exception("capture listener %r failed", listener)
