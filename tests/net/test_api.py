"""The agent API against a real uvicorn on loopback, a real SQLite store and a real local service."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from devtunnel.capture.model import Exchange
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.store import Store
from devtunnel.agent.service import AgentService
from devtunnel.api import captures as api_captures
from devtunnel.api.app import serve_api
from tests.helpers import async_wait_for
from tests.net.api_fixtures import HOSTILE_PATH, PNG, echo_service, make_exchange, sample_exchanges

pytestmark = pytest.mark.timeout(60)


@dataclass
class Api:
    url: str
    port: int
    store: Store
    recorder: Recorder
    service: AgentService
    client: httpx.AsyncClient
    exchanges: list[Exchange]
    target: str
    seen: Any


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    store = Store(tmp_path / "captures.db")
    recorder = Recorder(store)
    with echo_service() as (target, seen):
        exchanges = sample_exchanges(target)
        store.put_many(exchanges)
        service = AgentService(store=store, recorder=recorder)
        server, port = await serve_api(service, port=0, events_interval=0.05)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            try:
                yield Api(url, port, store, recorder, service, client, exchanges, target, seen)
            finally:
                await server.stop()
                recorder.close()
                store.close()


def assert_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["status_code"] == status
    assert isinstance(body["error_code"], int)
    assert isinstance(body["msg"], str) and body["msg"]
    return body


# -- captured requests, ngrok's shapes ---------------------------------------------------------


async def test_list_is_newest_first_with_ngrok_fields(api: Api) -> None:
    resp = await api.client.get("/api/requests/http", params={"scope": "all"})  # seeded: no tunnel here recorded them
    assert resp.status_code == 200
    data = resp.json()
    assert data["uri"] == "/api/requests/http"
    ids = [r["id"] for r in data["requests"]]
    assert ids == [ex.id for ex in reversed(api.exchanges)]
    first = data["requests"][-1]
    assert set(first) >= {"uri", "id", "tunnel_name", "remote_addr", "start", "duration", "request", "response"}
    assert set(first["request"]) >= {"method", "proto", "headers", "uri", "raw"}
    assert set(first["response"]) >= {"status", "status_code", "proto", "headers", "raw"}
    assert first["duration"] == 12_300_000
    assert first["request"]["headers"]["Content-Type"] == ["application/json"]


async def test_list_limit_and_tunnel_name_narrow_the_list(api: Api) -> None:
    data = (await api.client.get("/api/requests/http", params={"limit": 2, "scope": "all"})).json()
    assert [r["id"] for r in data["requests"]] == [api.exchanges[4].id, api.exchanges[3].id]
    data = (await api.client.get("/api/requests/http", params={"tunnel_name": "uploads", "scope": "all"})).json()
    assert [r["id"] for r in data["requests"]] == [api.exchanges[2].id]


async def test_filter_narrows_the_list(api: Api) -> None:
    resp = await api.client.get("/api/requests/http", params={"filter": "status:5xx or error", "scope": "all"})
    assert [r["id"] for r in resp.json()["requests"]] == [api.exchanges[4].id, api.exchanges[3].id]


async def test_bad_filter_is_a_400_with_the_message_and_position(api: Api) -> None:
    body = assert_error(await api.client.get("/api/requests/http", params={"filter": "status:>=abc"}), 400)
    assert body["details"]["position"] >= 0
    assert "column" in body["msg"]


@pytest.mark.parametrize(
    ("expression", "position"),
    [
        ("(" * 5000 + "method:GET" + ")" * 5000, 8),  # was a 500 and a RecursionError traceback in the log
        (" or ".join(["body:x"] * 1000), 256 * len("body:x or ")),  # was a 503: "Expression tree is too large"
        ("(method:GET or method:GET " * 13 + "method:GET" + ")" * 13, 8 * len("(method:GET or method:GET ")),
    ],
)
async def test_a_filter_too_deep_or_too_long_is_a_400_at_its_position(api: Api, expression: str, position: int) -> None:
    body = assert_error(await api.client.get("/api/requests/http", params={"filter": expression}), 400)
    assert body["details"]["position"] == position
    assert (await api.client.get("/api/requests/http")).status_code == 200


@pytest.mark.parametrize(
    ("expression", "position"),
    [
        ("~zz" + "a" * 10_000, 0),  # the message quoted the whole unknown code
        ("foo" + "a" * 10_000 + ":x", 0),  # ... the unknown field, twice
        ("ip:1.2.3.4," + "a" * 10_000, 11),  # ... the value that is no address
    ],
    ids=["code", "field", "ip"],
)
async def test_a_filter_error_quotes_a_bounded_part_of_a_long_expression(
    api: Api, expression: str, position: int
) -> None:
    body = assert_error(await api.client.get("/api/requests/http", params={"filter": expression}), 400)
    assert body["details"]["position"] == position
    assert len(body["msg"]) < 400 and len(body["details"]["message"]) < 400, body["msg"][:200]
    assert "a" * 20 + "…" in body["details"]["message"]  # cut, and says so


@pytest.mark.parametrize("limit", ["x", "-1", "0", "1.5"])
async def test_bad_limit_is_a_400(api: Api, limit: str) -> None:
    assert_error(await api.client.get("/api/requests/http", params={"limit": limit}), 400)


async def test_a_limit_past_any_integer_the_database_holds_lists_everything(api: Api) -> None:
    resp = await api.client.get("/api/requests/http", params={"limit": str(10**20), "scope": "all"})
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["requests"]) == len(api.exchanges)


async def test_pages_by_before_and_after_miss_and_repeat_nothing_while_traffic_arrives(api: Api) -> None:
    # A script pages back through the list with before=, then follows with after=, while new
    # exchanges are recorded between its requests: each exchange is read exactly once.
    older = [make_exchange(target=f"/old/{i}".encode(), started_at=1_700_000_000 + i) for i in range(7)]
    api.store.put_many(older)
    everything = {ex.id for ex in [*api.exchanges, *older]}
    seen: list[str] = []
    newest: str | None = None
    params: dict[str, Any] = {"limit": 3, "scope": "all"}
    arrived: list[str] = []
    for _ in range(10):  # bounded: a cursor that is not applied would page forever
        page = (await api.client.get("/api/requests/http", params=params)).json()["requests"]
        ids = [r["id"] for r in page]
        assert ids == sorted(ids, reverse=True)  # newest first, as without a cursor
        newest = newest or ids[0]
        seen += ids
        fresh = make_exchange(target=f"/new/{len(arrived)}".encode())
        api.store.put(fresh)
        arrived.append(fresh.id)
        if len(ids) < 3:
            break
        params = {"limit": 3, "before": ids[-1], "scope": "all"}
    assert len(seen) == len(set(seen)) and set(seen) == everything
    followed: list[str] = []
    cursor = newest
    for _ in range(10):
        page = (await api.client.get("/api/requests/http", params={"limit": 2, "after": cursor, "scope": "all"})).json()["requests"]
        ids = [r["id"] for r in page]
        assert ids == sorted(ids)  # oldest first: what arrived since, in order
        followed += ids
        if not ids:
            break
        cursor = ids[-1]
    assert followed == arrived


@pytest.mark.parametrize("route", ["/api/requests/http/{}", "/api/requests/http/{}/export", "/api/diff?a={}&b={}"])
async def test_a_404_for_a_huge_id_quotes_a_bounded_part_of_it(api: Api, route: str) -> None:
    huge = "A" * 20_000
    body = assert_error(await api.client.get(route.format(huge, huge)), 404)
    assert len(body["msg"]) < 200 and body["msg"].startswith("no exchange with id AAAA"), body["msg"][:300]


@pytest.mark.parametrize("params", [{"before": "nope"}, {"after": "01JD3X"}, {"before": "0" * 27},
                                    {"before": "0" * 26, "after": "0" * 26}])
async def test_a_bad_page_cursor_is_a_400(api: Api, params: dict[str, str]) -> None:
    assert_error(await api.client.get("/api/requests/http", params=params), 400)


async def test_detail_raw_is_the_whole_http_message_in_base64(api: Api) -> None:
    ex = api.exchanges[2]
    data = (await api.client.get(f"/api/requests/http/{ex.id}")).json()
    raw = base64.b64decode(data["request"]["raw"])
    assert raw.startswith(b"PUT /avatar.png HTTP/1.1\r\nHost: uploads.localhost\r\n")
    assert raw.endswith(b"\r\n\r\n" + PNG)
    assert base64.b64decode(data["response"]["raw"]).endswith(PNG)
    assert data["start"][:4].isdigit() and "T" in data["start"]


async def test_detail_keeps_a_hostile_path_exactly(api: Api) -> None:
    data = (await api.client.get(f"/api/requests/http/{api.exchanges[1].id}")).json()
    assert data["request"]["uri"] == HOSTILE_PATH
    assert data["request"]["headers"]["X-Evil"] == ["\x1b[31mred\x1b[0m"]


async def test_detail_accepts_a_unique_prefix(api: Api) -> None:
    ex = api.exchanges[0]
    others = [o.id for o in api.exchanges[1:]]
    prefix = next(ex.id[:n] for n in range(1, 27) if not any(o.startswith(ex.id[:n]) for o in others))
    assert len(prefix) < len(ex.id)
    data = (await api.client.get(f"/api/requests/http/{prefix.lower()}")).json()
    assert data["id"] == ex.id


async def test_an_ambiguous_prefix_is_a_404_that_says_so(api: Api) -> None:
    body = assert_error(await api.client.get(f"/api/requests/http/{api.exchanges[0].id[:3]}"), 404)
    assert "ambiguous" in body["msg"]


async def test_failed_exchange_has_no_response_and_says_why(api: Api) -> None:
    data = (await api.client.get(f"/api/requests/http/{api.exchanges[4].id}")).json()
    assert data["response"] is None
    assert data["error"] == "local_refused"


async def test_unknown_id_is_a_404(api: Api) -> None:
    assert_error(await api.client.get("/api/requests/http/01ZZZZZZZZZZZZZZZZZZZZZZZZ"), 404)


async def test_delete_clears_every_capture(api: Api) -> None:
    resp = await api.client.delete("/api/requests/http", params={"scope": "all"})
    assert resp.status_code == 204
    assert (await api.client.get("/api/requests/http", params={"scope": "all"})).json()["requests"] == []


@pytest.mark.parametrize("query", [{"tunnel_name": "payments"}, {"filter": "status:>=500"}, {"before": "01JD3X"}])
async def test_a_delete_asked_to_narrow_what_it_forgets_deletes_nothing(api: Api, query: dict[str, str]) -> None:
    # DELETE /api/requests/http?tunnel_name=payments forgot every capture of every tunnel: the
    # parameter was ignored.
    before = len((await api.client.get("/api/requests/http", params={"limit": 1000, "scope": "all"})).json()["requests"])
    body = assert_error(await api.client.delete("/api/requests/http", params=query), 400)
    assert body["msg"].endswith("nothing was deleted") and repr(next(iter(query))) in body["msg"]
    assert len((await api.client.get("/api/requests/http", params={"limit": 1000, "scope": "all"})).json()["requests"]) == before > 0


# -- replay ---------------------------------------------------------------------------------


async def test_ngrok_replay_sends_again_and_stores_a_linked_exchange(api: Api) -> None:
    ex = api.exchanges[0]
    resp = await api.client.post("/api/requests/http", json={"id": ex.id})
    assert resp.status_code == 204
    method, path, headers, body = api.seen.requests[-1]
    assert (method, path, body) == ("POST", "/webhooks/stripe", ex.request.body)
    assert headers["stripe-signature"] == ex.request.headers.get("stripe-signature")
    replays = [r for r in api.store.rows() if r.replay_of == ex.id]
    assert len(replays) == 1 and replays[0].status == 200


async def test_replay_with_edits_answers_201_with_the_new_exchange(api: Api) -> None:
    ex = api.exchanges[0]
    edits = {"method": "PUT", "path": "/webhooks/other?x=1", "set_headers": {"X-Debug": "1"},
             "remove_headers": ["Stripe-Signature"], "body": "changed"}
    resp = await api.client.post(f"/api/requests/http/{ex.id}/replay", json=edits)
    assert resp.status_code == 201, resp.text
    new = resp.json()
    assert new["replay_of"] == ex.id and new["response"]["status_code"] == 200 and new["edited"] is True
    method, path, headers, body = api.seen.requests[-1]
    assert (method, path, body) == ("PUT", "/webhooks/other?x=1", b"changed")
    assert headers["x-debug"] == "1" and "stripe-signature" not in headers
    # stored and readable at once
    assert (await api.client.get(f"/api/requests/http/{new['id']}")).json()["replay_of"] == ex.id


async def test_replay_headers_are_the_complete_list_and_the_method_is_kept_as_typed(api: Api) -> None:
    ex = api.exchanges[0]
    edits = {"method": "purge", "headers": [["Host", "edited.localhost"], ["X-Only", "1"]]}
    resp = await api.client.post(f"/api/requests/http/{ex.id}/replay", json=edits)
    assert resp.status_code == 201, resp.text
    sent = resp.json()["request"]
    assert sent["method"] == "purge"  # the echo service does not know it: what matters is what was sent
    assert sent["headers"] == {"Host": ["edited.localhost"], "X-Only": ["1"], "Content-Length": [str(len(ex.request.body))]}


async def test_an_empty_edit_is_a_plain_replay_not_an_edited_one(api: Api) -> None:
    ex = api.exchanges[0]
    resp = await api.client.post(f"/api/requests/http/{ex.id}/replay", json={"method": ex.request.method})
    assert resp.status_code == 201, resp.text
    assert resp.json()["edited"] is False
    assert [r.edited for r in api.store.rows() if r.replay_of == ex.id] == [False]


async def test_replay_body_can_be_binary_in_base64(api: Api) -> None:
    ex = api.exchanges[0]
    resp = await api.client.post(f"/api/requests/http/{ex.id}/replay", json={"body_base64": base64.b64encode(PNG).decode()})
    assert resp.status_code == 201, resp.text
    assert api.seen.requests[-1][3] == PNG


async def test_replay_to_another_url(api: Api) -> None:
    ex = make_exchange(target_url="http://127.0.0.1:9")  # nothing listens there
    api.store.put(ex)
    resp = await api.client.post(f"/api/requests/http/{ex.id}/replay", json={"to": api.target})
    assert resp.status_code == 201, resp.text
    assert api.seen.requests[-1][1] == "/webhooks/stripe"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"body_base64": "***"}, "body_base64 is not valid base64"),
        ({"headers": [["Bad Name", "x"]]}, "headers, item 1: invalid header name 'Bad Name'"),
        ({"set_headers": {"X-Split": "a\r\nInjected: 1"}}, "invalid value for header X-Split: it holds CR, LF"),
        ({"headers": [["X-Split", "a\nb"]]}, "invalid value for header X-Split"),
        ({"headers": {"X-Debug": "1"}}, "headers must be the complete list of [name, value] pairs; to change only some"),
        ({"headers": "X-A: 1"}, "headers must be the complete list"),
        ({"headers": [["X-A", None]]}, "to delete a header, name it in remove_headers"),
        ({"set_headers": {"X-A": 1}}, "the value of 'X-A' must be a string"),
        ({"remove_headers": "Cookie"}, "remove_headers must be a list of header names"),
        ({"method": "GET /"}, "invalid method 'GET /'"),
        ({"method": ""}, "invalid method ''"),
        ({"path": "no-slash"}, "invalid target 'no-slash'"),
        ({"path": "/a b"}, "invalid target '/a b'"),
        ({"to": "ftp://127.0.0.1/"}, "to must be an http:// or https:// URL"),
        ({"to": "http://[::1"}, "cannot replay to 'http://[::1': Invalid IPv6 URL"),  # was a 500
        ({"body": "a", "body_base64": "YQ=="}, "give body or body_base64, not both"),
        ({"method": 5.5}, "method must be a string, not a number"),
        ({"header": [["X-A", "1"]]}, "unknown field 'header'"),
    ],
)
async def test_bad_replay_edits_are_400s_that_say_why_and_send_nothing(api: Api, body: dict[str, Any], message: str) -> None:
    before = len(api.seen.requests)
    error = assert_error(await api.client.post(f"/api/requests/http/{api.exchanges[0].id}/replay", json=body), 400)
    assert message in error["msg"]
    assert len(api.seen.requests) == before
    assert all(r.replay_of is None for r in api.store.rows())  # nothing stored either


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b'"text"', b"[" * 100_000, b'{"id": NaN'])
async def test_malformed_json_bodies_are_400s_never_500s(api: Api, content: bytes) -> None:
    resp = await api.client.post("/api/requests/http", content=content, headers={"Content-Type": "application/json"})
    assert_error(resp, 400)


@pytest.mark.parametrize(
    "content",
    [b'{"path": "/\\ud800"}', b'{"body": "\\udfff"}', b'{"set_headers": {"X-A": "\\ud800"}}',
     b'{"headers": [["Host", "a\\ud800"]]}', b'{"set": ["a=\\ud800"]}', b'{"to": "http://127.0.0.1:9/\\ud800"}'],
)
async def test_half_a_surrogate_pair_in_an_edit_is_a_400_and_sends_nothing(api: Api, content: bytes) -> None:
    # JSON can escape a lone UTF-16 surrogate; Python decodes it to a str that cannot be encoded.
    # These were 500s (UnicodeEncodeError) with a traceback in the agent's log.
    before = len(api.seen.requests)
    resp = await api.client.post(f"/api/requests/http/{api.exchanges[0].id}/replay", content=content,
                                 headers={"Content-Type": "application/json"})
    assert "surrogate" in assert_error(resp, 400)["msg"]
    assert len(api.seen.requests) == before
    assert all(r.replay_of is None for r in api.store.rows())


async def test_a_body_that_is_not_json_is_a_415(api: Api) -> None:
    resp = await api.client.post("/api/requests/http", content=b"id=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(resp, 415)


async def test_ngrok_replay_without_an_id_is_a_400(api: Api) -> None:
    assert_error(await api.client.post("/api/requests/http", json={"tunnel_name": "payments"}), 400)


@pytest.mark.parametrize("route", ["ngrok", "edits"])
async def test_a_request_that_cannot_be_replayed_is_a_400_and_sends_nothing(api: Api, route: str) -> None:
    ex = make_exchange(target_url=api.target, status=101, resp_body=b"")
    ex.websocket = True
    api.store.put(ex)
    if route == "ngrok":
        resp = await api.client.post("/api/requests/http", json={"id": ex.id})
    else:
        resp = await api.client.post(f"/api/requests/http/{ex.id}/replay", json={})
    assert "WebSocket" in assert_error(resp, 400)["msg"]
    assert api.seen.requests == []


async def test_replay_to_a_closed_port_is_reported(api: Api) -> None:
    ex = make_exchange(target_url=f"http://127.0.0.1:{_closed_port()}")
    api.store.put(ex)
    resp = await api.client.post(f"/api/requests/http/{ex.id}/replay")
    # Either the replay is stored as a failed exchange or the API says the target failed.
    if resp.status_code == 201:
        assert resp.json()["error"] is not None
    else:
        assert_error(resp, 502)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- export and diff ---------------------------------------------------------------------------


async def test_export_curl_returns_text_and_side_files(api: Api) -> None:
    resp = await api.client.get(f"/api/requests/http/{api.exchanges[2].id}/export", params={"format": "curl"})
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["format"] == "curl" and data["text"].startswith("curl")
    assert [base64.b64decode(v) for v in data["files"].values()] == [PNG]


async def test_export_redacts_on_request(api: Api) -> None:
    resp = await api.client.get(f"/api/requests/http/{api.exchanges[0].id}/export", params={"format": "httpie", "redact": "true"})
    assert resp.status_code == 200, resp.text
    assert "5257a869" not in resp.json()["text"]


async def test_export_of_an_unknown_format_is_a_400(api: Api) -> None:
    assert_error(await api.client.get(f"/api/requests/http/{api.exchanges[0].id}/export", params={"format": "pdf"}), 400)


async def test_diff_reports_sections_and_a_unified_text(api: Api) -> None:
    a, b = api.exchanges[0], api.exchanges[3]
    data = (await api.client.get("/api/diff", params={"a": a.id, "b": b.id, "side": "response"})).json()
    assert data["identical"] is False
    assert "500" in data["unified"]
    same = (await api.client.get("/api/diff", params={"a": a.id, "b": a.id})).json()
    assert same["identical"] is True


@pytest.mark.parametrize("params", [{"a": "x"}, {"a": "01", "b": "02", "side": "left"}])
async def test_bad_diff_queries_are_400s(api: Api, params: dict[str, str]) -> None:
    assert_error(await api.client.get("/api/diff", params=params), 400)


@pytest.mark.parametrize(
    ("builder", "route"),
    [
        ("capture_json", "/api/requests/http?limit=1&scope=all"),
        ("capture_json", "/api/requests/http/{id}"),
        ("export", "/api/requests/http/{id}/export?format=har"),
        ("diff_exchanges", "/api/diff?a={id}&b={id}"),
    ],
)
async def test_answers_made_of_captured_bodies_are_built_off_the_event_loop(
    api: Api, monkeypatch: pytest.MonkeyPatch, builder: str, route: str
) -> None:
    # Building them takes as long as the bodies are big (a list of 50 exchanges with 10 MB
    # bodies: 266 MiB of JSON, 11 s), and on the event loop it held every tunnel meanwhile (a
    # request through the tunnel waited 8 s). The builder here waits until another request to
    # the API has been answered, which only a free event loop can do.
    entered, probed = threading.Event(), threading.Event()
    released: list[bool] = []
    original: Callable[..., Any] = getattr(api_captures, builder)

    def gated(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        released.append(probed.wait(5))
        return original(*args, **kwargs)

    monkeypatch.setattr(api_captures, builder, gated)
    answer = asyncio.create_task(api.client.get(route.format(id=api.exchanges[0].id)))
    await async_wait_for(entered.is_set, what="the answer being built")
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as other:
        assert (await other.get("/api")).status_code == 200
    probed.set()
    assert (await answer).status_code == 200
    assert released and all(released)


async def test_the_list_holds_one_exchange_in_memory_at_a_time(api: Api) -> None:
    # Before, the list read every exchange with its bodies at once: 50 exchanges with 10 MB
    # bodies (the default cap, within any public client's reach) held over 1 GB.
    body = bytes(range(256)) * 4096  # 1 MiB, not text: base64 in the answer
    big = [make_exchange(started_at=time.time() + i, req_body=body, resp_body=body) for i in range(60)]
    api.store.put_many(big)
    tracemalloc.start()
    try:
        size = 0
        async with api.client.stream("GET", "/api/requests/http", params={"limit": 100, "scope": "all"}) as resp:
            assert resp.status_code == 200
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 60 * 2 * len(body) * 4 // 3  # every body went out, in base64
    assert peak < 16 * 2 * len(body), f"peak {peak >> 20} MiB"  # a few exchanges' worth (15 MiB), not 60 (134 MiB)


async def test_status_counts_captures(api: Api) -> None:
    data = (await api.client.get("/api/status")).json()
    assert data["requests"] == len(api.exchanges)
    assert data["db"].endswith("captures.db")


async def test_without_recording_capture_routes_say_so(tmp_path: Path) -> None:
    service = AgentService()
    server, port = await serve_api(service, port=0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            body = assert_error(await client.get("/api/requests/http"), 503)
            assert "recording is off" in body["msg"]
            assert (await client.get("/api/status")).json()["recording"] is False
    finally:
        await server.stop()


# -- errors and methods --------------------------------------------------------------------


async def test_unknown_route_is_a_json_404(api: Api) -> None:
    assert_error(await api.client.get("/api/nothing"), 404)


@pytest.mark.parametrize("path", ["/", "/inspect/http"])
async def test_ngrok_s_web_inspector_address_says_where_devtunnel_s_inspector_is(api: Api, path: str) -> None:
    # An ngrok user opens localhost:4040 in a browser by habit: "no such resource: /" alone.
    body = assert_error(await api.client.get(path), 404)
    assert body["msg"] == (f"no such resource: {path}: ngrok's web inspector is not served here; devtunnel's runs in "
                           "the terminal (devtunnel inspect), and this port is the agent API (/api/tunnels, "
                           "/api/requests/http; docs/api.md)")


async def test_wrong_method_is_a_json_405(api: Api) -> None:
    assert_error(await api.client.put("/api/requests/http"), 405)


@pytest.mark.parametrize(("path", "allowed"), [
    ("/api/tunnels", "GET, HEAD, POST"),
    ("/api/tunnels/payments", "GET, HEAD, DELETE"),
    ("/api/tunnels/payments/rules", "GET, HEAD, POST"),
    ("/api/endpoints/", "GET, HEAD, POST"),
    ("/api/endpoints/payments", "GET, HEAD, DELETE"),
    ("/api/requests/http", "GET, HEAD, POST, DELETE"),
    ("/api/requests/http/01JD3X/replay", "POST"),
    ("/api/status", "GET, HEAD"),
])
async def test_a_405_allows_every_method_the_path_takes(api: Api, path: str, allowed: str) -> None:
    # Starlette's Allow named the methods of the first route of the path only: a PATCH of
    # /api/tunnels answered "Allow: GET, HEAD", as if no tunnel could be started there.
    resp = await api.client.patch(path)
    assert resp.headers["allow"] == allowed
    assert assert_error(resp, 405)["msg"].endswith(f"(allowed: {allowed})")


# -- loopback only ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:4040", "127.0.0.1.nip.io", "localhost.evil.example"])
async def test_a_rebound_dns_name_is_refused(api: Api, host: str) -> None:
    assert_error(await api.client.get("/api/requests/http", headers={"Host": host}), 403)


@pytest.mark.parametrize("host", ["localhost", "localhost:4040", "inspect.localhost", "[::1]:4040"])
async def test_loopback_names_are_served(api: Api, host: str) -> None:
    assert (await api.client.get("/api/status", headers={"Host": host})).status_code == 200


async def test_a_cross_origin_browser_request_is_refused(api: Api) -> None:
    assert_error(await api.client.delete("/api/requests/http", headers={"Origin": "https://evil.example"}), 403)
    assert_error(await api.client.post("/api/requests/http", json={"id": api.exchanges[0].id}, headers={"Origin": "null"}), 403)
    assert_error(await api.client.get("/api/status", headers={"Sec-Fetch-Site": "cross-site"}), 403)
    assert api.store.count() == len(api.exchanges)  # nothing was cleared


async def _raw(port: int, head: bytes) -> tuple[int, bytes]:
    """The status and body of one request written to the API's socket as it is."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        # The first value won: a loopback Origin ahead of the page's own one let it through.
        (b"Origin: http://localhost", b"Origin: http://evil.example", "more than one Origin header"),
        (b"Origin: http://localhost", b"origin: http://localhost:3000", "more than one Origin header"),
        (b"Sec-Fetch-Site: same-origin", b"Sec-Fetch-Site: cross-site", "more than one Sec-Fetch-Site header"),
    ],
    ids=["origin-evil", "origin-twice", "sec-fetch-site"],
)
async def test_a_duplicated_origin_is_refused_like_a_duplicated_host(
    api: Api, first: bytes, second: bytes, reason: str
) -> None:
    head = (b"DELETE /api/requests/http HTTP/1.1\r\nHost: 127.0.0.1\r\n" + first + b"\r\n" + second
            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    status, body = await _raw(api.port, head)
    assert status == 403 and json.loads(body)["msg"] == reason, body
    assert api.store.count() == len(api.exchanges)  # nothing was cleared
    twice = b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    assert (await _raw(api.port, twice))[0] == 403  # the same as two Host headers
    one = b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n" + first + b"\r\nConnection: close\r\n\r\n"
    assert (await _raw(api.port, one))[0] == 200


_FOREIGN_HOST = "the agent API answers only to a loopback Host (127.0.0.1, localhost, [::1], *.localhost)"


@pytest.mark.parametrize(
    "host",
    [b"evil.com#.localhost", b"evil.com/.localhost", b"evil.com\\.localhost", b".localhost", b"a..localhost",
     b"localhost:99999999", b"localhost:65536", b"localhost:0", b"localhost:", b"evil.com@localhost",
     b"[::1]:99999", b"[evil.com]", b"::1", b"localhost\x85"],
)
async def test_a_host_that_is_no_host_name_and_port_is_refused_whatever_it_ends_with(api: Api, host: bytes) -> None:
    # Each got 200: only the end of the name was looked at (.localhost), and any digits as a port.
    head = b"GET /api/tunnels HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    status, body = await _raw(api.port, head)
    assert status == 403, body
    assert json.loads(body)["msg"] == _FOREIGN_HOST


async def test_loopback_hosts_with_a_port_are_served_over_a_raw_socket(api: Api) -> None:
    for host in (b"localhost", f"127.0.0.1:{api.port}".encode(), f"[::1]:{api.port}".encode(), b"inspect.localhost",
                 b"LocalHost:65535"):
        head = b"GET /api/tunnels HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
        status, body = await _raw(api.port, head)
        assert status == 200 and "tunnels" in json.loads(body), (host, body)


@pytest.mark.parametrize("authority", [b"evil.com", b"evil.com:4040", b"localhost.evil.com"])
async def test_an_absolute_target_naming_another_host_is_refused_whatever_the_host_field_says(
    api: Api, authority: bytes
) -> None:
    # The target's authority is the request's host (RFC 9112 3.2.2), as the embedded relay reads it (421).
    head = (b"DELETE http://" + authority + b"/api/requests/http HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    status, body = await _raw(api.port, head)
    assert status == 403 and json.loads(body)["msg"] == _FOREIGN_HOST, body
    assert api.store.count() == len(api.exchanges)  # nothing was cleared


async def test_an_absolute_target_naming_a_loopback_host_is_served_by_its_path(api: Api) -> None:
    for target, host in ((f"http://127.0.0.1:{api.port}/api/tunnels", b"evil.com"), ("HTTP://localhost/api/tunnels", None)):
        head = (b"GET " + target.encode() + b" HTTP/1.1\r\n" + (b"Host: " + host + b"\r\n" if host else b"")
                + b"Connection: close\r\n\r\n")
        status, body = await _raw(api.port, head)
        assert status == 200 and "tunnels" in json.loads(body), (target, body)


@pytest.mark.parametrize("target", [b"http://evil.com@localhost/api/tunnels", b"http:///api/tunnels", b"http://:4040/api/tunnels"])
async def test_an_absolute_target_that_names_no_host_is_a_400(api: Api, target: bytes) -> None:
    status, body = await _raw(api.port, b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert status == 400, body


async def test_an_events_handshake_with_an_absolute_target_naming_another_host_is_refused(api: Api) -> None:
    head = (b"GET http://evil.com/api/events HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    status, _ = await _raw(api.port, head)
    assert status == 403
    good = head.replace(b"http://evil.com", f"http://127.0.0.1:{api.port}".encode())
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    try:
        writer.write(good)
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 101 ")
    finally:
        writer.close()


async def test_no_answer_may_be_sniffed_as_html_by_a_browser(api: Api) -> None:
    # Answers quote captured data (a path of <script>, a body of HTML): a browser that reaches
    # one (an old one sending no Origin nor Sec-Fetch-Site) must read it as JSON and nothing else.
    hostile = "/api/<script>alert(document.domain)</script>"
    answers = [
        await api.client.get(f"/api/requests/http/{api.exchanges[1].id}"),
        await api.client.get("/api/requests/http"),  # streamed
        await api.client.get(hostile),  # 404 quoting the path
        await api.client.put("/api/requests/http"),  # 405
        await api.client.get("/api/status", headers={"Origin": "https://evil.example"}),  # refused
        await api.client.get("/api/status", headers={"Host": "evil.example"}),  # refused
        await api.client.post(f"/api/requests/http/{api.exchanges[0].id}/replay"),  # 201
        await api.client.delete("/api/requests/http"),  # 204
    ]
    assert [a.status_code for a in answers] == [200, 200, 404, 405, 403, 403, 201, 204]
    for answer in answers:
        assert answer.headers.get_list("x-content-type-options") == ["nosniff"], (answer.request.url, answer.headers)


async def test_a_loopback_origin_is_served(api: Api) -> None:
    assert (await api.client.get("/api/status", headers={"Origin": "http://localhost:3000"})).status_code == 200


async def test_curl_with_a_foreign_host_is_refused(api: Api) -> None:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-H", "Host: attacker.example", f"{api.url}/api/tunnels",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    body, _, code = out.decode().rpartition("\n")
    assert code == "403"
    assert json.loads(body)["status_code"] == 403


async def test_events_websocket_refuses_a_cross_origin_page(api: Api) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(f"ws://127.0.0.1:{api.port}/api/events", origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403


# -- events ---------------------------------------------------------------------------------


async def _event_clients(api: Api, n: int = 1) -> bool:
    return bool((await api.client.get("/api/status")).json()["event_clients"] == n)


async def test_events_announce_every_committed_exchange_once(api: Api) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{api.port}/api/events") as ws:
        await async_wait_for(lambda: _event_clients(api), what="events client registered")
        new = [make_exchange() for _ in range(30)]
        for ex in new:
            api.recorder.submit(ex)
        seen: list[str] = []
        while len(seen) < len(new):
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert message["type"] == "exchanges"
            seen += message["ids"]
        assert sorted(seen) == sorted(ex.id for ex in new)
        assert len(seen) == len(set(seen))


async def test_events_read_over_plain_http_is_a_400_that_says_it_is_a_websocket(api: Api) -> None:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "-o", "-", "-w", "\n%{http_code}", f"{api.url}/api/events", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    body, _, code = out.decode().rpartition("\n")
    assert code == "400", body
    assert json.loads(body)["msg"].startswith(f"/api/events is a WebSocket: connect to ws://127.0.0.1:{api.port}/api/events")
    assert (await api.client.post("/api/events")).status_code == 405
    async with websockets.connect(f"ws://127.0.0.1:{api.port}/api/events"):  # the WebSocket is as it was
        await async_wait_for(lambda: _event_clients(api), what="events client registered")


async def test_events_merge_a_burst_and_resync_when_too_much_is_pending(tmp_path: Path) -> None:
    store = Store(tmp_path / "captures.db")
    recorder = Recorder(store)
    server, port = await serve_api(AgentService(store=store, recorder=recorder), port=0, events_interval=2.0, events_max_ids=5)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/api/events") as ws:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await async_wait_for(
                    lambda: _status_field(client, "event_clients"), what="events client registered"
                )
            first = make_exchange()
            recorder.submit(first)
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "exchanges", "ids": [first.id]}
            # While the client's pause runs, a burst larger than its bound arrives.
            for _ in range(8):
                recorder.submit(make_exchange())
            await asyncio.to_thread(recorder.flush)
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "resync"}
            last = make_exchange()
            recorder.submit(last)
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "exchanges", "ids": [last.id]}
    finally:
        await server.stop()
        recorder.close()
        store.close()


async def test_events_tell_a_client_that_stopped_reading_to_resync_once_little_is_buffered(tmp_path: Path) -> None:
    # A dashboard that stops reading (busy, or slow) while traffic goes on: the agent may hold
    # only a little for it in socket buffers, then merges ids and owes it a resync, so when it
    # reads again it is told to reload, not handed minutes-old news one message at a time.
    store = Store(tmp_path / "captures.db")
    recorder = Recorder(store)
    server, port = await serve_api(AgentService(store=store, recorder=recorder), port=0,
                                   events_interval=0.01, events_max_ids=1000)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/api/events") as follower:
            await asyncio.to_thread(stuck.connect, ("127.0.0.1", port))
            key = base64.b64encode(b"0123456789abcdef").decode()
            stuck.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                async def both() -> bool:
                    return bool(await _status_field(client, "event_clients") == 2)
                await async_wait_for(both, what="both clients registered")
            for _ in range(60):  # 12,000 ids, 200 a commit, each sent before the next comes
                batch = [make_exchange() for _ in range(200)]
                for ex in batch:
                    recorder.submit(ex)
                await asyncio.to_thread(recorder.flush)
                told: set[str] = set()
                while batch[-1].id not in told:
                    told.update(json.loads(await asyncio.wait_for(follower.recv(), 10))["ids"])
            last = make_exchange()
            recorder.submit(last)
            await asyncio.to_thread(recorder.flush)
            stuck.settimeout(10)
            received = b""
            resync = b'{"type": "resync"}'
            while resync not in received and last.id.encode() not in received:  # the resync covers it
                received += await asyncio.to_thread(stuck.recv, 65536)
            assert resync in received, len(received)
            assert len(received) < 150_000, len(received)  # a few socket buffers' worth, not 12,000 ids (360 KB)
    finally:
        stuck.close()
        await server.stop()
        recorder.close()
        store.close()


async def _status_field(client: httpx.AsyncClient, key: str) -> Any:
    return (await client.get("/api/status")).json()[key]


async def test_events_client_leaving_unsubscribes(api: Api) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{api.port}/api/events"):
        await async_wait_for(lambda: _event_clients(api, 1), what="client registered")
    await async_wait_for(lambda: _event_clients(api, 0), what="client gone")


# -- serving -------------------------------------------------------------------------------


async def test_serve_api_takes_the_next_free_port(tmp_path: Path) -> None:
    store = Store(tmp_path / "captures.db")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    first = taken.getsockname()[1]
    recorder = Recorder(store)
    server, port = await serve_api(AgentService(store=store, recorder=recorder), port=first)
    try:
        assert port != first and port > first
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/api/status")).status_code == 200
    finally:
        await server.stop()
        taken.close()
        recorder.close()
        store.close()


async def test_serve_api_reports_at_once_a_server_that_cannot_listen(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # uvicorn's startup refuses a datagram socket: serve_api raises uvicorn's error as soon as its
    # task ends, rather than when the start deadline (a ConfigError) runs out, and closes the socket.
    from devtunnel.api import app as api_app

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    monkeypatch.setattr(api_app, "bind_free", lambda port, **where: udp)
    store = Store(tmp_path / "captures.db")
    try:
        with pytest.raises(ValueError, match="Stream Socket was expected"):
            await serve_api(AgentService(store=store), port=0)
        assert udp.fileno() == -1
    finally:
        udp.close()
        store.close()


async def test_tunnel_name_with_quotes_and_spaces_is_matched_literally(api: Api) -> None:
    odd = make_exchange(tunnel='say "hi" (http)')
    api.store.put(odd)
    data = (await api.client.get("/api/requests/http", params={"tunnel_name": 'say "hi" (http)', "filter": "method:POST", "scope": "all"})).json()
    assert [r["id"] for r in data["requests"]] == [odd.id]


async def test_stopping_the_server_closes_connected_event_clients(tmp_path: Path) -> None:
    store = Store(tmp_path / "captures.db")
    recorder = Recorder(store)
    server, port = await serve_api(AgentService(store=store, recorder=recorder), port=0)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/api/events") as ws:
            async with httpx.AsyncClient() as client:
                await async_wait_for(lambda: _status_field_at(client, port), what="events client registered")
            await asyncio.wait_for(server.stop(timeout=5), 10)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        assert server.task is not None and server.task.done()
    finally:
        recorder.close()
        store.close()


async def _status_field_at(client: httpx.AsyncClient, port: int) -> bool:
    return bool((await client.get(f"http://127.0.0.1:{port}/api/status")).json()["event_clients"] == 1)


@pytest.mark.parametrize(("raw", "in_json"), [("Größe".encode(), "Größe"), (b"Gr\xf6\xdfe", "Gr\ufffd\ufffde"),
                                             (b"caf\xc3\xa9\x1b[2J", "caf\xe9\x1b[2J")],
                         ids=["utf-8", "not-utf-8", "utf-8-with-escape"])
async def test_a_reason_phrase_goes_out_as_json_read_as_utf8_and_always_encodes(api: Api, raw: bytes, in_json: str) -> None:
    """``status`` and HAR's ``statusText`` read the reason's bytes as latin-1 (``GrÃ¶Ãe``); now as
    UTF-8 with U+FFFD for another byte, ESC escaped by JSON; ``raw`` keeps the bytes; the diff's
    lines (the terminal rule) encode too."""
    ex = make_exchange(method="GET", target=b"/teapot", req_body=b"", status=418, resp_headers=[("Content-Length", "0")],
                       resp_body=b"")
    assert ex.response is not None
    ex.response.reason = raw.decode("latin-1")  # as the agent records the bytes it received
    api.store.put_many([ex])
    resp = await api.client.get(f"/api/requests/http/{ex.id}")
    assert resp.status_code == 200 and b"\x1b" not in resp.content
    data = json.loads(resp.content.decode("utf-8"))  # strict UTF-8
    assert data["response"]["status"] == f"418 {in_json}"
    assert base64.b64decode(data["response"]["raw"]).startswith(b"HTTP/1.1 418 " + raw + b"\r\n")
    har = (await api.client.get(f"/api/requests/http/{ex.id}/export", params={"format": "har"})).json()
    assert json.loads(har["text"])["log"]["entries"][0]["response"]["statusText"] == in_json
    diff = await api.client.get("/api/diff", params={"a": api.exchanges[0].id, "b": ex.id, "side": "response"})
    assert diff.status_code == 200, diff.text
    shown = {b"Gr\xf6\xdfe": "Gr\\xf6\\xdfe", b"caf\xc3\xa9\x1b[2J": "caf\xe9\\x1b[2J"}.get(raw, in_json)
    assert f"+HTTP/1.1 418 {shown}\n" in json.loads(diff.content.decode("utf-8"))["unified"]


@pytest.fixture
def uvicorn_loggers_as_fresh() -> Any:
    """uvicorn's loggers as in a fresh process: no handler of their own, propagating (another
    test's server may have configured them)."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = [], True
    return None


async def test_uvicorns_records_go_through_the_processs_handlers_not_its_own(
    uvicorn_loggers_as_fresh: None, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage sent to the API port: uvicorn's warning reaches the root logger (devtunnel's
    escaping handler on stderr, the agent's log file under the inspector, caplog here), not a
    stderr handler of uvicorn's own that writes it raw."""
    assert logging.getLogger("uvicorn").handlers == [] and logging.getLogger("uvicorn.error").propagate
    caplog.set_level(logging.WARNING)
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(b"\x00\x1b[2J garbage\r\n\r\n")
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
    writer.close()
    await async_wait_for(lambda: any(r.name == "uvicorn.error" for r in caplog.records), what="uvicorn's warning")
    assert [r.getMessage() for r in caplog.records if r.name == "uvicorn.error"] == ["Invalid HTTP request received."]


async def test_a_pytest_export_signs_from_the_variable_the_agents_config_names(tmp_path: Path) -> None:
    # [webhooks.stripe] secret_env = "PAY_STRIPE" in the agent's devtunnel.toml: the module the
    # API writes must read PAY_STRIPE, as the agent's own replays sign from it (not STRIPE_WEBHOOK_SECRET).
    from devtunnel.webhooks.context import WebhookContext

    store = Store(tmp_path / "captures.db")
    recorder = Recorder(store)
    with echo_service() as (target, _seen):
        [delivery] = sample_exchanges(target)[:1]
        store.put_many([delivery])
        context = WebhookContext(secrets={"stripe": ("whsec_never_written",)}, secret_envs={"stripe": "PAY_STRIPE"})
        service = AgentService(store=store, recorder=recorder, webhooks=context)
        server, port = await serve_api(service, port=0, events_interval=0.05)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                resp = await client.get(f"/api/requests/http/{delivery.id}/export", params={"format": "pytest"})
        finally:
            await server.stop()
            recorder.close()
            store.close()
    assert resp.status_code == 200, resp.text
    text = resp.json()["text"]
    assert "provider='stripe'" in text and "secret_env='PAY_STRIPE'" in text, text[-800:]
    assert "whsec_never_written" not in text
