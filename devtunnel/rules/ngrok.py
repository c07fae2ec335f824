"""ngrok's settings that devtunnel has as rules at the relay: basic auth and IP restrictions
(``ngrok_protection_rules``), and header edits (``header_edits_table``: the flags
``--request-header-add`` ..., ngrok.yml's and the agent API's ``request_header`` /
``response_header``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from devtunnel.values.http1 import is_token
from devtunnel.values.terminal import clipped, quoted

__all__ = ["header_edits_table", "ngrok_header_rules", "ngrok_protection_rules"]


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


def header_edits_table(request_add: Sequence[str] = (), request_remove: Sequence[str] = (),
                       response_add: Sequence[str] = (), response_remove: Sequence[str] = (),
                       *, keys: tuple[str, str, str, str] = ("request_header.add", "request_header.remove",
                                                               "response_header.add", "response_header.remove"),
                       ) -> dict[str, Any] | None:
    """ngrok's header edits as one ``headers`` rule table; None when there are none.

    An addition is ``Name: value`` (or ``Name:value``, as ngrok's documentation writes it) and
    replaces a header of that name, as a ``set`` of a headers rule does; a removal is a name.
    ``parse_rules`` checks names and values as for any headers rule. ``keys`` name the four
    lists in messages (the flags, or ngrok.yml's keys).

    Raises:
        ValueError: an addition without a colon, or one name added twice (naming its key).
    """
    table: dict[str, Any] = {"action": "headers"}
    for side, adds, removes, add_key, remove_key in (
            ("request", request_add, request_remove, keys[0], keys[1]),
            ("response", response_add, response_remove, keys[2], keys[3])):
        spec: dict[str, Any] = {}
        edits: dict[str, str] = {}
        for number, item in enumerate(adds, 1):
            if not isinstance(item, str) or ":" not in item or not item.split(":", 1)[0].strip():
                raise ValueError(f"{add_key} {_named_only(item, number)} is not NAME:VALUE")
            name, value = (part.strip() for part in item.split(":", 1))
            if name.lower() in (known.lower() for known in edits):
                # Named without its value: a value added is often a token (``hide_secrets``).
                raise ValueError(f"{add_key}: {name} is added twice (one value a name)")
            edits[name] = value
        if edits:
            spec["set"] = edits
        if removes:
            bad = next((name for name in removes if not (isinstance(name, str) and is_token(name))), None)
            if bad is not None:
                raise ValueError(f"{remove_key} {quoted(bad)} is not a header name")
            spec["remove"] = list(removes)
        if spec:
            table[side] = spec
    return table if len(table) > 1 else None


def ngrok_header_rules(body: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The ``request_header`` / ``response_header`` of an ngrok tunnel definition (ngrok.yml v2,
    the agent API's ``POST /api/tunnels``), each ``{add: ["Name: value"], remove: ["Name"]}``, as
    one headers rule table (none without edits).

    Raises:
        ValueError: a value of the wrong shape, or as ``header_edits_table``.
    """
    lists: list[Sequence[str]] = []
    for key in ("request_header", "response_header"):
        value = body.get(key) or {}
        if not isinstance(value, dict) or set(value) - {"add", "remove"}:
            raise ValueError(f"its {key} is not a mapping of add / remove lists")
        for part in ("add", "remove"):
            items = value.get(part) or []
            if not isinstance(items, list):
                raise ValueError(f"its {key}.{part} is not a list")
            lists.append(items)
    table = header_edits_table(*lists)
    return () if table is None else (table,)


def _named_only(item: object, number: int) -> str:
    """An addition that is not NAME:VALUE, as an error names it: by its place and its first word
    (the header's name, its colon forgotten), never the rest (``Authorization Bearer TOKEN``
    holds the token); one word alone only when it is short enough to be a name, not a token."""
    if not isinstance(item, str):
        return f"#{number} (a {type(item).__name__}, not text)"
    words = item.split(None, 1)
    if len(words) > 1:
        return f"#{number} ({quoted(clipped(words[0], 40))} and what follows it)"
    if words and len(words[0]) <= 24:
        return f"#{number} ({quoted(words[0])})"
    return f"#{number} (one word of {len(item.strip())} characters)"
