"""What a public HTTP client is sent for a forwarded request: the agent's response head (with the
rules' edits), or the relay's own answer when the stream failed before the response started.

Shared by the two ways a response is written: in a task (``http_proxy.HttpForwarder``) and from
callbacks (``http_direct.DirectExchange``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import StreamReset
from devtunnel.relay.asgi import Scope, plain
from devtunnel.relay.headers import forward_response_headers, length_problem, scope_cookies
from devtunnel.relay.link import MAX_AGENT_TEXT, AgentLink, BodyStalled, RelayStream
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.rules import edit_response
from devtunnel.rules import Decision
from devtunnel.values.http1 import fields_problem
from devtunnel.values.request_head import answer_text
from devtunnel.values.terminal import clipped, escape

log = logging.getLogger("devtunnel.relay")

def failure_answer(tunnel: AgentLink, failure: StreamReset) -> list[dict[str, Any]]:
    """What the client gets when the stream failed before the response started. The reason may
    be the agent's (its RESET's, any text): the page shows it as the relay's log lines do, its
    first ``MAX_AGENT_TEXT`` characters, each control character escaped (``\\x1b``)."""
    reason = escape(clipped(failure.reason, MAX_AGENT_TEXT))
    if isinstance(failure, BodyStalled):
        return plain(408, f"{reason}\n", close=True)
    if failure.code == ErrorCode.TOO_LARGE:
        return plain(413, f"{reason}\n", close=True)
    if failure.code == ErrorCode.REFUSED_STREAM and not tunnel.draining:
        return plain(503, f"tunnel {tunnel.name} is busy: {reason}\n")
    if tunnel.end_code == ErrorCode.SHUTTING_DOWN:  # the drain timeout passed, or a second signal came
        return plain(503, f"the relay is stopping: tunnel {tunnel.name} did not answer in time\n", close=True)
    # A stream refused by an agent that is leaving crossed its GOAWAY: as in flight on an agent that left.
    if tunnel.closed or failure.code == ErrorCode.REFUSED_STREAM:
        return plain(502, f"tunnel {tunnel.name} went offline before answering\n")
    return plain(502, f"tunnel {tunnel.name} could not answer: {reason or 'stream reset'}\n")


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
    return _unstarted(cycle, text)


def body_refused(
    cycle: Any, peer_errors: PeerErrorLog, tunnel: AgentLink, scope: Scope, status: int, longer: bool
) -> list[dict[str, Any]]:
    """The 502 for a response whose body does not fit its head (``body_problem``), found
    before a byte of the head was written (the direct path writes it with the first body
    bytes; the task path judges a response that came whole, ``body_mismatch``), logged as
    ``log_invalid`` logs, and ``cycle`` put back as ``head_refused`` puts it. Once the head is
    out, the client's connection is closed instead: a body cut or run over cannot be told."""
    problem = body_problem(status, longer)
    log_invalid(peer_errors, tunnel, scope, ValueError(problem))
    return _unstarted(cycle, f"tunnel {tunnel.name} answered with {problem}\n")


def body_problem(status: int, longer: bool) -> str:
    """What is wrong with a body that does not fit its response head (``longer``: it runs past
    the length, else it ends short of it): a 204 and a 304 have none (RFC 9110 6.4.1)."""
    if status in (204, 304):
        return f"a body in a {status} response, which has none"
    return f"a body {'longer' if longer else 'shorter'} than its Content-Length"


def body_mismatch(method: str, status: int, headers: list[tuple[bytes, bytes]], chunks: Iterable[object]) -> bool | None:
    """Whether the whole body of a response (its ``chunks``, all of it come) runs past the
    length its head (``headers``, as ``response_start`` made them) gives it (True), ends short
    of it (False), or fits (None). The direct path needs no such check: its writer finds the
    same, before the head is written."""
    if method == "HEAD":
        return None
    size = sum(len(chunk) for chunk in chunks if isinstance(chunk, bytes))
    if status in (204, 304):
        return True if size else None
    for name, value in headers:
        if name.lower() == b"content-length":  # (digits alone: forward_response_headers checked)
            length = int(value)
            return None if size == length else size > length
    return None


def _unstarted(cycle: Any, text: str) -> list[dict[str, Any]]:
    """The 502 stating ``text``, with ``cycle`` put back as it was before a head was begun on it."""
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
