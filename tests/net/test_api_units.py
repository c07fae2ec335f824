"""The agent API's pure parts: loopback checks, ngrok shapes, and the events outbox."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtunnel.capture.model import Exchange, Response, WsMessage
from devtunnel.api.events import Outbox
from devtunnel.api.plumbing import AsciiJSON, json_list_chunks
from devtunnel.values.loopback import is_loopback_host, is_loopback_origin
from devtunnel.export.agent_json import capture_json, raw_request, raw_response
from tests.kit.exchanges import make_exchange, make_response


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:4040", "localhost", "LOCALHOST:4040", "[::1]", "[::1]:4040", "app.localhost", "a.b.localhost:80",
     "localhost:65535", "my-app.localhost:1"],
)
def test_loopback_hosts_are_accepted(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "",
        "evil.example",
        "evil.example:4040",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "127.0.0.2",
        "0.0.0.0:4040",
        "::1",
        "[::1",
        "[::1]x",
        "localhost:abc",
        "[::ffff:127.0.0.1]",
        "10.0.0.1",
        "evil.com#.localhost",
        "evil.com/.localhost",
        "evil.com\\.localhost",
        ".localhost",
        "a..localhost",
        "localhost.",
        "localhost:99999999",
        "localhost:0",
        "localhost:",
        "[::1]:65536",
        "localhost\x85",
    ],
)
def test_other_hosts_are_refused(host: str) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:4040", "https://app.localhost", "http://[::1]:8080"])
def test_loopback_origins_are_accepted(origin: str) -> None:
    assert is_loopback_origin(origin)


@pytest.mark.parametrize("origin", ["null", "https://evil.example", "file://", "http://localhost.evil.example", "http://localhost:99999", "ftp://localhost",
                                    "http://.localhost", "http://evil.com%5c.localhost"])
def test_other_origins_are_refused(origin: str) -> None:
    assert not is_loopback_origin(origin)


def _exchange() -> Exchange:
    return make_exchange(
        "POST", b"/hooks?x=1",
        [("Host", "payments.localhost"), ("Transfer-Encoding", "chunked"), ("X-A", "1"), ("x-a", "2")], b"hello",
        make_response(418, [("Content-Length", "3")], b"\x00\xff\x01"),
        id="01JD3X0000000000000000000A",
        tunnel="payments",
        started_at=1_700_000_000.25,
        target_url="",
        remote_addr="203.0.113.9:5555",
        duration=0.0125,
    )


def test_capture_json_has_ngrok_fields_and_units() -> None:
    data = capture_json(_exchange())
    assert data["uri"] == "/api/requests/http/01JD3X0000000000000000000A"
    assert data["tunnel_name"] == "payments"
    assert data["duration"] == 12_500_000  # nanoseconds, as ngrok reports
    assert data["start"].startswith("2023-11-1")
    assert data["request"]["headers"] == {"Host": ["payments.localhost"], "Transfer-Encoding": ["chunked"], "X-A": ["1", "2"]}
    assert data["request"]["uri"] == "/hooks?x=1"
    assert data["request"]["proto"] == "HTTP/1.1"
    assert data["response"]["status"] == "418 I'm a Teapot"
    assert data["response"]["status_code"] == 418
    assert base64.b64decode(data["response"]["raw"]).endswith(b"\r\n\r\n\x00\xff\x01")


def test_capture_json_of_a_websocket_session_carries_its_messages() -> None:
    ex = make_exchange(
        "GET", b"/ws", [("Upgrade", "websocket")], response=Response(status=101),
        id="01JD3X0000000000000000000B", tunnel="chat", started_at=1_700_000_000.0, target_url="", duration=2.0, websocket=True,
        ws_messages=[WsMessage("client", 1, 1_700_000_000.5, b"hello"),
                     WsMessage("server", 2, 1_700_000_001.0, b"\x00\xff", size=4096)],
        ws_close_code=4001,
    )
    data = capture_json(ex)
    assert data["ws_close_code"] == 4001
    assert data["ws_messages"] == [
        {"sender": "client", "opcode": 1, "time": 1_700_000_000.5, "size": 5, "payload": base64.b64encode(b"hello").decode(),
         "budget_cut": False},
        {"sender": "server", "opcode": 2, "time": 1_700_000_001.0, "size": 4096, "payload": "AP8=", "budget_cut": False},
    ]
    assert "ws_messages" not in capture_json(_exchange())  # plain HTTP keeps ngrok's shape


def test_raw_request_rechunks_a_chunked_body() -> None:
    raw = raw_request(_exchange().request)
    assert raw.startswith(b"POST /hooks?x=1 HTTP/1.1\r\nHost: payments.localhost\r\n")
    assert raw.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


def test_raw_response_without_reason_uses_the_standard_phrase() -> None:
    assert raw_response(Response(status=404)).startswith(b"HTTP/1.1 404 Not Found\r\n")


def test_outbox_merges_ids_and_sends_each_once() -> None:
    box = Outbox(max_ids=10)
    box.add_ids(["a", "b"])
    box.add_ids(["b", "c"])
    assert box.take() == [{"type": "exchanges", "ids": ["a", "b", "c"]}]
    assert box.take() == []


def test_outbox_past_its_bound_drops_ids_and_owes_a_resync() -> None:
    box = Outbox(max_ids=10)
    box.add_ids(str(i) for i in range(11))
    box.add_ids(["late"])
    assert box.take() == [{"type": "resync"}]
    box.add_ids(["next"])
    assert box.take() == [{"type": "exchanges", "ids": ["next"]}]


def test_outbox_keeps_only_the_latest_state_of_each_tunnel() -> None:
    box = Outbox()
    box.add_tunnel({"name": "a", "state": "starting"})
    box.add_tunnel({"name": "a", "state": "online"})
    box.add_ids(["x"])
    assert box.take() == [
        {"type": "tunnel", "tunnel": {"name": "a", "state": "online"}},
        {"type": "exchanges", "ids": ["x"]},
    ]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12,
)


@given(st.text(max_size=8), st.lists(_JSON, max_size=5), st.dictionaries(st.text(max_size=5), _JSON, max_size=3))
def test_a_list_sent_item_by_item_is_the_bytes_of_the_whole_answer(key: str, items: list[object],
                                                                   rest: dict[str, object]) -> None:
    # ok_list_streamed (the list of captures) against what every other answer writes for the same object.
    if key in rest:
        return
    streamed = b"".join(json_list_chunks(key, iter(items), rest))
    assert streamed == AsciiJSON({key: items, **rest}).body
