"""The recorder judges webhook deliveries in its own thread, at their own time, within its memory bounds."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from devtunnel.capture.model import Exchange, Headers, new_id
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.store import Store
from devtunnel.webhooks import Delivery, Signature, Verdict
from devtunnel.webhooks.context import WebhookContext
from devtunnel.webhooks.providers import Stripe
from tests.helpers import wait_for
from tests.kit.exchanges import make_exchange, make_response

SECRET = "whsec_recorder_test"
CONTEXT = WebhookContext(secrets={"stripe": (SECRET,)})


def delivery(at: float | None = None, *, secret: str = SECRET, body_size: int = 0, done: bool = True) -> Exchange:
    now = time.time() if at is None else at
    body = b'{"id": "evt_%d", "type": "invoice.paid", "pad": "%s"}' % (int(now * 1e6), b"x" * body_size)
    headers = Stripe().sign(Delivery("POST", "", Headers([("Host", "a.localhost")]), body), secret, now)
    return make_exchange("POST", b"/hooks", headers, body, make_response(200, body=b"ok"), id=new_id(now), tunnel="web",
                         started_at=now, duration=0.01 if done else None)


class Spy:
    """A judge that notes the thread it ran in."""

    def __init__(self, fail: bool = False) -> None:
        self.threads: set[str] = set()
        self.fail = fail

    def judge(self, exchange: Exchange) -> Verdict | None:
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("judge broke")
        return CONTEXT.judge(exchange)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "c.db", busy_timeout=0.05)


def test_the_writer_thread_judges_each_delivery_at_the_time_it_began(store: Store) -> None:
    spy = Spy()
    recorder = Recorder(store, webhooks=spy)
    old = delivery(time.time() - 3 * 3600)  # delivered (and signed) three hours ago, recorded now
    fresh, wrong = delivery(), delivery(secret="whsec_other")
    for ex in (old, fresh, wrong):
        recorder.submit(ex)
    recorder.flush()
    assert spy.threads == {"devtunnel-recorder"}
    assert [store.get(ex.id).webhook.signature for ex in (old, fresh, wrong)] == [  # type: ignore[union-attr]
        Signature.VALID, Signature.VALID, Signature.INVALID]
    assert old.webhook is None  # the submitted object is left as it was
    recorder.close()


def test_a_live_snapshot_is_not_judged_the_final_record_is(store: Store) -> None:
    recorder = Recorder(store, webhooks=CONTEXT)
    live = delivery(done=False)
    recorder.submit(live)
    recorder.flush()
    assert store.get(live.id).webhook is None
    recorder.submit(replace(live, duration=0.5))
    recorder.flush()
    assert store.get(live.id).webhook.signature is Signature.VALID  # type: ignore[union-attr]
    recorder.close()


def test_a_judge_that_fails_costs_no_capture_and_is_logged_once(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="devtunnel.capture")
    recorder = Recorder(store, webhooks=Spy(fail=True))
    exs = [delivery() for _ in range(5)]
    for ex in exs:
        recorder.submit(ex)
        recorder.flush()
    assert store.ids() == [ex.id for ex in exs]
    assert all(store.get(ex.id).webhook is None for ex in exs)
    assert len([r for r in caplog.records if "cannot judge webhook deliveries" in r.getMessage()]) == 1
    assert SECRET not in caplog.text
    recorder.close()


def test_while_writes_fail_the_bounds_hold_and_verdicts_survive_dropped_bodies(store: Store) -> None:
    max_bytes = 50_000
    recorder = Recorder(store, webhooks=CONTEXT, max_unwritten_bytes=max_bytes, max_unwritten=1000)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    first = delivery(body_size=4000)
    recorder.submit(first)
    wait_for(lambda: recorder.failing, what="a write to fail")
    exs = [first] + [delivery(body_size=4000) for _ in range(60)]  # about 240 KB of bodies
    for ex in exs[1:]:
        recorder.submit(ex)
        assert recorder.unwritten_bytes <= max_bytes
    assert recorder.dropped_bodies > 0
    holder.execute("ROLLBACK")
    holder.close()
    recorder.flush(timeout=10)
    stored = [store.get(ex.id) for ex in exs]
    assert all(ex.webhook is not None for ex in stored)
    # Judged before its body was dropped: still valid. Dropped before it was judged: unverified, saying why.
    assert stored[0].request.body_truncated and stored[0].webhook.signature is Signature.VALID  # type: ignore[union-attr]
    for ex in stored:
        assert ex.webhook is not None
        if ex.webhook.signature is not Signature.VALID:
            assert ex.request.body_truncated
            assert ex.webhook.reason == "the body was recorded only in part (over --body-cap, or answered before all of it came)"
    assert stored[-1].webhook.signature is Signature.VALID  # type: ignore[union-attr]
    recorder.close()


def test_a_hostile_event_type_or_id_costs_no_capture(store: Store) -> None:
    recorder = Recorder(store, webhooks=CONTEXT)
    now = time.time()
    exs = []
    for body in (b'{"id": "evt_\\ud800", "type": "invoice.\\udcff"}', b'{"id": "%s", "type": "t"}' % (b"x" * 100_000)):
        headers = Stripe().sign(Delivery("POST", "", Headers([("Host", "a.localhost")]), body), SECRET, now)
        ex = make_exchange("POST", b"/", headers, body, tunnel="web", started_at=now, duration=0.01)
        exs.append(ex)
        recorder.submit(ex)
    recorder.flush()
    surrogate, long = (store.get(ex.id).webhook for ex in exs)
    assert surrogate is not None and surrogate.signature is Signature.VALID
    assert (surrogate.delivery_id, surrogate.event_type) == ("evt_\\ud800", "invoice.\\udcff")
    assert long is not None and long.delivery_id == "x" * 512
    recorder.close()


def test_verdict_listeners_hear_each_delivery_once_and_nothing_of_other_traffic(store: Store) -> None:
    recorder = Recorder(store, webhooks=CONTEXT)
    heard: list[tuple[str, str, Signature]] = []

    def listener(exchanges: list[Exchange]) -> None:
        heard.extend((threading.current_thread().name, ex.id, ex.webhook.signature)  # type: ignore[union-attr]
                     for ex in exchanges)

    unsubscribe = recorder.subscribe_verdicts(listener)
    plain = make_exchange("GET", b"/health", Headers([("Host", "a.localhost")]), b"", make_response(200), duration=0.01)
    recorder.submit(plain)
    recorder.flush()
    assert heard == []  # traffic that is no webhook is never announced

    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the first write fails and is retried: judged (and heard) once all the same
    valid, wrong = delivery(), delivery(secret="whsec_other")
    recorder.submit(valid)
    recorder.submit(wrong)
    wait_for(lambda: recorder.failing and len(heard) == 2, what="both judged and a write failed")
    assert sorted(heard) == sorted([("devtunnel-recorder", valid.id, Signature.VALID),
                                    ("devtunnel-recorder", wrong.id, Signature.INVALID)])
    holder.execute("ROLLBACK")
    holder.close()
    recorder.flush(timeout=10)
    assert len(heard) == 2

    unsubscribe()
    recorder.submit(delivery())
    recorder.flush()
    assert len(heard) == 2
    recorder.close()
