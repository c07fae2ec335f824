"""``/api/tunnels/{name}/rules``: a tunnel's rules at the relay, read and changed while it runs.

    GET    /api/tunnels/{name}/rules            {"rules": [{"index", "action", ...}], "uri"}
    POST   /api/tunnels/{name}/rules            one rule as in devtunnel.toml -> 201 the rule
                                                (?position=last adds it after the others; first by default)
    DELETE /api/tunnels/{name}/rules/{index}    remove it (204); the others are renumbered

The inspector's drill ("answer the next N like this with STATUS") posts a ``respond`` rule
with a ``count``. Secrets are never shown: the passwords of basic-auth users, and the values
of the headers a headers rule adds (``rules.model.hide_secrets``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devtunnel.api.service import service_of
from devtunnel.api.plumbing import ApiError, json_body, no_content, ok, params, tunnel_of
from devtunnel.export.agent_json import TUNNELS_URI
from devtunnel.rules import Rule, rules_to_tables
from devtunnel.values.terminal import quoted
from devtunnel.values.numbers import is_decimal

__all__ = ["routes", "rule_json"]


def rule_json(rule: Rule) -> dict[str, Any]:
    """One rule for the API: its number, what it does, a line for people; its secrets hidden."""
    (table,) = rules_to_tables([rule])
    return {"index": rule.index, **table, "description": rule.describe()}


def _uri(name: str) -> str:
    return f"{TUNNELS_URI}/{name}/rules"


@params()
async def list_rules(request: Request) -> Response:
    """``GET /api/tunnels/{name}/rules``."""
    name = tunnel_of(request).name
    rules = service_of(request).rules(name)
    return ok({"rules": [rule_json(r) for r in rules], "uri": _uri(name)})


@params("position", unchanged="no rule was added")
async def add_rule(request: Request) -> Response:
    """``POST /api/tunnels/{name}/rules``: 201 with the rule as numbered."""
    name = tunnel_of(request).name
    data = await json_body(request)
    position = request.query_params.get("position", "first")
    if position not in ("first", "last"):
        raise ApiError(400, f"position must be first or last, not {quoted(position)}")
    rule = service_of(request).add_rule(name, data, first=position == "first")
    return ok(rule_json(rule), status_code=201)


@params(unchanged="no rule was removed")
async def remove_rule(request: Request) -> Response:
    """``DELETE /api/tunnels/{name}/rules/{index}`` (204)."""
    text = request.path_params["index"]
    if not is_decimal(text):
        raise ApiError(400, f"a rule is named by its number, not {quoted(text)}")
    service_of(request).remove_rule(tunnel_of(request).name, int(text))
    return no_content()


routes = [
    Route(TUNNELS_URI + "/{name}/rules", list_rules, methods=["GET"]),
    Route(TUNNELS_URI + "/{name}/rules", add_rule, methods=["POST"]),
    Route(TUNNELS_URI + "/{name}/rules/{index}", remove_rule, methods=["DELETE"]),
]
