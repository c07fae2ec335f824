"""One typed settings tree, and the one place that reads and writes ``devtunnel.toml``.

Every setting has one precedence order, later layers winning::

    defaults                      the field defaults in settings.py
    user file                     $XDG_CONFIG_HOME/devtunnel/devtunnel.toml (~/.config/devtunnel/...)
    project file                  ./devtunnel.toml
    environment                   the file $DEVTUNNEL_CONFIG names, then DEVTUNNEL_RELAY,
                                  DEVTUNNEL_TOKEN and DEVTUNNEL_DB
    command line                  flags, applied by the commands with ``with_flags``

A file looks like this (every key is optional)::

    [relay]
    url = "wss://tunnel.example.com"
    token = "s3cret"

    [agent]
    body_cap = "10mb"

    [tunnels.payments]
    target = "3000"

    [webhooks.stripe]                      # a provider's secrets (see ``WebhookSection``)
    secret_env = "PAYMENTS_STRIPE_SECRET"

Files are validated whole before anything runs: a TOML syntax error, an unknown key, a value of
the wrong type or out of range is one ``ConfigError`` line naming the file, the line and the key.

Import from the package (``from devtunnel.config import load, Settings``); its modules, read
from the top down (a module imports only modules listed after it):

- ``write.py``: ``to_toml`` (``config show``), ``set_value`` (``config set``), ``add_tunnels``,
  ``masked``; a file is checked as it would be, then replaced atomically with mode 0600.
- ``load.py``: ``load`` (defaults, files, environment), ``with_flags`` (the command line) and
  ``overridden_by`` (what would hide a value saved in a file).
- ``webhooks.py``: ``[webhooks.NAME]`` tables read and checked, and ``webhook_context``.
- ``source.py``: where a value came from, and ``FILE:LINE: KEY: PROBLEM`` messages.
- ``settings.py``: the tree, ``Settings`` and its sections, each field with its default and kind;
  ``key_names``; ``tunnel_problem``, what keys of a tunnel's table cannot stand together.
- ``kinds.py``: kinds of value (a port, a size, a duration, a relay URL...): how each is checked,
  read from text and written back.
- ``files.py``: where the files are (``user_file``, ``project_file``, ``config_files``).

``Settings`` here is the user's settings; ``devtunnel.protocol.handshake.Settings`` is another
thing: the limits each side of a tunnel connection announces in its handshake.
"""

from __future__ import annotations

from devtunnel.config.files import FILE_NAME, ConfigFile, config_files, project_file, user_file
from devtunnel.config.load import flag_value, load, overridden_by, with_flags
from devtunnel.config.settings import (
    AgentSection,
    RelaySection,
    RelayServerSection,
    ReplaySection,
    Settings,
    StoreSection,
    TunnelSection,
    WebhookSection,
    app_problem,
    key_names,
    tunnel_problem,
)
from devtunnel.config.webhooks import webhook_context
from devtunnel.config.write import add_tunnels, masked, set_value, to_toml, visible_toml

__all__ = [
    "AgentSection",
    "ConfigFile",
    "RelayServerSection",
    "RelaySection",
    "ReplaySection",
    "Settings",
    "StoreSection",
    "TunnelSection",
    "WebhookSection",
    "FILE_NAME",
    "add_tunnels",
    "app_problem",
    "config_files",
    "key_names",
    "load",
    "overridden_by",
    "masked",
    "project_file",
    "set_value",
    "to_toml",
    "tunnel_problem",
    "visible_toml",
    "user_file",
    "webhook_context",
    "with_flags",
    "flag_value",
]
