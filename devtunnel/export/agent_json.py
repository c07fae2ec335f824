"""JSON shapes of the agent API, matching ngrok's agent API so its scripts keep working.

Pure functions from our model to plain ``dict``s; the API and ``devtunnel show --json`` share them.
ngrok's conventions kept here: ``duration`` in nanoseconds, ``start`` in ISO 8601 with the
local offset, headers as ``{name: [values]}``, ``raw`` as base64 of the whole HTTP/1.1 message.
devtunnel adds fields beside ngrok's (never renaming one), which ngrok's clients ignore.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, Protocol
from urllib.parse import quote

from devtunnel.capture.model import Exchange, Response, held_json
from devtunnel.export.assemble import reason_of, request_bytes, response_bytes
from devtunnel.values.terminal import escape

__all__ = [
    "REQUESTS_URI",
    "TUNNELS_URI",
    "capture_uri",
    "tunnel_uri",
    "raw_request",
    "raw_response",
    "capture_json",
    "tunnel_json",
    "endpoint_json",
    "ENDPOINTS_URI",
    "error_json",
]

REQUESTS_URI = "/api/requests/http"
TUNNELS_URI = "/api/tunnels"
ENDPOINTS_URI = "/api/endpoints"


def capture_uri(exchange_id: str) -> str:
    """The API path of one captured exchange."""
    return f"{REQUESTS_URI}/{quote(exchange_id, safe='')}"


def tunnel_uri(name: str) -> str:
    """The API path of one tunnel."""
    return f"{TUNNELS_URI}/{quote(name, safe='')}"


# One assembler for the API's ``raw`` fields and the raw export: bodies framed as on the wire.
raw_request = request_bytes
raw_response = response_bytes


def status_text(response: Response) -> str:
    """``"404 Not Found"``: the status with the captured reason (or the standard one), the reason
    read as UTF-8 with any other byte as U+FFFD (``Response.reason_json``: the JSON always encodes;
    ``raw`` has the bytes)."""
    return f"{response.status} {response.reason_json or reason_of(response)}".rstrip()


def iso_time(epoch: float) -> str:
    """Seconds since the epoch as ISO 8601 with the local UTC offset (ngrok's ``start``)."""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="microseconds")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def capture_json(exchange: Exchange) -> dict[str, Any]:
    """One exchange in ngrok's captured-request shape, plus devtunnel's fields.

    ngrok's fields: ``uri id tunnel_name remote_addr start duration request response``.
    devtunnel adds ``replay_of``, ``edited``, ``resigned``, ``error``, ``error_message``, ``target_url``, ``websocket``,
    ``webhook`` (the verdict: ``provider event_type delivery_id signature reason duplicate_of``, or
    null when no webhook provider recognised the request), ``held_ms`` and ``holding`` (how long the
    request waited for the app devtunnel runs, ``--hold``, and whether it waits still: ``held_json``),
    in each message ``body_size``, ``body_truncated`` and ``body_budget_cut`` (the body was cut
    because the agent kept no more for the requests in flight, ``--body-budget``, not at the body
    cap), and for a WebSocket session ``ws_close_code`` and ``ws_messages`` (``sender opcode time
    size payload budget_cut``; ``time`` in seconds since the epoch, ``payload`` the recorded part
    in base64, ``size`` the real size, ``budget_cut`` as ``body_budget_cut``).
    """
    req = exchange.request
    resp = exchange.response
    out: dict[str, Any] = {
        "uri": capture_uri(exchange.id),
        "id": exchange.id,
        "tunnel_name": exchange.tunnel,
        "remote_addr": exchange.remote_addr,
        "start": iso_time(exchange.started_at),
        "duration": 0 if exchange.duration is None else round(exchange.duration * 1e9),
        "request": {
            "method": req.method,
            "proto": f"HTTP/{req.http_version}",
            "headers": req.headers.as_multidict(),
            "uri": req.url_text,
            "raw": _b64(raw_request(req)),
            "body_size": req.body_size,
            "body_truncated": req.body_truncated,
            "body_budget_cut": req.body_budget_cut,
        },
        "response": None,
        "replay_of": exchange.replay_of,
        "edited": exchange.edited,
        "rule": None if exchange.rule is None else exchange.rule.to_json(),
        "resigned": exchange.resigned,
        "error": exchange.error,
        "error_message": exchange.error_message,
        "target_url": exchange.target_url,
        "websocket": exchange.websocket,
        "webhook": None if exchange.webhook is None else exchange.webhook.to_json(),
        **held_json(exchange.held, exchange.holding),
    }
    if resp is not None:
        out["response"] = {
            "status": status_text(resp),
            "status_code": resp.status,
            "proto": f"HTTP/{resp.http_version}",
            "headers": resp.headers.as_multidict(),
            "raw": _b64(raw_response(resp)),
            "body_size": resp.body_size,
            "body_truncated": resp.body_truncated,
            "body_budget_cut": resp.body_budget_cut,
        }
    if exchange.websocket:
        out["ws_close_code"] = exchange.ws_close_code
        out["ws_messages"] = [
            {"sender": m.sender, "opcode": m.opcode, "time": m.time, "size": m.size, "payload": _b64(m.payload),
             "budget_cut": bool(m.cut_why)}
            for m in exchange.ws_messages
        ]
    return out


class ViaFacts(Protocol):
    """What ``tunnel_json`` reads of a tunnel's public-URL provider (``agent.via_runner.ViaStatus``)."""

    @property
    def provider(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def url(self) -> str | None: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def restarts(self) -> int: ...
    @property
    def message(self) -> str: ...
    @property
    def port(self) -> int | None: ...


class PoolFacts(Protocol):
    """What ``tunnel_json`` reads of a tunnel's configuration (``agent.config.TunnelConfig``)."""

    @property
    def pool(self) -> bool: ...

    @property
    def record(self) -> bool: ...

    @property
    def table(self) -> str | None: ...

    @property
    def hold(self) -> float: ...


class TunnelFacts(Protocol):
    """What ``tunnel_json`` reads of a tunnel (``agent.info.TunnelInfo``; the pure core cannot
    import the agent, so the shape is named here and mypy checks that the agent's type has it)."""

    @property
    def name(self) -> str: ...
    @property
    def public_url(self) -> str | None: ...
    @property
    def target_url(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def next_retry_at(self) -> float | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def requests(self) -> int: ...
    @property
    def config(self) -> PoolFacts | None: ...
    @property
    def via(self) -> ViaFacts | None: ...
    @property
    def pool_members(self) -> int | None: ...
    @property
    def app(self) -> Mapping[str, Any] | None: ...
    @property
    def waiting(self) -> int: ...
    @property
    def hints(self) -> Sequence[str]: ...


def tunnel_json(info: TunnelFacts) -> dict[str, Any]:
    """A ``TunnelInfo`` in ngrok's tunnel shape, plus devtunnel's ``state``, ``error``, ``next_retry_at``
    and ``via`` (the public URL's provider and its process, or null); and ``pool``;
    and ``app`` (the app devtunnel runs for the tunnel: ``command state pid restarts exit_code message
    since health hold log_lines waiting ready_count``, or null); ``waiting``, the requests held right now
    (``--hold``: for the app, or for a target that refuses); ``hold``, the tunnel's hold (``_hold_json``),
    with ``--run`` or without; and ``hints``, the lines the agent's log said about a dev server refusing
    the tunnel (``Vite refused the Host ...``), oldest first.

    ``pool`` is null for a tunnel holding its name alone; for one sharing it (``--pool``) it is
    ``{"members": N}``, the agents sharing the name as the relay last said (null while offline).
    ``config.inspect`` is false for a tunnel whose exchanges are not recorded (ngrok's ``inspect``);
    ``config.table`` is the ``[tunnels.NAME]`` of devtunnel.toml it was started from, or null.
    ``metrics.http.count`` is the number of requests the tunnel has carried; devtunnel does not
    keep ngrok's moving rates and percentiles, so those are left out rather than faked.
    ``error`` reads as the log line saying it: escaped (``values.terminal.escape``), since it may
    quote what a relay said; so are ``hints``, which quote what a local service answered, and the
    ``message`` of ``via`` and of ``app``, which quote what the provider's program or the app printed.
    """
    public_url = info.public_url or ""
    return {
        "name": info.name,
        "uri": tunnel_uri(info.name),
        "public_url": public_url,
        "proto": "https" if public_url.startswith("https:") else "http",
        "config": {"addr": info.target_url, "inspect": info.config.record if info.config is not None else True,
                   "table": info.config.table if info.config is not None else None},
        "metrics": {"http": {"count": info.requests}},
        "state": str(info.state.value) if isinstance(info.state, Enum) else info.state,
        "error": escape(info.error) if info.error else None,
        "next_retry_at": info.next_retry_at,
        "via": _via_json(info.via),
        "pool": None if info.config is None or not info.config.pool else {"members": info.pool_members},
        "app": None if info.app is None else _app_json(info.app),
        "waiting": info.waiting,
        "hold": _hold_json(info),
        "hints": [escape(line) for line in info.hints],
    }


def _hold_json(info: TunnelFacts) -> dict[str, Any] | None:
    """``{"timeout": S, "waiting": N}``: the seconds a request waits at most while the tunnel's app
    (``--run``) is down or its target refuses, and the requests waiting now; null without a hold.

    Nothing says whether the target is up: the agent learns it only when a request finds it
    refusing (a client probes it, as ``devtunnel replay`` does), and the app's state is ``app``'s."""
    if info.config is not None:
        hold: object = info.config.hold
    else:  # (a snapshot without its configuration: the app's, if any)
        hold = info.app.get("hold") if info.app is not None else None
    if not isinstance(hold, int | float) or isinstance(hold, bool) or not hold > 0:
        return None
    return {"timeout": float(hold), "waiting": info.waiting}


def _via_json(status: ViaFacts | None) -> dict[str, Any] | None:
    if status is None:
        return None
    return {
        "provider": status.provider,
        "state": status.state,
        "url": status.url,
        "pid": status.pid,
        "restarts": status.restarts,
        "message": escape(status.message) if status.message else None,  # it may quote the provider's output
        "local_port": status.port,
    }


def _app_json(app: Mapping[str, Any]) -> dict[str, Any]:
    """The ``app`` object, its ``message`` escaped as ``error`` is: it may quote the app's last line on stderr."""
    out = dict(app)
    if isinstance(out.get("message"), str):
        out["message"] = escape(out["message"])
    return out



def endpoint_json(info: TunnelFacts) -> dict[str, Any]:
    """A ``TunnelInfo`` in the shape of ngrok's v3 endpoints resource, beside the tunnel fields.

    ngrok's v3 agents answer ``url`` and ``upstream.url``; v2 clients read ``public_url`` and
    ``config.addr``. Both are here, so a client of either generation finds what it reads.
    """
    out = tunnel_json(info)
    out["uri"] = f"{ENDPOINTS_URI}/{quote(info.name, safe='')}"
    out["url"] = out["public_url"]
    out["upstream"] = {"url": info.target_url, "protocol": "http1"}
    return out


# Stable numeric codes, one per kind of failure (documented in docs/api.md).
ERROR_CODES = {400: 100, 403: 101, 404: 102, 405: 103, 409: 104, 413: 105, 415: 106, 500: 107, 502: 108, 503: 109}


def error_json(status_code: int, msg: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """ngrok's error body: ``{"error_code", "status_code", "msg", "details"}``."""
    return {
        "error_code": ERROR_CODES.get(status_code, 100 if status_code < 500 else 107),
        "status_code": status_code,
        "msg": msg,
        "details": details or {},
    }
