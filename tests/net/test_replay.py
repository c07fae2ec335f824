"""Replay against real loopback servers: the bytes sent, the exchange returned, the original untouched."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gzip
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trustme
import uvicorn

from devtunnel.capture.model import Headers, WsMessage
from devtunnel.errors import ReplayError
from devtunnel.replay import Edit, replay, replay_many
from tests.export.rawserver import RawServer
from tests.kit.exchanges import make_exchange
from tests.kit.servers import rude_server
from tests.helpers import async_wait_for, free_port

JSON_EVENT = b'{"type": "invoice.paid", "id": "evt_1"}'


@pytest.fixture
def server() -> Iterator[RawServer]:
    with RawServer() as srv:
        yield srv


def webhook(target_url: str, **fields: object):
    headers = [
        (b"Host", b"pub.example"),
        (b"user-agent", b"Stripe/1.0"),
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(JSON_EVENT)).encode()),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"dropped because Connection names it"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Stripe-Signature", b"t=1,v1=abc"),
        (b"X-Multi", b"a"),
        (b"x-multi", b"b"),
    ]
    return make_exchange("POST", b"/hooks/stripe?src=a%20b", headers, JSON_EVENT, target_url=target_url, **fields)


async def test_replay_as_captured_sends_method_target_headers_in_order_and_body(server: RawServer) -> None:
    original = webhook(server.url)
    result = await replay(original)
    got = server.received[0]
    assert (got.method, got.target, got.body) == (b"POST", b"/hooks/stripe?src=a%20b", JSON_EVENT)
    assert got.headers == [
        (b"Host", b"pub.example"),
        (b"user-agent", b"Stripe/1.0"),
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(JSON_EVENT)).encode()),
        (b"Stripe-Signature", b"t=1,v1=abc"),
        (b"X-Multi", b"a"),
        (b"x-multi", b"b"),
    ]
    assert result.request.headers.fields == tuple(got.headers)  # the exchange records what was sent


async def test_replay_returns_a_new_exchange_and_leaves_the_original_untouched(server: RawServer) -> None:
    server.response = b"HTTP/1.1 201 Made It\r\nContent-Length: 2\r\nX-Reply: yes\r\nConnection: close\r\n\r\nok"
    original = webhook(server.url)
    before = copy.deepcopy(original)
    result = await replay(original)
    assert original == before
    assert result.id != original.id and result.replay_of == original.id and result.tunnel == original.tunnel
    assert result.error is None and result.complete
    assert result.response is not None
    assert (result.response.status, result.response.reason, result.response.body) == (201, "Made It", b"ok")
    assert result.response.headers.get("X-Reply") == "yes"
    assert result.ttfb is not None and result.duration is not None and result.duration >= result.ttfb >= 0
    assert result.target_url == server.url


async def test_replay_keeps_compressed_response_bytes_undecoded(server: RawServer) -> None:
    packed = gzip.compress(b"hello " * 50)
    server.response = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(packed)
        + packed
    )
    result = await replay(make_exchange(target_url=server.url))
    assert result.response is not None and result.response.body == packed
    assert result.response.body_size == len(packed)


async def test_replay_never_follows_a_redirect(server: RawServer) -> None:
    server.response = b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    result = await replay(make_exchange(target_url=server.url))
    assert result.status == 302 and len(server.received) == 1


async def test_replay_with_edits_changes_method_target_headers_and_body(server: RawServer) -> None:
    body = b'{"type": "invoice.failed"}'
    edit = Edit(
        method="PUT",
        target="/hooks/v2",
        set_headers={"Stripe-Signature": "t=2,v1=fresh", "X-Added": "1"},
        remove_headers=["X-Multi"],
        body=body,
    )
    await replay(webhook(server.url), edit=edit)
    got = server.received[0]
    assert (got.method, got.target, got.body) == (b"PUT", b"/hooks/v2", body)
    assert got.headers == [
        (b"Host", b"pub.example"),
        (b"user-agent", b"Stripe/1.0"),
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(body)).encode()),
        (b"Stripe-Signature", b"t=2,v1=fresh"),
        (b"X-Added", b"1"),
    ]


async def test_set_headers_can_repeat_a_header_and_remove_headers_deletes_one(server: RawServer) -> None:
    edit = Edit(set_headers=[("X-Multi", "1"), ("X-Multi", "2"), ("Host", "edited.example")],
                remove_headers=["Stripe-Signature"])
    await replay(webhook(server.url), edit=edit, host_header="rewrite")
    assert server.received[0].headers == [
        (b"Host", b"edited.example"),  # an edited Host wins over host_header="rewrite"
        (b"user-agent", b"Stripe/1.0"),
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(JSON_EVENT)).encode()),
        (b"X-Multi", b"1"),
        (b"X-Multi", b"2"),
    ]


async def test_edit_with_a_headers_object_replaces_every_header(server: RawServer) -> None:
    edit = Edit(headers=Headers([(b"Host", b"h"), (b"X-Only", b"1")]))
    await replay(webhook(server.url), edit=edit)
    assert server.received[0].headers == [
        (b"Host", b"h"),
        (b"X-Only", b"1"),
        (b"Content-Length", str(len(JSON_EVENT)).encode()),
    ]


async def test_replay_to_another_url_uses_its_path_as_a_prefix(server: RawServer) -> None:
    original = webhook("http://127.0.0.1:9")
    result = await replay(original, to=server.url + "/staging/")
    assert server.received[0].target == b"/staging/hooks/stripe?src=a%20b"
    assert result.status == 200 and result.target_url == server.url


async def test_host_header_rewrite_sends_the_destination_host(server: RawServer) -> None:
    await replay(webhook(server.url), host_header="rewrite")
    assert server.received[0].headers[0] == (b"Host", f"127.0.0.1:{server.port}".encode())


async def test_custom_method_case_is_sent_unchanged(server: RawServer) -> None:
    await replay(make_exchange("purge", b"/cache/item", target_url=server.url))
    assert server.received[0].method == b"purge"


async def test_chunked_request_is_replayed_with_a_content_length(server: RawServer) -> None:
    headers = [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")]
    await replay(make_exchange("POST", b"/up", headers, b"abc", target_url=server.url))
    got = server.received[0]
    assert not got.chunked and got.headers == [(b"Host", b"h"), (b"Content-Length", b"3")] and got.body == b"abc"


async def test_non_ascii_target_bytes_are_percent_encoded(server: RawServer) -> None:
    await replay(make_exchange(target=b"/caf\xc3\xa9?q=\xff", target_url=server.url))
    assert server.received[0].target == b"/caf%C3%A9?q=%FF"


async def test_refused_target_gives_an_exchange_with_local_refused() -> None:
    port = free_port()  # nothing listens there
    original = webhook(f"http://127.0.0.1:{port}")
    result = await replay(original)
    assert result.error == "local_refused" and result.response is None
    assert "refused" in result.error_message and str(port) in result.error_message
    assert result.replay_of == original.id and result.complete


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_a_service_that_drops_the_connection_without_answering_is_local_error_naming_its_url(how: str) -> None:
    """Before: ``replay_failed`` and "replay to URL failed: ReadError" (a reset said nothing at all)."""
    with rude_server(how) as url:
        result = await replay(webhook(url), timeout=10)
    assert result.response is None and result.error == "local_error"
    done = "reset" if how == "reset" else "closed"
    assert result.error_message.startswith(f"the local service at {url} {done} the connection without answering ("), \
        result.error_message
    assert result.replay_of and result.complete


async def test_silent_server_gives_local_timeout_after_the_timeout() -> None:
    """As the agent records a live request the service did not answer in time (was ``replay_failed``)."""
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        result = await replay(make_exchange(target_url=f"http://127.0.0.1:{port}"), timeout=0.3)
    assert result.error == "local_timeout" and "did not answer" in result.error_message


async def test_response_body_over_the_cap_is_truncated_with_its_real_size(server: RawServer) -> None:
    server.response = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n" + b"x" * 1000
    result = await replay(make_exchange(target_url=server.url), body_cap=100)
    assert result.response is not None
    assert (len(result.response.body), result.response.body_size, result.response.body_truncated) == (100, 1000, True)


async def test_given_client_is_used_without_its_default_headers(server: RawServer) -> None:
    async with httpx.AsyncClient(headers={"X-Client-Default": "1"}, trust_env=False) as client:
        await replay(make_exchange(target_url=server.url), client=client)
    assert b"x-client-default" not in {n.lower() for n, _ in server.received[0].headers}


async def test_replay_many_runs_in_order_and_a_refused_one_does_not_stop_the_rest(server: RawServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    batch = [
        make_exchange(target=b"/1", target_url=server.url),
        make_exchange(target=b"/2", target_url=dead),
        make_exchange(target=b"/3", target_url=server.url),
    ]
    results = await replay_many(batch)
    assert [r.replay_of for r in results] == [ex.id for ex in batch]
    assert [r.status for r in results] == [200, None, 200] and results[1].error == "local_refused"
    assert [r.target for r in server.received] == [b"/1", b"/3"]


@pytest.mark.parametrize(
    ("exchange_fields", "edit", "message"),
    [
        ({"target_url": ""}, None, "no target URL"),
        ({"target_url": "ftp://127.0.0.1:21"}, None, "http:// or https://"),
        ({"websocket": True, "ws_messages": [WsMessage("client", 1, 0.0, b"hi")]}, None, "WebSocket"),
        ({"method": "GET /x"}, None, "method"),
        ({"target": b"/a b"}, None, "target"),
    ],
)
async def test_requests_that_cannot_be_sent_raise_replay_error(
    server: RawServer, exchange_fields: dict, edit: Edit | None, message: str
) -> None:
    fields = {"target_url": server.url, **exchange_fields}
    with pytest.raises(ReplayError, match=message):
        await replay(make_exchange(**fields), edit=edit)
    assert server.received == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "GET /x"}, "invalid method 'GET /x'"),
        ({"target": "/a b"}, "invalid target '/a b'"),
        ({"set_headers": {"Bad Name": "1"}}, "invalid header name 'Bad Name'"),
        ({"headers": [("X-Split", "a\r\nInjected: 1")]}, "invalid value for header X-Split: it holds CR, LF"),
    ],
)
async def test_an_invalid_edit_is_refused_before_anything_is_sent(fields: dict, message: str) -> None:
    with pytest.raises(ReplayError, match=re.escape(message)):
        Edit(**fields)


async def test_partly_recorded_body_is_refused_unless_a_body_is_given(server: RawServer) -> None:
    original = make_exchange("POST", b"/big", [(b"Host", b"h")], b"x" * 10, target_url=server.url)
    original.request.body_size, original.request.body_truncated = 5000, True
    with pytest.raises(ReplayError, match="10 of 5000"):
        await replay(original)
    result = await replay(original, edit=Edit(body=b"full body"))
    assert result.status == 200 and server.received[0].body == b"full body"


async def test_replay_many_checks_every_exchange_before_sending_any(server: RawServer) -> None:
    batch = [make_exchange(target_url=server.url), make_exchange(target_url="")]
    with pytest.raises(ReplayError):
        await replay_many(batch)
    assert server.received == []


@contextlib.asynccontextmanager
async def uvicorn_server(app, **ssl: str) -> AsyncIterator[int]:  # type: ignore[no-untyped-def]
    """Serve ``app`` with uvicorn on a loopback port for the duration of the block."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", log_config=None, lifespan="off", **ssl))
    task = asyncio.create_task(server.serve())
    try:
        await async_wait_for(lambda: server.started or task.done(), what="uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield port
    finally:
        server.should_exit = True
        await task


async def echo_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """Answer 202 with ``accepted:`` and the request body; request details in the headers."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(b"x-method", scope["method"].encode()), (b"x-path", scope["raw_path"]), (b"x-query", scope["query_string"])]
    headers += [(b"x-got-" + name, value) for name, value in scope["headers"]]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": b"accepted:" + body})


async def test_replay_against_a_uvicorn_app_returns_its_response() -> None:
    async with uvicorn_server(echo_app) as port:
        result = await replay(webhook(f"http://127.0.0.1:{port}"))
    assert result.status == 202 and result.response is not None
    got = result.response.headers
    assert result.response.body == b"accepted:" + JSON_EVENT
    assert (got.get("x-method"), got.get("x-path"), got.get("x-query")) == ("POST", "/hooks/stripe", "src=a%20b")
    assert got.get("x-got-stripe-signature") == "t=1,v1=abc" and got.get("x-got-host") == "pub.example"


async def test_https_target_with_an_untrusted_certificate_fails_unless_verify_is_off(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    async with uvicorn_server(echo_app, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)) as port:
        original = webhook(f"https://127.0.0.1:{port}")
        refused = await replay(original)
        relaxed = await replay(original, verify=False)
        trust = ssl.create_default_context()
        ca.configure_trust(trust)
        async with httpx.AsyncClient(verify=trust, trust_env=False) as client:
            trusted = await replay(original, client=client)
    assert refused.error == "replay_failed" and "certificate" in refused.error_message.lower()
    assert relaxed.status == 202 and trusted.status == 202
