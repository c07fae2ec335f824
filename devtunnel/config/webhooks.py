"""``[webhooks.NAME]`` tables: reading them, and the agent's ``WebhookContext`` built from them.

A built-in provider's table holds only its secrets (or ``secret_env``); any other name describes
a custom provider (``devtunnel.webhooks.custom``), checked when its file is read so the message
names the file and line. A tunnel's ``[tunnels.NAME.webhooks.PROVIDER]`` tables replace the
global ones of the same provider for that tunnel.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from devtunnel.config.kinds import shown
from devtunnel.config.settings import (
    BUILTIN_NAMES,
    SCHEME_KEYS,
    SECRET_KEYS,
    WEBHOOK_KEYS,
    Settings,
    WebhookSection,
)
from devtunnel.config.source import Source, check_field, refuse_shared_secret, unknown_key
from devtunnel.errors import ConfigError
from devtunnel.webhooks import BUILTIN, CustomProvider

if TYPE_CHECKING:
    from devtunnel.webhooks.context import WebhookContext

_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def read_webhooks(table: object, source: Source, prefix: str, *, custom: bool) -> dict[str, WebhookSection]:
    """``[webhooks.NAME]`` tables (``custom``: custom providers allowed) or a tunnel's, by name."""
    if not isinstance(table, dict):
        raise source.error(prefix, f"expected tables such as [{prefix}.stripe], got {shown(table, prefix)}")
    out: dict[str, WebhookSection] = {}
    for raw_name, definition in table.items():
        where = f"{prefix}.{raw_name}"
        name = raw_name.lower()
        if not _PROVIDER_NAME.fullmatch(name):
            raise source.error(where, "a provider name is letters, digits, - and _ (up to 40), e.g. stripe or acme")
        if not isinstance(definition, dict):
            raise source.error(where, f"expected a table ([{where}]), got {shown(definition, where)}")
        values: dict[str, Any] = {"name": name, "origin": source.where(where)}
        for key, value in definition.items():
            dotted = f"{where}.{key}"
            if key in SECRET_KEYS:
                values["secrets"] = _secrets(source, dotted, key, value, values.get("secrets"))
                continue
            if key not in WEBHOOK_KEYS or key == "secrets":
                raise unknown_key(source, dotted, ["secret_env", "secret", "secrets",
                                                *(SCHEME_KEYS if custom and name not in BUILTIN_NAMES else [])])
            if key != "secret_env" and (not custom or name in BUILTIN_NAMES):
                why = (f"{name} is built in: only secret, secrets and secret_env apply" if name in BUILTIN_NAMES
                       else "a tunnel's table takes only secret, secrets and secret_env; describe the provider "
                            f"under [webhooks.{name}]")
                raise source.error(dotted, why)
            values[key] = check_field(source, dotted, WEBHOOK_KEYS[key], value)
        section = WebhookSection(**values)
        if custom and section.custom:
            custom_provider(section, source)  # checks the scheme now, naming the file and line
        out[name] = section
    return out


def _secrets(source: Source, dotted: str, key: str, value: object, before: object) -> tuple[str, ...]:
    """The secrets of ``secret = "..."`` or ``secrets = [...]``; never says what they are."""
    if before is not None:
        raise source.error(dotted, "give secret or secrets, not both")
    items = [value] if key == "secret" else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v.strip() for v in items):
        expected = "non-empty text" if key == "secret" else "a non-empty array of non-empty texts"
        raise source.error(dotted, f"expected {expected} (the value is not shown: it is a secret)")
    refuse_shared_secret(source, dotted, "a webhook secret",
                         "move the secret to an environment variable and name it with secret_env")
    return tuple(v.strip() for v in items)


def custom_provider(section: WebhookSection, source: Source | None = None) -> CustomProvider:
    """The provider a custom ``[webhooks.NAME]`` table describes.

    Raises:
        ConfigError: a key is missing or wrong; with ``source``, the message names the file and line.
    """
    options = {k: getattr(section, k) for k in ("algorithm", "encoding", "prefix", "template", "timestamp_header",
                                               "tolerance", "id_header", "event_path", "secret_env")}
    try:
        return CustomProvider(section.name, section.header or "", **{k: v for k, v in options.items() if v is not None})
    except ConfigError as exc:
        if source is None:
            raise
        dotted, sep, problem = str(exc).partition(": ")  # "webhooks.acme.header: the ... is required"
        if not sep:
            dotted, problem = f"webhooks.{section.name}", str(exc)
        where = source.where(dotted)
        if where == source.label:  # a key that is missing: the table's line
            where = source.where(f"webhooks.{section.name}")
        raise ConfigError(f"{where}: {dotted}: {problem}") from None


def check_tunnel_providers(settings: Settings) -> None:
    """Every ``[tunnels.NAME.webhooks.PROVIDER]`` names a built-in provider or one under ``[webhooks]``."""
    known = BUILTIN_NAMES | {w.name for w in settings.webhooks}
    for tunnel in settings.tunnels:
        for section in tunnel.webhooks:
            if section.name not in known:
                raise ConfigError(
                    f"{section.origin}: tunnels.{tunnel.name}.webhooks.{section.name}: no provider named "
                    f"{section.name}: use one of {', '.join(sorted(BUILTIN_NAMES))}, or describe it under "
                    f"[webhooks.{section.name}] (header = ...)")



def webhook_context(settings: Settings, environ: Mapping[str, str] | None = None,
                    names: Mapping[str, str] | None = None) -> WebhookContext:
    """Providers and secrets as the agent judges deliveries with, read once when it starts.

    Custom providers from ``[webhooks.NAME]`` come first, then the built-in ones. Each
    provider's secrets: those written in config, then those in its variable (``secret_env``,
    else the conventional one, such as ``STRIPE_WEBHOOK_SECRET``). A tunnel with tables of its
    own (``[tunnels.NAME.webhooks.PROVIDER]``) gets a context where those replace the global ones;
    ``names`` maps a tunnel's name to the ``[tunnels.NAME]`` whose tables it takes
    (``devtunnel http payments --name other``: other takes payments').
    """
    from devtunnel.webhooks.context import WebhookContext
    from devtunnel.webhooks.secrets import known_secrets

    env = os.environ if environ is None else environ
    providers = tuple(custom_provider(w) for w in settings.webhooks if w.custom) + BUILTIN

    def context(sections: Iterable[WebhookSection]) -> WebhookContext:
        chosen = list(sections)
        envs = {w.name: w.secret_env for w in chosen if w.secret_env}
        found = known_secrets(providers, env, {w.name: w.secrets for w in chosen if w.secrets}, envs)
        return WebhookContext(providers, {name: tuple(found[name]) for name in found}, envs)

    tunnels = {}
    for tunnel in settings.tunnels:
        if tunnel.webhooks:
            merged = {w.name: w for w in settings.webhooks}
            merged.update({w.name: w for w in tunnel.webhooks})
            tunnels[tunnel.name] = dataclasses.replace(context(merged.values()),
                                                       configured=tuple(w.name for w in tunnel.webhooks))
    for name, section_name in (names or {}).items():
        if section_name in tunnels:
            tunnels[name] = tunnels[section_name]
    return dataclasses.replace(context(settings.webhooks), tunnels=tunnels)

