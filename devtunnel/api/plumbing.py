"""Request and response plumbing shared by the agent API's routes: JSON in, JSON out, errors as ngrok does.

Every failure becomes ``{"error_code", "status_code", "msg", "details"}`` with the right status;
a malformed body is a 400, never a 500. Every JSON answer is ASCII (``AsciiJSON``).
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from typing import Any, TypedDict

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Match, Route

from devtunnel.errors import (
    AuthError,
    ConfigError,
    DevtunnelError,
    ExportError,
    FilterSyntaxError,
    FilterTimeoutError,
    NameTakenError,
    NotFoundError,
    ReplayError,
    StoreError,
    TunnelError,
)
from devtunnel.export.agent_json import error_json
from devtunnel.rules import Rule, RulesError, ngrok_header_rules, ngrok_protection_rules, parse_rules
from devtunnel.values.names import label_from, no_tunnel_named, validate_name
from devtunnel.values.ngrok_keys import (
    NGROK_KEYS, agent_mutual_tls, edge_labels, internal_binding, pooling, upstream_protocol_problem, url_first_label,
)
from devtunnel.values.numbers import is_decimal
from devtunnel.values.terminal import escape, quoted
from devtunnel.agent.info import TunnelInfo, TunnelState
from devtunnel.api.service import Service, service_of

__all__ = ["ApiError", "AsciiJSON", "MAX_BODY", "json_body", "str_field", "int_param", "params", "flag_param", "ok", "ok_off_loop", "ok_list_streamed", "no_content", "tunnel_options", "refuse_unsupported", "unknown_fields", "REFUSED_OPTIONS", "OWN_OPTIONS", "TunnelOptions", "find_tunnel", "tunnel_named", "tunnel_label",
           "TunnelAliases", "aliases_of", "tunnel_of", "refuse_name_in_use", "requested_name", "PUBLIC_ADDRESS_KEYS",
           "EXCEPTION_HANDLERS", "https_asked", "say_if_not_https"]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024
"""The largest request body the API reads (a replay may carry a large edited body)."""


class ApiError(Exception):
    """An error answer: status, a sentence for the user, and optional details."""

    def __init__(self, status_code: int, msg: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.status_code = status_code
        self.msg = msg
        self.details = details or {}


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class AsciiJSON(JSONResponse):
    """A JSON answer in ASCII. Answers quote captured bytes (header values, a status line, a
    body as text) and error messages quote values as they came (``values.terminal.quoted``):
    JSON escapes C0 controls only, so a C1 control (U+009B is CSI) or a bidi override would
    reach the terminal of whoever reads the answer with ``curl``. Escaped as ``\\uXXXX``, every
    such character acts on nothing, and a client reads the same value back."""

    def render(self, content: Any) -> bytes:
        return _json_bytes(content)


def ok(data: Any, status_code: int = 200) -> JSONResponse:
    """A JSON answer."""
    return AsciiJSON(data, status_code=status_code)


async def ok_off_loop(build: Callable[[], Any], status_code: int = 200) -> JSONResponse:
    """A JSON answer whose data ``build`` makes, built and serialised in the thread pool.

    For answers that grow with captured bodies (an exchange with 10 MB bodies is about 28 MB of
    base64 and JSON, a diff of two pretty-prints both): on the event loop, building them held
    every tunnel's traffic meanwhile. In a thread the loop runs between the thread's steps
    (though not during one C call, such as ``json.dumps`` of the whole answer).
    """
    return await run_in_threadpool(lambda: AsciiJSON(build(), status_code=status_code))


def json_list_chunks(key: str, values: Iterable[Any], rest: dict[str, Any]) -> Iterator[bytes]:
    """The bytes of ``{key: [*values], **rest}`` as ``AsciiJSON`` writes them, one value at a
    time as ``values`` makes them."""
    yield b"{" + _json_bytes(key) + b":["
    for i, value in enumerate(values):
        yield (b"," if i else b"") + _json_bytes(value)
    yield b"]" + (b"," + _json_bytes(rest)[1:] if rest else b"}")


def ok_list_streamed(key: str, values: Iterable[Any], rest: dict[str, Any]) -> StreamingResponse:
    """``{key: [*values], **rest}``, each value made (``values`` is lazy) and sent in turn from the
    thread pool: one value in memory at a time, and the event loop runs between values (the C
    encoder of ``json.dumps`` holds the GIL for a whole call: seconds for 50 big captures)."""
    return StreamingResponse(json_list_chunks(key, values, rest), media_type="application/json")


def no_content() -> Response:
    """An empty 204 answer."""
    return Response(status_code=204)


async def json_body(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty and not required).

    Raises:
        ApiError: 400 for a missing or malformed body (a lone surrogate escape such as ``"\\ud800"``
            included), 413 when too large, 415 for another media type.
        ClientDisconnect: the caller hung up before its whole body came (a debug note by the
            API's handler: no one is left to answer).
    """
    declared = request.headers.get("content-length", "")
    if is_decimal(declared) and int(declared) > MAX_BODY:  # said up front: no wait for it
        raise ApiError(413, f"the request body is larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, f"the request body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        if required:
            raise ApiError(400, "a JSON object body is required")
        return {}
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        # Not read anyway: a web page can send a form or text to the API without asking the browser
        # first, but not JSON, whose preflight the API refuses (docs/api.md, Security).
        raise ApiError(415, f"send the body as application/json (curl: -H 'Content-Type: application/json'), "
                            f"not {media or 'no content type'}")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ApiError(400, "the body is not valid JSON: nested too deeply") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        # JSON may escape half a surrogate pair ("\ud800"), which is no text: every route would
        # fail on it later, when it encodes the string (a method, a path, a body, a name).
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(400, f"the body is not valid JSON text: it holds {exc.object[exc.start:exc.end]!a}, "
                            "half of a UTF-16 surrogate pair") from None
    return data


def str_field(data: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    """``data[key]`` as a string; numbers are accepted (ngrok's ``"addr": 8080``)."""
    value = data.get(key)
    if value is None:
        if required:
            raise ApiError(400, f"the field {quoted(key)} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ApiError(400, f"the field {quoted(key)} must be a string")
    return str(value)


REFUSED_OPTIONS = {
    "traffic_policy": "traffic policies",
    "traffic_policy_file": "traffic policies",
    "policy": "traffic policies",  # traffic_policy's name before ngrok agent 3.14
    "oauth": "OAuth",
    "oidc": "OpenID Connect",
    "mutual_tls_cas": "mutual TLS",
    "circuit_breaker": "circuit breakers",
    "webhook_verification": "webhook verification at the edge",
    "verify_webhook": "webhook verification at the edge",  # the key of ngrok.yml and the agent API
    "user_agent_filter": "user agent filters",
}
"""Options that would protect or change the traffic: starting without them would expose the
service in a way the caller did not ask for, so such a request is refused (400) instead."""


OWN_OPTIONS = frozenset({"relay", "via", "insecure"})
"""devtunnel's own keys of a tunnel or endpoint asked for, beside ngrok's (``tunnel_options``)."""


def unknown_fields(data: Iterable[str], known: Collection[str], noun: str = "field") -> str | None:
    """``unknown field 'adress' (did you mean 'addr'?)`` for the keys of ``data`` outside
    ``known`` (the first five named, each cut to 64 characters), or None when there is none.
    ``noun`` names what the keys are (``parameter`` for a query's)."""
    unknown = sorted({key for key in data if key not in known})
    if not unknown:
        return None
    shown = [quoted(key if len(key) <= 64 else key[:64] + "...") for key in unknown[:5]]
    hint = difflib.get_close_matches(unknown[0], sorted(known), n=1)
    return (f"unknown {noun}{'s' if len(unknown) > 1 else ''} {', '.join(shown)}{', ...' if len(unknown) > 5 else ''}"
            + (f" (did you mean {quoted(hint[0])}?)" if hint and len(unknown) == 1 else ""))


Handler = Callable[[Request], Awaitable[Response]]


def params(*known: str, unchanged: str = "") -> Callable[[Handler], Handler]:
    """Declare the query parameters a route takes: any other is a 400 naming those it takes,
    before the route runs. A misspelt one (``?limt=5``) or one of another API (``?tunnel=x``)
    was ignored, and the answer read as if it had been applied. ``unchanged`` says what the
    refusal leaves undone (``nothing was deleted``)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: Request) -> Response:
            if request.query_params:
                unknown = unknown_fields(request.query_params.keys(), known, noun="parameter")
                if unknown is not None:
                    takes = ", ".join(known) if known else "no parameter"
                    raise ApiError(400, f"{unknown}: {request.method} {request.url.path} takes {takes}"
                                        + (f"; {unchanged}" if unchanged else ""), {"takes": list(known)})
            return await handler(request)

        checked.params = known  # type: ignore[attr-defined]
        return checked

    return decorate


def flag_param(request: Request, key: str) -> bool:
    """A yes-or-no query parameter: ``1``, ``true``, ``yes``, ``on``, or ``0``, ``false``, ``no``,
    ``off`` (any case; absent or empty is no); anything else is a 400 rather than a quiet no."""
    value = request.query_params.get(key, "").lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ApiError(400, f"{key} must be true or false, not {quoted(value)}")


def refuse_unsupported(data: dict[str, Any], what: str) -> None:
    """Refuse (400) a tunnel or endpoint asked for with a key that is no ngrok option
    (``values.ngrok_keys``) nor devtunnel's (``OWN_OPTIONS``), a typo that would otherwise start
    it with defaults, a ``proto`` other than ``http`` (``tcp``, ``tls``), or with an option of
    ``REFUSED_OPTIONS``; before anything starts: ngrok v2
    clients send ``auth``/``basic_auth`` to ``/api/tunnels``, v3 clients to ``/api/endpoints``,
    and both must be refused alike."""
    unknown = unknown_fields(data, NGROK_KEYS | OWN_OPTIONS)
    if unknown is not None:
        raise ApiError(400, f"{unknown}: no option of ngrok's tunnels or endpoints, nor of devtunnel's; "
                            f"the {what} was not started")
    proto = str_field(data, "proto") or "http"
    if proto != "http":  # v2's key, which a v3 client may send too: an http tunnel is not what it asked for
        raise ApiError(400, f"only http {what}s are supported, not {quoted(proto)}; the {what} was not started")
    for key, name in REFUSED_OPTIONS.items():
        if data.get(key):
            raise ApiError(400, f"{key}: {name} are not supported by devtunnel's agent yet; the {what} was not started")
    protocol = upstream_protocol_problem(data)
    if protocol is not None:
        raise ApiError(400, f"{protocol}; the {what} was not started")
    internal = internal_binding(data)
    if internal is not None:
        raise ApiError(400, f"the {what} {internal.removeprefix('it ')}; it was not started")
    labeled = edge_labels(data)
    if labeled is not None:
        raise ApiError(400, f"the {what} {labeled.removeprefix('it ')}; it was not started")
    if agent_mutual_tls(data):
        raise ApiError(400, f"agent_tls_termination: mutual TLS is not supported by devtunnel's agent yet; the {what} "
                            "was not started")


def ngrok_rules(data: dict[str, Any], what: str) -> tuple[Rule, ...]:
    """ngrok's ``auth`` / ``basic_auth``, ``ip_restriction`` and ``request_header`` /
    ``response_header`` of a tunnel or endpoint asked for, as rules at the relay
    (``rules.ngrok_protection_rules`` and ``ngrok_header_rules``, as ``config import-ngrok``
    carries them); a 400, before anything starts, when one cannot be carried."""
    try:
        tables = ngrok_protection_rules(data) + ngrok_header_rules(data)
        return parse_rules(list(tables), "auth, basic_auth, ip_restriction or request_header / response_header") if tables else ()
    except RulesError as exc:
        raise ApiError(400, f"{exc}; the {what} was not started") from exc
    except ValueError as exc:
        raise ApiError(400, f"{str(exc).removeprefix('its ')}; the {what} was not started") from exc


class TunnelOptions(TypedDict):
    """What a started tunnel may carry beside its target and name (``TunnelConfig``'s fields)."""

    host_header: str
    relay: str | None
    via: str | None
    pool: bool
    insecure: bool
    record: bool


def tunnel_options(data: dict[str, Any]) -> TunnelOptions:
    """The options a started tunnel (or endpoint) may carry beside its target and name, checked:
    ``host_header`` (``preserve`` or ``rewrite``), ``relay`` (a relay URL, checked by the agent as
    ``devtunnel http --relay`` is: ``relay_connect_url``) and
    ``via`` (checked by the agent, which knows the providers), ngrok's ``pooling_enabled`` as
    ``pool``, and ``insecure`` (an https target's certificate is not verified; ngrok's
    ``verify_upstream_tls: false``), and ngrok's ``inspect: false`` as ``record`` False (the
    tunnel's exchanges are not recorded)."""
    host_header = str_field(data, "host_header") or "preserve"
    if host_header not in ("preserve", "rewrite"):
        raise ApiError(400, f"host_header must be preserve or rewrite, not {quoted(host_header)}")
    relay = str_field(data, "relay") or None  # checked where it is used (``relay_connect_url``), as the CLI's is
    try:
        pool = pooling(data)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    for key in ("insecure", "verify_upstream_tls", "inspect"):
        if data.get(key) is not None and not isinstance(data[key], bool):
            raise ApiError(400, f"{key} must be true or false, not {quoted(data[key])}")
    insecure = data.get("insecure") is True or data.get("verify_upstream_tls") is False
    return {"host_header": host_header, "relay": relay, "via": str_field(data, "via") or None, "pool": pool,
            "insecure": insecure, "record": data.get("inspect") is not False}


def https_asked(data: dict[str, Any]) -> str | None:
    """The key by which a tunnel or endpoint asked for asks for an https URL alone: ngrok v2's
    ``bind_tls: true`` (pyngrok's ``connect(bind_tls=True)``), v3's ``schemes: ["https"]``, or a
    ``url`` of ``https://``. None when it asks for none (``bind_tls: "both"``, both schemes)."""
    bind_tls = data.get("bind_tls")
    if bind_tls is True or (isinstance(bind_tls, str) and bind_tls.lower() == "true"):
        return "bind_tls"
    schemes = data.get("schemes")
    if isinstance(schemes, list):
        named = {str(scheme).lower() for scheme in schemes}
        if "https" in named and "http" not in named:
            return "schemes"
    url = data.get("url")
    if isinstance(url, str) and url.lower().startswith("https://"):
        return "url"
    return None


def say_if_not_https(service: Service, data: dict[str, Any], info: TunnelInfo) -> TunnelInfo:
    """The tunnel started for ``data``, with a hint (its ``hints``, the agent's log) when it asked
    for an https URL (``https_asked``) and its public URL is ``http://``: started as asked in
    every other way, it is not refused, but Slack, Shopify and others take only https URLs."""
    key = https_asked(data)
    if key is None or not info.public_url or not info.public_url.startswith("http://"):
        return info
    line = (f"{key} asks for an https URL, but {escape(info.public_url)} is http: its relay serves plain http "
            "(the embedded relay does). For an https URL start the tunnel with a provider (\"via\": \"cloudflared\", "
            "devtunnel http PORT --via cloudflared) or on a relay of your own with TLS (\"relay\": \"wss://...\", "
            "relay.url)")
    try:
        return service.add_hint(info.name, "https", line)
    except NotFoundError:  # stopped meanwhile
        return info


COMMAND_LINE_NAMES = frozenset({"command_line"})
"""What ngrok names the tunnel of ``ngrok http 8080``: scripts read ``/api/tunnels/command_line``."""

HTTP_TWIN = " (http)"
"""What ngrok v2 appends to the name of a tunnel's http twin: an http tunnel with ``bind_tls: both``
(v2's default) runs as ``NAME`` (https) and ``NAME (http)``, and pyngrok before 7.2, java-ngrok
and scripts read ``/api/tunnels/NAME%20%28http%29`` right after starting ``NAME``. A devtunnel
tunnel is one, whatever its scheme: both names are it."""


class TunnelAliases:
    """The names ngrok clients asked for tunnels that run under another one: a tunnel asked for
    as ``web`` with ``subdomain: myapp`` runs as ``myapp`` (its public address is its name), and
    the script that started it goes on with ``/api/tunnels/web``. An alias lasts as long as the
    tunnel: it is dropped when the tunnel stops."""

    KEPT = 1000
    """How many names asked for ``ever`` remembers (the oldest are forgotten first)."""

    def __init__(self, service: Service) -> None:
        self._names: dict[str, str] = {}
        self._ever: dict[str, dict[str, None]] = {}
        service.subscribe(self._changed)

    def add(self, asked: str | None, name: str) -> None:
        """``asked`` (as a client gave it) now names the running tunnel ``name`` too."""
        label = tunnel_label(asked)
        if label is not None and label != name:
            self._names[label] = name
            self._ever.setdefault(label, {})[name] = None
            self._ever[label] = self._ever.pop(label)  # the newest last
            while len(self._ever) > self.KEPT:
                del self._ever[next(iter(self._ever))]

    def get(self, asked: str) -> str | None:
        """The tunnel name ``asked`` is an alias of, or None."""
        label = label_from(asked)
        return self._names.get(label) if label is not None else None

    def ever(self, asked: str) -> list[str]:
        """Every tunnel name ``asked`` was an alias of, stopped since or not: the captures a
        client lists by the name it gave (``tunnel_name=web``) are recorded under these."""
        label = label_from(asked)
        return list(self._ever.get(label, ())) if label is not None else []

    def _changed(self, info: TunnelInfo) -> None:
        if info.state is TunnelState.STOPPED:
            for alias in [alias for alias, name in self._names.items() if name == info.name]:
                del self._names[alias]


def tunnel_named(service: Service, name: str, aliases: TunnelAliases | None = None) -> TunnelInfo | None:
    """The running tunnel called ``name``, or the one whose name is ``name`` made a DNS label:
    an ngrok client names a tunnel as ngrok takes it (``My Hooks``), and it runs as ``my-hooks``
    (``tunnel_label``); else the one a client asked for as ``name`` (``aliases``). ``NAME (http)``
    is ``NAME`` (``HTTP_TWIN``). ngrok's ``command_line`` is the agent's tunnel when it runs only
    one (that of ``devtunnel http 8080``). None when there is none of these."""
    tunnels = service.tunnels()
    label = label_from(name)
    alias = aliases.get(name) if aliases is not None else None
    found = (next((info for info in tunnels if info.name == name), None)
             or next((info for info in tunnels if info.name == label), None)
             or next((info for info in tunnels if info.name == alias), None))
    if found is None and name.endswith(HTTP_TWIN) and name != HTTP_TWIN:
        found = tunnel_named(service, name.removesuffix(HTTP_TWIN), aliases)
    if found is None and name in COMMAND_LINE_NAMES and len(tunnels) == 1:
        found = tunnels[0]
    return found


def tunnel_label(name: str | None) -> str | None:
    """The tunnel name for the ``name`` an ngrok client asked for, which may be any text
    (``My Hooks`` becomes ``my-hooks``, as ``config import-ngrok`` names it); None lets the agent
    pick one."""
    return label_from(name) if name else None


PUBLIC_ADDRESS_KEYS = ("url", "domain", "hostname", "subdomain")
"""The keys an ngrok client asks for a public address with: v3's ``url``, v2's ``hostname`` and
``subdomain``, and ``domain`` (agent 3's, and what pyngrok's ``connect(domain=...)`` sends)."""


def _public_label(key: str, value: str, what: str) -> str | None:
    """The tunnel name ``value`` of ``key`` asks for (None: no host in it), or a 400."""
    if key == "subdomain":
        if "." in value:
            raise ApiError(400, f"subdomain {quoted(value)}: a devtunnel tunnel's public address is NAME.DOMAIN "
                                f"of its relay, NAME one DNS label; the {what} was not started")
        label = value
    else:
        try:
            scheme, label = url_first_label(value)
        except ValueError as exc:  # an unclosed "[" of an IPv6 address
            raise ApiError(400, f"{key} {quoted(value)}: {exc}; the {what} was not started") from None
        if scheme not in ("http", "https"):
            raise ApiError(400, f"only http and https {what}s are supported, not {scheme}://; the {what} was not started")
        if not label:
            return None
    try:
        return validate_name(label)
    except ConfigError as exc:
        raise ApiError(400, f"{key} {quoted(value)}: {exc}; the {what} was not started") from None


def requested_name(data: dict[str, Any], what: str) -> str | None:
    """The name of a tunnel or endpoint asked for, on ``/api/tunnels`` and ``/api/endpoints`` alike.

    A devtunnel tunnel's public address is its name under its relay's domain, so the address
    asked for names it, whichever key carries it (``PUBLIC_ADDRESS_KEYS``): the first label of a
    ``url``, ``domain`` or ``hostname`` (``https://payments.ngrok.app`` -> ``payments``; the
    relay's domain stands for the rest), or the ``subdomain``. Otherwise ``name`` made a valid DNS
    label (pyngrok names tunnels ``http-8080-<uuid>``); None lets the agent pick one.

    Raises:
        ApiError: 400 for an address devtunnel cannot give: another scheme than http(s), a host
            label that is no DNS label, a subdomain of more than one label, or keys asking for
            different addresses.
    """
    asked: dict[str, tuple[str, str]] = {}
    for key in PUBLIC_ADDRESS_KEYS:
        value = str_field(data, key)
        if value:
            label = _public_label(key, value, what)
            if label is not None:
                asked[key] = (value, label)
    if not asked:
        return tunnel_label(str_field(data, "name"))
    (key, (value, label)), *others = asked.items()
    for other_key, (other_value, other_label) in others:
        if other_label != label:
            raise ApiError(400, f"{key} {quoted(value)} and {other_key} {quoted(other_value)} ask for different public "
                                f"addresses ({label} and {other_label}), and a devtunnel tunnel has one; the {what} "
                                "was not started")
    return label


def find_tunnel(service: Service, name: str, what: str = "tunnel", aliases: TunnelAliases | None = None) -> TunnelInfo:
    """The running tunnel called ``name`` (``tunnel_named``), or ``NotFoundError``."""
    info = tunnel_named(service, name, aliases)
    if info is None:
        raise NotFoundError(no_tunnel_named(name, [t.name for t in service.tunnels()], what))
    return info


def aliases_of(request: Request) -> TunnelAliases:
    """The aliases of the app's tunnels (``create_app``)."""
    aliases: TunnelAliases = request.app.state.aliases
    return aliases


def refuse_name_in_use(request: Request, data: dict[str, Any], name: str | None, what: str) -> None:
    """A 400, as ngrok answers a second tunnel of a name, when the tunnel would run under the name
    ``name`` (``requested_name``) of a running one, or when the ``name`` asked for already finds a
    running tunnel (``tunnel_named``: its name, label or alias) and the new one would run under
    another name: ``{"name": "web", "subdomain": "other"}`` while ``web`` runs, or runs as
    ``myapp`` asked for as ``web``. A failed tunnel makes way for a new try under its name.

    ``details.err`` reads as ngrok's (``tunnel "web" already exists``): scripts and patched
    clients look for "already exists" there, and then read the running tunnel instead."""
    asked = str_field(data, "name")
    running = [info for info in service_of(request).tunnels() if info.state is not TunnelState.FAILED]
    found = next((info for info in running if info.name == name), None) if name else None
    shown = name
    if found is None and asked:
        found = tunnel_named(service_of(request), asked, aliases_of(request))
        shown = asked
    if found is not None and found.state is not TunnelState.FAILED:
        also = "" if found.name == shown else f" (as {quoted(found.name)})"
        raise ApiError(400, f"a tunnel named {quoted(shown)} is already running{also}; the {what} was not started",
                       {"err": f"tunnel {json.dumps(shown)} already exists"})


def tunnel_of(request: Request, what: str = "tunnel") -> TunnelInfo:
    """The running tunnel the route's ``{name}`` names, by any of its names (``tunnel_named``), or ``NotFoundError``."""
    return find_tunnel(service_of(request), request.path_params["name"], what, aliases_of(request))


def int_param(request: Request, key: str, default: int, *, minimum: int = 0) -> int:
    """A query parameter as an integer of at least ``minimum``."""
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    # ASCII digits, an optional minus: int() also reads "١" (Arabic-Indic one), "１", " 5 " and
    # "1_000", and a typo read as a number is a page of another size than asked.
    if not is_decimal(raw.removeprefix("-")):
        raise ApiError(400, f"{key} must be an integer, not {quoted(raw)}")
    value = int(raw)
    if value < minimum:
        raise ApiError(400, f"{key} must be at least {minimum}")
    return value


def _error(status: int, msg: str, details: dict[str, Any] | None = None, headers: Any = None) -> JSONResponse:
    # A message quotes values as they came; a client reads it back as it was and escapes it once where it shows it.
    return AsciiJSON(error_json(status, msg, details), status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status_code, exc.msg, exc.details)


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes at the request's path, in a fixed order.

    One path may have a route per method (``GET`` and ``POST /api/tunnels``): Starlette's 405
    names the methods of the first route it tried only, and a client reading ``Allow`` learnt
    that ``/api/tunnels`` takes no ``POST``."""
    scope = {**request.scope, "method": "GET"}
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.matches(scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods, key=lambda m: (_METHOD_ORDER.index(m) if m in _METHOD_ORDER else len(_METHOD_ORDER), m))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = exc.headers
    if exc.status_code == 404:
        msg = f"no such resource: {request.url.path}"
        if request.url.path == "/" or request.url.path.startswith("/inspect"):  # ngrok's web inspector, by habit
            msg += (": ngrok's web inspector is not served here; devtunnel's runs in the terminal (devtunnel inspect), "
                    "and this port is the agent API (/api/tunnels, /api/requests/http; docs/api.md)")
    elif exc.status_code == 405:
        allowed = ", ".join(_allowed_methods(request)) or (exc.headers or {}).get("Allow", "")
        headers = {**(exc.headers or {}), "Allow": allowed}
        msg = f"{request.method} is not allowed on {request.url.path} (allowed: {allowed})"
    else:
        msg = str(exc.detail)
    return _error(exc.status_code, msg, headers=headers)


# Our own errors, most specific first: the status says whose fault it was.
_STATUS: list[tuple[type[DevtunnelError], int]] = [
    (NotFoundError, 404),
    (FilterSyntaxError, 400),
    (FilterTimeoutError, 400),  # the caller's regex: "filter regex took too long"
    (ConfigError, 400),
    (ExportError, 400),
    (NameTakenError, 409),
    (AuthError, 502),
    (TunnelError, 502),
    (ReplayError, 400),  # nothing was sent: the request asked for a replay that cannot be made
    (StoreError, 503),
]


async def _devtunnel_error(request: Request, exc: Exception) -> Response:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
    details: dict[str, Any] = {}
    if isinstance(exc, FilterSyntaxError):
        details = {"position": exc.position, "column": exc.position + 1, "message": exc.message}
    # A tunnel's error may quote what a relay said: escaped as the log and the tunnel's "error" show it.
    return _error(status, escape(str(exc)) if isinstance(exc, TunnelError) else str(exc), details)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The caller hung up before its whole body arrived: there is no one to answer, and nothing
    # went wrong here, so a note for whoever debugs the API instead of an ASGI traceback.
    log.debug("agent API: the client closed the connection before sending the whole body of %s %s; nothing answered",
              request.method, quoted(request.url.path))
    return Response(status_code=400)  # never sent: uvicorn drops what is sent on a closed connection


async def _unexpected(request: Request, exc: Exception) -> Response:
    return _error(500, f"internal error: {type(exc).__name__}")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    DevtunnelError: _devtunnel_error,
    ClientDisconnect: _client_gone,
    Exception: _unexpected,
}
