"""The keys of ngrok's tunnel and endpoint definitions: what an ngrok client may send.

ngrok's agent API takes a tunnel (``POST /api/tunnels``) or an endpoint (``POST
/api/endpoints``) with the keys of a tunnel or endpoint definition in ngrok.yml (agent
configuration v2 ``tunnels``, v3 ``endpoints``); pyngrok merges such a definition into its
request. Whatever devtunnel does with each key (uses it, ignores it, refuses it), a key outside
these is no ngrok key at all: a typo such as ``adress`` or ``prot``.
"""

from __future__ import annotations

__all__ = ["TUNNEL_KEYS", "ENDPOINT_KEYS", "NGROK_KEYS"]

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
