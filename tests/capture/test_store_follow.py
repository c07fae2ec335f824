"""The agent's store follows its path: a deleted database file is made again, a replaced one is
written from then on, a foreign one is refused (once in the log) with the queue kept bounded."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devtunnel.capture.model import Exchange
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.store import Store
from devtunnel.errors import StoreError
from tests.helpers import wait_for
from tests.kit.exchanges import make_exchange


def make(n: int) -> Exchange:
    return make_exchange("GET", f"/{n}", [], tunnel="web", started_at=time.time())


def rm_db(path: Path) -> None:
    """What a user starting afresh does: ``rm captures.db*``."""
    for file in path.parent.glob(path.name + "*"):
        file.unlink()


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def count_in_thread(store: Store) -> int:
    """``store.count()`` from another thread (its own connection), as the agent API reads."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(store.count).result(10)


def test_store_follow_path_makes_a_new_file_after_rm_and_counts_only_its_writes(tmp_path: Path) -> None:
    path = tmp_path / "captures.db"
    store = Store(path)
    store.put_many([make(1), make(2)])
    assert count_in_thread(store) == 2
    assert store.follow_path() is None
    rm_db(path)
    assert store.follow_path() == "deleted"
    assert path.exists()
    assert store.follow_path() is None
    store.put(later := make(3))
    assert store.count() == 1 and count_in_thread(store) == 1  # every thread reads the new file
    with Store(path, readonly=True) as reader:
        assert reader.ids() == [later.id] and reader.count() == 1


def test_recorder_after_rm_records_into_a_new_file_at_the_path(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "captures.db"
    store = Store(path)
    recorder = Recorder(store)
    try:
        recorder.submit(make(1))
        recorder.flush()
        assert count_in_thread(store) == 1
        rm_db(path)
        # The writer looks at the path about once a second, also while it has nothing to write.
        wait_for(lambda: path.exists(), what="a new database at the path")
        wait_for(lambda: messages(caplog, "moved or deleted"), what="the log line")
        recorder.submit(second := make(2))
        recorder.flush()
        with Store(path, readonly=True) as reader:
            assert reader.ids() == [second.id] and reader.count() == 1
        assert store.count() == 1 and count_in_thread(store) == 1
        assert messages(caplog, "moved or deleted") == [
            f"the capture database {path} was moved or deleted; recording into a new one there"]
    finally:
        recorder.close()


def test_recorder_writes_into_another_capture_file_moved_onto_the_path(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "captures.db"
    store = Store(path)
    recorder = Recorder(store)
    try:
        recorder.submit(make(1))
        recorder.flush()
        with Store(tmp_path / "other.db") as other:
            other.put(kept := make(7))
        os.replace(tmp_path / "other.db", path)
        wait_for(lambda: messages(caplog, "another capture database"), what="the log line")
        recorder.submit(second := make(2))
        recorder.flush()
        with Store(path, readonly=True) as reader:
            assert sorted(reader.ids()) == sorted([kept.id, second.id]) and reader.count() == 2
        assert count_in_thread(store) == 2
        assert len(messages(caplog, "another capture database")) == 1
    finally:
        recorder.close()


def test_a_foreign_file_moved_onto_the_path_is_refused_once_and_the_queue_stays_bounded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "captures.db"
    store = Store(path)
    recorder = Recorder(store, max_unwritten=8)
    try:
        recorder.submit(make(0))
        recorder.flush()
        foreign = sqlite3.connect(tmp_path / "notes.db")
        foreign.execute("CREATE TABLE notes (text)")
        foreign.commit()
        foreign.close()
        os.replace(tmp_path / "notes.db", path)
        wait_for(lambda: messages(caplog, "is not a devtunnel database"), what="the refusal")
        for i in range(1, 31):
            recorder.submit(make(i))
        with pytest.raises(StoreError):
            recorder.flush(timeout=1.5)  # retried (more than once) and refused each time
        assert recorder.pending <= 8 and recorder.dropped_exchanges > 0
        refusals = messages(caplog, "cannot write captures")
        assert refusals == [f"cannot write captures: {path} is not a devtunnel database (it holds other "
                            "tables); move it away or pass --db"]
        assert not messages(caplog, "dropped exchange")
        assert not any(r.exc_info for r in caplog.records)
        with pytest.raises(StoreError, match="not a devtunnel database"):
            count_in_thread(store)  # the API says so too, rather than reading the file left behind
        with sqlite3.connect(path) as conn:  # untouched
            assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
        path.unlink()  # moved away: the next look makes a new database and the queue is written
        recorder.flush(timeout=10)
        with Store(path, readonly=True) as reader:
            assert reader.count() == recorder.pending + len(reader.ids()) > 0
        assert messages(caplog, "writing captures again")
    finally:
        recorder.close()


def test_a_file_cut_to_nothing_is_a_new_empty_store_for_every_thread_and_program(tmp_path: Path) -> None:
    """``: > captures.db`` under the writer: every program opening the file after refused it ("file
    is not a database"); it is a new empty store, in the same file, read alike everywhere."""
    path = tmp_path / "captures.db"
    store = Store(path, busy_timeout=0.5)
    store.put_many([make(1), make(2)])
    assert count_in_thread(store) == 2  # a connection of another thread, open across the cut
    program = sqlite3.connect(path, isolation_level=None)  # another program's, open across it
    program.execute("BEGIN")
    program.execute("SELECT count(*) FROM exchange_rows").fetchone()  # its read holds the -wal
    os.truncate(path, 0)
    assert store.follow_path() == "emptied"
    assert store.follow_path() is None  # the new pages wait in the -wal: not taken for another cut
    store.put(later := make(3))
    program.execute("COMMIT")
    assert program.execute("SELECT id FROM exchange_rows").fetchall() == [(later.id,)]
    program.close()
    assert store.follow_path() is None and path.stat().st_size > 0  # folded in at the next look
    assert store.count() == 1 and count_in_thread(store) == 1
    store.put(make(4))
    with Store(path, readonly=True) as reader:
        assert reader.count() == 2 and reader.ids()[0] == later.id
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
    store.close()


def test_a_reader_opening_a_file_cut_under_its_writer_is_told_to_wait_and_leaves_the_log(tmp_path: Path) -> None:
    """``devtunnel requests`` on the file in the second between the cut and the writer's look: SQLite
    took the 0-byte file for a new database and deleted the -wal the writer still used (the reader
    made the schema as any first writer would), and the file was damaged for good."""
    path = tmp_path / "captures.db"
    store = Store(path)
    store.put_many([make(1), make(2)])
    os.truncate(path, 0)
    done = subprocess.run([sys.executable, "-m", "devtunnel", "requests", "--db", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{path} was cut to 0 bytes while its -wal holds pages" in done.stderr
    assert Path(f"{path}-wal").stat().st_size > 0  # left as it was
    assert store.follow_path() == "emptied"
    store.put(later := make(3))
    listed = subprocess.run([sys.executable, "-m", "devtunnel", "requests", "--db", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0 and "/3" in listed.stdout and "/1" not in listed.stdout, listed.stderr
    with Store(path, readonly=True) as reader:
        assert reader.ids() == [later.id]
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
    store.close()
