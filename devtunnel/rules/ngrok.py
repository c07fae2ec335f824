"""ngrok's protections that devtunnel has as rules at the relay: basic auth and IP restrictions."""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["ngrok_protection_rules"]


def ngrok_protection_rules(body: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """ngrok's basic auth (``auth``, ``basic_auth``) and ``ip_restriction`` of a tunnel definition as
    rule tables (deny first, then allow, then auth); passwords become ``sha256:HEX``.

    One conversion for ``config import-ngrok`` and the agent API's ``POST /api/tunnels`` and
    ``/api/endpoints``, so a tunnel pyngrok starts with ``auth=`` is guarded as ngrok.yml's is.

    Raises:
        ValueError: a value that cannot be carried over (the message says which).
    """
    rules: list[dict[str, Any]] = []
    restriction = body.get("ip_restriction")
    if restriction:
        if not isinstance(restriction, dict):
            raise ValueError("its ip_restriction is not a mapping of allow_cidrs / deny_cidrs")
        deny, allow = restriction.get("deny_cidrs") or [], restriction.get("allow_cidrs") or []
        if not (isinstance(deny, list) and isinstance(allow, list)) or not all(isinstance(c, str) for c in [*deny, *allow]):
            raise ValueError("its ip_restriction lists are not lists of CIDRs")
        if deny:
            rules.append({"match": "ip:" + ",".join(deny), "action": "deny"})
        if allow:
            rules.append({"action": "allow-ip", "ips": list(allow)})
    users: list[str] = []
    for key in ("auth", "basic_auth"):
        value = body.get(key)
        if not value:
            continue
        for credential in [value] if isinstance(value, str) else value if isinstance(value, list) else [None]:
            if not isinstance(credential, str) or ":" not in credential:
                raise ValueError(f"its {key} is not \"user:password\"")
            user, password = credential.split(":", 1)
            users.append(f"{user}:sha256:{hashlib.sha256(password.encode()).hexdigest()}")
    if users:
        rules.append({"action": "basic-auth", "users": users})
    return tuple(rules)
