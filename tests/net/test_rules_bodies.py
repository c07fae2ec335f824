"""The body of a request a rule answered, recorded faithfully however it reached the relay.

A rule answers at once, before a body still arriving came whole; the relay reads the rest
anyway (to keep the connection usable, within its bounds) and tells the agent what came. The
record has the whole body, or says it is cut, with its declared size: never an empty body
passed off as the whole of it (a webhook judged ``invalid`` instead of ``unverified``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtunnel.agent.relay_signals import rule_of
from devtunnel.protocol.events import DataReceived, RequestReceived
from devtunnel.protocol.handshake import RULE_BODIES
from devtunnel.relay.http import HeadLimitedHttpProtocol
from devtunnel.relay.rules import NOTICE_BODY
from devtunnel.rules import parse_rules, rules_to_wire
from tests.helpers import async_wait_for
from tests.kit.procs import DEVTUNNEL, FORWARDING, start
from tests.kit.procs import env, procs  # noqa: F401 (fixtures)
from tests.net._relay_agent import TOKEN, ScriptedAgent, running_relay
from tests.net.tunnel_fixtures import Harness, relay_and_agent
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)

RULES = {
    "respond": {"match": "path:/hook", "action": "respond", "status": 500, "body": "drill\n"},
    "basic-auth": {"match": "path:/hook", "action": "basic-auth", "users": ["admin:s3cret"]},
}
STATUS = {"respond": 500, "basic-auth": 401}
BODY = b'{"id": "evt_1", "type": "invoice.paid", "data": {"amount": 1272}}'
LARGE = bytes(range(256)) * ((NOTICE_BODY + 40_000) // 256)  # over the bound a notice carries


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with relay_and_agent(tmp_path) as h:
        yield h


@pytest.fixture
def quick_linger() -> Iterator[None]:
    """A relay that stops reading an answered body after 0.3 s without a byte (not 5 s)."""
    saved = HeadLimitedHttpProtocol.linger_quiet
    HeadLimitedHttpProtocol.linger_quiet = 0.3
    try:
        yield
    finally:
        HeadLimitedHttpProtocol.linger_quiet = saved


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response with a Content-Length (a rule's answers have one): (status, body)."""
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(head.split(b" ", 2)[1]), await reader.readexactly(length)


def head_of(harness: Harness, *, length: int | None, close: bool, path: str = "/hook") -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {harness.host('app')}", "Content-Type: application/json"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes, size: int = 20) -> list[bytes]:
    return [b"%x\r\n%b\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)] + [b"0\r\n\r\n"]


async def answered_record(harness: Harness) -> Any:
    """The record of the request the rule answered (a second request on the connection is not one)."""
    async def found() -> Any:
        await asyncio.to_thread(harness.recorder.flush)
        return next((ex for ex in harness.store.query() if ex.complete and ex.rule is not None), None)

    return await async_wait_for(found, what="the record of the answered request")


# How the body reaches the relay: (name, whole body, how it is sent, keep-alive?, recorded whole?)
WAYS = [
    "with-the-head", "after-the-head", "after-the-head-then-close", "chunked-after-the-head",
    "chunked-after-the-head-then-close", "over-the-bound-with-the-head", "over-the-bound-after-the-head",
    "client-goes-away", "client-stops-sending",
]


async def send_one_way(harness: Harness, way: str) -> tuple[int, bytes, int | None]:
    """Send a request to /hook as ``way`` says; (its status, its whole body, its Content-Length)."""
    body = LARGE if way.startswith("over-the-bound") else BODY
    is_chunked = way.startswith("chunked")
    close = way.endswith("then-close")
    length = None if is_chunked else len(body)
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.relay.port)
    try:
        head = head_of(harness, length=length, close=close)
        if way in ("with-the-head", "over-the-bound-with-the-head"):
            writer.write(head + body)
            status, _ = await read_response(reader)
        elif way in ("client-goes-away", "client-stops-sending"):
            writer.write(head + body[:20])
            status, _ = await read_response(reader)  # answered with most of the body still to come
            if way == "client-stops-sending":
                await answered_record(harness)  # the relay stops reading on its own (linger_quiet)
        else:
            writer.write(head)
            await writer.drain()
            status, _ = await read_response(reader)  # answered before a byte of the body came
            parts = chunked(body) if is_chunked else [body[:30], body[30:]]
            for part in parts:  # in writes of their own
                writer.write(part)
                await writer.drain()
            if close:
                async with asyncio.timeout(10):
                    assert await reader.read() == b""  # the relay closes once it read the rest
            else:  # the connection is still usable: the next request on it is forwarded
                writer.write(f"GET /echo HTTP/1.1\r\nHost: {harness.host('app')}\r\n\r\n".encode())
                assert (await read_response(reader))[0] == 200
    finally:
        writer.close()
    return status, body, length


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("action", list(RULES))
async def test_a_request_a_rule_answered_is_recorded_with_its_body_or_marked_cut(
    harness, local, quick_linger, action, way
):
    port, state = local
    await harness.start(str(port), rules=parse_rules([RULES[action]], "test"))
    status, body, length = await send_one_way(harness, way)
    assert status == STATUS[action]
    assert b"/hook" not in state.seen_targets
    request = (await answered_record(harness)).request
    if way in ("with-the-head", "after-the-head", "after-the-head-then-close", "chunked-after-the-head"):
        assert (request.body, request.body_size, request.body_truncated) == (body, len(body), False)
    elif way == "chunked-after-the-head-then-close":
        # A connection closing after its answer reads the rest unparsed: a chunked body is not read.
        assert request.body_truncated and request.body == b""
    elif way.startswith("over-the-bound"):
        assert request.body_truncated and request.body_size == len(body)
        assert request.body == body[:NOTICE_BODY]
    else:  # the client went away or stopped: the first bytes, and the size it declared
        assert (request.body, request.body_size, request.body_truncated) == (body[:20], length, True)


# -- the notice on the wire: older and newer agents ----------------------------------------------------------
class RulesAgent(ScriptedAgent):
    """A bare agent whose HELLO carries rules, announcing it reads cut bodies (``reads_cut``) or not."""

    def __init__(self, port: int, *, reads_cut: bool) -> None:
        super().__init__(port, token=TOKEN, name="demo")
        self.reads_cut = reads_cut

    async def connect(self) -> Any:
        original = self.conn.send_hello
        wire = {"version": 1, "list": rules_to_wire(parse_rules([RULES["respond"]], "test"))}

        def hello(token: str, name: str | None, info: dict[str, object], **options: Any) -> None:
            extra = {RULE_BODIES: 1} if self.reads_cut else {}
            original(token, name, {**info, **extra}, **options, rules=wire)

        self.conn.send_hello = hello  # type: ignore[method-assign]
        return await super().connect()


@pytest.mark.parametrize("reads_cut", [True, False])
async def test_a_cut_body_goes_only_to_an_agent_that_reads_the_cut_field(reads_cut):
    async with running_relay() as relay:
        agent = RulesAgent(relay.port, reads_cut=reads_cut)
        agent.handler = None
        await agent.connect()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            head = (f"POST /hook HTTP/1.1\r\nHost: demo.localhost:{relay.port}\r\n"
                    f"Content-Length: {len(LARGE)}\r\n\r\n").encode()
            writer.write(head)
            await writer.drain()
            assert (await read_response(reader))[0] == 500
            writer.write(LARGE)
            await writer.drain()
            notice = await async_wait_for(lambda: next(iter(agent.requests.values()), None), what="the notice")
            _, mark, status, _, cut = rule_of(notice.event)
            assert mark is not None and status == 500 and cut == len(LARGE)
            if reads_cut:
                event = await asyncio.wait_for(notice.inbox.get(), 10)
                assert isinstance(event, DataReceived) and event.end_stream and event.data == LARGE[:NOTICE_BODY]
            else:  # an older agent would take part of a body for all of it: it gets none
                assert notice.event.end_stream
            writer.close()
        finally:
            await agent.close()


@pytest.mark.parametrize(("value", "headers", "end_stream", "cut"), [
    (b"tunnel;1;respond;500;6;all", [(b"Content-Length", b"10")], False, None),
    (b"tunnel;1;respond;500;6;1272", [(b"Content-Length", b"1272")], True, 1272),
    (b"tunnel;1;respond;500;6;0", [(b"Transfer-Encoding", b"chunked")], True, 0),
    (b"tunnel;1;respond;500;6;" + b"9" * 30, [], True, 0),  # no int of 30 digits: cut, of unknown size
    # From a relay that does not say: a body short of its Content-Length is cut (the record compares) ...
    (b"tunnel;1;respond;500;6", [(b"Content-Length", b"1272")], True, 1272),
    (b"tunnel;1;respond;500", [(b"Content-Length", b"10")], False, 10),
    (b"tunnel;1;respond;500;6", [(b"Transfer-Encoding", b"chunked")], True, 0),  # ... as is a chunked one without DATA
    (b"tunnel;1;respond;500;6", [(b"Transfer-Encoding", b"chunked")], False, None),
    (b"tunnel;1;respond;500;6", [], True, None),
])
def test_a_rule_notice_says_whether_it_carries_the_whole_request_body(value, headers, end_stream, cut):
    head = RequestReceived(1, b"POST", b"/", b"1.1", ((b"Host", b"app"), *headers, (b"devtunnel-rule", value)), end_stream)
    assert rule_of(head)[4] == cut


# -- the user's drill, end to end ------------------------------------------------------------------------------
SECRET = "whsec_test_drill_secret"


def stripe_signed(body: bytes) -> str:
    stamp = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


async def deliver_after_the_head(port: int, host: str, body: bytes, *, send: int) -> int:
    """A signed Stripe delivery whose body goes in a write of its own, after the relay answered
    its head (``send``: the bytes of it sent before the client goes away); the status."""
    head = (f"POST /webhooks/stripe HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Stripe-Signature: {stripe_signed(body)}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        status, _ = await read_response(reader)
        writer.write(body[:send])
        await writer.drain()
        if send == len(body):  # the connection stays usable: the relay read the rest of the body
            writer.write(f"GET /echo HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await read_response(reader)
    finally:
        writer.close()
    return status


async def test_a_stripe_drill_records_every_delivery_valid_or_unverified_never_invalid(tmp_path, local, env, procs):
    port, state = local
    rules_file = tmp_path / "edge.toml"
    rules_file.write_text('[[rules]]\nmatch = "method:POST path:/webhooks/stripe"\naction = "respond"\n'
                          'status = 500\ncount = 10\n')
    db = tmp_path / "c.db"
    secret_env = {**env, "STRIPE_WEBHOOK_SECRET": SECRET}
    agent = start(procs, secret_env, "--db", str(db), "http", str(port), "--rules", str(rules_file), "--no-tui",
                  "--api-port", "0", "--name", "drill2")
    match = FORWARDING.match(await asyncio.to_thread(agent.line, lambda l: FORWARDING.match(l) is not None))
    assert match is not None
    url, relay_port = match.group(1), int(match.group(3))
    host = f"drill2.localhost:{relay_port}"
    for _ in range(4):
        sent = await asyncio.to_thread(
            subprocess.run, [*DEVTUNNEL, "send", "stripe", "invoice.paid", "--to", url + "/webhooks/stripe"],
            capture_output=True, text=True, timeout=60, env=secret_env,
        )
        assert "500" in sent.stdout + sent.stderr, (sent.stdout, sent.stderr)
    body = json.dumps({"id": "evt_after_head", "type": "invoice.paid", "data": {"object": {"amount_paid": 1272}}}).encode()
    assert await deliver_after_the_head(relay_port, host, body, send=len(body)) == 500
    assert await deliver_after_the_head(relay_port, host, body, send=10) == 500  # gone with most of it unsent
    assert b"/webhooks/stripe" not in state.seen_targets

    def listed() -> list[dict[str, Any]] | None:
        done = subprocess.run([*DEVTUNNEL, "--db", str(db), "requests", "--json"], capture_output=True, text=True,
                              timeout=60, env=env)
        rows = [r for r in json.loads(done.stdout or "[]") if r.get("rule")]
        return rows if len(rows) == 6 else None

    rows = await async_wait_for(lambda: asyncio.to_thread(listed), timeout=30, what="six answered deliveries")
    verdicts = [row["webhook"]["signature"] for row in rows]
    assert "invalid" not in verdicts, rows
    assert verdicts.count("valid") >= 5 and verdicts.count("unverified") >= 1, verdicts
    cut = next(row for row in rows if row["webhook"]["signature"] == "unverified")
    replay = await asyncio.to_thread(
        subprocess.run, [*DEVTUNNEL, "--db", str(db), "replay", cut["id"], "--to", f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    # Refused, asking for the body: only the 10 bytes sent of the 91 it declared were recorded.
    assert replay.returncode != 0 and f"only 10 of {len(body)} body bytes" in replay.stderr, replay.stderr
    assert b"/webhooks/stripe" not in state.seen_targets
    assert await asyncio.to_thread(agent.stop) == 0
