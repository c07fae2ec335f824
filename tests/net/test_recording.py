"""ExchangeCapture: what the live snapshot and the final record of a stream carry."""

from __future__ import annotations

import pytest

from devtunnel.capture.model import Exchange
from devtunnel.net import recording
from devtunnel.net.recording import LIVE_BODY_PREVIEW, ExchangeCapture
from devtunnel.protocol.events import RequestReceived


def _head(target: bytes = b"/upload") -> RequestReceived:
    return RequestReceived(1, b"POST", target, b"1.1", ((b"Host", b"demo.localhost"),), end_stream=False)


def _capture(sink: list[tuple[Exchange, bool]], cap: int = 1 << 20, target: bytes = b"/upload") -> ExchangeCapture:
    return ExchangeCapture(lambda ex, final: sink.append((ex, final)), "demo", _head(target), "http://127.0.0.1:8080",
                           cap, live=False)


async def test_live_snapshot_of_a_large_body_carries_a_preview_and_the_final_record_all_of_it() -> None:
    sink: list[tuple[Exchange, bool]] = []
    cap = _capture(sink)
    chunks = [bytes([i]) * 50_000 for i in range(8)]  # 400,000 bytes, more than the preview
    for chunk in chunks:
        cap.request_body(chunk)
    cap._submit_live()  # what the LIVE_AFTER timer calls
    cap.response_head(200, b"OK", ((b"Content-Length", b"2"),), exact=True)
    cap.response_body(b"ok")
    cap.finish()

    (live, live_final), (done, done_final) = sink
    assert (live_final, done_final) == (False, True)
    assert live.request.body == b"".join(chunks)[:LIVE_BODY_PREVIEW]
    assert live.request.body_truncated and live.request.body_size == 400_000
    assert live.response is None and live.duration is None
    assert done.request.body == b"".join(chunks) and not done.request.body_truncated
    assert done.response is not None and done.response.body == b"ok" and done.status == 200
    assert done.id == live.id


async def test_live_snapshot_of_a_small_body_carries_all_of_it() -> None:
    sink: list[tuple[Exchange, bool]] = []
    cap = _capture(sink)
    cap.request_body(b"a" * 100)
    cap.request_body(memoryview(b"b" * 100))
    cap._submit_live()
    [(live, _)] = sink
    assert live.request.body == b"a" * 100 + b"b" * 100 and not live.request.body_truncated


async def test_ids_follow_arrival_and_duration_stops_at_end_not_at_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(recording.time, "monotonic", lambda: clock[0])
    sink: list[tuple[Exchange, bool]] = []
    first, second = _capture(sink, target=b"/first"), _capture(sink, target=b"/second")
    clock[0] += 0.25
    second.end()
    clock[0] += 5.0  # the record is built long after the exchange ended
    second.finish()
    first.finish()
    (b, _), (a, _) = sink
    assert a.request.target == b"/first" and b.request.target == b"/second"
    assert a.id < b.id  # ids sort in the order the requests arrived, not the order they finished
    assert b.duration == 0.25 and a.duration == 5.25


async def test_the_first_failure_and_the_last_response_head_win() -> None:
    sink: list[tuple[Exchange, bool]] = []
    cap = _capture(sink)
    cap.response_head(502, b"Bad Gateway", [(b"X-A", b"1")])
    cap.fail("local_refused", "refused")
    cap.fail("local_error", "later")
    assert cap.exchange.response is not None and cap.exchange.status == 502
    cap.response_head(504, b"Gateway Timeout", [(b"X-B", b"2")])
    ex = cap.finish()
    assert ex.error == "local_refused" and ex.error_message == "refused"
    assert ex.status == 504 and ex.response is not None and ex.response.reason == "Gateway Timeout"
    assert cap.finish() is ex and len(sink) == 1  # later calls do nothing more
