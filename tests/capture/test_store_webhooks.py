"""The store's webhook verdicts: stored and read back, duplicates marked, and the schema 3 upgrade."""

from __future__ import annotations

import re
import sqlite3
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtunnel.capture.model import Exchange, new_id
from devtunnel.capture.schema import _SCHEMA_V1, _SCHEMA_V2, SCHEMA_VERSION
from devtunnel.capture.store import Store
from devtunnel.webhooks import Signature, Verdict
from tests.kit.exchanges import make_exchange, make_response

TO_SCHEMA_11 = """
    DROP INDEX exchange_rows_run;
    ALTER TABLE exchange_rows DROP COLUMN run;
"""
"""Takes a file of this version back to the layout of schema 11 (no record of the run that recorded an exchange)."""

TO_SCHEMA_10 = TO_SCHEMA_11 + """
    ALTER TABLE exchange_rows DROP COLUMN held;
"""
"""Takes a file of this version back to the layout of schema 10 (no record of requests held for the app)."""

TO_SCHEMA_9 = TO_SCHEMA_10 + """
    DROP TABLE in_flight;
    DROP TABLE runs;
"""
"""Takes a file of this version back to the layout of schema 9 (no record of who holds an exchange in flight)."""

TO_SCHEMA_8 = TO_SCHEMA_9 + """
    DROP VIEW exchanges;
    ALTER TABLE exchange_rows RENAME TO exchanges;
"""
"""Takes a file of this version back to the layout of schema 8 (the table named ``exchanges``, no view)."""

TO_SCHEMA_7 = TO_SCHEMA_8 + """
    DROP VIEW bodies;
    CREATE VIEW bodies (id, req, res) AS
        SELECT q.id, q.body, s.body FROM req_bodies q LEFT JOIN res_bodies s ON s.id = q.id;
    INSERT INTO req_bodies (id, body) SELECT id, x'' FROM exchanges WHERE id NOT IN (SELECT id FROM req_bodies);
""" + re.search(r"CREATE TRIGGER exchanges_insert .*?END;", _SCHEMA_V1, re.S).group(0) + "\n" \
    + re.search(r"CREATE TRIGGER exchanges_delete .*?END;", _SCHEMA_V2, re.S).group(0) + "\n"  # type: ignore[union-attr]
"""Takes a file of this version back to the layout of schema 7 (its triggers, its view, a row for every
request body, even empty)."""

TO_SCHEMA_3 = TO_SCHEMA_7 + """
    ALTER TABLE exchanges DROP COLUMN resigned;
    ALTER TABLE exchanges DROP COLUMN rule_index;
    ALTER TABLE exchanges DROP COLUMN rule_action;
    ALTER TABLE exchanges DROP COLUMN rule_scope;
    DROP INDEX exchanges_wh_delivery;
    DROP INDEX exchanges_wh_provider;
    DROP INDEX exchanges_wh_signature;
    DROP INDEX exchanges_wh_duplicate;
    ALTER TABLE exchanges DROP COLUMN wh_provider;
    ALTER TABLE exchanges DROP COLUMN wh_event;
    ALTER TABLE exchanges DROP COLUMN wh_delivery;
    ALTER TABLE exchanges DROP COLUMN wh_signature;
    ALTER TABLE exchanges DROP COLUMN wh_reason;
    ALTER TABLE exchanges DROP COLUMN wh_duplicate_of;
"""
"""Takes a schema 6 file back to the layout of schema 3 (no re-signed marks, rule marks or webhook verdicts)."""


def delivery(delivery_id: str | None = "evt_1", *, provider: str = "stripe", replay_of: str | None = None,
             signature: Signature = Signature.VALID, reason: str = "", at: float | None = None,
             ex_id: str | None = None) -> Exchange:
    now = time.time() if at is None else at
    return make_exchange(
        "POST", b"/webhooks", [("Host", "shop.localhost")], b'{"type": "invoice.paid"}', make_response(200, body=b"ok"),
        id=ex_id or new_id(now),
        tunnel="shop",
        started_at=now,
        duration=0.01,
        replay_of=replay_of,
        webhook=Verdict(provider, "invoice.paid", delivery_id, signature, reason),
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "captures.db")
    yield s
    s.close()


def test_a_verdict_round_trips_through_get_query_and_rows(store: Store) -> None:
    ex = delivery(signature=Signature.INVALID, reason="timestamp outside the tolerance: 2.0 h old (tolerance 300 s)")
    plain = replace(delivery(), webhook=None)
    store.put_many([ex, plain])
    assert store.get(ex.id) == ex
    assert store.get(plain.id).webhook is None
    assert [r.webhook for r in store.rows()] == [ex.webhook, None]
    assert store.query("sig:invalid") == [ex]


def test_a_second_delivery_of_an_id_points_at_the_first(store: Store) -> None:
    first, retry, again = delivery(), delivery(), delivery()
    store.put(first)
    store.put(retry)
    store.put(again)
    assert store.get(first.id).webhook.duplicate_of is None  # type: ignore[union-attr]
    assert store.get(retry.id).webhook.duplicate_of == first.id  # type: ignore[union-attr]
    assert store.get(again.id).webhook.duplicate_of == first.id  # type: ignore[union-attr]
    assert store.ids("dup") == [retry.id, again.id]


def test_a_retry_written_before_the_delivery_it_repeats_is_still_the_duplicate(store: Store) -> None:
    first, retry = delivery(), delivery()  # first arrived first, but the retry finished first
    store.put(retry)
    assert store.get(retry.id).webhook.duplicate_of is None  # type: ignore[union-attr]
    store.put(first)
    assert store.get(retry.id).webhook.duplicate_of == first.id  # type: ignore[union-attr]
    assert store.get(first.id).webhook.duplicate_of is None  # type: ignore[union-attr]


def test_an_exchange_written_again_is_not_its_own_duplicate(store: Store) -> None:
    ex = delivery()
    store.put(ex)
    store.put(ex)  # a live snapshot, then the final record
    assert store.get(ex.id).webhook.duplicate_of is None  # type: ignore[union-attr]
    assert store.ids("dup") == []


def test_replays_are_neither_duplicates_nor_the_first_delivery(store: Store) -> None:
    original = delivery()
    replay = delivery(replay_of=original.id)
    retry = delivery()
    store.put_many([original, replay, retry])
    assert store.get(replay.id).webhook.duplicate_of is None  # type: ignore[union-attr]
    assert store.get(retry.id).webhook.duplicate_of == original.id  # type: ignore[union-attr]
    assert store.ids(f"delivery:{original.webhook.delivery_id}") == [original.id, replay.id, retry.id]  # type: ignore[union-attr]
    lone = Store(store.path.with_name("other.db"))
    early_replay, later = delivery(replay_of="01SOMETHINGELSE"), delivery()
    lone.put_many([early_replay, later])  # a replay first: the delivery after it is no duplicate
    assert lone.get(later.id).webhook.duplicate_of is None  # type: ignore[union-attr]
    lone.close()


def test_a_delivery_with_an_invalid_signature_is_never_the_first_delivery(store: Store) -> None:
    """Anyone can post a delivery with an id of their choosing: the genuine one that came after
    a forged one was marked its duplicate."""
    forged, genuine, retry, forged_again = (delivery(signature=Signature.INVALID), delivery(), delivery(),
                                            delivery(signature=Signature.INVALID))
    store.put_many([forged, genuine])
    store.put(retry)
    store.put(forged_again)
    assert [store.get(ex.id).webhook.duplicate_of for ex in (forged, genuine, retry, forged_again)] == [  # type: ignore[union-attr]
        None, None, genuine.id, genuine.id]  # one forged after the genuine one repeats it, as a stale retry does
    assert store.ids("dup") == [retry.id, forged_again.id]
    # Not verified (no secret) and unsigned deliveries still count: only a signature found wrong is left out.
    unverified, again = delivery("evt_2", signature=Signature.UNVERIFIED), delivery("evt_2", signature=Signature.UNSIGNED)
    store.put_many([unverified, again])
    assert store.get(again.id).webhook.duplicate_of == unverified.id  # type: ignore[union-attr]


def test_the_same_id_from_another_provider_or_none_at_all_is_no_duplicate(store: Store) -> None:
    store.put_many([delivery("1"), delivery("1", provider="github"), delivery(None), delivery(None)])
    assert store.ids("dup") == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["a", "b", None]), st.sampled_from(["stripe", "github"]),
                          st.booleans(), st.integers(0, 5), st.sampled_from(list(Signature))), min_size=1, max_size=14))
def test_duplicates_match_a_model_whatever_the_order_of_writes(
        specs: list[tuple[str | None, str, bool, int, Signature]]) -> None:
    base = time.time()
    exchanges = [delivery(d, provider=p, replay_of="01REPLAYED" if r else None, at=base + i, signature=sig)
                 for i, (d, p, r, _, sig) in enumerate(specs)]
    order = sorted(range(len(specs)), key=lambda i: specs[i][3])  # written in batches by this key
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "c.db")
        for key in sorted({s[3] for s in specs}):
            store.put_many([exchanges[i] for i in order if specs[i][3] == key])
        first: dict[tuple[str, str], str] = {}
        for ex in exchanges:  # ids grow with the time they were made
            v = ex.webhook
            assert v is not None
            if v.delivery_id and ex.replay_of is None and v.signature is not Signature.INVALID:
                first.setdefault((v.provider, v.delivery_id), ex.id)
        for ex in exchanges:
            v = ex.webhook
            assert v is not None
            expected = first.get((v.provider, v.delivery_id or "")) if ex.replay_of is None else None
            stored = store.get(ex.id).webhook
            assert stored is not None
            assert stored.duplicate_of == (expected if expected is not None and ex.id > expected else None)
        store.close()


def test_a_version_2_file_is_upgraded_with_every_exchange_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "old.db"
    old = [replace(delivery(), webhook=None), replace(delivery(), webhook=None)]
    first = Store(path)
    first.put_many(old)
    first.close()
    with sqlite3.connect(path) as conn:
        conn.executescript(TO_SCHEMA_3 + "PRAGMA user_version = 3;")
    again = Store(path)
    assert [again.get(ex.id) for ex in old] == old
    assert f"{path}: upgrading the capture database from schema 3 to {SCHEMA_VERSION}" in caplog.text
    fresh, retry = delivery(), delivery()
    again.put_many([fresh, retry])
    assert again.ids("provider:stripe") == [fresh.id, retry.id]
    assert again.ids("dup") == [retry.id]
    again.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"exchanges_wh_delivery", "exchanges_wh_signature", "exchanges_wh_duplicate"} <= indexes


def test_the_filters_use_the_webhook_indexes(store: Store) -> None:
    conn = store._conn()
    for expression, index in [("delivery:evt_1", "exchanges_wh_delivery"), ("sig:invalid", "exchanges_wh_signature"),
                              ("dup", "exchanges_wh_duplicate"), ("provider:stripe", "exchanges_wh_provider")]:
        from devtunnel.capture.filters import parse

        where, params = parse(expression).sql()
        plan = " ".join(str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN SELECT id FROM exchanges e WHERE {where}", params))
        assert index in plan, (expression, plan)
