"""The store's ``-wal`` file: cut back once SQLite could fold it into the database, and said once in
the log while another program's open read keeps it growing."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from devtunnel.capture.model import Exchange, Response
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.store import WAL_KEPT, Store
from tests.helpers import wait_for
from tests.kit.exchanges import make_exchange

MIB = 1 << 20


def with_body(size: int) -> Exchange:
    ex = make_exchange("GET", "/big", [], tunnel="web", started_at=time.time())
    return replace(ex, response=Response(status=200, body=b"x" * size, body_size=size), duration=0.01)


def wal_size(store: Store) -> int:
    wal = store.path.with_name(store.path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


@contextmanager
def open_read(path: Path) -> Iterator[None]:
    """Another program's read transaction, left open (an sqlite3 shell after BEGIN and a SELECT):
    SQLite cannot fold into the database what was written after it began."""
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM exchange_rows").fetchone()
        yield
        reader.execute("COMMIT")
    finally:
        reader.close()


def test_a_wal_grown_while_a_reader_held_it_is_cut_back_once_the_reader_lets_go(tmp_path: Path) -> None:
    store = Store(tmp_path / "captures.db")
    store.put(with_body(10))
    with open_read(store.path):
        for _ in range(WAL_KEPT // MIB + 8):
            store.put(with_body(MIB))
        assert wal_size(store) > WAL_KEPT
    # The next commits fold the log into the database and start it over, cut to WAL_KEPT; before,
    # it stayed at its largest until the agent exited.
    wait_for(lambda: store.put(with_body(10)) or wal_size(store) <= WAL_KEPT, what="the -wal cut back")
    assert store.count() > WAL_KEPT // MIB + 8  # nothing lost on the way
    store.close()


def test_a_wal_a_reader_keeps_growing_is_said_once_with_what_to_do(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devtunnel.capture")
    store = Store(tmp_path / "captures.db")
    store.put(with_body(10))
    recorder = Recorder(store, max_wal_bytes=4 * MIB)
    wal = f"{store.path}-wal"
    with open_read(store.path):
        def warned() -> list[str]:
            recorder.submit(with_body(MIB // 2))
            recorder.flush()
            return [r.getMessage() for r in caplog.records if wal in r.getMessage()]

        [said] = wait_for(warned, what="the warning")
        assert said.startswith(f"{wal} has grown to ")
        assert said.endswith(": a program keeps a read of the capture database open (an sqlite3 shell, a "
                             "database browser?), so SQLite cannot fold the log back into it; close that program")
        for _ in range(8):  # growing on: not said again
            recorder.submit(with_body(MIB))
            recorder.flush()
        assert len([r for r in caplog.records if wal in r.getMessage()]) == 1
    recorder.close()


def test_a_wal_large_from_one_transaction_that_nobody_holds_is_not_blamed_on_a_reader(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The upgrade of a large file, or a batch of large bodies, leaves a -wal as large as that one
    # transaction until the next write starts it over: no program holds a read. The writer said
    # "a program keeps a read of the capture database open" after upgrading 1 GB of schema 1.
    caplog.set_level(logging.INFO, logger="devtunnel.capture")
    store = Store(tmp_path / "captures.db")
    store.put_many([with_body(MIB) for _ in range(8)])  # one transaction
    assert wal_size(store) > 4 * MIB
    recorder = Recorder(store, max_wal_bytes=4 * MIB)
    looked = recorder._next_wal_look
    wait_for(lambda: recorder._next_wal_look > looked, timeout=5, what="the writer's look at the -wal")
    assert not [r for r in caplog.records if "-wal" in r.getMessage()]
    recorder.close()
