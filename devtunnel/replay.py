"""Send a captured request again, as captured or edited, and capture what comes back.

``replay`` builds the request with ``Edit.apply`` (``devtunnel.capture.edit``, the one edit
contract: method and raw target exactly as captured or edited, headers in order with their
case, body, hop-by-hop headers dropped, Content-Length computed) and sends it with httpx to the
tunnel's target (or ``to``). Redirects are never followed and the response is never decoded:
its bytes are kept as they came.

A webhook delivery is signed afresh on the way out (``devtunnel.webhooks.resign``): what is
actually sent, with a fresh timestamp where the scheme has one, when its provider's secret is
known and it verifies the delivery as captured (or it was judged valid when it came: a forged
delivery is not made to pass); ``Edit(as_captured=True)`` sends the captured signature headers
instead, ``Edit(sign_unverified=True)`` signs even one the secret does not verify.

The result is a new ``Exchange`` (new id, same tunnel, ``replay_of`` = the original's id,
``edited`` when the edit changed what a plain replay would send, ``resigned`` the provider
that signed it afresh, ``signature_notice`` why the signature was not refreshed);
the original is not touched and nothing is stored: storing is the caller's job. A replay
that reached the network and failed (refused, timed out, broken response) still returns an
exchange, with ``error`` set; ``ReplayError`` is raised only when nothing could be sent.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit


def _lazy_module(name: str):  # type: ignore[no-untyped-def]
    """``name`` imported on first use: the agent serves its API without ever replaying, and
    httpx alone is about 7 MiB of its resident memory."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    import httpx
else:
    httpx = _lazy_module("httpx")

from devtunnel.capture.edit import Edit
from devtunnel.capture.model import DEFAULT_BODY_CAP, ErrorKind, Exchange, Headers, Request, Response, new_id
from devtunnel.errors import ReplayError, StoreError
from devtunnel.values.http1 import field_value
from devtunnel.values.request_head import target_problem
from devtunnel.values.terminal import quoted
from devtunnel.capture.verdict import Signature
from devtunnel.values.urls import is_localhost_name
from devtunnel.webhooks import delivery_of
from devtunnel.webhooks.resign import Keys, resign

__all__ = ["Edit", "destination", "not_recorded", "once_per_delivery", "replay", "replay_many"]

_HIGH_BYTE_RE = re.compile(rb"[\x80-\xff]")


@dataclass(frozen=True)
class _Prepared:
    request: Request
    """The request as it goes on the wire (target prefixed and percent-encoded, Host as sent)."""
    scheme: str
    netloc: str
    edited: bool
    resigned: str | None = None
    signature_notice: str = ""


def _destination(exchange: Exchange, to: str | None) -> tuple[str, str, str]:
    base = to if to is not None else exchange.target_url
    if not base:
        why = " (a rule at the relay answered it, so it reached no local service)" if exchange.rule else ""
        raise ReplayError(f"exchange {exchange.id} has no target URL to replay to{why}: give a destination URL")
    return destination(base)


def destination(base: str) -> tuple[str, str, str]:
    """The scheme, authority and path prefix a replay to ``base`` is sent with.

    Raises:
        ReplayError: ``base`` is no http:// or https:// URL a request can be sent to (the CLI
            checks ``--to`` with this before anything, a usage error).
    """
    try:
        parts = urlsplit(base)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one (or past 65535)
    except ValueError as exc:  # an unclosed "[" of an IPv6 address, a bad port
        raise ReplayError(f"cannot replay to {quoted(base)}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ReplayError(f"cannot replay to {quoted(base)}: give an http:// or https:// URL")
    try:
        netloc = httpx.URL(f"{parts.scheme}://{parts.netloc}/").netloc.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ReplayError(f"cannot replay to {quoted(base)}: {exc}") from exc
    prefix = parts.path.rstrip("/")
    # The path goes before every request's target: it must be one (the rule the relay applies).
    if prefix and (problem := target_problem(b"GET", prefix.encode("utf-8", "surrogateescape"))):
        raise ReplayError(f"cannot replay to {quoted(base)}: its path is put before the request's, and {problem}")
    return parts.scheme, netloc, prefix


def _keys_for(webhooks: Any, exchange: Exchange) -> Any:
    """The providers and secrets for ``exchange``'s tunnel: ``webhooks`` (the agent's context),
    else the built-in providers with the secrets in their conventional variables."""
    if webhooks is None:
        return Keys.from_environment(os.environ)
    for_tunnel = getattr(webhooks, "for_tunnel", None)
    return for_tunnel(exchange.tunnel) if for_tunnel is not None else webhooks


def _prepare(exchange: Exchange, to: str | None, edit: Edit | None, host_header: str,
             webhooks: Any = None, now: float | None = None) -> _Prepared:
    if host_header not in ("preserve", "rewrite"):
        raise ReplayError(f"host_header must be 'preserve' or 'rewrite', not {quoted(host_header)}")
    if exchange.websocket:
        raise ReplayError(f"exchange {exchange.id} is a WebSocket session; only HTTP requests can be replayed "
                          "(a filter leaves WebSocket sessions out with !ws)")
    edit = edit or Edit()
    request = edit.apply(exchange)
    scheme, netloc, prefix = _destination(exchange, to)
    target = request.target
    if target.startswith(b"/"):
        target = prefix.encode("utf-8") + target
    # HTTP/1.1 allows only visible ASCII in a target (h11 enforces it): percent-encode the rest,
    # which is how a server decodes them anyway.
    request.target = _HIGH_BYTE_RE.sub(lambda m: b"%%%02X" % m.group()[0], target)
    if host_header == "rewrite" and not edit.names_host and "host" in request.headers:
        request.headers = request.headers.with_set("Host", netloc)  # (without one, httpx sends netloc's)
    edited = edit.changes(exchange)
    if edit.as_captured:
        return _Prepared(request, scheme, netloc, edited)
    # The URL the receiver sees itself called at: its public one while the captured Host is
    # sent, the destination's once Host is rewritten (Twilio signs it).
    host = request.headers.get("host") or netloc
    url = f"{exchange.scheme if host != netloc else scheme}://{host}{request.url_text}"
    signed = resign(request, url, keys=_keys_for(webhooks, exchange), now=time.time() if now is None else now,
                    captured=exchange.request, captured_url=delivery_of(exchange.request, exchange.scheme).url,
                    judged=exchange.webhook, unverified=edit.sign_unverified)
    return _Prepared(signed.request, scheme, netloc, edited, signed.provider, signed.notice)


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and what it was raised from, outermost first (httpx wraps httpcore wraps anyio wraps OSError)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def _is_reset(exc: BaseException) -> bool:
    return any(isinstance(c, ConnectionResetError) or getattr(c, "errno", None) == errno.ECONNRESET
               for c in _causes(exc))


def _failure_kind(exc: httpx.HTTPError) -> ErrorKind:
    """The kind of a replay that reached the network and failed, as the agent records the same
    failure of a live request: ``local_refused``, ``local_timeout`` (no answer in time),
    ``local_error`` (the service reset or closed the connection, or sent something that is not
    HTTP), else ``replay_failed``."""
    if isinstance(exc, httpx.TimeoutException):
        return "local_timeout"
    if isinstance(exc, httpx.ConnectError):
        if any(isinstance(c, ConnectionRefusedError) or getattr(c, "errno", None) == errno.ECONNREFUSED
               for c in _causes(exc)):
            return "local_refused"
        if "refused" in str(exc).lower():
            return "local_refused"
        return "replay_failed"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)) or _is_reset(exc):
        return "local_error"
    return "replay_failed"


def _failure_message(exc: httpx.HTTPError, url: str, *, answering: bool = False) -> str:
    """What went wrong, naming ``url``; ``answering``: the response head had come."""
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer in time ({type(exc).__name__})"
    detail = str(exc) or type(exc).__name__
    kind = _failure_kind(exc)
    if kind == "local_refused":
        return f"connection refused by {url}: is the service running? ({detail})"
    if kind == "local_error":
        reset = _is_reset(exc)
        how = "reset" if reset else "closed"
        if answering:
            return f"the local service at {url} {how} the connection in the middle of its response ({detail})"
        if isinstance(exc, httpx.RemoteProtocolError) and not reset and "without sending a response" not in detail:
            return f"the local service at {url} did not answer with HTTP: {detail}"
        if reset and detail == type(exc).__name__:  # httpx's ReadError says nothing of the reset
            detail = "connection reset by peer"
        return f"the local service at {url} {how} the connection without answering ({detail})"
    return f"replay to {url} failed: {detail}"


async def _send(
    client: httpx.AsyncClient, prepared: _Prepared, exchange: Exchange, body_cap: int
) -> Exchange:
    base_url = f"{prepared.scheme}://{prepared.netloc}"
    wanted = prepared.request
    fields = [(name, field_value(value)) for name, value in wanted.headers.fields]
    try:
        url = httpx.URL(base_url + "/")
        if url.scheme == "http" and is_localhost_name(url.host):
            # The embedded relay's public URL (NAME.localhost:PORT): not every resolver knows the
            # name (values.urls); connect to loopback, the name in Host, which the relay routes by.
            if "host" not in wanted.headers:
                fields.insert(0, (b"Host", prepared.netloc.encode("ascii")))
            url = url.copy_with(host="127.0.0.1")
        request = httpx.Request(
            wanted.method,
            url,
            headers=fields,
            content=wanted.body,
            # The raw target goes on the wire as is; httpx's URL would re-quote it.
            extensions={"target": wanted.target},
        )
    except httpx.HTTPError as exc:
        raise ReplayError(f"cannot build the replay of {exchange.id}: {exc}") from exc
    request.method = wanted.method  # httpx upper-cases methods; the one asked for is sent as is
    sent = Request(
        method=wanted.method,
        target=wanted.target,
        headers=Headers(request.headers.raw),
        body=wanted.body,
        body_size=len(wanted.body),
        http_version="1.1",
    )
    result = Exchange(
        id=new_id(),
        tunnel=exchange.tunnel,
        started_at=time.time(),
        request=sent,
        scheme=exchange.scheme,
        target_url=base_url,
        replay_of=exchange.id,
        edited=prepared.edited,
        resigned=prepared.resigned,
        signature_notice=prepared.signature_notice,
    )
    start = time.perf_counter()
    try:
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            result.ttfb = time.perf_counter() - start
            body = bytearray()
            size = 0
            async for chunk in response.aiter_raw():  # raw: no Content-Encoding decoding
                size += len(chunk)
                if len(body) < body_cap:
                    body += chunk[: body_cap - len(body)]
        finally:
            await response.aclose()
    except httpx.UnsupportedProtocol as exc:
        raise ReplayError(f"cannot replay to {base_url}: {exc}") from exc
    except httpx.LocalProtocolError as exc:
        result.error = "replay_failed"
        result.error_message = f"the replay is not a valid HTTP/1.1 request, nothing was sent: {exc}"
        result.duration = time.perf_counter() - start
        return result
    except httpx.HTTPError as exc:
        result.error = _failure_kind(exc)
        result.error_message = _failure_message(exc, base_url, answering=result.ttfb is not None)
        result.duration = time.perf_counter() - start
        return result
    reason = response.extensions.get("reason_phrase", b"")
    result.response = Response(
        status=response.status_code,
        reason=reason.decode("latin-1") if isinstance(reason, bytes) else str(reason),
        headers=Headers(response.headers.raw),
        body=bytes(body),
        body_size=size,
        body_truncated=size > len(body),
        http_version=response.http_version.removeprefix("HTTP/"),
    )
    result.duration = time.perf_counter() - start
    return result


async def replay(
    exchange: Exchange,
    *,
    to: str | None = None,
    edit: Edit | None = None,
    client: httpx.AsyncClient | None = None,
    host_header: Literal["preserve", "rewrite"] = "preserve",
    timeout: float = 30.0,
    verify: bool = True,
    body_cap: int = DEFAULT_BODY_CAP,
    webhooks: Any = None,
    now: float | None = None,
) -> Exchange:
    """Send ``exchange``'s request again and return the new exchange.

    Args:
        exchange: the captured exchange; it is not modified.
        to: base URL to send to (``http://127.0.0.1:9000``; a path is put before the target)
            instead of the exchange's ``target_url``.
        edit: changes to the method, target, headers or body.
        client: an httpx client to send with (its default headers, cookies and base URL are
            not applied); by default a fresh one that ignores proxy variables.
        host_header: ``preserve`` sends the captured Host; ``rewrite`` sends the destination's.
        timeout: seconds for each network step, when no client is given.
        verify: check an https destination's certificate, when no client is given.
        body_cap: bytes of the response body to keep (the whole body is always read).
        webhooks: the providers and secrets to sign webhook deliveries afresh with (the agent's
            webhook context, or a ``webhooks.resign.Keys``); by default the built-in providers
            with the secrets in their conventional variables (``STRIPE_WEBHOOK_SECRET`` ...).
        now: the moment the fresh signatures are made at (seconds since the epoch; default: now).

    Returns:
        A new exchange with ``replay_of=exchange.id`` and a response, or an ``error`` of
        ``local_refused``, ``local_error`` (the service reset or closed the connection without
        answering, or broke its response) or ``replay_failed`` with a message naming the URL.

    Raises:
        ReplayError: nothing could be sent (no destination, a WebSocket exchange, a body that
            was only partly recorded, or an invalid edit).
    """
    prepared = _prepare(exchange, to, edit, host_header, webhooks, now)
    if client is not None:
        return await _send(client, prepared, exchange, body_cap)
    # trust_env=False: a replay goes to the given service, never through an environment proxy.
    async with httpx.AsyncClient(timeout=timeout, verify=verify, trust_env=False) as own:
        return await _send(own, prepared, exchange, body_cap)


def once_per_delivery(exchanges: Sequence[Exchange]) -> tuple[list[Exchange], int]:
    """``exchanges`` with each webhook delivery once: of the captures of one provider and delivery
    id (a delivery and the provider's retries of it), the first; and how many were left out. A
    bulk replay of ``status:5xx`` sent a delivery that was retried three times four times over;
    ``stripe events resend`` sends an event once. A delivery whose signature is invalid claims no
    delivery id (anyone may post one with the id of a genuine delivery): it is kept."""
    seen: set[tuple[str, str]] = set()
    kept: list[Exchange] = []
    for ex in exchanges:
        v = ex.webhook
        if v is not None and v.delivery_id and v.signature is not Signature.INVALID:
            key = (v.provider, v.delivery_id)
            if key in seen:
                continue
            seen.add(key)
        kept.append(ex)
    return kept, len(exchanges) - len(kept)


async def replay_many(
    exchanges: Iterable[Exchange],
    *,
    to: str | None = None,
    edit: Edit | None = None,
    client: httpx.AsyncClient | None = None,
    host_header: Literal["preserve", "rewrite"] = "preserve",
    timeout: float = 30.0,
    verify: bool = True,
    body_cap: int = DEFAULT_BODY_CAP,
    webhooks: Any = None,
    now: float | None = None,
) -> list[Exchange]:
    """Replay ``exchanges`` one after another, in order, over one client.

    Every exchange is checked before the first is sent, so a ``ReplayError`` means nothing
    was sent. A failed send does not stop the rest: its result carries the error.
    """
    items: Sequence[Exchange] = list(exchanges)
    prepared = [_prepare(ex, to, edit, host_header, webhooks, now) for ex in items]
    if client is not None:
        return [await _send(client, p, ex, body_cap) for p, ex in zip(prepared, items)]
    async with httpx.AsyncClient(timeout=timeout, verify=verify, trust_env=False) as own:
        return [await _send(own, p, ex, body_cap) for p, ex in zip(prepared, items)]


def not_recorded(sent: Sequence[Exchange], error: StoreError) -> StoreError:
    """What to say of replays that went out but could not be stored: that they went out, and why
    they are not in the store (the CLI, the agent API and the inspector say it alike)."""
    n = len(sent)
    return StoreError(f"{n} replay{'s' if n != 1 else ''} sent but not recorded: {error}")
