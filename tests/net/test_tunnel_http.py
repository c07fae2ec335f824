"""End to end: public client -> relay -> agent -> local uvicorn app, for every HTTP traffic rule."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.net.tunnel_fixtures import (
    Harness,
    LocalState,
    _pattern,
    parse_response,
    raw_request,
    relay_and_agent,
)
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with relay_and_agent(tmp_path) as h:
        yield h


@pytest.fixture
async def client(harness: Harness, local: tuple[int, LocalState]) -> AsyncIterator[httpx.AsyncClient]:
    await harness.start(str(local[0]))
    async with httpx.AsyncClient(
        base_url=harness.base_url, headers={"Host": harness.host("app")}, timeout=30, trust_env=False
    ) as c:
        yield c


def report(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    data["target"] = base64.b64decode(data["target"])
    if data["body"] is not None:
        data["body"] = base64.b64decode(data["body"])
    return data


async def curl(*args: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "20", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out, err


async def test_curl_get_reaches_local_service_and_is_recorded(harness: Harness, local: tuple[int, LocalState]) -> None:
    info = await harness.start(str(local[0]), name="web")
    assert info.public_url == f"http://web.localhost:{harness.relay.port}"
    code, out, err = await curl("-H", f"Host: {harness.host('web')}", f"{harness.base_url}/echo?hello=1")
    assert code == 0, err
    data = json.loads(out)
    assert base64.b64decode(data["target"]) == b"/echo?hello=1"
    [ex] = await harness.exchanges(1)
    assert (ex.tunnel, ex.request.method, ex.request.target, ex.status) == ("web", "GET", b"/echo?hello=1", 200)
    assert ex.target_url == f"http://127.0.0.1:{local[0]}"
    assert ex.remote_addr.startswith("127.0.0.1")
    assert ex.ttfb is not None and ex.duration is not None and ex.duration >= ex.ttfb
    assert ex.response is not None and json.loads(ex.response.body) == data
    assert ex.error is None


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE", "PROPFIND"])
async def test_any_method_is_forwarded_as_is(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/echo", content=b"payload" if method not in ("GET", "OPTIONS") else None)
    assert report(response)["method"] == method


async def test_query_string_with_odd_bytes_arrives_byte_for_byte(harness: Harness, local: tuple[int, LocalState]) -> None:
    await harness.start(str(local[0]))
    target = b"/echo?a=%FF%00&b=caf%C3%A9&c=a|b&d=[x]&e=%20+&&f&g={}^`\"<>;,~!*'()"
    raw = await raw_request(
        harness.relay.port,
        b"GET " + target + b" HTTP/1.1\r\nHost: " + harness.host("app").encode() + b"\r\nConnection: close\r\n\r\n",
    )
    status, _, body = parse_response(raw)
    assert status == 200
    assert base64.b64decode(json.loads(body)["target"]) == target


async def test_repeated_headers_keep_their_order_and_values(client: httpx.AsyncClient) -> None:
    headers = [("X-Dup", "one"), ("X-Other", "between"), ("X-Dup", "two"), ("X-Dup", "three")]
    data = report(await client.get("/echo", headers=headers))
    seen = [(n.lower(), v) for n, v in data["headers"] if n.lower() in ("x-dup", "x-other")]
    assert seen == [("x-dup", "one"), ("x-other", "between"), ("x-dup", "two"), ("x-dup", "three")]


async def test_binary_non_utf8_body_is_forwarded_intact(client: httpx.AsyncClient) -> None:
    body = bytes(range(256)) * 64 + b"\xff\xfe\x00\xc3\x28"
    data = report(await client.post("/echo", content=body, headers={"Content-Type": "application/octet-stream"}))
    assert data["body"] == body


async def test_chunked_request_body_reaches_local_service(client: httpx.AsyncClient) -> None:
    parts = [b"first,", b"\x00\xff binary,", b"x" * 100_000, b"last"]

    async def gen() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    data = report(await client.post("/echo", content=gen()))
    assert data["size"] == sum(map(len, parts))
    assert data["body"] == b"".join(parts)
    names = [n.lower() for n, _ in data["headers"]]
    assert "transfer-encoding" in names and "content-length" not in names


async def test_chunked_response_body_arrives_whole(client: httpx.AsyncClient) -> None:
    response = await client.get("/chunked")
    assert response.status_code == 200
    assert response.content == b"".join(f"part {i}\n".encode() for i in range(5))


async def test_expect_100_continue_is_answered_by_relay_and_stripped(harness: Harness, local: tuple[int, LocalState]) -> None:
    await harness.start(str(local[0]))
    code, out, err = await curl(
        "-H", f"Host: {harness.host('app')}", "-H", "Expect: 100-continue", "--data-binary", "x" * 5000,
        f"{harness.base_url}/echo",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["size"] == 5000
    assert "expect" not in [n.lower() for n, _ in data["headers"]]


async def test_head_response_has_headers_and_no_body_and_tunnel_keeps_working(client: httpx.AsyncClient) -> None:
    response = await client.head("/head")
    assert response.status_code == 200
    assert response.headers["content-length"] == "1234"
    assert response.content == b""
    assert report(await client.get("/echo")).get("method") == "GET"


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_pass_without_body(client: httpx.AsyncClient, status: int) -> None:
    response = await client.get(f"/status/{status}")
    assert response.status_code == status
    assert response.content == b""
    assert response.headers["etag"] == '"v1"'
    assert (await client.get("/status/200")).text == "status 200"


async def test_redirect_is_passed_through_not_followed(client: httpx.AsyncClient) -> None:
    response = await client.get("/redirect", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "/echo?from=redirect"


async def test_gzip_body_and_content_encoding_are_untouched(client: httpx.AsyncClient) -> None:
    async with client.stream("GET", "/gzip", headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) == len(raw)
    assert gzip.decompress(raw) == b"compressed body " * 100


async def test_server_sent_events_arrive_before_the_stream_ends(client: httpx.AsyncClient, local: tuple[int, LocalState]) -> None:
    state = local[1]
    async with client.stream("GET", "/sse") as response:
        assert response.headers["content-type"] == "text/event-stream"
        chunks = response.aiter_bytes()
        async with asyncio.timeout(10):  # the local app holds the second event until released
            first = await chunks.__anext__()
        assert first == b"data: first\n\n"
        assert not state.release_sse.is_set()
        state.release_sse.set()
        rest = b"".join([c async for c in chunks])
    assert rest == b"data: second\n\n"


async def test_20_mib_upload_and_download_are_intact(client: httpx.AsyncClient) -> None:
    n = 20 << 20
    payload = _pattern(n)
    data = report(await client.post("/echo", content=payload))
    assert data["size"] == n and data["sha256"] == hashlib.sha256(payload).hexdigest()
    async with client.stream("GET", f"/big?n={n}") as response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in response.aiter_raw():
            digest.update(chunk)
            size += len(chunk)
    assert size == n and digest.hexdigest() == hashlib.sha256(payload).hexdigest()


async def test_a_slow_request_does_not_block_others(client: httpx.AsyncClient, local: tuple[int, LocalState]) -> None:
    state = local[1]
    slow = asyncio.create_task(client.get("/slow"))
    responses = await asyncio.gather(*(client.get(f"/echo?n={i}") for i in range(30)))
    assert [report(r)["target"] for r in responses] == [f"/echo?n={i}".encode() for i in range(30)]
    assert not slow.done()
    state.release_slow.set()
    assert (await slow).text == "slow done"


async def test_sequential_requests_reuse_one_local_connection(client: httpx.AsyncClient) -> None:
    ports = {report(await client.get("/echo"))["client_port"] for _ in range(5)}
    assert len(ports) == 1


async def test_refused_local_service_gets_a_502_explaining_it(harness: Harness, local: tuple[int, LocalState]) -> None:
    from tests.helpers import free_port

    port = free_port()
    await harness.start(str(port), name="down")
    async with httpx.AsyncClient(base_url=harness.base_url, headers={"Host": harness.host("down")}, trust_env=False) as c:
        response = await c.post("/anything", content=b"body")
    assert response.status_code == 502
    assert response.headers["x-devtunnel-error"] == "local_refused"
    assert response.text.startswith(
        f"The tunnel down is online, but the local service at http://127.0.0.1:{port} refused the connection."
    )
    [ex] = await harness.exchanges(1)
    assert (ex.error, ex.status) == ("local_refused", 502)
    assert ex.response is not None and ex.response.body == response.content
    assert "refused the connection" in ex.error_message


async def test_a_body_the_relay_refuses_past_its_limit_is_recorded_too_large_with_the_relays_reason(
        tmp_path: Path, local: tuple[int, LocalState]) -> None:
    async with relay_and_agent(tmp_path, max_body=1000) as h:
        await h.start(str(local[0]))

        async def gen() -> AsyncIterator[bytes]:
            yield b"a" * 600  # forwarded: the local service starts reading, and waits for the rest
            await asyncio.sleep(0)
            yield b"b" * 5000

        async with httpx.AsyncClient(base_url=h.base_url, headers={"Host": h.host("app")}, timeout=30,
                                     trust_env=False) as c:
            response = await c.post("/echo", content=gen())
        assert response.status_code == 413
        [ex] = await h.exchanges(1)
    assert ex.error == "too_large"  # (client_gone before: "the public client went away")
    assert ex.error_message == "request body is larger than the relay's limit of 1000 B"
