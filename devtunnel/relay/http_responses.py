"""What a public HTTP client is sent for a forwarded request: the agent's response head (with the
rules' edits), or the relay's own answer when the stream failed before the response started.

Shared by the two ways a response is written: in a task (``http_proxy.HttpForwarder``) and from
callbacks (``http_direct.DirectExchange``).
"""

from __future__ import annotations

import logging
from typing import Any

from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import StreamReset
from devtunnel.relay.asgi import Scope, plain
from devtunnel.relay.headers import forward_response_headers, length_problem, scope_cookies
from devtunnel.relay.link import AgentLink, BodyStalled, RelayStream
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.rules import edit_response
from devtunnel.rules import Decision
from devtunnel.values.http1 import fields_problem
from devtunnel.values.request_head import answer_text

log = logging.getLogger("devtunnel.relay")

def failure_answer(tunnel: AgentLink, failure: StreamReset) -> list[dict[str, Any]]:
    """What the client gets when the stream failed before the response started."""
    if isinstance(failure, BodyStalled):
        return plain(408, f"{failure.reason}\n", close=True)
    if failure.code == ErrorCode.TOO_LARGE:
        return plain(413, f"{failure.reason}\n", close=True)
    if failure.code == ErrorCode.REFUSED_STREAM and not tunnel.draining:
        return plain(503, f"tunnel {tunnel.name} is busy: {failure.reason}\n")
    if tunnel.end_code == ErrorCode.SHUTTING_DOWN:  # the drain timeout passed, or a second signal came
        return plain(503, f"the relay is stopping: tunnel {tunnel.name} did not answer in time\n", close=True)
    # A stream refused by an agent that is leaving crossed its GOAWAY: as in flight on an agent that left.
    if tunnel.closed or failure.code == ErrorCode.REFUSED_STREAM:
        return plain(502, f"tunnel {tunnel.name} went offline before answering\n")
    return plain(502, f"tunnel {tunnel.name} could not answer: {failure.reason or 'stream reset'}\n")


def response_start(stream: RelayStream, host: bytes, decision: Decision | None = None) -> dict[str, Any] | None:
    """The ``http.response.start`` message for the agent's response head to a request for
    ``host`` (the rules' header edits applied, cookies kept to ``host``: ``scope_cookies``);
    None if its status or its Content-Length is invalid (``invalid_response`` says which)."""
    head = stream.head
    assert head is not None
    status = head.status
    if not 200 <= status < 600:
        return None
    headers = forward_response_headers(head.headers, length_allowed=status != 204, host=host)
    if headers is None:
        return None
    if decision is not None and decision.edits_response:
        headers = scope_cookies(edit_response(headers, decision), host)  # the rule's own cookies too
    return {"type": "http.response.start", "status": status, "headers": headers}


def invalid_response(tunnel: AgentLink, stream: RelayStream) -> str:
    """The 502 body for a response head ``response_start`` refused."""
    head = stream.head
    assert head is not None
    if not 200 <= head.status < 600:
        return f"tunnel {tunnel.name} answered with invalid status {head.status}\n"
    return f"tunnel {tunnel.name} answered with {length_problem(head.headers)}\n"


def invalid_header(
    peer_errors: PeerErrorLog, tunnel: AgentLink, scope: Scope, headers: list[tuple[bytes, bytes]]
) -> str | None:
    """The 502 body for a response head with a header no HTTP/1.1 head can hold
    (``values.http1.fields_problem`` says which), logged as ``log_invalid`` logs; None when
    every header can be written. The agent sent it: a local service's invalid header is the
    agent's own 502 (``local_error``), and a rule's are checked when the rule is made."""
    problem = fields_problem(headers)
    if problem is None:
        return None
    log_invalid(peer_errors, tunnel, scope, ValueError(problem))
    return answer_text(f"tunnel {tunnel.name} answered with an invalid header: {problem}\n")


def head_refused(
    cycle: Any, peer_errors: PeerErrorLog, tunnel: AgentLink, scope: Scope, headers: list[tuple[bytes, bytes]]
) -> list[dict[str, Any]]:
    """The 502 (``invalid_header``) for a response head uvicorn's ``send`` (or
    ``http_direct.response_head``) refused before writing a byte of it, and ``cycle`` put back
    as it was before the head, so the 502 is sent instead of the empty reply of a dropped
    connection; the connection is not used again. Asked only once a head was refused: a valid
    one costs nothing more."""
    text = invalid_header(peer_errors, tunnel, scope, headers)
    if text is None:  # uvicorn refused a header our rule takes: say so all the same
        log_invalid(peer_errors, tunnel, scope, ValueError("a header uvicorn refuses"))
        text = f"tunnel {tunnel.name} answered with an invalid header\n"
    cycle.response_started = False
    cycle.chunked_encoding = None  # the framing the refused head's fields before the bad one set
    cycle.expected_content_length = 0
    return plain(502, text, close=True)


def log_invalid(peer_errors: PeerErrorLog, tunnel: AgentLink, scope: Scope, exc: Exception) -> None:
    """Log a response the agent sent that uvicorn refused (rate-limited: the agent chooses how often)."""
    peer_errors.log(
        "invalid-response", logging.WARNING, "tunnel %s: response to %s %s is not valid HTTP: %s",
        tunnel.name, scope.get("method", "WebSocket"), scope["path"], exc,
    )
