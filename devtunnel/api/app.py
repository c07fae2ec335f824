"""The agent API on 127.0.0.1:4040, shaped like ngrok's agent API so its scripts keep working.

ngrok's routes::

    GET    /api/tunnels                   {"tunnels": [...], "uri"}
    POST   /api/tunnels                   {"addr", "name", "proto": "http", "subdomain"|"hostname"|"domain"|"url"} -> 201 tunnel
    GET    /api/tunnels/{name}            one tunnel (also as "{name} (http)", and by the name it was asked for)
    DELETE /api/tunnels/{name}            stop it (204)
    GET    /api/tunnels/{name}/logs       the output of the app it runs (?follow=1, ?contains=, ?limit=)
    GET|POST /api/endpoints, GET|DELETE /api/endpoints/{name}   the same tunnels as ngrok v3's endpoints
    GET    /api/requests/http             ?limit=&tunnel_name=&scope= -> {"requests": [...], "uri"} (this agent's)
    GET    /api/requests/http/{id}        one captured exchange
    POST   /api/requests/http             {"id", "tunnel_name"} replays it (204)
    DELETE /api/requests/http             forget this agent's captures (?scope=all: every one) (204)

devtunnel's additions: ``POST /api/tunnels/{name}/restart``, ``filter=`` on the list, ``POST /api/requests/http/{id}/replay`` with
edits, ``GET /api/requests/http/{id}/export``, ``GET /api/diff``, ``GET /api/status`` and the
``/api/events`` WebSocket, and a tunnel's rules at ``/api/tunnels/{name}/rules`` (``api_rules``). The reference with examples is docs/api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from devtunnel import __version__
from devtunnel.errors import ConfigError
from devtunnel.sockets import bind_free
from devtunnel.api import captures as api_captures, endpoints as api_endpoints, logs as api_logs, rules as api_rules
from devtunnel.agent.config import TunnelConfig
from devtunnel.api.events import EventHub, not_a_websocket
from devtunnel.api.plumbing import (
    EXCEPTION_HANDLERS,
    TunnelAliases,
    aliases_of,
    json_body,
    no_content,
    ok,
    params,
    ngrok_rules,
    refuse_name_in_use,
    refuse_unsupported,
    requested_name,
    say_if_not_https,
    str_field,
    tunnel_label,
    tunnel_named,
    tunnel_of,
    tunnel_options,
)
from devtunnel.api.security import ApiHttpProtocol, LoopbackOnly
from devtunnel.api.service import Service, service_of
from devtunnel.export.agent_json import ENDPOINTS_URI, REQUESTS_URI, TUNNELS_URI, tunnel_json

__all__ = ["api_socket", "create_app", "serve_api", "ApiServer", "PORT_TRIES"]

PORT_TRIES = 100
"""How many ports from the requested one ``serve_api`` tries before giving up."""

START_TIMEOUT = 10.0
"""Seconds ``serve_api`` gives uvicorn to listen on the bound socket (it takes milliseconds)."""


@params()
async def root(request: Request) -> Response:
    """``GET /api``: where the resources are."""
    return ok({"uri": "/api", "tunnels": TUNNELS_URI, "endpoints": ENDPOINTS_URI, "requests": REQUESTS_URI,
               "status": "/api/status", "events": "/api/events"})


@params()
async def list_tunnels(request: Request) -> Response:
    """``GET /api/tunnels``."""
    return ok({"tunnels": [tunnel_json(t) for t in service_of(request).tunnels()], "uri": TUNNELS_URI})


@params(unchanged="nothing was started")
async def start_tunnel(request: Request) -> Response:
    """``POST /api/tunnels`` ``{"addr", "name", "proto": "http", "host_header", "relay", "via"}``: 201 with the tunnel."""
    data = await json_body(request)
    refuse_unsupported(data, "tunnel")
    addr = str_field(data, "addr", required=True) or ""
    name = requested_name(data, "tunnel")  # subdomain, hostname, domain or url, else name
    refuse_name_in_use(request, data, name, "tunnel")
    rules = ngrok_rules(data, "tunnel")  # ngrok's basic auth, IP restrictions and header edits, at the relay
    config = TunnelConfig(target=addr, name=name, rules=rules, **tunnel_options(data))
    info = say_if_not_https(service_of(request), data, await service_of(request).start_tunnel(config))
    aliases_of(request).add(str_field(data, "name"), info.name)  # GET /api/tunnels/NAME as it was asked for
    return ok(tunnel_json(info), status_code=201)


@params()
async def get_tunnel(request: Request) -> Response:
    """``GET /api/tunnels/{name}``."""
    return ok(tunnel_json(tunnel_of(request)))


@params(unchanged="nothing was stopped")
async def stop_tunnel(request: Request) -> Response:
    """``DELETE /api/tunnels/{name}`` (204)."""
    service = service_of(request)
    await service.stop_tunnel(tunnel_of(request).name)
    return no_content()


@params(unchanged="nothing was restarted")
async def restart_tunnel(request: Request) -> Response:
    """``POST /api/tunnels/{name}/restart``: connect to the relay again now and start its app again,
    every setting kept; a tunnel stopped here (``DELETE``) is started again so. 200 with the tunnel."""
    service = service_of(request)
    # A running tunnel by any of its names (``tunnel_of``), or a stopped one by its own (kept settings).
    name = request.path_params["name"]
    running = tunnel_named(service, name, aliases_of(request))
    return ok(tunnel_json(await service.restart_tunnel(running.name if running is not None else tunnel_label(name) or name)))


@params()
async def status(request: Request) -> Response:
    """``GET /api/status``: version, tunnels, capture count and database, connected event clients,
    the bytes of bodies the requests in flight keep (``body_budget``: ``used`` of ``limit``,
    ``--body-budget``); ``status`` and ``agent_version`` as ngrok's agent has them (pyngrok's
    ``get_agent_status``)."""
    service = service_of(request)
    store = service.store
    count = await run_in_threadpool(store.count) if store is not None else 0
    budget = service.budget
    return ok(
        {
            "uri": "/api/status",
            "status": "online",
            "agent_version": __version__,
            "version": __version__,
            "tunnels": [tunnel_json(t) for t in service.tunnels()],
            "requests": count,
            "db": str(store.path) if store is not None else None,
            "recording": service.recorder is not None,
            "event_clients": request.app.state.events.clients,
            "body_budget": {"limit": budget.limit, "used": budget.used},
        }
    )


async def events(websocket: WebSocket) -> None:
    """``/api/events``: the change feed (see ``devtunnel.api.events``)."""
    await websocket.app.state.events.serve(websocket)


class TrailingSlash:
    """ASGI middleware: ``/api/tunnels/`` is ``/api/tunnels``, as on ngrok's agent, where scripts
    read it (``curl -s localhost:4040/api/tunnels/ | jq ...``): Starlette answered a bodiless 307
    to the path without the slash, which curl does not follow unless told and pyngrok's urllib
    does not follow for a POST."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] in ("http", "websocket") and len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)


def create_app(service: Service, *, events_interval: float = 0.1, events_max_ids: int = 1000) -> Starlette:
    """The agent API as an ASGI app over ``service`` (an ``AgentService``).

    Args:
        service: what the routes use of the agent (``devtunnel.api.service.Service``); its
            ``store`` and ``recorder`` may be None when recording is off.
        events_interval: least seconds between two ``/api/events`` messages to one client.
        events_max_ids: ids pending for one client before it is sent a resync instead.
    """
    routes = [
        Route("/api", root, methods=["GET"]),
        Route(TUNNELS_URI, list_tunnels, methods=["GET"]),
        Route(TUNNELS_URI, start_tunnel, methods=["POST"]),
        Route(TUNNELS_URI + "/{name}", get_tunnel, methods=["GET"]),
        Route(TUNNELS_URI + "/{name}", stop_tunnel, methods=["DELETE"]),
        Route(TUNNELS_URI + "/{name}/restart", restart_tunnel, methods=["POST"]),
        *api_logs.routes,
        *api_endpoints.routes,
        *api_rules.routes,
        *api_captures.routes,
        Route("/api/status", status, methods=["GET"]),
        WebSocketRoute("/api/events", events),
        Route("/api/events", not_a_websocket, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(LoopbackOnly), Middleware(TrailingSlash)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.service = service
    app.state.aliases = TunnelAliases(service)
    app.state.scope = api_captures.AgentScope(service)
    app.state.events = EventHub(service, interval=events_interval, max_ids=events_max_ids)
    return app


EVENTS_SEND_BUFFER = 16 * 1024
"""Bytes a WebSocket connection (``/api/events``) buffers toward its client, in the socket and in
the transport each. Once a client stops reading, what it has not read waits merged in its outbox
(and turns into a resync) instead of as a backlog of stale messages; left to itself the kernel
grows a socket's send buffer to megabytes: many thousands of ids, minutes of news."""


class _EventsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol with small send buffers (``EVENTS_SEND_BUFFER``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, EVENTS_SEND_BUFFER)
        if isinstance(transport, asyncio.WriteTransport):
            transport.set_write_buffer_limits(high=EVENTS_SEND_BUFFER)


class ApiServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers to its owner, says when it
    listens (``listening``) and can be stopped."""

    task: asyncio.Task[None] | None = None

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()
        """Set once ``startup`` has put the listeners up."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)  # raises (or exits the task) when it cannot listen
        self.listening.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The agent decides what Ctrl-C means; uvicorn must not take SIGINT/SIGTERM from it.
        yield

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: finish open requests for up to ``timeout`` seconds, then close."""
        self.should_exit = True
        if self.task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except asyncio.TimeoutError:
            self.force_exit = True
            await self.task


def api_socket(port: int, *, fixed: bool) -> socket.socket:
    """The agent API's listening socket on 127.0.0.1, for :func:`serve_api`.

    Args:
        port: the port; 0 takes any free port.
        fixed: the user chose ``port`` (``--api-port``, ``agent.api_port``): it is used or it is an
            error, as ngrok's ``web_addr``; else (the default, 4040) the next free one is taken.

    Raises:
        ConfigError: the chosen port is taken, or no port of ``PORT_TRIES`` is free.
    """
    try:
        return bind_free(port, tries=1 if fixed else PORT_TRIES, what="the agent API")
    except ConfigError as exc:
        if not fixed or not port:
            raise
        raise ConfigError(f"{exc} (another devtunnel agent?): give another --api-port or agent.api_port, "
                          "or leave both unset for the first free port from 4040") from None


async def serve_api(service: Service, port: int | socket.socket = 4040, **app_options: Any) -> tuple[ApiServer, int]:
    """Serve the agent API in the running event loop on 127.0.0.1.

    Args:
        service: the agent service.
        port: the first port to try; the next free one is used if taken; 0 takes any free port.
            Or a socket from :func:`api_socket`, which is served (and closed if the server does not start).
        app_options: passed to :func:`create_app`.

    Returns:
        The running server (stop it with ``await server.stop()``) and the port it listens on.

    Raises:
        ConfigError: no port could be bound.
    """
    sock = port if isinstance(port, socket.socket) else api_socket(port, fixed=False)
    bound = int(sock.getsockname()[1])
    # log_config=None: uvicorn's records go through the process's handlers (escaped on stderr, or
    # the agent's log file under the inspector), not a stderr handler of uvicorn's own.
    config = uvicorn.Config(create_app(service, **app_options), lifespan="off", log_level="warning",
                            log_config=None, access_log=False, http=ApiHttpProtocol, ws=_EventsProtocol)
    server = ApiServer(config)
    task = server.task = asyncio.create_task(server.serve(sockets=[sock]), name=f"agent-api:{bound}")
    listening = asyncio.ensure_future(server.listening.wait())
    try:
        await asyncio.wait({listening, task}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    finally:
        listening.cancel()
        if not server.listening.is_set():
            sock.close()
            if not task.done():  # too slow, or we were cancelled: stop it
                task.cancel()
                await asyncio.wait({task})
    if server.listening.is_set():
        return server, bound
    if not task.cancelled():
        task.result()  # raises what stopped it
        raise ConfigError(f"the agent API on 127.0.0.1:{bound} stopped while starting")
    raise ConfigError(f"the agent API on 127.0.0.1:{bound} did not start within {START_TIMEOUT:g} s")
