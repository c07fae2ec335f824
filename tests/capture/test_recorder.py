"""The recorder: never blocks traffic, batches, coalesces, survives errors and crashes."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from devtunnel.capture.model import Exchange, Request, Response, new_id
from devtunnel.capture.store import Recorder, Store
from devtunnel.errors import StoreError
from tests.helpers import wait_for

HERE = Path(__file__).resolve().parent


def make(n: int = 0) -> Exchange:
    return Exchange(id=new_id(), tunnel="web", started_at=time.time(),
                    request=Request(method="GET", target=f"/{n}".encode()))


class Batches:
    """A listener that keeps every batch of committed ids."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, ids: list[str]) -> None:
        with self.lock:
            self.batches.append(list(ids))

    @property
    def ids(self) -> list[str]:
        with self.lock:
            return [i for b in self.batches for i in b]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "c.db", busy_timeout=0.05)


def test_submitted_exchanges_are_committed_and_announced(store: Store) -> None:
    recorder = Recorder(store)
    seen = Batches()
    recorder.subscribe(seen)
    exs = [make(i) for i in range(50)]
    for ex in exs:
        recorder.submit(ex)
    recorder.flush()
    assert store.ids() == [e.id for e in exs]
    assert sorted(seen.ids) == sorted(e.id for e in exs)
    recorder.close()


def test_submit_does_not_wait_for_a_locked_database_and_nothing_is_lost(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(store)
    seen = Batches()
    recorder.subscribe(seen)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    caplog.set_level(logging.ERROR, logger="devtunnel.capture")
    exs = [make(i) for i in range(200)]
    for ex in exs:  # would hang here (and time out) if submit waited for the writer
        recorder.submit(ex)
    wait_for(lambda: any("locked" in r.getMessage() for r in caplog.records), what="the lock error in the log")
    with pytest.raises(StoreError, match="not written after"):
        recorder.flush(timeout=0.3)
    assert seen.ids == []
    holder.execute("ROLLBACK")
    holder.close()
    recorder.flush(timeout=10)
    assert store.ids() == [e.id for e in exs]
    # Everything queued while the database was locked went in as one transaction.
    assert seen.batches == [[e.id for e in exs]]
    # Every retry failed the same way, but the log says it once.
    assert len([r for r in caplog.records if "cannot write captures" in r.getMessage()]) == 1
    recorder.close()


def test_several_submits_of_one_id_coalesce_into_the_newest(store: Store) -> None:
    recorder = Recorder(store)
    seen = Batches()
    recorder.subscribe(seen)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # hold the writer so the updates pile up
    ex = make(1)
    recorder.submit(ex)
    recorder.submit(replace(ex, ttfb=0.01))
    done = replace(ex, ttfb=0.01, duration=0.02, response=Response(status=204))
    recorder.submit(done)
    holder.execute("ROLLBACK")
    holder.close()
    recorder.flush(timeout=10)
    assert store.get(ex.id) == done
    assert seen.ids == [ex.id]
    recorder.close()


def test_a_failing_listener_does_not_stop_recording(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(store)

    def broken(ids: list[str]) -> None:
        raise RuntimeError("listener bug")

    recorder.subscribe(broken)
    seen = Batches()
    unsubscribe = recorder.subscribe(seen)
    recorder.submit(make(1))
    recorder.flush()
    unsubscribe()
    recorder.submit(make(2))
    recorder.flush()
    assert store.count() == 2
    assert len(seen.ids) == 1
    assert any("listener" in r.getMessage() for r in caplog.records)
    recorder.close()


def test_an_exchange_that_cannot_be_stored_is_dropped_alone_and_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(store)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # make the bad one share a batch with good ones
    good = [make(i) for i in range(3)]
    bad = replace(make(9), request=Request(method="\udcff"))  # a lone surrogate cannot be encoded
    for ex in [good[0], bad, good[1], good[2]]:
        recorder.submit(ex)
    holder.execute("ROLLBACK")
    holder.close()
    recorder.flush(timeout=10)
    assert store.ids() == [e.id for e in good]
    assert any(f"dropped exchange {bad.id}" in r.getMessage() for r in caplog.records)
    recorder.submit(make(10))  # the writer is still alive
    recorder.flush()
    assert store.count() == 4
    recorder.close()


def test_close_stops_the_writer_and_refuses_later_submits(store: Store) -> None:
    recorder = Recorder(store)
    recorder.submit(make(1))
    recorder.close()
    assert store.count() == 1
    assert not recorder._thread.is_alive()
    with pytest.raises(StoreError, match="closed"):
        recorder.submit(make(2))


def test_kill_9_of_a_recording_process_loses_only_uncommitted_exchanges(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    child = subprocess.Popen([sys.executable, str(HERE / "recorder_child.py"), str(db)],
                             stdout=subprocess.PIPE, text=True, cwd=HERE.parents[1])
    announced: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            announced.append(line.strip())
            if len(announced) >= 500:
                break
        os.kill(child.pid, signal.SIGKILL)
        # Ids printed before the kill were committed: read the rest of the pipe.
        announced += [line.strip() for line in child.stdout if line.strip()]
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    assert len(announced) >= 500
    store = Store(db)
    stored = set(store.ids())
    assert set(announced) <= stored
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    store.put(make(1))  # and it is still a working store
    assert store.count() == len(stored) + 1
