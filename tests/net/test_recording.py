"""ExchangeCapture: what the live snapshot and the final record of a stream carry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from devtunnel.capture.model import Exchange
from devtunnel.agent import recording
from devtunnel.agent.recording import LIVE_AFTER, LIVE_BODY_PREVIEW, ExchangeCapture, LiveSnapshots
from devtunnel.protocol.events import RequestReceived
from tests.helpers import async_wait_for
from tests.net.tunnel_fixtures import LocalState, relay_and_agent
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)


def _head(target: bytes = b"/upload") -> RequestReceived:
    return RequestReceived(1, b"POST", target, b"1.1", ((b"Host", b"demo.localhost"),), end_stream=False)


def _capture(sink: list[tuple[Exchange, bool]], cap: int = 1 << 20, target: bytes = b"/upload") -> ExchangeCapture:
    return ExchangeCapture(lambda ex, final: sink.append((ex, final)), "demo", _head(target), "http://127.0.0.1:8080",
                           cap)


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
    cap.response_head(502, b"Bad Gateway", ((b"X-A", b"1"),))
    cap.fail("local_refused", "refused")
    cap.fail("local_error", "later")
    assert cap.exchange.response is not None and cap.exchange.status == 502
    cap.response_head(504, b"Gateway Timeout", ((b"X-B", b"2"),))
    ex = cap.finish()
    assert ex.error == "local_refused" and ex.error_message == "refused"
    assert ex.status == 504 and ex.response is not None and ex.response.reason == "Gateway Timeout"
    assert cap.finish() is ex and len(sink) == 1  # later calls do nothing more


async def test_live_snapshots_come_once_for_running_exchanges_and_never_for_finished_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(recording.time, "monotonic", lambda: clock[0])
    sink: list[tuple[Exchange, bool]] = []
    live = LiveSnapshots()

    def start(target: bytes) -> ExchangeCapture:
        return ExchangeCapture(lambda ex, final: sink.append((ex, final)), "demo", _head(target),
                               "http://127.0.0.1:8080", 1 << 20, live=live)

    quick, slow = start(b"/quick"), start(b"/slow")
    quick.finish()
    clock[0] += LIVE_AFTER / 2
    later = start(b"/later")  # its snapshot is due later than the others'
    clock[0] += LIVE_AFTER / 2
    live._tick()  # what the loop's timer calls
    assert [(ex.request.target, final) for ex, final in sink] == [(b"/quick", True), (b"/slow", False)]
    assert live._timer is not None  # rescheduled for /later
    live._tick()
    assert len(sink) == 2  # not due yet
    clock[0] += LIVE_AFTER / 2
    live._tick()
    assert (sink[2][0].request.target, sink[2][1]) == (b"/later", False)
    assert live._timer is None  # nothing left to watch
    slow.finish()
    later.finish()
    assert [final for _, final in sink[3:]] == [True, True]
    live.close()


async def test_a_capture_leaves_the_live_watch_when_it_finishes_or_its_snapshot_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(recording.time, "monotonic", lambda: clock[0])
    live = LiveSnapshots()
    caps = [ExchangeCapture(lambda ex, final: None, "demo", _head(), "http://127.0.0.1:8080", 1 << 20, live=live)
            for _ in range(3)]
    quiet = ExchangeCapture(None, "demo", _head(), "http://127.0.0.1:8080", 1 << 20, live=live)  # records nothing
    assert live.waiting == 3
    caps[1].request_body(b"x" * 1000)
    caps[1].finish()  # long before its snapshot is due
    assert live.waiting == 2
    clock[0] += LIVE_AFTER
    live._tick()  # the others' snapshots are taken: nothing waits for them any more
    assert live.waiting == 0 and live._timer is None
    for cap in (caps[0], caps[2], quiet):
        cap.finish()
    assert live.waiting == 0
    live.close()


async def test_no_capture_waits_for_a_snapshot_once_its_request_is_answered_or_abandoned(
    tmp_path: Path, local: tuple[int, LocalState],
) -> None:
    """Answered requests and requests whose client went away mid-way leave nothing behind."""
    port, state = local
    async with relay_and_agent(tmp_path) as harness:
        await harness.start(str(port))
        live = harness.service._tunnels["app"].live
        assert live is not None
        async with httpx.AsyncClient(base_url=harness.base_url, headers={"Host": harness.host("app")},
                                     timeout=10, trust_env=False) as client:
            for i in range(20):
                assert (await client.get(f"/echo?n={i}")).status_code == 200
        for i in range(5):  # the local service holds /slow: the client gives up waiting
            reader, writer = await asyncio.open_connection("127.0.0.1", harness.relay.port)
            writer.write(f"GET /slow?n={i} HTTP/1.1\r\nHost: {harness.host('app')}\r\n\r\n".encode())
            await writer.drain()
            await async_wait_for(lambda: f"/slow?n={i}".encode() in state.seen_targets, what="the request to arrive")
            writer.close()
        done = await harness.exchanges(25)
        assert sorted(ex.error for ex in done if ex.request.path == "/slow") == ["client_gone"] * 5
        assert live.waiting == 0


@pytest.mark.parametrize("cap_bytes", [0, 4, 1 << 20])
async def test_bodies_that_never_came_are_empty_and_capped_ones_keep_their_real_size(cap_bytes: int) -> None:
    sink: list[tuple[Exchange, bool]] = []
    quiet = _capture(sink, cap=cap_bytes)
    assert quiet.request_body_full == (cap_bytes == 0)
    quiet._submit_live()
    quiet.response_head(204, b"No Content", (), exact=True)
    quiet.finish()
    (live, _), (done, _) = sink
    for message in (live.request, done.request, done.response):
        assert message is not None
        assert (message.body, message.body_size, message.body_truncated) == (b"", 0, False)

    sink.clear()
    full = _capture(sink, cap=cap_bytes)
    full.request_body(b"12345678")
    assert full.request_body_full == (cap_bytes <= 8)
    full.response_head(200, b"OK", ())
    full.response_body(memoryview(b"abcdef"))
    full.response_body(b"gh")
    [(done, _)] = [full.finish()] and sink
    assert (done.request.body, done.request.body_size) == (b"12345678"[:cap_bytes], 8)
    assert done.request.body_truncated == (cap_bytes < 8)
    assert done.response is not None
    assert (done.response.body, done.response.body_size) == (b"abcdefgh"[:cap_bytes], 8)
    assert done.response.body_truncated == (cap_bytes < 8)


@pytest.mark.parametrize(("raw", "shown"), [(b"1.1", "1.1"), (b"1.0", "1.0"), (b"HTTP/1.1", "1.1"), (b"http/1.0", "1.0"),
                                            (b"2", "2"), (b"", "")])
async def test_the_request_version_is_recorded_without_its_http_prefix(raw: bytes, shown: str) -> None:
    head = RequestReceived(1, b"GET", b"/", raw, (), end_stream=True)
    assert ExchangeCapture(None, "demo", head, "http://127.0.0.1:8080", 1024).finish().request.http_version == shown
