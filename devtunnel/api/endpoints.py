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

from devtunnel.errors import ConfigError
from devtunnel.agent.config import TunnelConfig
from devtunnel.api.plumbing import (
    REFUSED_OPTIONS,
    ApiError,
    find_tunnel,
    json_body,
    no_content,
    ok,
    ngrok_rules,
    refuse_unsupported,
    str_field,
    tunnel_label,
    tunnel_options,
)
from devtunnel.api.service import service_of
from devtunnel.export.agent_json import ENDPOINTS_URI, endpoint_json
from devtunnel.values.names import validate_name
from devtunnel.values.ngrok_keys import url_first_label
from devtunnel.values.terminal import quoted

__all__ = ["routes", "endpoint_name", "REFUSED_OPTIONS"]


def endpoint_name(name: str | None, url: str | None) -> str | None:
    """The tunnel name for an endpoint asked for with ``name`` and a public ``url``.

    The first label of the URL's host wins (``https://payments.ngrok.app`` -> ``payments``): it
    is the public address the caller wants. Otherwise ``name``, made a valid DNS label if it is
    not one (pyngrok names endpoints ``http-8080-<uuid>``). None lets the agent pick one.

    Raises:
        ApiError: the URL is not an http(s) URL.
    """
    if url:
        try:
            scheme, label = url_first_label(url)
        except ValueError as exc:  # an unclosed "[" of an IPv6 address
            raise ApiError(400, f"url {quoted(url)}: {exc}") from None
        if scheme not in ("http", "https"):
            raise ApiError(400, f"only http and https endpoints are supported, not {scheme}://")
        if label:
            try:
                return validate_name(label)
            except ConfigError as exc:
                raise ApiError(400, f"url {quoted(url)}: {exc}") from None
    return tunnel_label(name)


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


async def list_endpoints(request: Request) -> Response:
    """``GET /api/endpoints``."""
    return ok({"endpoints": [endpoint_json(t) for t in service_of(request).tunnels()], "uri": ENDPOINTS_URI})


async def start_endpoint(request: Request) -> Response:
    """``POST /api/endpoints`` with ngrok's v3 fields: 201 with the endpoint."""
    data = await json_body(request)
    refuse_unsupported(data, "endpoint")
    # pyngrok's connect(8080, domain="payments.ngrok.app") sends the domain beside a generated
    # name: the public address asked for names the tunnel, whichever key carries it.
    url = str_field(data, "url") or str_field(data, "domain") or str_field(data, "hostname")
    name = endpoint_name(str_field(data, "name"), url)
    target = _upstream(data)
    rules = ngrok_rules(data, "endpoint")  # ngrok's basic auth and IP restrictions, at the relay
    config = TunnelConfig(target=target, name=name, rules=rules, **tunnel_options(data))
    info = await service_of(request).start_tunnel(config)
    return ok(endpoint_json(info), status_code=201)


async def get_endpoint(request: Request) -> Response:
    """``GET /api/endpoints/{name}``."""
    return ok(endpoint_json(find_tunnel(service_of(request), request.path_params["name"], "endpoint")))


async def stop_endpoint(request: Request) -> Response:
    """``DELETE /api/endpoints/{name}`` (204)."""
    service = service_of(request)
    await service.stop_tunnel(find_tunnel(service, request.path_params["name"], "endpoint").name)
    return no_content()


routes = [
    Route(ENDPOINTS_URI, list_endpoints, methods=["GET"]),
    Route(ENDPOINTS_URI, start_endpoint, methods=["POST"]),
    Route(ENDPOINTS_URI + "/{name}", get_endpoint, methods=["GET"]),
    Route(ENDPOINTS_URI + "/{name}", stop_endpoint, methods=["DELETE"]),
]
