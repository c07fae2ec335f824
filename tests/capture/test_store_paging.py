"""Keyset pages, changed rows, positions and count estimates: what a list view of any size reads.

Each fast read is checked against the slow one it stands for (``rows(filter)``, ``count``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from devtunnel.capture.model import Exchange
from devtunnel.capture.schema import SCHEMA_VERSION
from devtunnel.capture.store import Store
from tests.capture.test_store_webhooks import TO_SCHEMA_7
from tests.kit.exchanges import make_exchange, make_response

FILTERS = ["", "status:404", "status:>=400", "method:post status:4xx", "tunnel:B", "~e", "body:needle",
           "path:/p/1", "not status:200"]


def _exchange(n: int) -> Exchange:
    status = (200, 404, 500, 201)[n % 4] if n % 9 else None
    body = b"a needle" if n % 5 == 0 else b""
    return make_exchange(
        "POST" if n % 2 else "GET", f"/p/{n}", [("host", "x.localhost")], body,
        None if status is None else make_response(status),
        id=f"01KB0{n:021d}", tunnel="a" if n % 3 else "b", started_at=1_764_160_200.0 + n,
        error="local_refused" if status is None else None,
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "captures.db")
    s.put_many(_exchange(n) for n in range(120))
    yield s
    s.close()


@pytest.mark.parametrize("expression", FILTERS)
def test_keyset_pages_walk_the_same_list_as_the_slow_query_both_ways(store: Store, expression: str) -> None:
    every = store.rows(expression)
    forward, key = [], None
    while page := store.rows_after(expression, key, limit=7):
        forward += page
        key = page[-1].id
    backward, key = [], None
    while page := store.rows_before(expression, key, limit=7):
        assert page == sorted(page, key=lambda r: r.id)  # oldest first, like every read
        backward = page + backward
        key = page[0].id
    assert forward == backward == every


@pytest.mark.parametrize("expression", FILTERS)
def test_a_skip_lands_where_an_offset_from_either_end_would(store: Store, expression: str) -> None:
    every = store.rows(expression)
    assert store.rows_after(expression, None, limit=5, skip=10) == every[10:15]
    assert store.rows_before(expression, None, limit=5, skip=10) == every[max(0, len(every) - 15):len(every) - 10]
    assert store.rows_after(expression, None, limit=5, skip=len(every)) == []


def test_a_range_on_an_indexed_column_pages_in_id_order_without_sorting_every_match(store: Store) -> None:
    page = store.rows_before("status:4xx", None, limit=3)
    assert all(400 <= r.status < 500 for r in page) and page == store.rows("status:4xx")[-3:]
    # The statement SQLite would have sorted was run walking the id order instead.
    assert any(sorts for sql, sorts in store._sort_plans.items() if "status >=" in sql)


@pytest.mark.parametrize("expression", FILTERS)
def test_changed_rows_are_those_that_match_now_in_order(store: Store, expression: str) -> None:
    wanted = [f"01KB0{n:021d}" for n in (77, 3, 40, 41, 999)]  # 999 is not stored
    expected = [r for r in store.rows(expression) if r.id in wanted]
    assert store.matching_rows(wanted, expression) == expected


@pytest.mark.parametrize("expression", FILTERS)
def test_a_position_is_the_number_of_matches_before_the_id(store: Store, expression: str) -> None:
    every = [r.id for r in store.rows(expression)]
    for n in (0, 1, 59, 119, 500):
        exchange_id = f"01KB0{n:021d}"
        assert store.count_before(exchange_id, expression) == sum(1 for i in every if i < exchange_id)


def test_count_estimates_are_exact_without_a_filter_or_over_a_small_store(store: Store) -> None:
    assert store.count_estimate() == (120, True)
    assert store.count_estimate("status:404") == (store.count("status:404"), True)


def test_a_count_estimate_over_a_large_store_scales_the_newest_share(tmp_path: Path) -> None:
    store = Store(tmp_path / "big.db", max_exchanges=5000)
    store.put_many(_exchange(n) for n in range(2000))
    count, exact = store.count_estimate("status:404", sample=500)
    true = store.count("status:404")
    assert not exact and abs(count - true) <= true // 10, (count, true)
    store.close()


def test_an_older_file_gains_the_list_indexes_and_keeps_its_exchanges(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    first = Store(path)
    first.put_many(_exchange(n) for n in range(10))
    first.close()
    with sqlite3.connect(path) as conn:  # as schema 6 left it: without the list views' indexes
        conn.executescript(TO_SCHEMA_7)
        for name in ("exchanges_status", "exchanges_method", "exchanges_tunnel", "exchanges_error"):
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute("PRAGMA user_version = 6")
    again = Store(path)
    assert again.count() == 10 and again.rows("status:404") == [r for r in again.rows() if r.status == 404]
    again.close()
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"exchanges_status", "exchanges_method", "exchanges_tunnel", "exchanges_error"} <= names
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_start_keys_and_exchanges_by_id_read_in_chunks_in_the_order_asked(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    exs = [make_exchange(target=f"/p/{i}".encode(), started_at=100.0 - i) for i in range(7)]
    store.put_many(exs)
    assert store.start_keys() == [(ex.started_at, ex.id) for ex in exs]
    assert store.start_keys(limit=2) == [(ex.started_at, ex.id) for ex in exs[-2:]]
    wanted = [exs[5].id, exs[0].id, "gone", exs[3].id, exs[6].id]  # "gone": deleted since, skipped
    assert [ex.id for ex in store.exchanges_by_id(wanted, chunk=2)] == [exs[5].id, exs[0].id, exs[3].id, exs[6].id]
    assert store.exchanges_by_id(iter([exs[1].id])).__next__() == store.get(exs[1].id)


@pytest.mark.parametrize("expression", ["status:404", "tunnel:B", "not status:200", "status:999"])
def test_clear_matching_deletes_what_the_filter_matches_run_by_run_and_nothing_else(
        store: Store, expression: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import devtunnel.capture.store as store_module
    from devtunnel.capture.filters import parse

    monkeypatch.setattr(store_module, "CLEAR_RUN", 7)  # many runs over 120 exchanges
    kept = [r.id for r in store.rows() if r.id not in {m.id for m in store.rows(expression)}]
    store.clear_matching(parse(expression))
    assert store.rows(expression) == []
    assert [r.id for r in store.rows()] == kept
