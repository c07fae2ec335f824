"""ngrok's v3 endpoints resource on the agent API, beside the tunnels resource.

Current ngrok clients (pyngrok with ``config_version="3"``, the agent SDKs' scripts) talk to
``/api/endpoints`` instead of ``/api/tunnels``. An endpoint here is the same running tunnel seen
through that resource: starting one shows in ``/api/tunnels``, the inspector and the relay, and
stopping either stops both.

::

    GET    /api/endpoints           {"endpoints": [...], "uri": "/api/endpoints"}
    POST   /api/endpoints           {"name", "url", "upstream": {"url"}} -> 201 endpoint
    GET    /api/endpoints/{name}    one endpoint, with ``metrics``
    DELETE /api/endpoints/{name}    stop it (204)
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devtunnel.agent.config import TunnelConfig
from devtunnel.api.plumbing import (
    REFUSED_OPTIONS,
    ApiError,
    aliases_of,
    json_body,
    no_content,
    ok,
    ngrok_rules,
    params,
    refuse_name_in_use,
    refuse_unsupported,
    requested_name,
    say_if_not_https,
    str_field,
    tunnel_of,
    tunnel_options,
)
from devtunnel.api.service import service_of
from devtunnel.export.agent_json import ENDPOINTS_URI, endpoint_json
from devtunnel.values.terminal import quoted

__all__ = ["routes", "REFUSED_OPTIONS"]


def _upstream(data: dict[str, Any]) -> str:
    upstream = data.get("upstream")
    if upstream is None:
        addr = str_field(data, "addr")
        if addr is None:
            raise ApiError(400, "the field 'upstream' is required, e.g. {\"upstream\": {\"url\": \"http://localhost:8080\"}}")
        return addr
    if isinstance(upstream, (str, int)) and not isinstance(upstream, bool):
        return str(upstream)
    if not isinstance(upstream, dict):
        raise ApiError(400, "the field 'upstream' must be an object with a 'url'")
    url = str_field(upstream, "url", required=True) or ""
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise ApiError(400, f"upstream url {quoted(url)}: only http and https upstreams are supported")
    return url


@params()
async def list_endpoints(request: Request) -> Response:
    """``GET /api/endpoints``."""
    return ok({"endpoints": [endpoint_json(t) for t in service_of(request).tunnels()], "uri": ENDPOINTS_URI})


@params(unchanged="nothing was started")
async def start_endpoint(request: Request) -> Response:
    """``POST /api/endpoints`` with ngrok's v3 fields: 201 with the endpoint."""
    data = await json_body(request)
    refuse_unsupported(data, "endpoint")
    # pyngrok's connect(8080, domain="payments.ngrok.app") sends the domain beside a generated
    # name: the public address asked for names the tunnel, whichever key carries it.
    name = requested_name(data, "endpoint")
    refuse_name_in_use(request, data, name, "endpoint")
    target = _upstream(data)
    rules = ngrok_rules(data, "endpoint")  # ngrok's basic auth, IP restrictions and header edits, at the relay
    config = TunnelConfig(target=target, name=name, rules=rules, **tunnel_options(data))
    info = say_if_not_https(service_of(request), data, await service_of(request).start_tunnel(config))
    aliases_of(request).add(str_field(data, "name"), info.name)  # GET /api/endpoints/NAME as it was asked for
    return ok(endpoint_json(info), status_code=201)


@params()
async def get_endpoint(request: Request) -> Response:
    """``GET /api/endpoints/{name}``."""
    return ok(endpoint_json(tunnel_of(request, "endpoint")))


@params(unchanged="nothing was stopped")
async def stop_endpoint(request: Request) -> Response:
    """``DELETE /api/endpoints/{name}`` (204)."""
    service = service_of(request)
    await service.stop_tunnel(tunnel_of(request, "endpoint").name)
    return no_content()


routes = [
    Route(ENDPOINTS_URI, list_endpoints, methods=["GET"]),
    Route(ENDPOINTS_URI, start_endpoint, methods=["POST"]),
    Route(ENDPOINTS_URI + "/{name}", get_endpoint, methods=["GET"]),
    Route(ENDPOINTS_URI + "/{name}", stop_endpoint, methods=["DELETE"]),
]
