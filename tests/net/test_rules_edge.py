"""Rules at the edge on real sockets: every action on both relay paths, records, routes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtunnel.net.agent import TunnelState
from devtunnel.rules import parse_rules
from tests.net.tunnel_fixtures import Harness, LocalState, local_http, parse_response, relay_and_agent

PATHS = ["direct", "asgi"]
"""How the request reaches the relay: whole in one read (answered from callbacks), or with
``Expect: 100-continue`` (the ASGI path)."""


@pytest.fixture
def local() -> Iterator[tuple[int, LocalState]]:
    with local_http() as served:
        yield served


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with relay_and_agent(tmp_path) as h:
        yield h


def rules(*tables: dict[str, Any]) -> tuple[Any, ...]:
    return parse_rules(list(tables), "test")


async def request(
    harness: Harness,
    path: str = "/echo",
    *,
    via: str = "direct",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    method: str = "GET",
    source: str = "127.0.0.1",
    name: str = "app",
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request on its own connection from ``source``; (status, headers, body), status 0
    when the relay closed the connection without answering."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {harness.host(name)}", "Connection: close"]
    if body or via == "asgi":
        lines.append(f"Content-Length: {len(body)}")
    if via == "asgi":
        lines.append("Expect: 100-continue")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.relay.port, local_addr=(source, 0))
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read(-1)
    except ConnectionResetError:
        raw = b""
    finally:
        writer.close()
    if raw.startswith(b"HTTP/1.1 100"):
        raw = raw.split(b"\r\n\r\n", 1)[1]
    if not raw:
        return 0, {}, b""
    status, fields, payload = parse_response(raw)
    return status, {n.lower(): v for n, v in fields}, payload


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("via", PATHS)
async def test_deny_answers_403_and_the_local_service_never_sees_it(harness, local, via):
    port, state = local
    await harness.start(str(port), rules=rules({"match": "path:/admin", "action": "deny"}))
    status, _, _ = await request(harness, "/admin/x", via=via)
    assert status == 403
    status, _, _ = await request(harness, "/echo", via=via)
    assert status == 200
    assert b"/admin/x" not in state.seen_targets
    denied, passed = await harness.exchanges(2)
    assert denied.rule is not None and (denied.rule.index, denied.rule.action) == (1, "deny")
    assert denied.status == 403 and denied.request.path == "/admin/x"
    assert passed.rule is None


@pytest.mark.parametrize("via", PATHS)
async def test_basic_auth_checks_users_and_removes_authorization(harness, local, via):
    port, _ = local
    digest = hashlib.sha256(b"hunter2").hexdigest()
    await harness.start(
        str(port),
        rules=rules({"action": "basic-auth", "users": ["admin:s3cret", f"ops:sha256:{digest}"], "realm": "demo"}),
    )
    status, headers, _ = await request(harness, via=via)
    assert status == 401 and headers[b"www-authenticate"] == b'Basic realm="demo"'
    status, _, _ = await request(harness, via=via, headers={"Authorization": basic("admin", "wrong")})
    assert status == 401
    for user, password in (("admin", "s3cret"), ("ops", "hunter2")):
        status, _, body = await request(harness, via=via, headers={"Authorization": basic(user, password)})
        assert status == 200
        seen = {n.lower() for n, _ in json.loads(body)["headers"]}
        assert "authorization" not in seen
