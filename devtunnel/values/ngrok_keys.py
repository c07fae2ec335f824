"""The keys of ngrok's tunnel and endpoint definitions: what an ngrok client may send.

ngrok's agent API takes a tunnel (``POST /api/tunnels``) or an endpoint (``POST
/api/endpoints``) with the keys of a tunnel or endpoint definition in ngrok.yml (agent
configuration v2 ``tunnels``, v3 ``endpoints``); pyngrok merges such a definition into its
request. Whatever devtunnel does with each key (uses it, ignores it, refuses it), a key outside
these is no ngrok key at all: a typo such as ``adress`` or ``prot``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from devtunnel.values.terminal import clipped, quoted

__all__ = ["TUNNEL_KEYS", "ENDPOINT_KEYS", "NGROK_KEYS", "upstream_protocol_problem", "internal_binding", "edge_labels",
           "agent_mutual_tls", "pooling", "url_first_label", "shown"]

SHOWN_CHARACTERS = 100
"""The most characters of a value of ngrok.yml a message quotes."""


def shown(value: object) -> str:
    """A value of ngrok.yml (or of a request in its shape) named in a message: text quoted and cut
    to its first ``SHOWN_CHARACTERS``, a number or a boolean as written, a list or a mapping by its
    kind alone: YAML aliases can make one enormous, and a message never writes it out."""
    if isinstance(value, str):
        return quoted(clipped(value, SHOWN_CHARACTERS))
    if value is None or isinstance(value, (bool, int, float)):
        return clipped(repr(value), SHOWN_CHARACTERS)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a value of type {type(value).__name__}"

TUNNEL_KEYS = frozenset({
    # every tunnel
    "name", "addr", "proto", "metadata", "inspect", "url", "pooling_enabled",
    # http
    "host_header", "domain", "hostname", "subdomain", "schemes", "bind_tls", "auth", "basic_auth",
    "circuit_breaker", "compression", "ip_restriction", "mutual_tls_cas", "oauth", "oidc",
    "policy", "traffic_policy", "traffic_policy_file", "proxy_proto", "request_header", "response_header",
    "user_agent_filter", "verify_webhook", "webhook_verification", "websocket_tcp_converter",
    # tcp and tls
    "remote_addr", "crt", "key", "client_cas", "terminate_at",
    # labeled tunnels (ngrok edges)
    "labels", "app_protocol", "verify_upstream_tls",
})
"""Keys of an agent configuration v2 tunnel definition (http, tcp, tls and labeled tunnels),
ngrok agent 2 and 3 (``auth`` and ``bind_tls`` of agent 2, ``policy`` before agent 3.14)."""

ENDPOINT_KEYS = frozenset({
    "name", "url", "upstream", "description", "metadata", "bindings", "traffic_policy",
    "traffic_policy_file", "pooling_enabled", "agent_tls_termination", "inspect",
})
"""Keys of an agent configuration v3 endpoint definition."""

NGROK_KEYS = TUNNEL_KEYS | ENDPOINT_KEYS
"""Either: pyngrok in its v3 mode sends a v3 config's v2 ``tunnels`` definitions to ``/api/endpoints``."""


def upstream_protocol_problem(body: object) -> str | None:
    """Why devtunnel cannot carry the protocol a tunnel or endpoint speaks to its local service
    (v3 ``upstream.protocol``, v2 ``app_protocol``: ``http2``): None for ``http1``, ngrok's
    default, or none given. devtunnel speaks HTTP/1.1 to the local service, so one that only
    speaks HTTP/2 would get every request in a protocol it refuses."""
    if not isinstance(body, dict):
        return None
    upstream = body.get("upstream")
    for key, protocol in (("upstream protocol", upstream.get("protocol") if isinstance(upstream, dict) else None),
                          ("app_protocol", body.get("app_protocol"))):
        if protocol not in (None, "", "http1"):
            return f"{key} {shown(protocol)} is not supported (only http1)"
    return None


def internal_binding(body: object) -> str | None:
    """Why an ngrok endpoint must not become a public tunnel: it is bound elsewhere than the
    public internet (``bindings: [internal]``, or a ``url`` whose host ends in ``.internal``,
    which ngrok makes an internal endpoint), and every devtunnel tunnel is public on its relay.
    None for a public endpoint."""
    if not isinstance(body, dict):
        return None
    bindings = body.get("bindings")
    listed = bindings if isinstance(bindings, list) else [bindings] if bindings else []
    private = [b for b in listed if not (isinstance(b, str) and b.lower() == "public")]
    url = body.get("url")
    host = ""
    if isinstance(url, str):
        host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].lower().rstrip(".")
    if not private and host.endswith(".internal"):
        private = ["internal"]
    if not private:
        return None
    return (f"it is bound to {shown(private[0])}, not the public internet, and every devtunnel tunnel is "
            "public on its relay")


def edge_labels(body: object) -> str | None:
    """Why a labeled tunnel (v2 ``labels: [edge=...]``) must not become a public tunnel: ngrok
    gives it no address of its own; it is reached only through an edge, whose modules (OAuth,
    IP restrictions, webhook verification ...) are set at ngrok, not in the definition, so none
    of them can be carried over. None for a tunnel without labels."""
    if not isinstance(body, dict) or not body.get("labels"):
        return None
    labels = body["labels"]
    first = labels[0] if isinstance(labels, list) and labels else labels
    label = f" ({shown(first)})" if isinstance(first, (str, int, float)) else ""
    return (f"it is a labeled tunnel{label}, reached only through an ngrok edge whose protections are "
            "set at ngrok, not in its definition, and every devtunnel tunnel is public on its relay")


def agent_mutual_tls(body: object) -> bool:
    """Whether a v3 endpoint's ``agent_tls_termination`` asks for client certificates
    (``mutual_tls_certificate_authorities``): a protection devtunnel's relay cannot enforce."""
    if not isinstance(body, dict):
        return False
    termination = body.get("agent_tls_termination")
    return isinstance(termination, dict) and bool(termination.get("mutual_tls_certificate_authorities"))


def pooling(body: dict[str, object]) -> bool:
    """ngrok's ``pooling_enabled``: whether the endpoint shares its URL with other agents, as a
    devtunnel pool does (``tunnels.NAME.pool``, ``--pool``).

    Raises:
        ValueError: ``pooling_enabled`` is neither true nor false.
    """
    value = body.get("pooling_enabled")
    if value is None or isinstance(value, bool):
        return bool(value)
    raise ValueError(f"pooling_enabled must be true or false, not {shown(value)}")


def url_first_label(url: str) -> tuple[str, str]:
    """The scheme of an endpoint's public ``url`` and the first label of its host, which names
    the tunnel (``https://payments.ngrok.app`` -> ``("https", "payments")``; a bare host is
    https, as ngrok takes it). The label is ``""`` when the URL has no host.

    Raises:
        ValueError: the URL cannot be read (an unclosed ``[`` of an IPv6 address).
    """
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return parts.scheme, (parts.hostname or "").split(".", 1)[0]
