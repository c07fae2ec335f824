"""Checks of a tunnel's command-line arguments, shared by ``http``, ``agent``, ``up`` and the inspector.

Each raises ``ConfigError`` with the one line to show, before anything opens: the inspector runs
them before its screen, the headless agent before its store.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from devtunnel.agent.via_runner import find_program, ssh_options
from devtunnel.config import app_problem
from devtunnel.errors import ConfigError

__all__ = ["app_options", "check_via", "check_http_args"]


def app_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``run``, ``health`` and ``hold`` of a ``TunnelConfig`` from ``--run``, ``--health`` and ``--hold``.

    Raises:
        ConfigError: ``--health`` without ``--run`` (``config.app_problem``), or a bad value.
    """
    from devtunnel.values.durations import parse_duration

    run, health, hold_text = args.run, args.health, args.hold
    if run is not None and not run.strip():  # --run "$UNSET": said, not a tunnel without its app
        raise ConfigError("--run must be a command line, not empty text")
    why = app_problem(run, health)
    if why is not None:
        raise ConfigError(f"--health needs --run (health needs run in devtunnel.toml): {why}")
    if health is not None:
        from devtunnel.agent.app_runner import check_health_path

        check_health_path(health)
    try:
        hold = parse_duration(hold_text, what="--hold duration") if hold_text is not None else 0.0
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return {"run": run or None, "health": health or None, "hold": hold}


def check_via(text: str) -> None:
    """Refuse a ``--via`` that names no provider, or one whose program is not installed.

    Raises:
        ConfigError: the one line to show (what to install).
    """
    from devtunnel.via import parse_via

    via = parse_via(text)
    if via.program is not None:
        find_program(via, os.environ)
        ssh_options(os.environ)


def check_http_args(args: argparse.Namespace) -> None:
    """Refuse bad ``http`` arguments here, with the agent's own messages, before the screen opens.

    Raises:
        ConfigError: a bad target, name, relay URL, body cap or budget, health path or hold duration.
    """
    from devtunnel.values.relay_url import relay_connect_url
    from devtunnel.values.names import validate_name
    from devtunnel.values.sizes import parse_size
    from devtunnel.values.target import parse_target

    parse_target(str(args.target))
    parse_size(str(args.body_cap))
    parse_size(str(args.body_budget))
    app_options(args)  # --run, --health, --hold
    if args.name:
        validate_name(args.name)
    if args.relay:
        relay_connect_url(args.relay)
    if args.via:
        check_via(args.via)

