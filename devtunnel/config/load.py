"""Reading the settings: files checked whole, then layered with the environment and the flags.

``load`` starts from the defaults and applies, later layers winning, each file of
``config_files()`` that exists, then the environment variables of ``ENV_SETTINGS``;
``with_flags`` puts the command line on top. Each layer is a dict of checked values
(``_Layer``); a tunnel or webhook table replaces one of the same name whole.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devtunnel.config.files import ENV_CONFIG, config_files
from devtunnel.config.kinds import shown
from devtunnel.config.settings import SECTIONS, TUNNEL_KEYS, Settings, TunnelSection, fields_of
from devtunnel.config.source import Source, check_field, line_of_table, refuse_shared_secret, unknown_key
from devtunnel.config.webhooks import check_tunnel_providers, read_webhooks
from devtunnel.errors import ConfigError
from devtunnel.rules import Rule, RulesError, note_rule_secrets, parse_rules
from devtunnel.values.names import validate_name

# environment variable -> setting it stands for
ENV_SETTINGS = {"DEVTUNNEL_RELAY": "relay.url", "DEVTUNNEL_TOKEN": "relay.token", "DEVTUNNEL_DB": "store.path"}

# One layer: {"relay": {"url": ...}, ..., "tunnels": {name: TunnelSection}}, checked values only.
_Layer = dict[str, dict[str, Any]]


def read_document(doc: Mapping[str, Any], source: Source) -> _Layer:
    """Check a parsed TOML document against the tree; return its values."""
    layer: _Layer = {}
    for section, table in doc.items():
        if section == "tunnels":
            layer["tunnels"] = _read_tunnels(table, source)
            continue
        if section == "webhooks":
            layer["webhooks"] = read_webhooks(table, source, "webhooks", custom=True)
            continue
        if section not in SECTIONS:
            raise unknown_key(source, section, [*SECTIONS, "tunnels", "webhooks"])
        if not isinstance(table, dict):
            raise source.error(section, f"expected a table ([{section}]), got {shown(table, section)}")
        fields = fields_of(SECTIONS[section])
        values = layer.setdefault(section, {})
        for key, value in table.items():
            if key not in fields:
                raise unknown_key(source, f"{section}.{key}", list(fields))
            values[key] = check_field(source, f"{section}.{key}", fields[key], value)
            if (section, key) == ("relay", "token"):
                refuse_shared_secret(source, "relay.token", "the relay token",
                                     "give the token with DEVTUNNEL_TOKEN, --token-file or devtunnel config add-token -"
                                     " (it writes your user file, mode 600)")
    return layer


def _read_tunnels(table: object, source: Source) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise source.error("tunnels", f"expected tables such as [tunnels.web], got {shown(table)}")
    tunnels: dict[str, Any] = {}
    for raw_name, definition in table.items():
        prefix = f"tunnels.{raw_name}"
        try:
            name = validate_name(raw_name)
        except ConfigError as exc:
            raise source.error(prefix, f"not a tunnel name: {exc}") from None
        if not isinstance(definition, dict):
            raise source.error(prefix, f"expected a table ([{prefix}]), got {shown(definition)}")
        values: dict[str, Any] = {"name": name}
        for key, value in definition.items():
            if key == "webhooks":
                values[key] = tuple(read_webhooks(value, source, f"{prefix}.webhooks", custom=False).values())
                continue
            if key not in TUNNEL_KEYS:
                raise unknown_key(source, f"{prefix}.{key}", list(TUNNEL_KEYS))
            if key == "rules":
                values[key] = _read_rules(source, f"{prefix}.rules", value)
                continue
            values[key] = check_field(source, f"{prefix}.{key}", TUNNEL_KEYS[key], value)
        if "target" not in values:
            raise source.error(prefix, "target is missing, e.g. target = \"3000\"")
        tunnels[name] = TunnelSection(**values)
    return tunnels



def _read_rules(source: Source, dotted: str, value: object) -> tuple[Rule, ...]:
    """``[[tunnels.NAME.rules]]``; an error names the line of the rule's own table."""
    try:
        return parse_rules(value if isinstance(value, list) else {}, dotted, base=source.folder)  # type: ignore[arg-type]
    except RulesError as exc:
        line = line_of_table(source.text, dotted, exc.number) if source.text is not None else None
        where = f"{source.label}:{line}" if line else source.label
        raise ConfigError(f"{where}: {dotted}: {exc.detail}" if where else f"{dotted}: {exc.detail}") from None



def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text at byte {exc.start}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def parse_file(path: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and its TOML document; ``ConfigError`` names the file when it is not TOML."""
    text = _read_text(path)
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _read_file(path: Path) -> _Layer:
    text, doc = parse_file(path)
    layer = read_document(doc, Source(str(path), text, path.parent, path))
    note_held_secrets(path, doc)
    return layer


def note_held_secrets(path: Path, doc: Mapping[str, Any]) -> None:
    """Say on stderr when the devtunnel.toml at ``path`` (``doc``) holds secrets in clear in its
    tunnels' rules (basic-auth passwords, request header values: ``rules.clear_secrets``) while
    other users can read it. Said, not refused, unlike the relay token and webhook secrets
    (``refuse_shared_secret``): a project's file is often 0644, and a refusal would stop every command."""
    tunnels = doc.get("tunnels")
    tables: list[object] = []
    for body in tunnels.values() if isinstance(tunnels, dict) else ():
        rules = body.get("rules") if isinstance(body, dict) else None
        tables += rules if isinstance(rules, list) else []
    note_rule_secrets(path, tables)


def _environment_layer(env: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for variable, dotted in ENV_SETTINGS.items():
        text = env.get(variable)
        if not text:  # set but empty means unset, as a shell's VAR= does
            continue
        section, key = dotted.split(".")
        f = fields_of(SECTIONS[section])[key]
        value = f.metadata["kind"].from_text(text)
        layer.setdefault(section, {})[key] = check_field(Source(f"environment variable {variable}"), dotted, f, value)
    return layer


def _apply(settings: Settings, layer: _Layer) -> Settings:
    changes: dict[str, Any] = {}
    given = set(settings.given)
    for section, values in layer.items():
        if section in ("tunnels", "webhooks"):
            # A definition replaces one of the same name whole: half of each would be a surprise.
            merged = {t.name: t for t in getattr(settings, section)}
            merged.update(values)
            changes[section] = tuple(merged.values())
        elif values:
            changes[section] = dataclasses.replace(getattr(settings, section), **values)
            given.update(f"{section}.{key}" for key in values)
    return dataclasses.replace(settings, **changes, given=frozenset(given))


def load(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """The settings from defaults, files and environment (flags come later, ``with_flags``).

    Args:
        environ: the environment to read (default ``os.environ``); the default store path
            follows the process's own ``XDG_STATE_HOME``, as the store does.
        cwd: where ``./devtunnel.toml`` is looked for (default the current directory).

    Raises:
        ConfigError: a file cannot be read or is invalid, ``$DEVTUNNEL_CONFIG`` names a missing
            file, or an environment variable has a bad value. The message names the file, line and key.
    """
    env = os.environ if environ is None else environ
    settings = Settings()
    for file in config_files(env, cwd):
        if file.role == ENV_CONFIG and not file.exists:
            raise ConfigError(f"{file.path}: no such file (named by {ENV_CONFIG})")
        if file.exists:
            settings = _apply(settings, _read_file(file.path))
    settings = _apply(settings, _environment_layer(env))
    check_tunnel_providers(settings)
    return settings


def overridden_by(dotted: str, path: Path, environ: Mapping[str, str] | None = None,
                  cwd: Path | None = None) -> list[str]:
    """What is read after the file at ``path`` and sets ``dotted`` too, so that a value saved in
    that file does not take effect here: each a phrase for a note (``/p/devtunnel.toml defines
    [tunnels.web] too (a tunnel is replaced whole)``, ``the environment variable DEVTUNNEL_RELAY is set``).

    ``dotted`` is ``SECTION.KEY`` or ``tunnels.NAME.KEY`` (a tunnel is replaced whole by a later
    file that defines it, whatever keys it sets). Files that cannot be read are left to ``load``.
    """
    env = os.environ if environ is None else environ
    parts = dotted.split(".")
    files = config_files(env, cwd)
    mine = path.absolute()
    later = False
    found: list[str] = []
    for file in files:
        if file.path.absolute() == mine:
            later = True
            continue
        if not later or not file.exists:
            continue
        try:
            doc = parse_file(file.path)[1]
        except ConfigError:
            continue
        table = doc.get(parts[0])
        if not isinstance(table, dict) or parts[1] not in table:
            continue
        if parts[0] == "tunnels":
            found.append(f"{file.path} defines [tunnels.{parts[1]}] too (a tunnel is replaced whole)")
        else:
            found.append(f"{file.path} sets {dotted} too")
    found += [f"the environment variable {variable} is set" for variable, key in ENV_SETTINGS.items()
              if key == dotted and env.get(variable)]
    return found


def with_flags(settings: Settings, flags: Mapping[str, tuple[str, object]]) -> Settings:
    """``settings`` with command-line values on top; flags that were not given are None.

    Args:
        settings: what ``load`` returned.
        flags: dotted key -> (flag as typed, value), e.g. ``{"agent.body_cap": ("--body-cap", "1mb")}``.

    Raises:
        ConfigError: a flag value is invalid; the message names the flag.
    """
    layer: _Layer = {}
    for dotted, (flag, value) in flags.items():
        if value is None:
            continue
        section, key = dotted.split(".")
        layer.setdefault(section, {})[key] = flag_value(dotted, flag, value)
    return _apply(settings, layer)


def flag_value(dotted: str, flag: str, value: object) -> Any:
    """The value of setting ``dotted`` that ``flag`` gives as ``value``, checked as the setting's
    kind checks it: the one reading of a flag, whether or not the settings are loaded with it.

    Raises:
        ConfigError: ``value`` is invalid; the message names the flag.
    """
    section, key = dotted.split(".")
    try:
        return fields_of(SECTIONS[section])[key].metadata["kind"].check(value)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None

