"""A body cut by the agent's body budget (``--body-budget``) reads back as cut by it, not by the body
cap: the ``*_truncated`` column holds 2 for it (``rows.BUDGET_CUT``), which the schema already
allowed and a version that knows only 0 and 1 reads as cut."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from devtunnel.capture.model import BUDGET_CUT_WHY
from devtunnel.capture.store import Store
from tests.capture.test_store import make


def test_a_body_the_budget_cut_reads_back_as_such_and_one_the_cap_cut_as_before(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    budget_cut, cap_cut, whole = make(1), make(2), make(3)
    for ex, by_budget in ((budget_cut, True), (cap_cut, False)):
        assert ex.response is not None
        ex.request.body, ex.request.body_size, ex.request.body_truncated = b"abc", 10, True
        ex.request.body_budget_cut = by_budget
        ex.response.body_size, ex.response.body_truncated = len(ex.response.body) + 5, True
        ex.response.body_budget_cut = by_budget
    store.put_many([budget_cut, cap_cut, whole])
    for ex in (budget_cut, cap_cut, whole):
        got = store.get(ex.id)
        assert got == ex and got.response is not None
        assert (got.request.body_budget_cut, got.response.body_budget_cut) == ((ex is budget_cut,) * 2)
    got = store.get(budget_cut.id)
    assert got.request.body_cut_why == BUDGET_CUT_WHY and store.get(cap_cut.id).request.body_cut_why == ""
    store.close()
    columns = sqlite3.connect(tmp_path / "c.db").execute(
        "SELECT req_truncated, res_truncated FROM exchange_rows ORDER BY started_at").fetchall()
    assert columns == [(2, 2), (1, 1), (0, 0)]
