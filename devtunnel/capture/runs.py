"""Which agent run owns an exchange still in flight, whether that run still lives, and how the
exchanges of one that is gone are ended.

An agent killed outright (``kill -9``, out of memory, a power loss) leaves the exchanges it had in
flight (an SSE stream, a WebSocket session, a held request: stored early by their live snapshot)
without an end. Several agents may record into one file, so each recorder is a ``Run`` that claims
the exchanges it stores unfinished (the ``in_flight`` table, schema 10) and says when it was last
seen (``runs.seen_at``: each write that claims, and a heartbeat every ``HEARTBEAT`` seconds while
it holds any). A run is gone when its process is: on the machine (and in the pid namespace) where
it ran, a pid that no longer runs, or runs as another process (its start time differs), or as a
zombie. Where that cannot be told (another pid namespace, a system without ``/proc``), a run not
seen for ``LEASE`` seconds is gone. A gone run's exchanges end with error ``agent_gone``, their
duration up to when the run was last seen (or its last WebSocket message, if later). A run's own
later write of an exchange (it was only suspended) replaces that end with the real one.

Each exchange a run stores keeps the run's id (``exchange_rows.run``, schema 12): ``RecordedBy``
finds what one agent recorded in a file several record into (the agent API's ``scope=agent``).

Pure: a little of ``/proc`` and SQL on a connection given; no threads, no asyncio.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import sqlite3
import time
from dataclasses import dataclass

from devtunnel.capture.filters.base import Filter, SqlParams
from devtunnel.capture.model import Exchange

__all__ = ["HEARTBEAT", "LEASE", "Run", "RecordedBy", "this_run", "process_state", "claim", "release", "heartbeat",
           "gone_runs", "end_gone"]

HEARTBEAT = 2.0
"""Seconds between two ``seen_at`` updates of a run that holds exchanges in flight."""
LEASE = 60.0
"""Seconds without a sign of a run after which it is gone, where its process cannot be looked at."""


@dataclass(frozen=True)
class Run:
    """One recorder of one process: what claims the exchanges it stores while they are in flight."""

    id: str
    """Random, one per recorder."""
    machine: str
    """Where ``pid`` names this process: the boot and the pid namespace on Linux, else the host name."""
    pid: int
    start: int | None
    """The process's start time in clock ticks since boot (Linux); None where it cannot be read."""


@functools.cache
def _machine() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return f"host:{socket.gethostname()}"


def _stat(pid: int) -> tuple[str, int] | None:
    """The state letter and start time of process ``pid`` from ``/proc``; None when it is not there."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    try:
        return fields[0].decode("ascii", "replace"), int(fields[19])  # fields 3 and 22 of proc(5)
    except (IndexError, ValueError):
        return None


def this_run() -> Run:
    """A new run of this process."""
    pid = os.getpid()
    stat = _stat(pid)
    return Run(secrets.token_hex(8), _machine(), pid, None if stat is None else stat[1])


class RecordedBy(Filter):
    """The exchanges the run ``run`` (a ``Run.id``) stored, by the partial index on ``exchange_rows.run``
    (in id order: a page of the newest reads no more than the page); with ``run`` None, those stored
    without a run (by a devtunnel of schema 11 or before, by ``devtunnel replay``, by ``Store.put``
    without ``run``).

    For the store alone: an ``Exchange`` in memory does not say which run recorded it.
    """

    def __init__(self, run: str | None) -> None:
        self.run = run

    def __call__(self, ex: Exchange) -> bool:
        raise TypeError("which run recorded an exchange is known to the store only: use RecordedBy in a store query")

    def sql(self) -> tuple[str, SqlParams]:
        if self.run is None:
            return "(e.run IS NULL)", []
        # ``= ?`` lets SQLite use the partial index (it implies ``run IS NOT NULL``); the second term
        # keeps the clause from being NULL on a row without a run (false instead, so ``not`` works).
        return "(e.run = ? AND e.run IS NOT NULL)", [self.run]

    def __repr__(self) -> str:
        return f"RecordedBy({self.run!r})"


def process_state(machine: str, pid: int, start: int | None) -> bool | None:
    """Whether the process of a run still runs: True, False, or None when this process cannot tell."""
    if machine != _machine() or pid <= 0:
        return None
    if os.path.isdir("/proc/self"):
        stat = _stat(pid)
        if stat is None or stat[0] in ("Z", "X"):  # gone, or a zombie nobody has reaped yet
            return False
        if start is None:
            return None
        return stat[1] == start
    if os.name != "posix":
        return None  # Windows: os.kill(pid, 0) would end the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # another user's: it runs
    return None  # something runs under that pid: perhaps another process


def claim(conn: sqlite3.Connection, run: Run, ids: list[str], now: float) -> None:
    """``run`` holds these exchanges, stored unfinished in this transaction."""
    conn.execute("INSERT OR REPLACE INTO runs (run, machine, pid, start, seen_at) VALUES (?, ?, ?, ?, ?)",
                 (run.id, run.machine, run.pid, run.start, now))
    conn.executemany("INSERT OR REPLACE INTO in_flight (id, run) VALUES (?, ?)", [(i, run.id) for i in ids])


def release(conn: sqlite3.Connection, ids: list[str]) -> None:
    """These exchanges, stored finished in this transaction, are in flight no more."""
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        conn.execute(f"DELETE FROM in_flight WHERE id IN ({', '.join('?' * len(chunk))})", chunk)


def heartbeat(conn: sqlite3.Connection, run: Run, now: float) -> bool:
    """Say ``run`` is alive; False when its row is gone (a reader ended it: it was taken for gone)."""
    return conn.execute("UPDATE runs SET seen_at = ? WHERE run = ?", (now, run.id)).rowcount > 0


_END = """UPDATE exchange_rows SET
    duration = max(0.0, max(?1, coalesce((SELECT max(time) FROM ws_messages m WHERE m.id = exchange_rows.id), 0))
                        - started_at, coalesce(ttfb, 0.0)),
    error_message = CASE WHEN error IS NULL THEN ?2 ELSE error_message END,
    error = coalesce(error, 'agent_gone')
    WHERE id IN (SELECT id FROM in_flight WHERE run = ?3) AND duration IS NULL"""


def gone_runs(conn: sqlite3.Connection, now: float) -> list[tuple[str, int, float]]:
    """The runs of the file that are gone: ``(run, pid, seen_at)`` of each."""
    gone = []
    for run, machine, pid, start, seen_at in conn.execute("SELECT run, machine, pid, start, seen_at FROM runs"):
        state = process_state(machine, pid, start)
        if state is False or (state is None and now - seen_at > LEASE):
            gone.append((run, pid, seen_at))
    return gone


def end_gone(conn: sqlite3.Connection, now: float) -> list[str]:
    """End the exchanges of every run that is gone, and forget those runs; returns the ids ended.

    Call it inside a write transaction (what a run writes meanwhile must wait).
    """
    ended: list[str] = []
    for run, pid, seen_at in gone_runs(conn, now):
        ids = [r[0] for r in conn.execute(
            "SELECT f.id FROM in_flight f JOIN exchange_rows e ON e.id = f.id WHERE f.run = ? AND e.duration IS NULL",
            (run,))]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seen_at))
        message = (f"the agent recording it (pid {pid}) stopped before it ended (killed, out of memory, or the "
                   f"machine went down); it was last seen at {when}, where its duration stops")
        conn.execute(_END, (seen_at, message, run))
        conn.execute("DELETE FROM in_flight WHERE run = ?", (run,))
        conn.execute("DELETE FROM runs WHERE run = ?", (run,))
        ended += ids
    return ended
