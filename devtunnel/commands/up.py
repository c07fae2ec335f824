"""``devtunnel up [NAME...] [--no-tui]``: every tunnel of devtunnel.toml (or those named), with their apps.

All of them run in one agent (one embedded relay, one agent API) and show in one inspector;
``--no-tui`` runs the agent headless, printing a ``Forwarding`` line per tunnel and a line per
request, as ``devtunnel http --no-tui`` does. Each tunnel's ``run``, ``health`` and ``hold``
come from its ``[tunnels.NAME]`` table; relay, token, host header and the rest from the usual
settings.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from devtunnel.commands.config import resolve_http
from devtunnel.commands.log_target import wants_inspector
from devtunnel.commands.output import no_screen
from devtunnel.config import Settings, TunnelSection, tunnel_problem
from devtunnel.errors import ConfigError
from devtunnel.agent.config import TunnelConfig
from devtunnel.values.terminal import quoted

__all__ = ["chosen_tunnels", "run", "tunnel_configs", "resolve_up"]


def chosen_tunnels(settings: Settings, names: list[str]) -> list[TunnelSection]:
    """The tunnels named (all when none is), in the files' order.

    Raises:
        ConfigError: no tunnel is defined, or a name is not one of them.
    """
    if not settings.tunnels:
        raise ConfigError("no tunnels are defined: run devtunnel init for a devtunnel.toml here, "
                          "or add [tunnels.NAME] tables (docs/config.md)")
    defined = [t.name for t in settings.tunnels]
    chosen = []
    for name in names:
        tunnel = settings.tunnel(name)
        if tunnel is None:
            raise ConfigError(f"no tunnel named {quoted(name)} is defined (defined: {', '.join(defined)})")
        if tunnel not in chosen:
            chosen.append(tunnel)
    return chosen or list(settings.tunnels)


def tunnel_configs(tunnels: list[TunnelSection], resolved: argparse.Namespace) -> list[TunnelConfig]:
    """The agent's configs of ``tunnels``, with the relay, token and modes ``resolved`` holds.

    Raises:
        ConfigError: a tunnel's table does not stand (``tunnel_problem``: ``health`` without ``run``).
    """
    settings: Settings = resolved.settings
    for t in tunnels:
        problem = tunnel_problem(t)
        if problem is not None:
            key, why = problem
            raise ConfigError(f"{key} {why}")
    from devtunnel.commands.tunnel_args import check_via
    from devtunnel.rules import load_rules_file, renumbered
    from devtunnel.via import parse_via

    configs = []
    for t in tunnels:
        via = t.via if t.via is not None and parse_via(t.via).kind != "relay" else None
        if via is not None:
            check_via(via)  # a missing cloudflared or ssh is one line now, not a failed tunnel later
        rules = [*t.rules, *(load_rules_file(t.rules_file) if t.rules_file is not None else ())]
        configs.append(TunnelConfig(
            target=t.target, name=t.name, relay=None if via else t.relay or resolved.relay, token=resolved.token,
            relay_ca=resolved.relay_ca,
            host_header=t.host_header or settings.agent.host_header, insecure=settings.agent.insecure,
            via=via, pool=t.pool, rules=renumbered(rules), record=t.record,
            run=t.run, health=t.health, hold=t.hold or 0.0, table=t.name,
        ))
    return configs


def _as_http(args: argparse.Namespace, first: TunnelSection) -> argparse.Namespace:
    """``up``'s arguments in the shape ``resolve_http`` and the agent take."""
    values = dict(vars(args))
    # Every flag of ``http`` unset (``up`` has none of them): the files and the environment say.
    # ``start --authtoken TOKEN`` (ngrok's flag) is the relay token, as for ``http``.
    values.update(command="http", target=first.name, name=None, relay=None, token=getattr(args, "token", None),
                  token_file=None, relay_ca=None,
                  host_header=None, insecure=False, via=None, pool=None, rules=None, basic_auth=[], allow_ip=[], deny_ip=[],
                  rate_limit=None, request_header_add=[], request_header_remove=[], response_header_add=[],
                  response_header_remove=[], run=None, health=None, hold=None, local_timeout=60.0, body_cap=None,
                  body_budget=None)
    return argparse.Namespace(**values)


def resolve_up(args: argparse.Namespace) -> tuple[argparse.Namespace, list[TunnelConfig]]:
    """``up``'s arguments resolved as ``http``'s (``resolve_http``), and the configs of the tunnels it starts.

    Raises:
        ConfigError: no tunnel is defined, a name is not one of them, or a tunnel's settings are invalid.
    """
    tunnels = chosen_tunnels(args.settings, list(args.names))
    resolved = resolve_http(_as_http(args, tunnels[0]))
    resolved.no_record = args.no_record  # the first tunnel's record = false is its own (TunnelConfig.record)
    return resolved, tunnel_configs(tunnels, resolved)


def run(args: argparse.Namespace, command: Sequence[str] = ("up",)) -> int:
    """``devtunnel up``, and ``devtunnel start`` with the tunnels of an ngrok.yml in ``args.settings``;
    returns the exit code. ``command`` starts the same tunnels in the inspector's agent process
    (``start --config FILE``: the tunnels are read from the ngrok.yml again there)."""
    resolved, configs = resolve_up(args)
    names = [config.name for config in configs]  # each [tunnels.NAME] keeps its name
    headless = not wants_inspector(args)
    no_inspector = None if headless else no_screen()
    if headless or no_inspector is not None:
        from devtunnel.commands.http import run_headless

        return run_headless(resolved, configs, no_inspector)
    from devtunnel.commands.inspect import open_inspector, up_agent_argv

    return open_inspector(Path(resolved.db), up_agent_argv(resolved, names, command), resolved)
