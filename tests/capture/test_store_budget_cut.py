"""A body cut by the agent's body budget (``--body-budget``) reads back as cut by it, not by the body
cap: the ``*_truncated`` column holds 2 for it (``rows.BUDGET_CUT``), which the schema already
allowed and a version that knows only 0 and 1 reads as cut."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from devtunnel.capture.model import BUDGET_CUT_WHY, Exchange, WsMessage
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


def _session(n: int, *messages: WsMessage) -> Exchange:
    ex = make(n)
    assert ex.response is not None
    ex.response.status, ex.response.reason, ex.response.body, ex.response.body_size = 101, "Switching Protocols", b"", 0
    ex.websocket, ex.ws_messages, ex.ws_close_code = True, list(messages), 1000
    return ex


def test_websocket_payloads_the_budget_cut_read_back_as_such_and_those_the_cap_cut_as_before(tmp_path: Path) -> None:
    # ws_messages has no column to say why a payload is cut: the session's res_truncated says it
    # (its 101 has no body), and the messages cut read back marked; the schema is unchanged.
    store = Store(tmp_path / "c.db")
    t = time.time()
    budget_cut = _session(1, WsMessage("client", 1, t, b"hello"), WsMessage("server", 2, t, b"ab", 10, budget_cut=True),
                          WsMessage("client", 1, t, b"", 7, budget_cut=True), WsMessage("server", 1, t, b""))
    cap_cut = _session(2, WsMessage("client", 1, t, b"hello"), WsMessage("server", 2, t, b"ab", 10))
    refused = _session(3)  # a WebSocket refused with a body the budget cut: that body says so, as any
    assert refused.response is not None
    refused.response.status, refused.response.body, refused.response.body_size = 403, b"no", 50
    refused.response.body_truncated = refused.response.body_budget_cut = True
    store.put_many([budget_cut, cap_cut, refused])
    for ex in (budget_cut, cap_cut, refused):
        assert store.get(ex.id) == ex
    got = store.get(budget_cut.id)
    assert [m.budget_cut for m in got.ws_messages] == [False, True, True, False]
    assert [m.cut_why for m in got.ws_messages] == ["", BUDGET_CUT_WHY, BUDGET_CUT_WHY, ""]
    assert got.response is not None and not got.response.body_truncated and got.response.body_cut_why == ""
    assert [m.cut_why for m in store.get(cap_cut.id).ws_messages] == ["", ""]
    got = store.get(refused.id)
    assert got.response is not None and got.response.body_cut_why == BUDGET_CUT_WHY
    # A live snapshot written again finished keeps the mark (the row is updated, not inserted).
    budget_cut.duration = 2.0
    store.put(budget_cut)
    assert store.get(budget_cut.id) == budget_cut
    store.close()
    db = sqlite3.connect(tmp_path / "c.db")
    columns = [db.execute("SELECT req_truncated, res_truncated, res_body_size FROM exchange_rows WHERE id = ?",
                          (ex.id,)).fetchone() for ex in (budget_cut, cap_cut, refused)]
    db.close()
    assert columns == [(0, 2, 0), (0, 0, 0), (0, 2, 50)]
