"""The internals of uvicorn, websockets and httptools that devtunnel builds on, each checked by name.

The relay subclasses uvicorn's protocol classes (``relay/http.py``), reads and writes
fields of its response cycle (``relay/http_proxy.py``, ``relay/http_direct.py``), drives its server by hand
(``relay/listening.py``) and relies on its sans-IO WebSocket keepalive to find dead agents. The
agent's WebSocket (``agent/socket.py``, ``agent/local_ws.py``) hooks into websockets the same
way, and both sides stop httptools from inside a parser callback. None of that is public API:
a release can move any of it, and the code would then fail at some later request, or, worse,
quietly stop doing its job (an override nobody calls, a keepalive that never runs). Each test
here names the internal it checks, so an upgrade that moves one fails here first, loudly.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Iterator
from typing import Any

import httptools
import pytest
import uvicorn
import websockets.frames
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection as WsConnection
from websockets.frames import Frame
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import State

from devtunnel.agent.socket import TunnelSocket, _MaskBytes
from devtunnel.relay.server import Relay
from devtunnel.relay.http import DeadPeerWebSocketProtocol, DirectCycle, HeadLimitedHttpProtocol, Http10Cycle
from tests.net._relay_agent import connect_agent, forwarder_spied, running_relay


def _source(obj: Any) -> str:
    return inspect.getsource(obj)


def _own_methods(cls: type) -> Iterator[str]:
    """Names of the methods ``cls`` defines itself (its overrides and additions)."""
    for name, value in vars(cls).items():
        if callable(value) and not name.startswith("__"):
            yield name


# -- uvicorn: the classes the relay subclasses -------------------------------------------------------
# Every method HeadLimitedHttpProtocol overrides must still exist upstream (else uvicorn never calls
# ours), and every one it calls on super() or self must still be there.
HTTP_PROTOCOL_METHODS = [
    "connection_made", "connection_lost", "data_received", "on_message_begin", "on_url", "on_header",
    "on_headers_complete", "on_body", "on_message_complete", "on_response_complete", "_start_asgi_task",
    "resume_writing",  # overridden
    "_unset_keepalive_if_required", "_should_upgrade", "handle_websocket_upgrade",
    "send_400_response", "timeout_keep_alive_handler",  # called
]
DATA_RECEIVED_LEFT_OUT = {
    # uvicorn logs "Unsupported upgrade request." on every read after one; the relay answers such
    # a request as plain HTTP (or 400 when it carries a body) and closes, logging nothing per read.
    "_unsupported_upgrade_warning", "logger.warning",
    # uvicorn cancels the keep-alive timer on every read; the relay's timer stays armed and, when
    # due, closes only a connection idle since its last response (on_response_complete).
    "_unset_keepalive_if_required",
}


@pytest.mark.parametrize("name", HTTP_PROTOCOL_METHODS)
def test_uvicorn_httptools_protocol_has_the_method_the_relay_uses(name: str) -> None:
    assert callable(getattr(HttpToolsProtocol, name, None)), (
        f"uvicorn's HttpToolsProtocol.{name} is gone: relay.http.HeadLimitedHttpProtocol overrides or calls it"
    )


def test_every_override_of_the_relays_http_protocol_is_a_uvicorn_method() -> None:
    ours = {"abort", "configured", "_launch", "request_scope", "_count", "_refuse_head", "_arm_head_timer", "_cancel_head_timer",
            "_head_timed_out", "_refuse_bad_head", "_refuse", "_close_after_response", "_keep_alive_due",
            "_bound_trailer", "_drop_trailer", "_bound_head", "_bound_blank", "_request_line_held", "_method_held",
            "_request_line_ends_at", "_walk_for", "_read_walked", "_feed", "_parse_failed",
            "_refuse_pending", "drop_pending",  # relay.pending
            "adopt_open", "_turn_away", "_refuse_crowded",  # relay.descriptors (and relay.pending)
            "tap_body", "_tap_unparsed",  # a request a rule answered: its body read after the answer, for the record
            "_absolute_form",  # an absolute-form target read as origin-form (on_headers_complete)
            "_idle", "close_answered", "_linger", "_drain_body", "_dropped", "_drain_due",
            "_drain_over", "_end_drain",  # reading after an answer that came before the body
            "_answer_and_close", "_start_drain",  # the relay's own answer to a head, then a brief read of what still comes
            "_request_line_over",  # a head over the bound by its request line alone: 414, not 431 (_refuse_head)
            "on_chunk_header"}  # an httptools callback uvicorn does not define: httptools calls it when present
    for name in _own_methods(HeadLimitedHttpProtocol):
        assert name in ours or name in HTTP_PROTOCOL_METHODS, f"HeadLimitedHttpProtocol.{name}: add it to this contract"


def test_uvicorn_starts_each_request_through_start_asgi_task() -> None:
    # HeadLimitedHttpProtocol._start_asgi_task is where a request is offered to the direct path
    # and where a request is held back until its whole read is parsed.
    assert "self._start_asgi_task(" in _source(HttpToolsProtocol.on_headers_complete), (
        "uvicorn's HttpToolsProtocol.on_headers_complete no longer calls _start_asgi_task"
    )
    assert "self._start_asgi_task(" in _source(HttpToolsProtocol.on_response_complete), (
        "uvicorn's HttpToolsProtocol.on_response_complete no longer calls _start_asgi_task (pipelined requests)"
    )
    params = list(inspect.signature(HttpToolsProtocol._start_asgi_task).parameters)
    assert params == ["self", "cycle", "app"], f"uvicorn's HttpToolsProtocol._start_asgi_task takes {params}"


def test_uvicorn_data_received_does_nothing_the_relays_copy_leaves_out() -> None:
    # HeadLimitedHttpProtocol.data_received is a copy of uvicorn's with the head limits around
    # it (it cannot call super()): whatever uvicorn's does must be done by ours too.
    def calls(method: Any) -> set[str]:
        return set(re.findall(r"self\.([\w.]+)\(", _source(method)))

    # (the feeding is in _feed and what a failed parse calls in _parse_failed, both shared with the
    # read followed by position)
    ours = (calls(HeadLimitedHttpProtocol.data_received) | calls(HeadLimitedHttpProtocol._feed)
            | calls(HeadLimitedHttpProtocol._parse_failed))
    missing = calls(HttpToolsProtocol.data_received) - ours - DATA_RECEIVED_LEFT_OUT
    assert not missing, f"uvicorn's HttpToolsProtocol.data_received now also calls {sorted(missing)}"


def test_uvicorn_makes_a_request_scope_and_cycle_where_the_relay_hooks_in() -> None:
    # HeadLimitedHttpProtocol's parser callbacks are copies of these (compared below, on real
    # heads): a release that changes what they do must be compared again.
    for method, lines in {
        HttpToolsProtocol.on_message_begin: ['"state": self.app_state.copy()', '"headers": self.headers'],
        HttpToolsProtocol.on_url: ["self.url += url"],
        HttpToolsProtocol.on_header: ['if name == b"expect" and value.lower() == b"100-continue":',
                                      "self.headers.append((name, value))"],
        HttpToolsProtocol.on_headers_complete: [
            "self.cycle = RequestResponseCycle(", "message_event=asyncio.Event(),",
            'keep_alive=http_version != "1.0" and self.parser.should_keep_alive(),',
            "self.pipeline.appendleft((self.cycle, app))", "self._start_asgi_task(self.cycle, app)",
            "urllib.parse.unquote(path)", "app = service_unavailable"],
        HttpToolsProtocol.on_message_complete: ["self.cycle.more_body = False", "self.cycle.message_event.set()"],
        # The relay keeps one keep-alive timer in timeout_keep_alive_task: uvicorn's connection_lost
        # cancels it through _unset_keepalive_if_required, and calls message_event.set(), which
        # relay.http._Unwaited offers.
        HttpToolsProtocol.on_response_complete: [
            "self.server_state.total_requests += 1", "self.flow.resume_reading()",
            "cycle, app = self.pipeline.pop()", "self.timeout_keep_alive_task = self.loop.call_later(",
            "self.timeout_keep_alive, self.timeout_keep_alive_handler"],
        HttpToolsProtocol._unset_keepalive_if_required: ["self.timeout_keep_alive_task.cancel()"],
        HttpToolsProtocol.connection_lost: ["self.cycle.message_event.set()", "self._unset_keepalive_if_required()"],
    }.items():
        source = _source(method)
        for line in lines:
            assert line in source, f"uvicorn's HttpToolsProtocol.{method.__name__} no longer has {line!r}"
    assert "self.message_event.wait()" in _source(RequestResponseCycle.receive), "uvicorn's receive()"


class _ParserTransport:
    """What a protocol asks of its transport while parsing heads."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    pass


def _parsed(cls: type[HttpToolsProtocol], data: bytes, root_path: str) -> tuple[Any, list[Any], Any]:
    """What ``cls``'s parser callbacks make of ``data``: the last scope, the started cycles and
    the pipelined ones (fields compared, as plain values)."""
    from uvicorn.server import ServerState

    config = uvicorn.Config(_asgi_app, http=cls, lifespan="off", root_path=root_path, log_level="critical", log_config=None)
    config.load()
    protocol = cls(config=config, server_state=ServerState(), app_state={"k": 1}, _loop=asyncio.get_running_loop())
    transport = _ParserTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    started: list[Any] = []
    protocol._start_asgi_task = lambda cycle, app: started.append((cycle, app))  # type: ignore[method-assign]
    # The relay's callbacks make a DirectCycle; a task runs on the RequestResponseCycle it makes.
    as_task = (lambda cycle: cycle.task_cycle()) if cls is not HttpToolsProtocol else (lambda cycle: cycle)
    try:
        protocol.parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass

    def fields(cycle: Any, app: Any) -> tuple[Any, ...]:
        cycle = as_task(cycle)
        # (The relay runs an HTTP/1.0 request's task on Http10Cycle: uvicorn's, but for how its
        # response is framed; it holds the same fields.)
        assert type(cycle) in (RequestResponseCycle, Http10Cycle)
        scope = {k: v for k, v in cycle.scope.items() if k != "extensions"}
        rest = {k: v for k, v in vars(cycle).items() if k not in _CYCLE_FIELDS_COMPARED}
        return (scope, cycle.keep_alive, cycle.waiting_for_100_continue, bytes(cycle.body), cycle.more_body,
                cycle.transport is transport, cycle.flow is protocol.flow, cycle.default_headers,
                cycle.on_response == protocol.on_response_complete, app is protocol.app,
                cycle.logger is protocol.logger, cycle.access_logger is protocol.access_logger,
                cycle.message_event.is_set(), rest)

    # The last request's scope: uvicorn's protocol keeps it in self.scope, the relay's makes it
    # when asked for (DirectCycle.scope), except before a WebSocket upgrade (no cycle then).
    last = protocol.cycle.scope if protocol.cycle is not None else protocol.scope
    scope = {k: v for k, v in last.items() if k != "extensions"}
    protocol._unset_keepalive_if_required()
    return scope, [fields(*pair) for pair in started], [fields(*pair) for pair in protocol.pipeline]


# Compared one by one in _parsed's fields (by identity, or the event by whether it is set);
# every other field of uvicorn's cycle is compared by value.
_CYCLE_FIELDS_COMPARED = {"scope", "transport", "flow", "on_response", "body", "logger", "access_logger",
                          "message_event"}

HEAD_CASES = {
    "GET": b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
    "percent-encoded path": b"GET /a%20b/%C3%A9 HTTP/1.1\r\nHost: h\r\n\r\n",
    "HTTP/1.0": b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
    "HTTP/1.0 keep-alive": b"GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
    "close": b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "HEAD": b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n",
    "POST with its body": b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    "POST, body to come": b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhe",
    "chunked": b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "Expect": b"POST /e HTTP/1.1\r\nHost: h\r\nEXPECT: 100-Continue\r\nContent-Length: 2\r\n\r\n",
    "pipelined": b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
                 b"POST /3 HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nz",
    "WebSocket upgrade": b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                         b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
}


@pytest.mark.parametrize("root_path", ["", "/root"])
@pytest.mark.parametrize("case", list(HEAD_CASES))
async def test_the_relays_parser_callbacks_make_the_scope_and_cycle_uvicorns_make(case: str, root_path: str) -> None:
    ours = _parsed(HeadLimitedHttpProtocol, HEAD_CASES[case], root_path)
    uvicorns = _parsed(HttpToolsProtocol, HEAD_CASES[case], root_path)
    if case == "HTTP/1.0 keep-alive":
        # The one difference: the relay keeps an HTTP/1.0 connection alive when asked (Http10Cycle).
        [(scope, keep_alive, *rest, fields)] = uvicorns[1]
        assert keep_alive is False and fields["keep_alive"] is False
        uvicorns = (uvicorns[0], [(scope, True, *rest, {**fields, "keep_alive": True})], uvicorns[2])
    assert ours == uvicorns, "relay.http.HeadLimitedHttpProtocol's parser callbacks make a request unlike uvicorn's"


def test_uvicorn_response_cycle_writes_only_through_what_head_with_body_wraps() -> None:
    # relay.http._HeadWithBody replaces cycle.transport and offers write, close and is_closing.
    used = set(re.findall(r"self\.transport\.(\w+)", _source(RequestResponseCycle)))
    assert used <= {"write", "close", "is_closing"}, (
        f"uvicorn's RequestResponseCycle now uses transport.{sorted(used - {'write', 'close', 'is_closing'})}: "
        "relay.http._HeadWithBody must offer it"
    )


def test_uvicorn_response_cycle_send_waits_on_write_paused_for_the_asgi_path() -> None:
    # relay.http_proxy's ASGI path relies on send waiting for the transport (flow.write_paused) for
    # its back-pressure; relay.http_direct checks write_paused itself before each write.
    assert inspect.iscoroutinefunction(RequestResponseCycle.send), "uvicorn's RequestResponseCycle.send"
    assert "self.flow.write_paused" in _source(RequestResponseCycle.send), (
        "uvicorn's RequestResponseCycle.send no longer waits only on flow.write_paused: relay.http_proxy"
    )


@pytest.mark.parametrize("name", ["resume_reading", "read_paused", "write_paused"])
def test_uvicorn_flow_control_has_what_the_direct_path_uses(name: str) -> None:
    flow = FlowControl.__new__(FlowControl)
    FlowControl.__init__(flow, None)  # type: ignore[arg-type]
    assert hasattr(flow, name), f"uvicorn's FlowControl.{name} is gone: relay.http_proxy.HttpForwarder.direct uses it"


def test_uvicorn_client_disconnected_is_an_oserror() -> None:
    # relay.link and DeadPeerWebSocketProtocol.send_now raise or catch it as a broken connection.
    assert issubclass(ClientDisconnected, OSError), "uvicorn.protocols.utils.ClientDisconnected"


# The direct path and the relay's hooks read these on live objects: checked on a real request.
CYCLE_FIELDS = ["scope", "more_body", "waiting_for_100_continue", "body", "flow", "disconnected", "transport", "send"]
HTTP_PROTOCOL_FIELDS = ["cycle", "pipeline", "transport", "parser", "scope", "app", "loop", "logger"]


async def test_uvicorn_request_objects_have_the_fields_the_relay_uses(relay: Relay) -> None:
    agent = await connect_agent(relay)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        with forwarder_spied() as calls:  # what the direct path (HttpForwarder.direct) is given
            writer.write(b"GET /contract HTTP/1.1\r\nHost: demo.localhost\r\n\r\n")
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK"), "a request through the relay's direct path"
        assert calls.tasks == [], "the request was answered by a task, not the direct path"
    finally:
        writer.close()
        await agent.close()
    [(client, cycle)] = calls.direct
    assert isinstance(client, HeadLimitedHttpProtocol) and isinstance(cycle, DirectCycle)
    assert cycle._scope is None, "the direct path made the request's scope (only tasks, rules and logs need it)"
    task_cycle = cycle.task_cycle()
    for name in CYCLE_FIELDS:
        assert hasattr(task_cycle, name), f"uvicorn's RequestResponseCycle.{name} is gone: relay.http_direct uses it"
    for name in HTTP_PROTOCOL_FIELDS:
        assert hasattr(client, name), f"uvicorn's HttpToolsProtocol.{name} is gone: relay.http uses it"
    assert isinstance(cycle.flow, FlowControl), "uvicorn's RequestResponseCycle.flow is no longer a FlowControl"


def test_the_direct_cycle_has_every_field_of_uvicorns_cycle_and_no_other() -> None:
    # relay.http.DirectCycle stands in for uvicorn's RequestResponseCycle until a task starts:
    # the direct path's writer reads and sets the same fields, and task_cycle copies its STATE.
    cycle, _, _ = _cycle("GET", "1.1", True, [])
    ours = set(DirectCycle.__slots__) | {"scope"}  # (a property)
    request = {"_scope", "_protocol", "method", "http_version", "path", "raw_path", "query_string", "target",
               "headers", "raw_headers"}  # the request's parts, which its scope is made of
    assert ours - request == set(vars(cycle)), "uvicorn's RequestResponseCycle has other fields than relay.http.DirectCycle"
    init = set(inspect.signature(RequestResponseCycle.__init__).parameters) - {"self"}
    assert set(DirectCycle.STATE) == set(vars(cycle)) - init | {"keep_alive"}, "DirectCycle.STATE"
    assert "self.message_event.set()" in _source(RequestResponseCycle.send), (
        "uvicorn's send sets message_event: http_direct.complete leaves it out (relay.http._Unwaited)"
    )


# -- uvicorn: the sans-IO WebSocket protocol, and its keepalive ----------------------------------------
WS_PROTOCOL_METHODS = ["send_receive_event_to_app", "send", "keepalive_timeout", "handle_connect", "connection_lost",  # overridden
                       "start_keepalive", "send_keepalive_ping", "stop_keepalive", "receive"]  # relied on


@pytest.mark.parametrize("name", WS_PROTOCOL_METHODS)
def test_uvicorn_websocket_protocol_has_the_method_the_relay_uses(name: str) -> None:
    assert callable(getattr(WebSocketsSansIOProtocol, name, None)), (
        f"uvicorn's WebSocketsSansIOProtocol.{name} is gone: relay.http.DeadPeerWebSocketProtocol needs it"
    )


def test_every_override_of_the_relays_websocket_protocol_is_a_uvicorn_method() -> None:
    ours = {"send_now", "logging_to", "_refuse_text"}
    for name in _own_methods(DeadPeerWebSocketProtocol):
        if name == "on_bytes":
            continue  # a slot of ours, not a method
        assert name in ours or name in WS_PROTOCOL_METHODS, f"DeadPeerWebSocketProtocol.{name}: add it to this contract"


def test_uvicorn_reports_a_websocket_lost_without_a_close_frame_as_1005_from_its_queue() -> None:
    # DeadPeerWebSocketProtocol.connection_lost queues 1006 ahead of uvicorn's 1005 when no close
    # frame came (conn.close_rcvd) and none was sent (close_sent); the application reads the queue.
    lost = _source(WebSocketsSansIOProtocol.connection_lost)
    assert "1005 if self.handshake_complete" in lost and "self.queue.put_nowait" in lost, (
        "uvicorn's WebSocketsSansIOProtocol.connection_lost no longer queues 1005 for a lost connection"
    )
    assert "self.queue.get()" in _source(WebSocketsSansIOProtocol.receive)
    assert "self.close_sent" in _source(WebSocketsSansIOProtocol.handle_close)


def test_uvicorn_websocket_keepalive_pings_after_the_handshake_and_gives_up_through_keepalive_timeout() -> None:
    # Dead agents are found only by this keepalive (uvicorn 0.44 and later): ours aborts the
    # connection in keepalive_timeout, which uvicorn must call when a pong is late.
    assert "self.start_keepalive()" in _source(WebSocketsSansIOProtocol.send), (
        "uvicorn's WebSocketsSansIOProtocol.send no longer starts the keepalive on accept"
    )
    assert "self.keepalive_timeout" in _source(WebSocketsSansIOProtocol.send_keepalive_ping), (
        "uvicorn's WebSocketsSansIOProtocol.send_keepalive_ping no longer arms keepalive_timeout"
    )
    assert "send_receive_event_to_app" in _source(WebSocketsSansIOProtocol.handle_bytes), (
        "uvicorn's WebSocketsSansIOProtocol.handle_bytes no longer calls send_receive_event_to_app (on_bytes)"
    )


def test_uvicorn_config_takes_the_settings_the_relay_passes() -> None:
    params = inspect.signature(uvicorn.Config).parameters
    for name in ("http", "ws", "ws_max_size", "ws_per_message_deflate", "ws_ping_interval", "ws_ping_timeout",
                 "lifespan", "interface", "log_config", "access_log", "proxy_headers", "server_header", "date_header",
                 "timeout_graceful_shutdown", "ssl_certfile", "ssl_keyfile"):
        assert name in params, f"uvicorn.Config no longer takes {name}= (relay.Relay.start passes it)"


@pytest.mark.parametrize("method", ["startup", "shutdown", "serve"])
def test_uvicorn_server_takes_our_listening_sockets(method: str) -> None:
    assert "sockets" in inspect.signature(getattr(uvicorn.Server, method)).parameters, (
        f"uvicorn.Server.{method} no longer takes sockets= (relay.Relay and api.serve_api pass theirs)"
    )


def test_uvicorn_server_fields_and_hooks_we_drive_by_hand() -> None:
    # Relay.start sets server.lifespan from config.lifespan_class before startup(); api.ApiServer
    # overrides capture_signals and stops through should_exit / force_exit.
    assert "self.lifespan.startup()" in _source(uvicorn.Server.startup), "uvicorn.Server.startup uses self.lifespan"
    assert "lifespan_class" in _source(uvicorn.Config.load), "uvicorn.Config.lifespan_class"
    assert callable(getattr(uvicorn.Server, "capture_signals", None)), "uvicorn.Server.capture_signals"
    server = uvicorn.Server(uvicorn.Config(app=None, log_config=None))  # type: ignore[arg-type]
    for name in ("should_exit", "force_exit"):
        assert hasattr(server, name), f"uvicorn.Server.{name} is gone (api.ApiServer uses it)"
    assert not hasattr(server, "listening"), "uvicorn.Server.listening now exists: api.ApiServer's own event hides it"


def test_uvicorn_serve_listens_through_startup_which_returns_once_listening() -> None:
    # api.ApiServer overrides startup() and sets its listening event when uvicorn's returns:
    # serve() must start through self.startup(sockets=...), and startup() must have put the
    # listeners on the given sockets up (create_server serves at once) before it returns.
    assert "await self.startup(sockets=sockets)" in _source(uvicorn.Server._serve), (
        "uvicorn.Server._serve no longer starts through self.startup(sockets=sockets): api.ApiServer.startup"
    )
    startup = _source(uvicorn.Server.startup)
    assert "await loop.create_server(create_protocol, sock=sock" in startup and "start_serving" not in startup, (
        "uvicorn.Server.startup no longer listens on the given sockets before it returns: api.ApiServer.startup"
    )


async def test_uvicorn_websocket_objects_have_the_fields_the_relay_uses() -> None:
    async with running_relay(ping_interval=30, ping_timeout=30) as relay:
        agent = await connect_agent(relay)
        try:
            # Relay._serve_agent finds the protocol as receive.__self__: uvicorn must pass the
            # protocol's bound method as the ASGI receive.
            protocol = relay._tunnels["demo"].members[0].socket
            assert isinstance(protocol, DeadPeerWebSocketProtocol), (
                "uvicorn no longer passes WebSocketsSansIOProtocol.receive (a bound method) to the app"
            )
            for name in ("curr_msg_data_type", "close_sent", "frames", "disconnected", "writable", "conn",
                         "transport", "handshake_complete", "queue"):
                assert hasattr(protocol, name), f"uvicorn's WebSocketsSansIOProtocol.{name} is gone"
            assert isinstance(protocol.writable, asyncio.Event), "uvicorn's WebSocketsSansIOProtocol.writable"
            for name in ("send_binary", "data_to_send"):
                assert callable(getattr(protocol.conn, name, None)), f"websockets ServerProtocol.{name}"
            # ws_guard counts a message being received by the bytes websockets' reader holds.
            assert isinstance(protocol.conn.reader.buffer, bytearray), "websockets ServerProtocol.reader.buffer"
            assert protocol.ping_timer is not None, "uvicorn's WebSocket keepalive did not schedule a ping"
        finally:
            await agent.close()


# -- websockets: what the agent's sockets hook into ---------------------------------------------------
def test_websockets_masks_frames_with_secrets_token_bytes_from_its_frames_module() -> None:
    # agent.socket replaces websockets.frames.secrets with a pooled source of mask bytes.
    assert "secrets.token_bytes(" in _source(Frame.serialize), (
        "websockets' Frame.serialize no longer takes its mask from secrets.token_bytes: agent.socket._MaskBytes"
    )
    assert isinstance(websockets.frames.secrets, _MaskBytes), "websockets.frames.secrets was not replaced"


@pytest.mark.parametrize("name", ["process_event", "send_data", "set_connection_exc", "resume_writing",
                                  "pause_writing", "connection_lost", "data_received"])
def test_websockets_connection_has_the_method_the_agent_socket_uses(name: str) -> None:
    assert callable(getattr(WsConnection, name, None)), (
        f"websockets' asyncio Connection.{name} is gone: agent.socket.TunnelSocket overrides or calls it"
    )


def test_websockets_connection_hands_every_event_to_process_event() -> None:
    assert "self.process_event(" in _source(WsConnection.data_received), (
        "websockets' Connection.data_received no longer calls process_event: TunnelSocket.on_message"
    )
    for name in _own_methods(TunnelSocket):
        assert name == "send_now" or hasattr(WsConnection, name), f"TunnelSocket.{name} overrides nothing upstream"


def test_websockets_protocol_and_client_fields_the_agent_uses() -> None:
    assert callable(getattr(WsProtocol, "send_binary", None)), "websockets' Protocol.send_binary"
    assert isinstance(getattr(WsProtocol, "state", None), property), "websockets' Protocol.state"
    assert State.OPEN, "websockets.protocol.State.OPEN"
    # local_ws replaces protocol.connect for the handshake to send the public Host.
    assert "self.protocol.connect()" in _source(ClientConnection.handshake), (
        "websockets' ClientConnection.handshake no longer builds its request with protocol.connect()"
    )


# -- httptools: stopping a parser from inside a callback --------------------------------------------
class _Stop(Exception):
    pass


def test_httptools_wraps_an_exception_raised_in_a_callback_with_it_as_the_context() -> None:
    # local_response.LocalResponse (``_HeadDone``) and relay.http (``_HeadTooLarge``) tell their own stop
    # apart from invalid HTTP by the callback error's __context__.
    class Callbacks:
        def on_header(self, name: bytes, value: bytes) -> None:
            raise _Stop

    with pytest.raises(httptools.HttpParserCallbackError) as info:
        httptools.HttpResponseParser(Callbacks()).feed_data(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n")
    assert isinstance(info.value.__context__, _Stop), "httptools' HttpParserCallbackError.__context__"
    assert issubclass(httptools.HttpParserCallbackError, httptools.HttpParserError), "httptools.HttpParserCallbackError"


def test_httptools_knows_keep_alive_when_a_response_completes() -> None:
    # local_response.LocalResponse asks should_keep_alive() from on_message_complete.
    answers: list[bool] = []

    class Callbacks:
        def on_message_complete(self) -> None:
            answers.append(parser.should_keep_alive())

    parser = httptools.HttpResponseParser(Callbacks())
    parser.feed_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    parser.feed_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    assert answers == [True, False], "httptools' should_keep_alive() inside on_message_complete"


# -- uvicorn: the response the direct path writes as RequestResponseCycle.send would -----------------
# relay.http_direct writes a response itself (response_head, body_bytes, complete, write_messages):
# the same bytes, the same effects on the cycle and the same errors as uvicorn's send, case by case
# (for an HTTP/1.0 request, as relay.http.Http10Cycle's, which ends a body without a length with
# the connection instead of chunking it, and keeps the connection alive when the client asks).
class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def writelines(self, data: Any) -> None:
        self.written.extend(bytes(d) for d in data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _cycle(method: str, http_version: str, keep_alive: bool, default_headers: list[tuple[bytes, bytes]]) -> Any:
    import logging

    transport = _Transport()
    done: list[bool] = []
    # The cycle the relay's ASGI path writes on (DirectCycle.task_cycle): uvicorn's, Http10Cycle for HTTP/1.0.
    cycle = (Http10Cycle if http_version == "1.0" else RequestResponseCycle)(
        scope={"type": "http", "method": method, "http_version": http_version, "path": "/p", "query_string": b"",
               "client": ("127.0.0.1", 1), "headers": []},  # type: ignore[typeddict-item]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logging.getLogger("uvicorn.error"),
        access_logger=logging.getLogger("uvicorn.access"),
        access_log=False,
        default_headers=list(default_headers),
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: done.append(True),
    )
    return cycle, transport, done


def _direct_cycle(method: str, http_version: str, keep_alive: bool, default_headers: list[tuple[bytes, bytes]]) -> Any:
    """``_cycle``'s request on the relay's own ``DirectCycle``, which the direct path writes on."""
    import types

    cycle, transport, done = _cycle(method, http_version, keep_alive, default_headers)
    protocol = types.SimpleNamespace(
        transport=transport, flow=cycle.flow, logger=cycle.logger, access_logger=cycle.access_logger,
        access_log=cycle.access_log, server_state=types.SimpleNamespace(default_headers=cycle.default_headers),
        on_response_complete=cycle.on_response,
        close_answered=transport.close,  # (the request's body came whole: closed at once)
    )
    direct = DirectCycle(protocol, method, http_version, "/p", b"/p", b"", b"/p", [], [], False, keep_alive)  # type: ignore[arg-type]
    return direct, transport, done


def _state(cycle: Any, transport: _Transport, done: list[bool]) -> tuple[Any, ...]:
    return (b"".join(transport.written), transport.closed, bool(done), cycle.keep_alive, cycle.chunked_encoding,
            cycle.expected_content_length, cycle.response_started, cycle.response_complete,
            cycle.waiting_for_100_continue)


def _by_uvicorn(cycle: Any, messages: list[dict[str, Any]]) -> str | None:
    for message in messages:
        step = cycle.send(message)
        try:
            step.send(None)
        except StopIteration:
            continue
        except RuntimeError as exc:
            return str(exc)
        raise AssertionError("uvicorn's send waited with a writable transport")
    return None


def _by_direct_path(cycle: Any, messages: list[dict[str, Any]]) -> str | None:
    from devtunnel.relay.http_direct import body_bytes, complete, response_head

    try:
        for message in messages:
            if message["type"] == "http.response.start":
                cycle.transport.write(response_head(cycle, message["status"], message.get("headers", [])))
            else:
                more = message.get("more_body", False)
                cycle.transport.write(body_bytes(cycle, message.get("body", b""), more))
                if not more:
                    complete(cycle)
    except RuntimeError as exc:
        return str(exc)
    return None


_LENGTH5 = [(b"Content-Type", b"text/plain"), (b"content-length", b"5")]
_BODY = [{"type": "http.response.body", "body": b"hello"}]
_STREAM = [{"type": "http.response.body", "body": b"one", "more_body": True},
           {"type": "http.response.body", "body": b"", "more_body": True},
           {"type": "http.response.body", "body": b"two", "more_body": True},
           {"type": "http.response.body", "body": b"", "more_body": False}]
RESPONSE_CASES = {
    # name: (method, client's HTTP version, keep-alive, default headers, status, headers, body messages)
    "keep-alive with a length": ("GET", "1.1", True, [], 200, _LENGTH5, _BODY),
    "no length: chunked": ("GET", "1.1", True, [], 200, [(b"content-type", b"text/event-stream")], _STREAM),
    "no length, last message with bytes": ("GET", "1.1", True, [], 200, [],
                                           [{"type": "http.response.body", "body": b"x", "more_body": True},
                                            {"type": "http.response.body", "body": b"yz"}]),
    "the agent's own chunked": ("GET", "1.1", True, [], 200, [(b"Transfer-Encoding", b"chunked")], _STREAM),
    "HEAD with a length": ("HEAD", "1.1", True, [], 200, _LENGTH5, [{"type": "http.response.body", "body": b""}]),
    "HEAD without a length": ("HEAD", "1.1", True, [], 200, [], [{"type": "http.response.body", "body": b""}]),
    "204": ("GET", "1.1", True, [], 204, [(b"x-a", b"1")], [{"type": "http.response.body", "body": b""}]),
    "304": ("GET", "1.1", True, [], 304, [(b"etag", b'"1"')], [{"type": "http.response.body", "body": b""}]),
    "HTTP/1.0 client": ("GET", "1.0", False, [], 200, _LENGTH5, _BODY),
    "HTTP/1.0 client, no length": ("GET", "1.0", False, [], 200, [], _STREAM),
    "HTTP/1.0 keep-alive": ("GET", "1.0", True, [], 200, _LENGTH5, _BODY),
    "HTTP/1.0 keep-alive, no length": ("GET", "1.0", True, [], 200, [], _STREAM),
    "HTTP/1.0 keep-alive, HEAD without a length": ("HEAD", "1.0", True, [], 200, [],
                                                   [{"type": "http.response.body", "body": b""}]),
    "HTTP/1.0 keep-alive, 304": ("GET", "1.0", True, [], 304, [(b"etag", b'"1"')],
                                 [{"type": "http.response.body", "body": b""}]),
    "HTTP/1.0 keep-alive, response says close": ("GET", "1.0", True, [], 200, [*_LENGTH5, (b"Connection", b"close")],
                                                 _BODY),
    "client asked to close": ("GET", "1.1", False, [], 200, _LENGTH5, _BODY),
    "response says close": ("GET", "1.1", True, [], 200, [*_LENGTH5, (b"Connection", b"keep-alive, Close")], _BODY),
    "response says close, client too": ("GET", "1.1", False, [], 200, [*_LENGTH5, (b"connection", b"close")], _BODY),
    "default headers": ("GET", "1.1", True, [(b"server", b"x"), (b"date", b"now")], 200, _LENGTH5, _BODY),
    "two lengths": ("GET", "1.1", True, [], 200, [*_LENGTH5, (b"Content-Length", b"9")], _BODY),
    "invalid header name": ("GET", "1.1", True, [], 200, [(b"bad name", b"1"), *_LENGTH5], _BODY),
    "invalid header value": ("GET", "1.1", True, [], 200, [*_LENGTH5, (b"x", b"a\nb")], _BODY),
    "body longer than its length": ("GET", "1.1", True, [], 200, _LENGTH5,
                                    [{"type": "http.response.body", "body": b"hello!"}]),
    "body shorter than its length": ("GET", "1.1", True, [], 200, _LENGTH5,
                                     [{"type": "http.response.body", "body": b"hell"}]),
    "502 of the relay": ("GET", "1.1", True, [], 502, [(b"content-length", b"2")],
                         [{"type": "http.response.body", "body": b"no"}]),
}


@pytest.mark.parametrize("case", list(RESPONSE_CASES))
def test_the_direct_path_writes_a_response_as_uvicorns_send_does(case: str) -> None:
    method, version, keep_alive, default_headers, status, headers, body = RESPONSE_CASES[case]
    messages = [{"type": "http.response.start", "status": status, "headers": headers}, *body]
    uvicorn_cycle, uvicorn_transport, uvicorn_done = _cycle(method, version, keep_alive, default_headers)
    uvicorn_error = _by_uvicorn(uvicorn_cycle, messages)
    ours, our_transport, our_done = _direct_cycle(method, version, keep_alive, default_headers)
    our_error = _by_direct_path(ours, messages)
    assert our_error == uvicorn_error
    assert _state(ours, our_transport, our_done) == _state(uvicorn_cycle, uvicorn_transport, uvicorn_done), (
        "relay.http_direct writes this response unlike uvicorn's RequestResponseCycle.send"
    )


def test_the_direct_paths_one_write_of_a_whole_response_is_uvicorns_bytes() -> None:
    from devtunnel.relay.http_direct import write_messages

    for method, version, keep_alive in [("GET", "1.1", True), ("HEAD", "1.1", True), ("GET", "1.0", False)]:
        messages = [{"type": "http.response.start", "status": 429, "headers": [(b"retry-after", b"1")]},
                    {"type": "http.response.body", "body": b"slow down"}]
        uvicorn_cycle, uvicorn_transport, uvicorn_done = _cycle(method, version, keep_alive, [])
        assert _by_uvicorn(uvicorn_cycle, messages) is None
        ours, our_transport, our_done = _direct_cycle(method, version, keep_alive, [])
        write_messages(ours, messages)
        assert len(our_transport.written) == 1, "a whole response goes out in one write"
        assert _state(ours, our_transport, our_done) == _state(uvicorn_cycle, uvicorn_transport, uvicorn_done)


def test_uvicorn_response_cycle_send_is_what_the_direct_paths_writer_copies() -> None:
    # relay.http_direct.response_head and body_bytes follow these lines of uvicorn's send; a release
    # that changes them must be compared again (the cases above run on the installed uvicorn).
    source = _source(RequestResponseCycle.send)
    # relay.http.Http10Cycle sets chunked_encoding, expected_content_length and keep_alive before
    # send reads the headers: a Content-Length is read only while chunked_encoding is None.
    for line in ["content = [STATUS_LINE[status_code]]", "headers = self.default_headers + list(",
                 'self.scope["method"] != "HEAD" and status_code not in (204, 304)',
                 'if name == b"content-length" and self.chunked_encoding is None:',
                 "if num_bytes > self.expected_content_length:",
                 'content.append(b"connection: close\\r\\n")', "self.on_response()"]:
        assert line in source, f"uvicorn's RequestResponseCycle.send no longer has {line!r}"
