"""The agent API's routes over captured exchanges: list, detail, clear, replay, export, diff.

The list and the clear hold the agent's own captures by default, as ngrok's do (``scope=agent``):
several agents may record into one store, which also keeps earlier sessions, and a script that
reads ``requests[0]`` after triggering a hook, or clears between two tests, means this agent's.
``scope=all`` is the whole store. The store keeps which recorder's run stored each exchange
(``capture.runs.RecordedBy``), so two agents running a tunnel of the same name each hold their own.

Store calls are blocking SQLite work, so they run in the thread pool; the event loop keeps
carrying tunnel traffic meanwhile. A replay to the target of a tunnel that holds requests
(``--hold``) waits for its app at the tunnel's gate, as the tunnel's own requests do
(``agent/hold.py``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any, Literal

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devtunnel.capture.diff import SectionDiff, diff_exchanges, render_unified
from devtunnel.capture.filters import And, Filter, Not, Or, parse
from devtunnel.capture.filters.base import MatchAll, SqlParams
from devtunnel.capture.filters.fields import Tunnel
from devtunnel.capture.model import Exchange
from devtunnel.capture.runs import RecordedBy
from devtunnel.errors import NotFoundError, StoreError
from devtunnel.export import EXPORTERS, export, options_of
from devtunnel.webhooks.resign import notice_for
from devtunnel.agent.hold import HeldFor, HoldExpired, HoldGate
from devtunnel.agent.info import TunnelInfo
from devtunnel.api.plumbing import (
    ApiError, aliases_of, flag_param, int_param, params, json_body, no_content, ok_list_streamed, ok_off_loop, str_field, tunnel_label, tunnel_named,
    unknown_fields,
)
from devtunnel.api.service import Service, service_of
from devtunnel.export.agent_json import REQUESTS_URI, capture_json
from devtunnel.capture.edit import Edit
from devtunnel.capture.store import Store
from devtunnel.values.exchange_ids import time_prefix
from devtunnel.replay import not_recorded, replay
from devtunnel.values.terminal import clipped, quoted
from devtunnel.values.urls import origin

__all__ = ["routes", "tunnel_filter", "replay_edit", "AgentScope", "SCOPES"]

DEFAULT_LIMIT = 50
_ID_CHARS = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
_ID_LENGTH = 26


SCOPES = ("agent", "all")
"""What ``scope=`` of the list and the clear may say: this agent's captures (the default), or the whole store's."""


class _Since(Filter):
    """Exchanges whose request began at or after the moment of an id's ``prefix`` (ids sort by it)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, ex: Exchange) -> bool:
        return ex.id >= self.prefix

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.id >= ?)", [self.prefix]

    def __repr__(self) -> str:
        return f"_Since({self.prefix!r})"


class AgentScope:
    """What this agent recorded since it started (``Service.started_at``; ids sort by time): the
    exchanges its recorder stored (its run, ``Recorder.run``), the replays made through its API
    among them (of another tunnel's capture too), and those stored without a run under the name of
    a tunnel it started (``Service.ran``): ``devtunnel replay`` of its captures, a devtunnel of
    schema 11 or before still running on the file. Not what another agent's recorder stored, even
    under the same tunnel name (two agents on one port share the name remembered for it)."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def filter(self) -> Filter:
        """The agent's own exchanges, as a filter."""
        service = self._service
        recorder = service.recorder
        names = dict.fromkeys([*service.ran(), *(t.name for t in service.tunnels())])
        parts: list[Filter] = []
        if recorder is not None:
            parts.append(RecordedBy(recorder.run.id))
        if names:
            parts.append(And([RecordedBy(None), Or([Tunnel(name) for name in names])]))
        if not parts:
            return Not(MatchAll())
        return And([_Since(time_prefix(service.started_at)), Or(parts)])


def _scope(request: Request) -> Filter | None:
    """The ``scope=`` of a list or clear as a filter: this agent's (the default), or None for the whole store."""
    given = request.query_params.getlist("scope")
    if len(given) > 1:  # the last would win: ?scope=agent&scope=all cleared the whole store
        raise ApiError(400, f"scope is given {len(given)} times: give it once, agent (the default) or all")
    value = (given[0] if given else "") or "agent"
    if value not in SCOPES:
        raise ApiError(400, f"scope must be agent (this agent's captures, the default) or all (every capture of "
                            f"the store), not {quoted(value)}")
    if value == "all":
        return None
    scope: AgentScope = request.app.state.scope
    return scope.filter()


def _store(request: Request) -> Store:
    store = service_of(request).store
    if store is None:
        raise ApiError(503, "recording is off: this agent keeps no captures")
    return store


def tunnel_filter(expression: str, tunnel_name: str | None, *also: str) -> Filter:
    """The compiled ``filter=`` expression, narrowed to one tunnel when ``tunnel_name`` is given
    (or to any of ``also``, other names it goes by)."""
    flt = parse(expression)
    if not tunnel_name:
        return flt
    names = dict.fromkeys([tunnel_name, *also])
    return And([Tunnel(tunnel_name) if len(names) == 1 else Or([Tunnel(name) for name in names]), flt])


async def _get(request: Request, exchange_id: str) -> Exchange:
    store = _store(request)
    if len(exchange_id) > _ID_LENGTH:  # no id is longer than 26: a 404 that does not echo a megabyte
        raise NotFoundError(f"no exchange with id {clipped(exchange_id, 40)}")
    exchange: Exchange = await run_in_threadpool(store.get, exchange_id)
    return exchange


def _cursor(request: Request, key: str) -> str | None:
    """``before=`` or ``after=``: an exchange id (26 Crockford base32 characters); it need not be stored still."""
    value = request.query_params.get(key)
    if value is None or value == "":
        return None
    if len(value) != _ID_LENGTH or not set(value.upper()) <= _ID_CHARS:
        raise ApiError(400, f"{key} must be an exchange id (26 characters), not {quoted(value)}")
    return value.upper()


@params("limit", "tunnel_name", "filter", "before", "after", "scope")
async def list_requests(request: Request) -> Response:
    """``GET /api/requests/http?limit=&tunnel_name=&filter=&before=ID|after=ID&scope=agent|all``.

    Newest first, as ngrok lists them; ``before=ID`` pages back from an id (the next page of the
    same order), ``after=ID`` forward from one, oldest first (what arrived since), by keyset: a
    page never repeats or skips an exchange because others arrived meanwhile. This agent's
    captures (``AgentScope``), or with ``scope=all`` the whole store's.
    """
    limit = int_param(request, "limit", DEFAULT_LIMIT, minimum=1)
    before, after = _cursor(request, "before"), _cursor(request, "after")
    if before is not None and after is not None:
        raise ApiError(400, "give before= or after=, not both")
    tunnel_name = request.query_params.get("tunnel_name")
    also: list[str] = []
    if tunnel_name:  # as it is recorded, or as the client named it (My Hooks: my-hooks), stopped since or not
        running = tunnel_named(service_of(request), tunnel_name, aliases_of(request))
        also = [running.name] if running is not None else [tunnel_label(tunnel_name) or tunnel_name]
        also += aliases_of(request).ever(tunnel_name)  # asked for as web, run as myapp
    flt = tunnel_filter(request.query_params.get("filter", ""), tunnel_name, *also)
    scope = _scope(request)
    if scope is not None:
        flt = And([scope, flt])
    store = _store(request)
    # The ids first (no bodies), then each exchange as it is sent: 50 exchanges with 10 MB
    # bodies are 1 GB, which a list read at once held in memory.
    if after is not None:
        rows = await run_in_threadpool(lambda: store.rows_after(flt, after, limit=limit))
    elif before is not None:
        rows = (await run_in_threadpool(lambda: store.rows_before(flt, before, limit=limit)))[::-1]
    else:
        rows = await run_in_threadpool(lambda: store.rows(flt, limit=limit, newest_first=True))
    return ok_list_streamed("requests", _captures_json(store, [row.id for row in rows]), {"uri": REQUESTS_URI})


def _captures_json(store: Store, ids: list[str]) -> Iterator[dict[str, Any]]:
    """``capture_json`` of each exchange, read when it is its turn (skipped if deleted since)."""
    for exchange_id in ids:
        try:
            exchange = store.get(exchange_id)
        except NotFoundError:
            continue  # cleared or pushed out of the store since the list was read
        yield capture_json(exchange)


@params()
async def get_request(request: Request) -> Response:
    """``GET /api/requests/http/{id}``: one exchange (a unique id prefix also works)."""
    exchange = await _get(request, request.path_params["id"])
    return await ok_off_loop(lambda: capture_json(exchange))


@params("scope", unchanged="it forgets this agent's captures (scope=all: every one); nothing was deleted")
async def clear_requests(request: Request) -> Response:
    """``DELETE /api/requests/http?scope=agent|all``: forget this agent's captures (``AgentScope``),
    or with ``scope=all`` every capture of the store.

    It takes no other parameter: ``?tunnel_name=payments`` or ``?filter=...`` reads as forgetting
    some, and ignored it forgot more, so any is a 400 and nothing is deleted (``params``)."""
    scope = _scope(request)
    store = _store(request)
    await run_in_threadpool(store.clear if scope is None else lambda: store.clear_matching(scope))
    return no_content()


def replay_edit(data: dict[str, Any]) -> Edit | None:
    """The ``Edit`` described by a replay request body (None when nothing is edited).

    The body is ``Edit.to_json``'s form (``method``, ``path``, ``headers``, ``set_headers``,
    ``remove_headers``, ``body`` or ``body_base64``, ``set``, ``as_captured``, ``sign_unverified``) plus ``to``; a bad
    field is a 400 that names it.
    """
    edit = Edit.from_json(data, allow=("to",))  # ReplayError: a 400, and nothing is sent
    return None if edit.is_empty else edit


def _live_tunnel(request: Request, name: str) -> TunnelInfo | None:
    """The running tunnel named ``name`` (or ``name`` made a DNS label: ``tunnel_named``), or None."""
    return tunnel_named(service_of(request), name, aliases_of(request))


async def _replay_and_store(request: Request, original: Exchange, to: str | None, edit: Edit | None,
                            tunnel: TunnelInfo | None = None) -> Exchange:
    """Replay ``original`` to ``to`` (else its target), or through ``tunnel`` (ngrok's ``tunnel_name``:
    recorded as that tunnel's, under its name, still a replay of ``original``), and store it."""
    through = tunnel
    # Replay as the tunnel forwards: with its Host handling when it is still running.
    tunnel = tunnel or _live_tunnel(request, original.tunnel)
    if to is None and not original.target_url and tunnel is not None:
        # A request a rule at the relay answered never reached a local service: it goes where
        # the tunnel would have sent it (the drill's 500s, replayed once the handler is fixed).
        to = tunnel.target_url
    config = tunnel.config if tunnel is not None else None
    host_header: Literal["preserve", "rewrite"] = (
        "rewrite" if config is not None and config.host_header == "rewrite" else "preserve")
    # An --insecure tunnel to a self-signed https target is replayed the same way.
    verify = not (config is not None and config.insecure)
    service = service_of(request)
    gate = _gate_for(service, tunnel, to if to is not None else original.target_url)
    # Webhook deliveries are signed afresh with the secrets the agent was started with.
    if gate is None:
        result = await replay(original, to=to, edit=edit, host_header=host_header, verify=verify,
                              webhooks=service.webhooks)
    else:
        result = await _replay_held(gate, original, to=to, edit=edit, host_header=host_header, verify=verify,
                                    webhooks=service.webhooks)
    if through is not None:  # listed and counted under the tunnel it went through, as ngrok does
        result.tunnel = through.name
    service.tell_exchange(result)  # the headless log's line, marked as a replay
    recorder = service.recorder
    try:
        if recorder is not None:
            # Through the recorder, so /api/events announces it and it is stored as this agent's (its
            # run: ``AgentScope``); flushed, so the id can be read at once.
            recorder.submit(result)
            await run_in_threadpool(recorder.flush)
        else:
            await run_in_threadpool(_store(request).put, result)
    except StoreError as exc:  # it went out all the same: not a failure to replay
        raise not_recorded([result], exc) from exc
    return result


def _gate_for(service: Service, tunnel: TunnelInfo | None, destination: str) -> HoldGate | None:
    """The gate a replay to ``destination`` waits at: ``tunnel``'s when it holds requests and
    ``destination`` is its target (a replay sent elsewhere with ``to`` does not wait), else None."""
    if tunnel is None:
        return None
    gate = service.hold_gate(tunnel.name)
    if gate is None or gate.hold <= 0:
        return None
    here = origin(destination)
    return gate if here is not None and here == origin(tunnel.target_url) else None


REPLAY_TIMEOUT = 30.0
"""Seconds for each network step of a replay (``replay``'s default); a wait at the gate is not one."""


async def _replay_held(gate: HoldGate, original: Exchange, *, verify: bool, **options: Any) -> Exchange:
    """``replay`` of ``original`` to its tunnel's target, sent once ``gate`` lets it (``HoldGate.turn``):
    while the app is down or restarting it waits, at most the hold, as the tunnel's requests do.
    The result says how long it was held (``held``); one the hold ran out on was not sent, and is
    recorded with the error and reason a held request of the tunnel gets (``app_restarting``)."""
    import httpx  # loaded when a replay is sent, not before (``devtunnel.replay`` says why)

    waited = HeldFor()
    expired: list[HoldExpired] = []

    class AtTheGate(httpx.AsyncBaseTransport):
        """httpx's own transport, behind the tunnel's gate."""

        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport(verify=verify, trust_env=False)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            url = request.url
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                async with gate.turn(url.host, port, waited):
                    return await self.inner.handle_async_request(request)  # the turn ends with its head
            except HoldExpired as exc:
                expired.append(exc)
                raise httpx.ConnectError(str(exc), request=request) from exc  # nothing was sent

        async def aclose(self) -> None:
            await self.inner.aclose()

    async with httpx.AsyncClient(timeout=REPLAY_TIMEOUT, verify=verify, trust_env=False,
                                 transport=AtTheGate()) as client:
        result = await replay(original, client=client, **options)
    result.held = waited.held
    if expired:
        result.error, result.error_message = "app_restarting", str(expired[0])
    return result


_NGROK_REPLAY_FIELDS = frozenset({"id", "tunnel_name"})


@params(unchanged="nothing was sent")
async def replay_ngrok(request: Request) -> Response:
    """``POST /api/requests/http`` ``{"id", "tunnel_name"}``: replay as ngrok does (204).

    With ``tunnel_name`` the request goes to that tunnel's current target.
    """
    data = await json_body(request)
    unknown = unknown_fields(data, _NGROK_REPLAY_FIELDS)
    if unknown is not None:  # a misspelt tunnel_name would send the request to its own target instead
        raise ApiError(400, f"{unknown}: ngrok's replay takes id and tunnel_name (edits: POST "
                            f"{REQUESTS_URI}/ID/replay); nothing was sent")
    exchange_id = str_field(data, "id", required=True) or ""
    if not exchange_id:
        raise ApiError(400, "the field 'id' must be an exchange id, not empty; nothing was sent")
    tunnel_name = str_field(data, "tunnel_name")
    tunnel = None
    if tunnel_name:
        tunnel = _live_tunnel(request, tunnel_name)
        if tunnel is None:
            raise NotFoundError(f"no tunnel named {quoted(tunnel_name)}")
    original = await _get(request, exchange_id)
    await _replay_and_store(request, original, tunnel.target_url if tunnel else None, None, tunnel)
    return no_content()


@params(unchanged="nothing was sent")
async def replay_with_edits(request: Request) -> Response:
    """``POST /api/requests/http/{id}/replay``: replay with optional edits; 201 with the new exchange.

    Its ``signature`` field says why a webhook delivery's signature was not refreshed (``not
    refreshed: set STRIPE_WEBHOOK_SECRET``), or what to doubt about it; null otherwise.
    """
    data = await json_body(request, required=False)
    edit = replay_edit(data)
    to = str_field(data, "to")
    if to is not None and not to.startswith(("http://", "https://")):
        raise ApiError(400, f"to must be an http:// or https:// URL, not {quoted(to)}")
    original = await _get(request, request.path_params["id"])
    result = await _replay_and_store(request, original, to, edit)
    # The notice names the API's field to sign anyway, where the CLI's names its flag.
    notice = notice_for(result.signature_notice.removeprefix("signature "), "api") or None
    return await ok_off_loop(lambda: {**capture_json(result), "signature": notice}, status_code=201)


@params("format", "redact", "to", "local")
async def export_request(request: Request) -> Response:
    """``GET /api/requests/http/{id}/export?format=curl|har|raw|httpie&redact=&to=URL&local=``.

    ``redact=true`` replaces credentials, signatures and secret fields (``export.redact``);
    ``to=URL`` sends the request to that base URL and ``local=true`` to the local service the
    exchange was forwarded to, instead of its public URL (curl, httpie and har). Answers
    ``{"format", "text", "files"}`` where ``files`` maps each side file the text refers to (a
    binary body for curl's ``--data-binary @file``) to its base64 content.
    """
    fmt = request.query_params.get("format", "curl")
    if fmt not in EXPORTERS:
        raise ApiError(400, f"unknown format {quoted(fmt)}; use one of {', '.join(sorted(EXPORTERS))}")
    options: dict[str, object] = {"redact": True} if flag_param(request, "redact") else {}
    to = request.query_params.get("to")
    local = flag_param(request, "local")
    if to is not None or local:
        if "base_url" not in options_of(fmt):
            raise ApiError(400, f"the {fmt} format names no URL: to= and local= apply to curl, httpie and har")
        options.update({"base_url": to} if to is not None else {"local": True})
        if to is not None and local:
            raise ApiError(400, "give to= or local=true, not both")
    if "webhooks" in options_of(fmt):  # pytest: signed from the variables the agent's config names
        options["webhooks"] = service_of(request).webhooks
    exchange = await _get(request, request.path_params["id"])

    def build() -> dict[str, Any]:
        result = export(fmt, [exchange], **options)
        files = {name: base64.b64encode(data).decode("ascii") for name, data in result.files.items()}
        return {"format": fmt, "text": result.text, "files": files}

    return await ok_off_loop(build)


def _section_json(section: SectionDiff) -> dict[str, Any]:
    out: dict[str, Any] = {
        "title": section.title,
        "kind": section.kind,
        "identical": section.identical,
        "lines": [[line.tag, line.text] for line in section.lines],
    }
    if section.kind == "binary":
        out.update(size_a=section.size_a, size_b=section.size_b, sha_a=section.sha_a, sha_b=section.sha_b,
                   first_difference=section.first_difference)
    return out


_SIDES: dict[str, Literal["both", "request", "response"]] = {"both": "both", "request": "request", "response": "response"}


@params("a", "b", "side", "ignore")
async def diff_requests(request: Request) -> Response:
    """``GET /api/diff?a=&b=&side=both|request|response&ignore=PATH`` (ignore repeatable or comma-separated)."""
    a_id = request.query_params.get("a")
    b_id = request.query_params.get("b")
    if not a_id or not b_id:
        raise ApiError(400, "give two exchange ids as a= and b=")
    text = request.query_params.get("side", "both")
    side = _SIDES.get(text)
    if side is None:
        raise ApiError(400, f"side must be both, request or response, not {quoted(text)}")
    ignore = tuple(p for value in request.query_params.getlist("ignore") for p in value.split(",") if p)
    a = await _get(request, a_id)
    b = await _get(request, b_id)

    def build() -> dict[str, Any]:
        result = diff_exchanges(a, b, side=side, ignore=ignore)
        sections = [_section_json(s) for s in result.sections]
        return {
            "a": a.id,
            "b": b.id,
            "identical": all(s["identical"] for s in sections),
            "unified": render_unified(result),
            "sections": sections,
        }

    return await ok_off_loop(build)


routes = [
    Route(REQUESTS_URI, list_requests, methods=["GET"]),
    Route(REQUESTS_URI, replay_ngrok, methods=["POST"]),
    Route(REQUESTS_URI, clear_requests, methods=["DELETE"]),
    Route(REQUESTS_URI + "/{id}", get_request, methods=["GET"]),
    Route(REQUESTS_URI + "/{id}/replay", replay_with_edits, methods=["POST"]),
    Route(REQUESTS_URI + "/{id}/export", export_request, methods=["GET"]),
    Route("/api/diff", diff_requests, methods=["GET"]),
]
