"""``devtunnel``, ``devtunnel inspect`` and the inspector of ``devtunnel http``.

* ``devtunnel`` alone: the inspector with an agent and no tunnel yet (``n`` starts one).
* ``devtunnel inspect [--db PATH]``: the stored captures, no agent, no tunnel.
* ``devtunnel http TARGET ...`` (without ``--no-tui``): the agent runs ``devtunnel http TARGET
  --no-tui`` as a child process and the inspector shows its traffic.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from devtunnel.commands.config import store_path, tunnel_webhook_names
from devtunnel.commands.output import no_screen
from devtunnel.commands.tunnel_args import check_http_args
from devtunnel.errors import ConfigError, DevtunnelError
from devtunnel.exit_codes import EXIT_ERROR
from devtunnel.rules import Rule
from devtunnel.tui.supervisor import agent_command
from devtunnel.sockets import bindable, free_port
from devtunnel.values import paths

if TYPE_CHECKING:
    from devtunnel.tui.app import InspectorApp


def _db(args: argparse.Namespace) -> Path:
    return store_path(args)  # --db, else store.path from DEVTUNNEL_DB, devtunnel.toml or the default


class _RelayPort:
    """The embedded relay's port: the same one at every agent restart (so public URLs stay the
    same), unless something else took it meanwhile."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()

    def __call__(self) -> str:
        if not bindable(self.port):
            self.port = free_port()
        return str(self.port)


def http_agent_argv(args: argparse.Namespace) -> Callable[[], list[str]]:
    """Makes the ``devtunnel http ... --no-tui`` command line that carries the tunnel for the inspector.

    On the embedded relay, a name is fixed here when none was given; the agent keeps the port that
    name has (``agent.port_memory``), so it comes back with the same public URL when it is restarted.
    """
    from devtunnel.agent.port_memory import PortMemory
    from devtunnel.values.names import random_name
    from devtunnel.values.target import parse_target

    # Unnamed, the tunnel keeps the name its target had last time. On the embedded relay it is
    # fixed here, for the relay's port it had with it; a relay of one's own may give it to
    # someone else meanwhile: the agent asks for it, and for a new one if it is taken.
    name = args.name or (None if args.relay else PortMemory().name_for(parse_target(args.target).url))
    argv = ["http", str(args.target), *_headless_argv(args),
            *(["--name", name] if name else []), "--host-header", args.host_header,
            "--body-cap", str(args.body_cap), "--body-budget", str(args.body_budget)]
    if args.relay:
        argv += ["--relay", args.relay]
    if getattr(args, "relay_ca", None):
        argv += ["--relay-ca", args.relay_ca]
    if getattr(args, "via", None):
        argv += ["--via", args.via]
    if getattr(args, "insecure", False):
        argv.append("--insecure")
    rules = getattr(args, "rules", None)
    if rules:  # passwords stay off the command line: a private file carries them
        argv += ["--rules", str(_private_rules_file(rules, name or random_name()))]
    for flag in ("run", "health", "hold"):  # the app the agent runs, watches and stops
        value = getattr(args, flag, None)
        if value not in (None, ""):
            argv += ["--" + flag, value if isinstance(value, str) else f"{value:g}"]
    if args.port and not args.relay:  # the user's choice: never moved
        argv += ["--port", str(args.port)]
    # Else the agent takes the port its name has (``agent.port_memory``) at each restart: a --port
    # from here would be remembered as the user's choice, and a name whose port another
    # program held once would keep the port it moved to for good.
    return lambda: agent_command(*argv)


def _headless_argv(args: argparse.Namespace) -> list[str]:
    """The flags the agent of ``http``, ``up`` and ``start`` gets alike from the inspector: headless,
    its API port, the store, and whether it records."""
    argv = ["--no-tui", *_api_port_argv(args), "--db", str(_db(args))]
    if getattr(args, "no_record", False):
        argv.append("--no-record")
    return argv


def _api_port_argv(args: argparse.Namespace) -> list[str]:
    """The agent's ``--api-port``, checked now: a chosen port that is taken is one line before the
    inspector opens (``api_socket``), not an agent failing behind it at every restart.

    The inspector needs the API, and ``http --api-port 0`` means none: a free port then. With
    the default, none: the agent takes 4040 or the next free port, and the inspector reads the
    one it prints.
    """
    if not args.api_port:
        return ["--api-port", str(free_port())]
    if not getattr(args, "api_port_fixed", False):  # ``resolve_http`` says
        return []
    from devtunnel.api.app import api_socket

    api_socket(args.api_port, fixed=True).close()
    return ["--api-port", str(args.api_port)]


def _private_rules_file(rules: Sequence[Rule], name: str) -> Path:
    """The tunnel's resolved rules (flags, devtunnel.toml, --rules) in a file only the user reads."""
    import tomli_w

    from devtunnel.rules import rules_to_tables

    path = paths.state_dir() / f"rules-{name}.toml"
    paths.make_private_folder(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(tomli_w.dumps({"rules": rules_to_tables(rules, mask=False)}))
    os.chmod(path, 0o600)
    return path


def up_agent_argv(args: argparse.Namespace, names: list[str],
                  command: Sequence[str] = ("up",)) -> Callable[[], list[str]]:
    """Makes the ``devtunnel up NAME... --no-tui`` command line that carries the tunnels for the inspector
    (``command``: ``start --config FILE`` for the tunnels of an ngrok.yml).

    The tunnels keep their ports across agent restarts, as for ``http``.
    """
    argv = [*command, *names, *_headless_argv(args)]
    if args.port:
        argv += ["--port", str(args.port)]
    return lambda: agent_command(*argv)  # (the tunnels' ports: as for ``http``)


def agent_env(args: argparse.Namespace) -> dict[str, str]:
    """What the agent of ``http`` or ``up`` gets in its environment on top of the inspector's.

    The token travels there, not on a command line other users can read; the inspector's own
    environment is left as it is.
    """
    token = getattr(args, "token", None)
    return {"DEVTUNNEL_TOKEN": token} if token else {}


def inspector_app(db: Path, agent_argv: Callable[[], list[str]] | None, args: argparse.Namespace) -> InspectorApp:
    """The inspector of ``http``, ``inspect`` and ``up``, made from the command's arguments and settings.

    The agent gets ``agent_env(args)`` (the token of ``http`` and ``up``) in its environment; the
    send-sample screen signs with the secrets of devtunnel.toml (``config.webhook_context``).
    """
    from devtunnel.config import webhook_context
    from devtunnel.tui.app import InspectorApp
    from devtunnel.tui.backend import Backend

    store = args.settings.store
    backend = Backend(db, max_exchanges=store.max_exchanges, max_bytes=store.max_bytes,
                      replay_ignore_headers=args.settings.replay.ignore_headers)
    return InspectorApp(backend, agent_argv=agent_argv, agent_env=agent_env(args), agent_log=paths.agent_log(),
                        history_path=paths.filter_history(),
                        webhooks=webhook_context(args.settings, names=tunnel_webhook_names(args)))


def _check_state_folder() -> None:
    """Refuse, in one line, a state folder the agent's log cannot be written in.

    The inspector writes its agent's output there (``paths.agent_log``); a folder it could not
    make (a read-only home, ``$XDG_STATE_HOME`` naming a file or a folder of another user) left
    it restarting the agent for good, saying only ``could not start the agent: [Errno 13] Permissi…``.
    """
    folder = paths.state_dir()
    hint = "set XDG_STATE_HOME to a folder you can write in"
    try:
        paths.make_private_folder(folder)
    except OSError as exc:
        raise DevtunnelError(f"cannot create the folder {folder} ({exc.strerror or exc}); {hint}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DevtunnelError(f"cannot write in the folder {folder}; {hint}")


def open_inspector(db: Path, agent_argv: Callable[[], list[str]] | None, args: argparse.Namespace) -> int:
    """Run the inspector (``inspector_app``) until the user quits; the agent (if any) is stopped on
    the way out. Returns 0, or 1 when a bug ended it (its traceback is printed: a script or a
    terminal's ``$?`` must not read a crash as a quit)."""
    if agent_argv is not None:
        _check_state_folder()
    app = inspector_app(db, agent_argv, args)
    try:
        app.run()
    finally:
        if app.supervisor is not None:
            app.supervisor.kill_now()
    return EXIT_ERROR if app.return_code else 0


def run_http(args: argparse.Namespace) -> int:
    """``devtunnel http TARGET`` with the inspector."""
    check_http_args(args)
    return open_inspector(_db(args), http_agent_argv(args), args)


def run(args: argparse.Namespace) -> int:
    """``devtunnel`` (agent, no tunnel) or ``devtunnel inspect`` (stored captures only)."""
    reason = no_screen()
    if reason is not None:
        raise ConfigError(f"the inspector needs a terminal ({reason}); list the captures with: devtunnel requests")
    db = _db(args)
    if args.command == "inspect":
        return open_inspector(db, None, args)
    relay_port = _RelayPort()
    return open_inspector(db, lambda: agent_command("agent", "--api-port", "0", "--port", relay_port(),
                                                    "--db", str(db)), args)
