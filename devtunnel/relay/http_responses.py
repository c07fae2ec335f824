"""What a public HTTP client is sent for a forwarded request: the agent's response head (with the
rules' edits), or the relay's own answer when the stream failed before the response started.

Shared by the two ways a response is written: in a task (``http_proxy.HttpForwarder``) and from
callbacks (``http_direct.DirectExchange``).
"""

from __future__ import annotations

import logging
from typing import Any

from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import Fields, StreamReset
from devtunnel.relay.asgi import Scope, plain
from devtunnel.relay.headers import forward_response_headers, scope_cookies
from devtunnel.relay.link import AgentLink, BodyStalled, RelayStream
from devtunnel.relay.log import PeerErrorLog
from devtunnel.relay.rules import edit_response
from devtunnel.rules import Decision

log = logging.getLogger("devtunnel.relay")

NO_BODY_STATUS = (204, 304)


def failure_answer(tunnel: AgentLink, failure: StreamReset) -> list[dict[str, Any]]:
    """What the client gets when the stream failed before the response started."""
    if isinstance(failure, BodyStalled):
        return plain(408, f"{failure.reason}\n", close=True)
    if failure.code == ErrorCode.TOO_LARGE:
        return plain(413, f"{failure.reason}\n", close=True)
    if failure.code == ErrorCode.REFUSED_STREAM and not tunnel.draining:
        return plain(503, f"tunnel {tunnel.name} is busy: {failure.reason}\n")
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
    if not 200 <= status < 600 or length_problem(head.headers) is not None:
        return None
    headers = forward_response_headers(head.headers, body_allowed=status not in NO_BODY_STATUS)
    if decision is not None:
        headers = edit_response(headers, decision)
    return {"type": "http.response.start", "status": status, "headers": scope_cookies(headers, host)}


def invalid_response(tunnel: AgentLink, stream: RelayStream) -> str:
    """The 502 body for a response head ``response_start`` refused."""
    head = stream.head
    assert head is not None
    if not 200 <= head.status < 600:
        return f"tunnel {tunnel.name} answered with invalid status {head.status}\n"
    return f"tunnel {tunnel.name} answered with {length_problem(head.headers)}\n"


def length_problem(headers: Fields) -> str | None:
    """Why a response's ``Content-Length`` fields cannot be written as they are, or None.

    Each must be digits alone, and several must agree: uvicorn frames the body by the first
    and writes them all, so ``2`` and ``5``, or ``+5`` (a number to Python, not to HTTP),
    would tell the client, or a proxy in front of the relay, another length than the body's:
    the next response on its connection would be read from the wrong byte (RFC 9110 8.6).
    """
    length: bytes | None = None
    for name, value in headers:
        if name.lower() == b"content-length":
            value = value.strip(b" \t")
            if not value.isdigit() or not value.isascii():
                return "an invalid Content-Length"
            if length is not None and value.lstrip(b"0") != length.lstrip(b"0"):
                return "two different Content-Length values"
            length = value
    return None


def log_invalid(peer_errors: PeerErrorLog, tunnel: AgentLink, scope: Scope, exc: Exception) -> None:
    """Log a response the agent sent that uvicorn refused (rate-limited: the agent chooses how often)."""
    peer_errors.log(
        "invalid-response", logging.WARNING, "tunnel %s: response to %s %s is not valid HTTP: %s",
        tunnel.name, scope["method"], scope["path"], exc,
    )
