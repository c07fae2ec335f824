"""Exchanges left in flight by an agent that is gone (``capture.runs``): ended as ``agent_gone`` by
whoever finds its process gone, never while it runs; a live agent's own later write wins."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from devtunnel.capture import runs
from devtunnel.capture.model import Exchange, WsMessage
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.runs import Run, this_run
from devtunnel.capture.schema import SCHEMA_VERSION
from devtunnel.capture.store import Store
from tests.helpers import wait_for

from .test_store import make
from .test_store_webhooks import TO_SCHEMA_9

HERE = Path(__file__).parent


class Child:
    """``inflight_child.py``: a process recording ``n`` exchanges still in flight into ``db``."""

    def __init__(self, db: Path, n: int) -> None:
        self.popen = subprocess.Popen([sys.executable, str(HERE / "inflight_child.py"), str(db), str(n)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE.parents[1])
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(line.strip() for line in self.popen.stdout),  # type: ignore[union-attr]
                         daemon=True).start()
        self.ids = wait_for(lambda: len(self.lines) >= n and self.lines[:n], timeout=30,
                            what=f"{n} ids in flight from the child")

    def say(self, line: str) -> None:
        self.popen.stdin.write(line + "\n")  # type: ignore[union-attr]
        self.popen.stdin.flush()  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.stop()


def unfinished(n: int = 0) -> Exchange:
    """An exchange as its live snapshot stores it: a response begun, no duration yet."""
    return replace(make(n), duration=None)


def gone_run() -> Run:
    """The run of a process of this machine that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return Run("gone0000", runs._machine(), int(done.stdout), None)


def in_flight_rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT id, run FROM in_flight ORDER BY id"))


def test_kill_9_of_a_recording_process_leaves_no_exchange_in_flight_for_the_next_reader(
        tmp_path: Path, children: list[Child]) -> None:
    db = tmp_path / "captures.db"
    child = Child(db, 2)
    children.append(child)
    assert [r.duration for r in Store(db, readonly=True).rows_by_id(child.ids)] == [None, None]  # it lives
    os.kill(child.popen.pid, signal.SIGKILL)
    # Not reaped yet: a zombie, whose /proc entry is still there, is gone as well.
    wait_for(lambda: (stat := runs._stat(child.popen.pid)) is None or stat[0] == "Z", what="the child killed")
    reader = Store(db, readonly=True)
    rows = reader.rows_by_id(child.ids)
    assert [r.error for r in rows] == ["agent_gone", "agent_gone"]
    assert all(r.duration is not None and 0 <= r.duration < 30 for r in rows)
    ex = reader.get(child.ids[0])
    assert ex.response is not None and ex.response.status == 200  # what was recorded stays
    assert f"the agent recording it (pid {child.popen.pid}) stopped before it ended" in ex.error_message
    assert reader.ids("error:agent_gone") == child.ids
    assert in_flight_rows(db) == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_the_exchanges_of_a_live_recording_process_are_never_ended_and_it_finishes_them(
        tmp_path: Path, children: list[Child]) -> None:
    db = tmp_path / "captures.db"
    child = Child(db, 1)
    children.append(child)
    reader = Store(db)  # writable, as a second agent's
    assert reader.end_gone_runs() == []
    assert reader.get(child.ids[0]).duration is None and reader.get(child.ids[0]).error is None
    assert [i for i, _ in in_flight_rows(db)] == child.ids
    child.say("finish")
    wait_for(lambda: "finished" in child.lines, what="the child to finish its exchange")
    ex = reader.get(child.ids[0])
    assert ex.duration is not None and ex.error is None
    assert in_flight_rows(db) == []


def test_a_second_recorder_on_the_file_ends_a_killed_ones_exchanges_and_tells_its_listeners(
        tmp_path: Path, children: list[Child]) -> None:
    db = tmp_path / "captures.db"
    store = Store(db)
    recorder = Recorder(store)
    heard: list[str] = []
    recorder.subscribe(heard.extend)
    mine = unfinished(1)
    recorder.submit(mine)
    recorder.flush()
    child = Child(db, 2)
    children.append(child)
    os.kill(child.popen.pid, signal.SIGKILL)
    child.popen.wait(10)
    # Within GONE_EVERY seconds, with no traffic, and no reader doing it.
    wait_for(lambda: set(child.ids) <= set(heard), timeout=15, what="the recorder to end the killed one's exchanges")
    with sqlite3.connect(db) as conn:
        ended = dict(conn.execute("SELECT id, error FROM exchange_rows WHERE duration IS NOT NULL"))
    assert ended == dict.fromkeys(child.ids, "agent_gone")  # its own exchange in flight is untouched
    assert in_flight_rows(db) == [(mine.id, recorder.run.id)]
    recorder.submit(replace(mine, duration=1.5))
    recorder.close()
    assert Store(db).get(mine.id).duration == 1.5 and in_flight_rows(db) == []


def test_the_duration_ends_where_the_run_was_last_seen_or_at_its_last_websocket_message(tmp_path: Path) -> None:
    store = Store(tmp_path / "captures.db")
    run = gone_run()
    now = time.time()
    held, ws = unfinished(1), replace(unfinished(2), response=None, websocket=True,
                                      ws_messages=[WsMessage("client", 1, now + 20.0, b"hi", 2)])
    held.started_at = ws.started_at = now
    store.put_many([held, ws], run=run)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET seen_at = ?", (now + 7.0,))
    assert sorted(store.end_gone_runs()) == sorted([held.id, ws.id])
    assert store.get(held.id).duration == pytest.approx(7.0)
    assert store.get(ws.id).duration == pytest.approx(20.0)
    assert store.get(ws.id).error == "agent_gone"


def test_a_run_that_cannot_be_looked_at_is_gone_once_not_seen_for_the_lease(tmp_path: Path) -> None:
    store = Store(tmp_path / "captures.db")
    elsewhere = Run("far00000", "another-machine", os.getpid(), None)
    ex = unfinished(1)
    store.put(ex, run=elsewhere)
    assert store.end_gone_runs() == []  # seen just now
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET seen_at = ?", (time.time() - runs.LEASE - 1,))
    assert store.end_gone_runs() == [ex.id]


def test_a_run_taken_for_gone_has_its_own_later_write_win_and_claims_again_on_its_heartbeat(tmp_path: Path) -> None:
    store = Store(tmp_path / "captures.db")
    run = Run("late0000", "another-machine", 1, None)  # suspended for longer than the lease, say
    first, second = unfinished(1), unfinished(2)
    store.put_many([first, second], run=run)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET seen_at = 0")
    assert len(Store(store.path).end_gone_runs()) == 2
    store.heartbeat(replace(run))  # it runs again: what it still holds is claimed again
    assert {i for i, _ in in_flight_rows(store.path)} == {first.id, second.id}
    store.put(replace(first, duration=3.0), run=run)
    assert store.get(first.id).error is None and store.get(first.id).duration == 3.0
    assert [i for i, _ in in_flight_rows(store.path)] == [second.id]


def test_an_exchange_stored_unfinished_without_a_run_is_nobody_s_to_end(tmp_path: Path) -> None:
    # A replay or an import stores what it is given; only a recorder's run claims.
    store = Store(tmp_path / "captures.db")
    ex = unfinished(1)
    store.put(ex)
    assert in_flight_rows(store.path) == [] and store.end_gone_runs() == []
    assert store.get(ex.id).duration is None


def test_retention_and_delete_take_the_claim_with_the_exchange(tmp_path: Path) -> None:
    store = Store(tmp_path / "captures.db", max_exchanges=2)
    run = this_run()
    old, newer = unfinished(1), unfinished(2)
    store.put_many([old, newer], run=run)
    store.put_many([make(3), make(4)])
    assert in_flight_rows(store.path) == []
    again = unfinished(5)
    store.put(again, run=run)
    store.delete([again.id])
    assert in_flight_rows(store.path) == []


def test_a_reader_that_may_not_write_the_file_reads_on_and_leaves_the_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "captures.db")
    ex = unfinished(1)
    store.put(ex, run=gone_run())
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: not mode & os.W_OK)
    reader = Store(store.path, readonly=True)
    assert reader.end_gone_runs() == []
    assert reader.get(ex.id).duration is None
    monkeypatch.undo()
    assert Store(store.path, readonly=True).get(ex.id).error == "agent_gone"  # one who may, ends it


def test_a_schema_9_file_is_upgraded_and_its_unowned_exchanges_in_flight_are_left_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "v9.db"
    old = Store(path)
    ex = unfinished(1)
    old.put(ex)
    old.close()
    with sqlite3.connect(path) as conn:
        conn.executescript(TO_SCHEMA_9 + "PRAGMA user_version = 9;")
    reader = Store(path, readonly=True)
    assert reader.get(ex.id).duration is None  # no owner on record: nobody can tell it is gone
    # A schema 9 agent still running writes on (schema 10 only adds tables): the warning says so.
    assert (f"upgrading the capture database from schema 9 to {SCHEMA_VERSION} (once; a large one takes a while); an older "
            "devtunnel still running on it records on, but what it leaves in flight if it is killed stays so: "
            "restart it with this version") in caplog.text
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    later = unfinished(2)
    Store(path).put(later, run=gone_run())
    assert Store(path, readonly=True).get(later.id).error == "agent_gone"


def test_process_state_tells_this_process_a_reaped_one_and_another_machine_apart() -> None:
    me = this_run()
    assert runs.process_state(me.machine, me.pid, me.start) is True
    assert runs.process_state(me.machine, me.pid, (me.start or 0) + 1) is False  # the pid, reused
    gone = gone_run()
    assert runs.process_state(gone.machine, gone.pid, None) is False
    assert runs.process_state("another-machine", me.pid, me.start) is None


def test_a_run_whose_exchanges_in_flight_were_all_deleted_stops_its_heartbeat(tmp_path: Path) -> None:
    store = Store(tmp_path / "captures.db")
    run = this_run()
    ex = unfinished(1)
    store.put(ex, run=run)
    assert store.claimed == 1
    Store(store.path).delete([ex.id])  # a user's delete, in another process say
    store.heartbeat(run)
    assert store.claimed == 0
