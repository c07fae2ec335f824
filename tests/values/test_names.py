"""``values.names.no_tunnel_named``: a name no running tunnel has, with the names that do."""

from __future__ import annotations

from devtunnel.values.names import no_tunnel_named


def test_a_missing_tunnel_is_said_with_the_running_ones() -> None:
    assert no_tunnel_named("nope", ["web", "api"]) == "no tunnel named 'nope' (running: api, web)"
    assert no_tunnel_named("nope", []) == "no tunnel named 'nope' (none is running)"
    assert no_tunnel_named("x", ["web"], "endpoint") == "no endpoint named 'x' (running: web)"


def test_a_long_list_is_cut() -> None:
    many = [f"t{i:02d}" for i in range(13)]
    assert no_tunnel_named("nope", many) == ("no tunnel named 'nope' (running: t00, t01, t02, t03, t04, t05, t06, t07,"
                                             " t08, t09 and 3 more)")
