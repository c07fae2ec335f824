"""``devtunnel config path | show | set | add-token | import-ngrok | check | edit``, and how commands take unset flags from the settings.

A flag that was not given is None after parsing; the commands below replace it with the
effective setting (environment, then project file, then user file, then default), so flags
always win and every default lives in ``devtunnel.config``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import tomli_w

from devtunnel.config import (
    Settings,
    TunnelSection,
    add_tunnels,
    config_files,
    flag_value,
    load,
    overridden_by,
    project_file,
    set_value,
    to_toml,
    tunnel_problem,
    visible_toml,
    user_file,
    with_flags,
)
from devtunnel.commands.output import note_readable_secret, safe
from devtunnel.errors import ConfigError
from devtunnel.exit_codes import EXIT_ERROR, EXIT_USAGE
from devtunnel.rules import Rule
from devtunnel.values.terminal import quoted

__all__ = ["run", "settings_of", "store_path", "resolve_http", "resolve_relay", "tunnel_webhook_names",
           "unused_token_note"]


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings ``cli.main`` loaded into ``args.settings``, or loaded now (None: not loaded yet)."""
    settings: Settings | None = args.settings
    return settings if settings is not None else load()


def store_path(args: argparse.Namespace) -> Path:
    """The capture database: ``--db``, else ``store.path`` (``DEVTUNNEL_DB``, files, default)."""
    # Read as the agent reads it (``resolve_http``): a path it records into is the one read here.
    return flag_value("store.path", "--db", args.db) if args.db else settings_of(args).store.path


def tunnel_webhook_names(args: argparse.Namespace) -> dict[str, str]:
    """``http payments --name other``: tunnel other takes the webhook tables of ``[tunnels.payments]``
    (for the agent's verdicts and the inspector's sample palette alike); empty otherwise."""
    config_tunnel, name = getattr(args, "config_tunnel", None), getattr(args, "name", None)
    return {name: config_tunnel} if config_tunnel and name else {}


def resolve_http(args: argparse.Namespace) -> argparse.Namespace:
    """The ``http`` / ``agent`` arguments with every unset flag taken from the settings.

    ``devtunnel http NAME`` with NAME a tunnel defined in a file starts that definition: its
    target, its name, and its relay and host header unless flags say otherwise. The returned
    namespace carries the effective ``settings`` too.

    Raises:
        ConfigError: a flag value is invalid.
    """
    base = settings_of(args)
    is_http = args.command == "http"
    settings = with_flags(base, {
        "relay.url": ("--relay", args.relay),
        "relay.token": _token_flag(args),
        "relay.ca": ("--relay-ca", getattr(args, "relay_ca", None)),
        "agent.api_port": ("--api-port", args.api_port),
        "agent.body_cap": ("--body-cap", args.body_cap),
        "agent.body_budget": ("--body-budget", args.body_budget),
        "agent.host_header": ("--host-header", args.host_header),
        "agent.insecure": ("--insecure", True if args.insecure else None),
        "store.path": ("--db", args.db),
    })
    out = argparse.Namespace(**vars(args))
    out.settings = settings
    out.api_port = settings.agent.api_port
    # Chosen by a flag, the environment or a file: a taken port is an error; the default moves on.
    out.api_port_fixed = "agent.api_port" in settings.given
    out.body_cap = str(settings.agent.body_cap)
    out.body_budget = str(settings.agent.body_budget)
    out.db = str(settings.store.path)
    out.relay = settings.relay.url
    out.token = settings.relay.token
    out.relay_ca = str(settings.relay.ca) if settings.relay.ca is not None else None
    out.config_tunnel = None
    if is_http:
        out.host_header = settings.agent.host_header
        out.insecure = settings.agent.insecure
        tunnel = settings.tunnel(args.target)
        if tunnel is None:
            _check_target(args.target)
        else:
            out.target = tunnel.target
            out.name = args.name or tunnel.name
            out.config_tunnel = tunnel.name  # its webhook secrets apply whatever --name says
            if args.relay is None and tunnel.relay is not None:
                out.relay = tunnel.relay
            if args.host_header is None and tunnel.host_header is not None:
                out.host_header = tunnel.host_header
            if args.via is None and tunnel.via is not None:
                out.via = tunnel.via
            out.pool = bool(args.pool or tunnel.pool)
            if not tunnel.record:  # the agent of ``http NAME`` runs this tunnel alone
                out.no_record = True
            # The app settings: a flag wins over the file, key by key.
            for key in ("run", "health", "hold"):
                if getattr(args, key) is None and getattr(tunnel, key) is not None:
                    setattr(out, key, getattr(tunnel, key))
        out.rules = _tunnel_rules(args, tunnel)
        out.via = _via(args, out)
    return out


def _via(args: argparse.Namespace, out: argparse.Namespace) -> str | None:
    """The effective ``--via`` (None for the relay); a provider takes the place of a configured
    relay, and giving both flags is an error."""
    from devtunnel.via import parse_via

    via = out.via
    if via is None or parse_via(via).kind == "relay":
        return None
    if args.relay:
        raise ConfigError(f"give --via or --relay, not both: --via {via} carries traffic through the embedded relay")
    out.relay = out.token = None
    return via


def _tunnel_rules(args: argparse.Namespace, tunnel: TunnelSection | None) -> tuple[Rule, ...]:
    """The tunnel's rules, in order: the shorthand flags (``--deny-ip``, ``--allow-ip``, ``--basic-auth``,
    ``--rate-limit``, ngrok's ``--request-header-add`` ... as one headers rule), then ``[[tunnels.NAME.rules]]``, its ``rules_file``, and ``--rules FILE``.

    Raises:
        RulesError: one line naming the file (or flag), the rule's number, the key.
    """
    from devtunnel.rules import load_rules_file, renumbered, rules_flag, shorthand_rules

    edits = (args.request_header_add, args.request_header_remove, args.response_header_add, args.response_header_remove)
    rules = list(shorthand_rules(args.basic_auth, args.allow_ip, args.rate_limit, edits, args.deny_ip))
    if tunnel is not None:
        rules += tunnel.rules
        if tunnel.rules_file is not None:
            rules += load_rules_file(tunnel.rules_file)
    if args.rules is not None:
        rules += rules_flag(args.rules)
    return renumbered(rules)


def _token_flag(args: argparse.Namespace) -> tuple[str, str | None]:
    """``--token``, or the first line of the file ``--token-file`` names (kept out of ``ps``)."""
    token_file = args.token_file
    if not token_file:
        return ("--token", args.token)
    if args.token:
        raise ConfigError("give --token or --token-file, not both")
    try:
        with open(Path(token_file).expanduser(), encoding="utf-8") as f:
            token = f.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--token-file {token_file}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if not token:
        raise ConfigError(f"--token-file {token_file}: the first line is empty")
    note_readable_secret("devtunnel", "--token-file", token_file, "its token opens tunnels in your name")
    return ("--token-file", token)


def unused_token_note(given: bool, relay: str | None,
                      token: str = "the token given (--token, --authtoken or --token-file)") -> str | None:
    """The note for a token given on the command line (``--token``, ngrok's ``--authtoken``,
    ``--token-file``), or saved by ``config add-authtoken``, that goes nowhere: no relay of the
    user's is set, and the embedded relay (or the one ``--via`` uses) asks for none. An ngrok user
    passes their ngrok token so; it is never sent, and should not be thought of as in use. None
    when the token is used or none was given."""
    if not given or relay:
        return None
    return (f"note: {token} is not used: no relay is set (--relay URL, DEVTUNNEL_RELAY or relay.url), and the "
            "embedded relay on 127.0.0.1 asks for none")


def _check_target(target: str) -> None:
    """Refuse a TARGET that is neither an address nor a tunnel defined in a file, saying both."""
    from devtunnel.values.target import parse_target

    try:
        parse_target(str(target))
    except ConfigError as exc:
        if any(c.isalpha() for c in str(target)) and ":" not in str(target):
            raise ConfigError(f"{exc}; no tunnel named {quoted(target)} is defined either (devtunnel config show)") from None
        raise


def resolve_relay(args: argparse.Namespace) -> argparse.Namespace:
    """The ``relay`` arguments with every unset flag taken from ``[relay_server]``.

    Flag values are left as given: ``devtunnel relay`` checks them with its own messages.
    """
    server = settings_of(args).relay_server
    out = argparse.Namespace(**vars(args))
    for name in ("listen", "domain", "tokens_file", "max_body", "head_timeout", "body_timeout", "client_share",
                 "tunnels_per_token", "connections_per_token", "drain_timeout", "pending_per_address", "max_pending",
                 "body_min_rate", "connections_per_address"):
        if getattr(args, name) is None:
            value = getattr(server, name)
            setattr(out, name, str(value) if name in ("tokens_file", "max_body", "body_min_rate") and value is not None
                    else value)
    if args.rules is None and server.rules_file is not None:
        out.rules = str(server.rules_file)
    return out


# devtunnel config ---------------------------------------------------------------------------


# Every line below may quote a path from the environment (XDG_CONFIG_HOME, DEVTUNNEL_CONFIG,
# the working folder): each goes through ``safe``, the terminal rule, like a settings file's values.


def _path(args: argparse.Namespace) -> int:
    print("files read in this order (later ones win; then the environment, then flags):")
    for file in config_files():
        print(f"{file.role:<17} {'found' if file.exists else 'missing':<8} {safe(str(file.path))}")
    return 0


def _show(args: argparse.Namespace) -> int:
    settings = load()
    read = [str(f.path) for f in config_files() if f.exists]
    print(f"# effective settings; files read: {safe(', '.join(read)) if read else 'none'}")
    print(to_toml(settings), end="")
    return 0


def _target_file(args: argparse.Namespace) -> Path:
    return project_file() if args.project else user_file()


def _note_overrides(args: argparse.Namespace, dotted: str, path: Path) -> None:
    """Say so when what was saved in ``path`` does not take effect here: a file read after it,
    or the environment, sets the same key (or, for a tunnel, defines the same tunnel)."""
    for later in overridden_by(dotted, path):
        hint = "" if args.project or "environment" in later else " (--project saves it in ./devtunnel.toml)"
        print(safe(f"devtunnel config: note: {later}, and wins over {path}: what was saved does not take "
                   f"effect here{hint}"), file=sys.stderr)


def _set(args: argparse.Namespace) -> int:
    path = _target_file(args)
    try:
        set_value(path, args.key, args.value)
    except ConfigError as exc:
        elsewhere = None if args.project else _project_tunnel(args.key)
        if elsewhere is None:
            raise
        raise ConfigError(f"{exc}; {elsewhere} is in {project_file()}: add --project to change it there") from None
    print(safe(f"saved {args.key} in {path}"))
    _note_overrides(args, args.key, path)
    return 0


def _project_tunnel(key: str) -> str | None:
    """``tunnels.NAME`` when ``key`` is a setting of a tunnel that ./devtunnel.toml defines, else None."""
    from devtunnel.config.load import parse_file

    parts = key.split(".")
    if len(parts) != 3 or parts[0] != "tunnels" or not project_file().is_file():
        return None
    try:
        tunnels = parse_file(project_file())[1].get("tunnels")
    except ConfigError:  # a file that cannot be read: the error alone, as before
        return None
    return f"tunnels.{parts[1]}" if isinstance(tunnels, dict) and parts[1] in tunnels else None


def _add_token(args: argparse.Namespace) -> int:
    token = args.token
    if token == "-":  # keeps the token out of shell history and the process list
        token = sys.stdin.readline().strip()
    if not token:
        raise ConfigError("the token is empty")
    path = _target_file(args)
    set_value(path, "relay.token", token)
    if args.action == "add-authtoken":  # ngrok's words, which pyngrok's set_auth_token() reads as success
        print(safe(f"Authtoken saved to configuration file: {path} (relay.token, mode 0600)"))
    else:
        print(safe(f"saved relay.token in {path} (mode 0600)"))
    ngrok_file = getattr(args, "ngrok_config", None)
    if ngrok_file:  # ngrok's --config, as pyngrok passes it: devtunnel's agent never reads that file
        print(safe(f"devtunnel config: note: --config {ngrok_file} names ngrok's file: left as it is; devtunnel's "
                   f"agent reads its relay token from {path}"), file=sys.stderr)
    _note_overrides(args, "relay.token", path)
    _note_no_relay()
    return 0


def _note_no_relay() -> None:
    """Say so when the token just saved goes nowhere: no relay is set, and the embedded relay
    asks for none (an ngrok user saves ngrok's token so, and would think it in use)."""
    try:
        relay = load().relay.url
    except ConfigError:  # another file is broken: the command that reads it says so
        return
    note = unused_token_note(True, relay, token="the token saved")
    if note is not None:
        print(f"devtunnel config: {note}", file=sys.stderr)


def _import_ngrok(args: argparse.Namespace) -> int:
    from devtunnel.ngrok_config import load_ngrok_files, ngrok_files

    named = args.path or args.ngrok_config  # ngrok's commands name the file with --config FILE
    if args.path and args.ngrok_config and args.path != args.ngrok_config:
        raise ConfigError(f"give the ngrok.yml as PATH or --config FILE, not both ({args.path}, {args.ngrok_config})")
    [source] = ngrok_files([named] if named else [])
    result = load_ngrok_files([source])
    tables = {t.name: t.table() for t in result.tunnels}
    target = _target_file(args)
    print(safe(f"read {source} (ngrok config version {result.version})"))
    if args.dry_run:
        written, kept = list(tables), []
        if tables:
            print(visible_toml(tomli_w.dumps({"tunnels": tables})), end="")
    else:
        written, kept = add_tunnels(target, tables, force=args.force)
    for name in written:
        t = next(t for t in result.tunnels if t.name == name)
        verb = "would import" if args.dry_run else "imported"
        print(safe(f"{verb} {name}: target {t.target}" + (f", host_header {t.host_header}" if t.host_header else "")
                   + (", pool" if t.pool else "") + ("" if t.record else ", not recorded")))
    for name in kept:
        print(safe(f"kept {name}: {target} defines it already (--force to replace it)"))
    for name, why in result.skipped:
        print(safe(f"skipped {name}: {why}"))
    for note in result.notes:
        print(safe(f"note: {note}"))
    if written and not args.dry_run:
        print(safe(f"saved in {target}; start one with: devtunnel http {written[0]}"))
        for name in written:
            _note_overrides(args, f"tunnels.{name}.target", target)
    elif not written:
        print("nothing to import" if not kept else "nothing new to import")
    return 0


# config check / config edit ------------------------------------------------------------------


def toml_errors(path: Path) -> list[str]:
    """Every problem of the devtunnel.toml at ``path``, each ``FILE:LINE: KEY: PROBLEM`` as
    ``load`` says it (it stops at the first): the file is read key by key (a tunnel's or
    webhook's table key by key too), by the reader ``load`` uses."""
    from devtunnel.config.load import note_held_secrets, parse_file, read_document
    from devtunnel.config.settings import SECTIONS
    from devtunnel.config.source import Source

    try:
        text, doc = parse_file(path)
    except ConfigError as exc:
        return [str(exc)]
    note_held_secrets(path, doc)
    source = Source(str(path), text, path.parent, path)
    errors: list[str] = []

    def say(exc: ConfigError) -> None:
        if str(exc) not in errors:
            errors.append(str(exc))

    def read(part: dict[str, object]) -> bool:
        try:
            layer = read_document(part, source)
        except ConfigError as exc:
            say(exc)
            return False
        for tunnel in layer.get("tunnels", {}).values():  # keys that do not stand together, as up says them
            problem = tunnel_problem(tunnel)
            if problem is not None:
                say(source.error(*problem))
        return True

    for section, table in doc.items():
        if not isinstance(table, dict) or (section not in SECTIONS and section not in ("tunnels", "webhooks")):
            read({section: table})
        elif section in SECTIONS:
            for key, value in table.items():
                read({section: {key: value}})
        else:
            for name, body in table.items():
                if read({section: {name: body}}) or section != "tunnels" or not isinstance(body, dict):
                    continue  # a webhook's keys go together (a template and its header): its first problem
                # The first problem is said; read key by key for the others (a tunnel's target stands in,
                # and its run beside its health, so that a health with its run is not said to lack it).
                if "target" not in body:
                    read({section: {name: {}}})  # "target is missing"
                base = {"target": body["target"] if "target" in body and read(
                    {section: {name: {"target": body["target"]}}}) else "80"}
                if "run" in body and read({section: {name: {**base, "run": body["run"]}}}):
                    base["run"] = body["run"]
                for key, value in body.items():
                    read({section: {name: {**base, key: value}}})
    return errors


def _ngrok_errors(path: Path) -> tuple[list[str], list[str]]:
    """The problems of an ngrok.yml as ``config import-ngrok`` and ``start`` read it, a line
    for each tunnel they would leave out, and one for where ``start`` serves the agent API
    (its ``web_addr``)."""
    from devtunnel.ngrok_config import load_ngrok_files, tunnel_sections

    try:
        result = load_ngrok_files([path])
        tunnel_sections(result.tunnels, str(path))
    except ConfigError as exc:
        return [str(exc)], []
    said = [f"not started: {name}: {why}" for name, why in result.skipped]
    if result.web_addr is not None:
        said.append(result.web_addr.says(path.name))
    return [], said


def _check_files(paths: list[Path]) -> int:
    """``Valid configuration file at PATH`` for each file without a problem (ngrok's words), else
    each problem on stderr; exit 0, or 2 as for any invalid config file (``EXIT_USAGE``: ``up`` too)."""
    failed = False
    for path in paths:
        if path.suffix.lower() in (".yml", ".yaml"):
            errors, said = _ngrok_errors(path)
        else:
            errors, said = toml_errors(path), []
        for error in errors:
            print(f"devtunnel config: {safe(error)}", file=sys.stderr)
        if not errors:
            print(safe(f"Valid configuration file at {path}"))
        for line in said:
            print(safe(line))
        failed = failed or bool(errors)
    return EXIT_USAGE if failed else 0


def _check(args: argparse.Namespace) -> int:
    from devtunnel.config.files import ENV_CONFIG

    if args.ngrok_config:  # ngrok's --config FILE: that file (an ngrok.yml, or a devtunnel.toml)
        return _check_files([Path(name).expanduser() for name in args.ngrok_config])
    files = config_files()
    for file in files:
        if file.role == ENV_CONFIG and not file.exists:
            raise ConfigError(f"{file.path}: no such file (named by {ENV_CONFIG})")
    found = [file.path for file in files if file.exists]
    if not found:
        print(safe("devtunnel config: no devtunnel.toml to check: none at " + " or ".join(str(f.path) for f in files)
                   + " (devtunnel init writes one here)"), file=sys.stderr)
        return EXIT_ERROR
    code = _check_files(found)
    if code == 0:
        try:  # what only the files together say (a tunnel's webhooks naming a provider another file describes)
            load()
        except ConfigError as exc:
            print(f"devtunnel config: {safe(str(exc))}", file=sys.stderr)
            return EXIT_USAGE
    return code


def _edit(args: argparse.Namespace) -> int:
    """``./devtunnel.toml`` in ``$VISUAL`` or ``$EDITOR`` (written from ``init``'s template when
    missing), then checked as ``config check`` checks it."""
    import os
    import shlex
    import subprocess

    from devtunnel.commands.init import guess_app, render, tunnel_name

    path = project_file()
    if not path.exists():
        folder = path.parent
        try:
            with open(path, "x", encoding="utf-8") as f:  # never replace a file created meanwhile
                f.write(render(tunnel_name(folder), guess_app(folder)))
            print(safe(f"wrote {path} from devtunnel init's template"))
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    variable = next((name for name in ("VISUAL", "EDITOR") if os.environ.get(name, "").strip()), None)
    if variable is None:
        print(safe(f"devtunnel config: no editor is set (VISUAL or EDITOR): open {path} in yours"), file=sys.stderr)
        return EXIT_ERROR
    editor = os.environ[variable]
    try:
        words = shlex.split(editor)
        done = subprocess.run([*words, str(path)], check=False)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        print(safe(f"devtunnel config: the editor {quoted(editor)} (${variable}) cannot be run ({reason}): "
                   f"open {path} in yours"), file=sys.stderr)
        return EXIT_ERROR
    if done.returncode != 0:
        print(safe(f"devtunnel config: the editor {quoted(editor)} exited with status {done.returncode}; {path} "
                   "is as it left it"), file=sys.stderr)
    code = _check_files([path])
    return code or (EXIT_ERROR if done.returncode != 0 else 0)


_ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "path": _path,
    "show": _show,
    "set": _set,
    "add-token": _add_token,
    "add-authtoken": _add_token,
    "import-ngrok": _import_ngrok,
    "check": _check,
    "edit": _edit,
}

def run(args: argparse.Namespace) -> int:
    """Run one ``devtunnel config`` action; a bad file, key or value exits 2 with one line."""
    try:
        return _ACTIONS[args.action](args)
    except ConfigError as exc:
        print(f"devtunnel config: {safe(str(exc))}", file=sys.stderr)  # it may quote a file: escaped
        return EXIT_USAGE
