"""The recorder: never blocks traffic, batches, coalesces, survives errors and crashes."""

from __future__ import annotations

import logging
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from devtunnel.capture.model import Exchange, Request, Response, WsMessage
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.store import Store
from devtunnel.errors import StoreError
from tests.helpers import wait_for
from tests.kit.exchanges import make_exchange
from tests.kit.procs import Proc

HERE = Path(__file__).resolve().parent


def make(n: int = 0) -> Exchange:
    return make_exchange("GET", f"/{n}", [], tunnel="web", started_at=time.time())


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
    child = Proc([sys.executable, str(HERE / "recorder_child.py"), str(db)], cwd=HERE.parents[1])
    try:
        wait_for(lambda: len(child.out) >= 500 or child.popen.poll() is not None, timeout=60, what="500 committed ids")
        # Ids printed before the kill were committed: stopping reads the rest of the pipe.
        child.stop(signal.SIGKILL, timeout=10)
    finally:
        child.kill()
    announced = [line.strip() for line in child.out if line.strip()]
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


class FillingStore(Store):
    """A store on a real SQLite file that cannot grow while ``full`` is set: SQLite's own
    ``max_page_count`` limit, which fails a write the way a full disk does
    (``database or disk is full``)."""

    full = False

    def _conn(self) -> sqlite3.Connection:
        conn = super()._conn()
        # Set lower than the file, the limit becomes the file's size: nothing more fits.
        conn.execute(f"PRAGMA max_page_count = {1 if self.full else 1073741823}")
        return conn


BODY = bytes(range(256)) * 40  # 10 KiB


def with_bodies(n: int) -> Exchange:
    ex = make(n)
    return replace(ex, request=replace(ex.request, body=BODY[:100], body_size=100),
                   response=Response(status=200, body=BODY, body_size=len(BODY)), duration=0.01)


def test_while_the_disk_is_full_unwritten_bodies_are_bounded_oldest_first_and_recording_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="devtunnel.capture")
    store = FillingStore(tmp_path / "c.db", busy_timeout=0.05)
    store.put(make(-1))
    store.full = True
    max_bytes, max_count = 200_000, 100
    recorder = Recorder(store, max_unwritten_bytes=max_bytes, max_unwritten=max_count)
    for n in range(20):  # the file's free pages take a few more before it is full
        recorder.submit(with_bodies(-n))
        try:
            recorder.flush(timeout=0.5)
        except StoreError:
            break
    wait_for(lambda: recorder.failing, what="a write to fail")
    before = store.count()
    assert any("the disk is full" in r.getMessage() for r in caplog.records)
    exs = [with_bodies(i) for i in range(1, 400)]  # about 4 MiB of bodies
    for ex in exs:
        recorder.submit(ex)
        assert recorder.unwritten_bytes <= max_bytes
        assert recorder.pending <= max_count
    assert recorder.dropped_bodies > 0 and recorder.dropped_exchanges > 0
    dropping = [r for r in caplog.records if "keeping at most" in r.getMessage()]
    assert len(dropping) == 1 and "the disk is full" in dropping[0].getMessage()

    store.full = False  # space is back
    recorder.flush(timeout=10)
    assert not recorder.failing
    stored = [store.get(i) for i in store.ids()[before:]]
    submitted = [e.id for e in exs]
    # The newest exchanges were kept; of those, the oldest lost their bodies, not the newest.
    assert 0 < len(stored) <= max_count
    assert [e.id for e in stored] == submitted[-len(stored):]
    kept = [e for e in stored if e.response is not None and e.response.body == BODY]
    stripped = [e for e in stored if e not in kept]
    assert kept and stored[-len(kept):] == kept
    assert sum(len(e.response.body) + len(e.request.body) for e in kept) <= max_bytes
    for e in stripped:
        assert e.response is not None and e.response.body == b"" and e.response.body_truncated
        assert e.response.body_size == len(BODY) and e.request.body_size == 100
    again = [r.getMessage() for r in caplog.records if "writing captures again" in r.getMessage()]
    assert again == [(f"writing captures again; while they could not be written {recorder.dropped_bodies} "
                      f"exchange(s) lost their bodies and {recorder.dropped_exchanges} were dropped whole")]

    # Writing works again, and with it the bounds are off: a burst keeps every body.
    counts = (recorder.dropped_bodies, recorder.dropped_exchanges)
    burst = [with_bodies(i) for i in range(1000, 1050)]
    for ex in burst:
        recorder.submit(ex)
    recorder.flush(timeout=10)
    assert all(store.get(e.id).response.body == BODY for e in burst)  # type: ignore[union-attr]
    assert (recorder.dropped_bodies, recorder.dropped_exchanges) == counts
    recorder.close()


def test_websocket_payloads_count_against_the_bound_and_keep_their_sizes(tmp_path: Path) -> None:
    store = FillingStore(tmp_path / "c.db", busy_timeout=0.05)
    store.full = True
    recorder = Recorder(store, max_unwritten_bytes=50_000, max_unwritten=1000)
    messages = [WsMessage("client", 2, time.time(), BODY), WsMessage("server", 1, time.time(), b"hi")]
    exs = [replace(make(i), websocket=True, ws_messages=messages, duration=1.0) for i in range(20)]
    for ex in exs:
        recorder.submit(ex)
    wait_for(lambda: recorder.failing, what="a write to fail")
    recorder.submit(replace(make(99), websocket=True, ws_messages=messages, duration=1.0))
    assert recorder.unwritten_bytes <= 50_000 and recorder.dropped_bodies > 0
    store.full = False
    recorder.flush(timeout=10)
    first = store.get(exs[0].id)
    assert first is not None
    assert [(m.payload, m.size) for m in first.ws_messages] == [(b"", len(BODY)), (b"", 2)]
    last = store.get(exs[-1].id)
    assert last is not None and [m.payload for m in last.ws_messages] == [BODY, b"hi"]
    recorder.close()


def test_memory_is_handed_back_after_a_batch_of_large_bodies_only(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The trim follows the body bytes of what a batch writes: its newest versions, not every submit."""
    from devtunnel.capture import recorder as recorder_module

    trims: list[int] = []
    monkeypatch.setattr(recorder_module, "_TRIM", lambda: trims.append(1))
    monkeypatch.setattr(recorder_module, "LINGER", 60.0)  # a batch is what was submitted before flush()
    recorder = Recorder(Store(tmp_path / "c.db"))
    big = b"x" * (recorder_module.TRIM_AFTER // 2 + 1)
    try:
        for n in range(2):  # two halves: together past the threshold
            recorder.submit(replace(make(n), response=Response(body=big, body_size=len(big))))
        recorder.flush()
        assert trims == [1]
        for n in range(10):  # small bodies, however many
            recorder.submit(make(10 + n))
        recorder.flush()
        assert trims == [1]
        ex = make(30)
        recorder.submit(replace(ex, response=Response(body=big * 2, body_size=2 * len(big))))
        recorder.submit(ex)  # replaced before it was written: the batch holds a small body
        recorder.flush()
        assert trims == [1]
    finally:
        recorder.close()
