"""``devtunnel start NAME... | --all``: ngrok's command, the tunnels of the user's ngrok.yml in one agent.

The files are ngrok's (``--config FILE``, repeatable, later files winning, else where ngrok
keeps its own), read as ``config import-ngrok`` reads them (``devtunnel.ngrok_config``); the
tunnels then run as ``devtunnel up`` runs devtunnel.toml's (``commands.up``), with the relay,
token and agent settings of devtunnel.toml. A tunnel the import would not take (a protection
devtunnel cannot enforce, labels, tcp ...) is never started: named, it is an error saying why;
under ``--all`` it is said and left out. ``start --none`` is the agent alone (``devtunnel agent``,
said by ``ngrok_habits``; pyngrok's ``start --none --log stdout`` runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from devtunnel.commands import up
from devtunnel.commands.config import unused_token_note
from devtunnel.commands.output import err, safe
from devtunnel.config import Settings
from devtunnel.errors import ConfigError
from devtunnel.ngrok_config import ImportedTunnel, NgrokImport, load_ngrok_files, ngrok_files, tunnel_sections
from devtunnel.values.terminal import quoted

__all__ = ["chosen", "prepare", "run"]


def chosen(result: NgrokImport, names: list[str], start_all: bool, files: str) -> list[ImportedTunnel]:
    """The tunnels ``start`` runs: those named (as written in the file, or as imported: ``My Hooks``
    or ``my-hooks``), or every one imported with ``--all``.

    Raises:
        ConfigError: no name and no ``--all``, both, a name not defined in the files (the names
            that are, as ngrok lists them), a named tunnel the import refuses (why), or nothing to start.
    """
    if names and start_all:
        raise ConfigError("give tunnel names or --all, not both")
    if not names and not start_all:
        raise ConfigError("name the tunnels to start (devtunnel start NAME...), or --all for every one of "
                          f"{files}, or --none for the agent alone")
    if start_all:
        if not result.tunnels:
            raise ConfigError(f"no tunnel of {files} can be started: the files must define at least one http "
                              "tunnel or endpoint devtunnel can run when using --all")
        return list(result.tunnels)
    defined = list(dict.fromkeys([*(t.source for t in result.tunnels), *(name for name, _ in result.skipped)]))
    out: list[ImportedTunnel] = []
    for name in names:
        found = result.named(name)
        if found is None:
            available = ", ".join(quoted(n) if not n.isidentifier() else n for n in defined) or "none"
            raise ConfigError(f"tunnel {quoted(name)} is not defined in the config files (tunnels available: "
                              f"{available}; config files read: {files})")
        if isinstance(found, str):
            raise ConfigError(f"tunnel {quoted(name)} of {files} is not started: {found}")
        if found not in out:
            out.append(found)
    return out


def _say(result: NgrokImport, tunnels: list[ImportedTunnel], start_all: bool) -> None:
    """On stderr: under ``--all``, each tunnel left out and why; for each tunnel started, what of
    its settings is left out or changed (the import's notes on it)."""
    if start_all:
        for name, why in result.skipped:
            print(safe(f"devtunnel: not started: {name}: {why}"), file=sys.stderr)
    sources = tuple(f"{t.source}: " for t in tunnels)
    for note in result.notes:
        if note.startswith(sources):
            print(safe(f"devtunnel: note: {note}"), file=sys.stderr)


def prepare(args: argparse.Namespace) -> list[str]:
    """``args`` made into ``up``'s: ngrok.yml's tunnels as the settings' tunnels, their names as
    the names; returns the command the inspector's agent process runs (``start --config ...``)."""
    paths = ngrok_files(args.ngrok_config)
    files = ", ".join(str(p) for p in paths)
    result = load_ngrok_files(paths)
    tunnels = chosen(result, list(args.names), args.all, files)
    sections = tunnel_sections(tunnels, files)
    _say(result, tunnels, args.all)
    settings: Settings = args.settings
    note = unused_token_note(bool(args.token), settings.relay.url)  # ngrok's own token, passed out of habit
    if note is not None:
        err(note)
    _take_web_addr(args, result, settings, files)
    args.settings = dataclasses.replace(settings, tunnels=sections)  # ngrok.yml's tunnels, devtunnel.toml's relay
    args.names = [t.name for t in sections]
    # The inspector's agent process reads the same files again (absolute: wherever it runs).
    return ["start", *(word for p in paths for word in ("--config", str(p.absolute())))]


def _take_web_addr(args: argparse.Namespace, result: NgrokImport, settings: Settings, files: str) -> None:
    """ngrok's ``web_addr`` as ``--api-port``, unless the user chose the port (the flag, or
    ``agent.api_port`` in devtunnel.toml or the environment): scripts written for that ngrok
    agent call its API there. A loopback address gives its port (taken: an error, as in ngrok),
    ``false`` no API; another address (``0.0.0.0:4141``) is said and left out: the API listens
    on 127.0.0.1 only."""
    found = result.web_addr
    if found is None or args.api_port is not None:
        return
    if "agent.api_port" in settings.given:
        if found.port != settings.agent.api_port:
            err(f"note: web_addr {found.text} of {files} not used: agent.api_port is {settings.agent.api_port}")
        return
    if found.port is None:
        err(f"note: web_addr {found.text} of {files} not used: {found.why}; the agent API takes 127.0.0.1:4040 "
            "or the next free port (--api-port PORT chooses one)")
        return
    args.api_port = found.port  # as --api-port: a port taken is an error, and false (0) is no API


def run(args: argparse.Namespace) -> int:
    """``devtunnel start``; returns the exit code."""
    return up.run(args, prepare(args))
