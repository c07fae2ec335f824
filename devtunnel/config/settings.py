"""The settings tree: ``Settings`` and its sections, one frozen dataclass per TOML table.

Each field has a default, a docstring (docs/config.md lists them all) and a kind in its
metadata (``devtunnel.config.kinds``). ``[relay]``, ``[agent]``, ``[store]``, ``[relay_server]``
and ``[replay]`` are fixed sections (``SECTIONS``); ``[tunnels.NAME]`` and ``[webhooks.NAME]``
are tables by name, kept as tuples in the order the files define them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtunnel.capture.store import DEFAULT_MAX_BYTES, DEFAULT_MAX_EXCHANGES
from devtunnel.values import paths
from devtunnel.config.kinds import (
    Bool,
    Choice,
    Command,
    Domain,
    Duration,
    EnvName,
    FilePath,
    Fraction,
    HeaderNames,
    HealthPath,
    Int,
    Kind,
    Listen,
    RelayUrl,
    RuleTables,
    Seconds,
    Size,
    Target,
    Template,
    Token,
    Via,
)
from devtunnel.rules import Rule
from devtunnel.webhooks import BUILTIN
from devtunnel.webhooks.custom import ALGORITHMS, ENCODINGS


def _kind(kind: Kind) -> dict[str, Kind]:
    """A field's metadata: the kind its values are checked, read and written by."""
    return {"kind": kind}


@dataclass(frozen=True, slots=True)
class RelaySection:
    """``[relay]``: the relay that ``devtunnel http`` connects to."""

    url: str | None = field(default=None, metadata=_kind(RelayUrl()))
    """Relay URL such as ``wss://tunnel.example.com``; unset runs an embedded relay on 127.0.0.1."""
    token: str | None = field(default=None, metadata=_kind(Token()), repr=False)
    """Token the relay accepts (``devtunnel config add-token`` saves it)."""
    ca: Path | None = field(default=None, metadata=_kind(FilePath()))
    """PEM file of the CA that signed the relay's certificate, trusted beside the system's."""


@dataclass(frozen=True, slots=True)
class AgentSection:
    """``[agent]``: how the agent forwards and records."""

    api_port: int = field(default=4040, metadata=_kind(Int(0, 65535, "a port")))
    """Agent API port on 127.0.0.1; a port set (file, flag) that is taken is an error, the default
    moves on to the next free one; 0 turns the API off for ``http``."""
    body_cap: int = field(default=10 << 20, metadata=_kind(Size()))
    """Bytes of each body to record, e.g. ``"10mb"``."""
    body_budget: int = field(default=64 << 20, metadata=_kind(Size()))
    """Bytes of bodies all the requests in flight keep together while they run (never less than
    ``body_cap``); past it their records are cut, the traffic never is, e.g. ``"64mb"``."""
    host_header: str = field(default="preserve", metadata=_kind(Choice("preserve", "rewrite")))
    """Send the client's Host (``preserve``) or the target's (``rewrite``)."""
    insecure: bool = field(default=False, metadata=_kind(Bool()))
    """Do not verify an https target's certificate (the relay's is always verified: see ``relay.ca``)."""


@dataclass(frozen=True, slots=True)
class StoreSection:
    """``[store]``: the capture database."""

    path: Path = field(default_factory=paths.db_path, metadata=_kind(FilePath()))
    """The SQLite file (default ``$XDG_STATE_HOME/devtunnel/captures.db``)."""
    max_exchanges: int = field(default=DEFAULT_MAX_EXCHANGES, metadata=_kind(Int(1)))
    """Keep at most this many exchanges; the oldest go first."""
    max_bytes: int = field(default=DEFAULT_MAX_BYTES, metadata=_kind(Size(low=1)))
    """Keep about this many bytes of captures, e.g. ``"2gb"``; the oldest go first."""


SECRET_KEYS = ("secret", "secrets")
"""Keys of a ``[webhooks.NAME]`` table whose values are secrets: never shown, in a private file only."""


@dataclass(frozen=True, slots=True)
class WebhookSection:
    """``[webhooks.NAME]``: a webhook provider's secrets, or the scheme of one devtunnel does not know.

    For a built-in provider (stripe, github, slack, shopify, standard, twilio) only the secret
    keys apply; its conventional variable (``STRIPE_WEBHOOK_SECRET`` ...) is read unless
    ``secret_env`` names another. Any other NAME describes a custom provider: ``header`` is
    required, the other scheme keys are optional (``devtunnel.webhooks.custom``).
    """

    name: str
    """The provider's name (the table's key, lower case), as filters and JSON spell it."""
    secret_env: str | None = field(default=None, metadata=_kind(EnvName()))
    """The environment variable to read the secret(s) from, instead of the conventional one."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """Secrets written in the file (``secret = "..."`` or ``secrets = [...]`` while rotating)."""
    header: str | None = field(default=None, metadata=_kind(Kind()))
    """Custom provider: the header that carries the signature."""
    algorithm: str | None = field(default=None, metadata=_kind(Choice(*ALGORITHMS)))
    """Custom provider: the HMAC's hash (default sha256)."""
    encoding: str | None = field(default=None, metadata=_kind(Choice(*ENCODINGS)))
    """Custom provider: how the digest is written (default hex)."""
    prefix: str | None = field(default=None, metadata=_kind(Template()))
    """Custom provider: text before the digest (``sha256=``)."""
    template: str | None = field(default=None, metadata=_kind(Template()))
    """Custom provider: what is signed, with ``{body}`` ``{timestamp}`` ``{id}`` ``{url}`` (default ``{body}``)."""
    timestamp_header: str | None = field(default=None, metadata=_kind(Kind()))
    """Custom provider: the header that carries the signed timestamp."""
    tolerance: float | None = field(default=None, metadata=_kind(Seconds()))
    """Custom provider: seconds the timestamp may be off (default 300)."""
    id_header: str | None = field(default=None, metadata=_kind(Kind()))
    """Custom provider: the header that carries the delivery id."""
    event_path: str | None = field(default=None, metadata=_kind(Kind()))
    """Custom provider: the dotted JSON path of the event type (``type``, ``event.type``)."""
    origin: str = field(default="", compare=False, repr=False)
    """Where the table is (``FILE:LINE``), for messages about it after the files are merged."""

    @property
    def custom(self) -> bool:
        """True when this describes a provider devtunnel does not know by name."""
        return self.name not in BUILTIN_NAMES



BUILTIN_NAMES = frozenset(p.name for p in BUILTIN)
WEBHOOK_KEYS = {f.name: f for f in dataclasses.fields(WebhookSection) if "kind" in f.metadata}
SCHEME_KEYS = [k for k in WEBHOOK_KEYS if k != "secret_env"]


@dataclass(frozen=True, slots=True)
class TunnelSection:
    """``[tunnels.NAME]``: a named tunnel that ``devtunnel http NAME`` starts."""

    name: str
    """The tunnel name (the table's key), also its public host name label."""
    target: str = field(metadata=_kind(Target()))
    """Port, ``HOST:PORT`` or URL of the local service."""
    relay: str | None = field(default=None, metadata=_kind(RelayUrl()))
    """Relay for this tunnel; unset uses ``relay.url``."""
    host_header: str | None = field(default=None, metadata=_kind(Choice("preserve", "rewrite")))
    """Host header mode for this tunnel; unset uses ``agent.host_header``."""
    webhooks: tuple[WebhookSection, ...] = ()
    """``[tunnels.NAME.webhooks.PROVIDER]``: secrets for this tunnel, replacing ``[webhooks.PROVIDER]``'s."""
    via: str | None = field(default=None, metadata=_kind(Via()))
    """Where the public URL comes from: ``cloudflared``, ``localhost.run``, ``pinggy``, ``serveo``,
    ``ssh:USER@HOST[:PORT]`` or ``relay`` (the default: the relay's own URL)."""
    pool: bool = field(default=False, metadata=_kind(Bool()))
    """Share the name with the other agents of the same token that ask for it with ``pool``: the
    relay spreads requests over them."""
    rules: tuple[Rule, ...] = field(default=(), metadata=_kind(RuleTables()))
    """``[[tunnels.NAME.rules]]``: what the relay does with a request first (docs/policy.md)."""
    rules_file: Path | None = field(default=None, metadata=_kind(FilePath()))
    """A TOML file of ``[[rules]]`` tables, applied after ``rules``."""
    run: str | None = field(default=None, metadata=_kind(Command()))
    """Shell command that starts the local app; devtunnel starts, watches and restarts it."""
    health: str | None = field(default=None, metadata=_kind(HealthPath()))
    """Path on the target answering 2xx/3xx once the app is ready; unset: its port accepts connections."""
    hold: float | None = field(default=None, metadata=_kind(Duration()))
    """How long requests wait while the app is down, e.g. ``"30s"`` (answered 503 after); unset: no wait."""
    record: bool = field(default=True, metadata=_kind(Bool()))
    """False: this tunnel's exchanges are forwarded but not recorded (ngrok's ``inspect: false``)."""


@dataclass(frozen=True, slots=True)
class RelayServerSection:
    """``[relay_server]``: what ``devtunnel relay`` serves."""

    listen: str = field(default="127.0.0.1:8000", metadata=_kind(Listen()))
    """Address to serve on, ``HOST:PORT``."""
    domain: str = field(default="localhost", metadata=_kind(Domain()))
    """``NAME.DOMAIN`` goes to tunnel NAME: a host name (letters, digits, ``-`` and ``.``)."""
    tokens_file: Path | None = field(default=None, metadata=_kind(FilePath()))
    """File with one accepted agent token per line (``#`` comments)."""
    max_body: int = field(default=0, metadata=_kind(Size()))
    """Largest request body, e.g. ``"10mb"``; 0 means unlimited."""
    head_timeout: float = field(default=10.0, metadata=_kind(Seconds()))
    """Seconds a client has to send a request head."""
    body_timeout: float = field(default=30.0, metadata=_kind(Seconds()))
    """Seconds a request body may go without a byte before it is dropped (408)."""
    client_share: float = field(default=0.25, metadata=_kind(Fraction()))
    """Share of a tunnel's concurrent requests one client address may hold (1: no cap)."""
    tunnels_per_token: int = field(default=32, metadata=_kind(Int(0)))
    """Tunnel names one agent token may hold at once (a pool counts once); 0: no limit."""
    connections_per_token: int = field(default=64, metadata=_kind(Int(0)))
    """Agent connections one token may hold at once (each member of a pool counts); 0: no limit."""
    drain_timeout: float = field(default=10.0, metadata=_kind(Duration()))
    """How long the requests in flight may take to finish on SIGTERM or SIGINT, e.g. ``"30s"``; 0: stop at once."""
    body_min_rate: int = field(default=500, metadata=_kind(Size()))
    """Bytes a second a request body must average once ``body_timeout`` has passed, e.g. ``"2k"``; 0: no such bound."""
    connections_per_address: int | None = field(default=None, metadata=_kind(Int(0)))
    """Connections one client address may hold open over all tunnels; unset: a quarter of the open-file limit; 0: no limit."""
    pending_per_address: int = field(default=256, metadata=_kind(Int(0)))
    """Connections one client address may hold waiting to send a request (an agent's: its HELLO); 0: no limit."""
    max_pending: int = field(default=0, metadata=_kind(Int(0)))
    """Connections waiting to send a request the relay holds in all, the oldest dropped past it; 0: half the open-file limit."""
    rules_file: Path | None = field(default=None, metadata=_kind(FilePath()))
    """A TOML file of ``[[rules]]`` applied to every tunnel, before each tunnel's own (docs/policy.md)."""


@dataclass(frozen=True, slots=True)
class ReplaySection:
    """``[replay]``: how a replay's response is compared with the original's."""

    ignore_headers: tuple[str, ...] = field(default=(), metadata=_kind(HeaderNames()))
    """Response headers that do not make a replay's response differ, on top of the volatile ones
    (Date, Server-Timing, X-Request-Id and the like), e.g. ``["X-Build", "ETag"]``."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective settings: defaults overlaid by files, environment and flags."""

    relay: RelaySection = field(default_factory=RelaySection)
    """The relay ``devtunnel http`` connects to."""
    agent: AgentSection = field(default_factory=AgentSection)
    """How the agent forwards and records."""
    store: StoreSection = field(default_factory=StoreSection)
    """The capture database."""
    tunnels: tuple[TunnelSection, ...] = ()
    """Named tunnels, in the order the files define them."""
    relay_server: RelayServerSection = field(default_factory=RelayServerSection)
    """What ``devtunnel relay`` serves."""
    replay: ReplaySection = field(default_factory=ReplaySection)
    """How replays are compared with their originals."""
    webhooks: tuple[WebhookSection, ...] = ()
    """Webhook providers' secrets and custom providers, by name (a later file's table replaces one of the same name)."""
    given: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    """The dotted keys of the sections (``agent.api_port`` ...) a file, the environment or a flag
    set: the others hold their defaults (an ``agent.api_port`` that was chosen never moves)."""

    def tunnel(self, name: str) -> TunnelSection | None:
        """The tunnel defined under ``name``, if any."""
        return next((t for t in self.tunnels if t.name == name.lower()), None)


SECTIONS: dict[str, type[Any]] = {
    "relay": RelaySection,
    "agent": AgentSection,
    "store": StoreSection,
    "relay_server": RelayServerSection,
    "replay": ReplaySection,
}
TUNNEL_KEYS = {f.name: f for f in dataclasses.fields(TunnelSection) if f.name not in ("name", "webhooks")}


def app_problem(run: str | None, health: str | None) -> str | None:
    """Why ``health`` cannot stand without ``run``, or None when the two go together.

    ``health`` tells when the app devtunnel runs is ready: with no app to run it has nothing to
    tell. (``hold`` needs no ``run``: requests then wait for the target's port to accept.) The one
    rule for the flags (``--health`` without ``--run``) and for a tunnel's table (``tunnel_problem``).
    """
    if health is not None and not run:
        return "it tells when the app devtunnel runs is ready"
    return None


def tunnel_problem(tunnel: TunnelSection) -> tuple[str, str] | None:
    """The dotted key of a ``[tunnels.NAME]`` table that its other keys leave without meaning, and
    why (``health`` without ``run``); None when the table stands. ``up`` refuses such a tunnel
    (``KEY PROBLEM``), ``config check`` says it with its file and line (``FILE:LINE: KEY: PROBLEM``).
    """
    why = app_problem(tunnel.run, tunnel.health)
    if why is not None:
        return f"tunnels.{tunnel.name}.health", f"needs tunnels.{tunnel.name}.run: {why}"
    return None


def fields_of(section: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    """A section's fields by key."""
    return {f.name: f for f in dataclasses.fields(section)}


def key_names() -> list[str]:
    """Every settable key, dotted (``tunnels.NAME.KEY`` stands for the tunnel keys)."""
    names = [f"{s}.{k}" for s, cls in SECTIONS.items() for k in fields_of(cls)]
    secret_keys = ["secret_env", *SECRET_KEYS]
    return (names + [f"tunnels.NAME.{k}" for k in TUNNEL_KEYS]
            + [f"webhooks.NAME.{k}" for k in secret_keys + SCHEME_KEYS]
            + [f"tunnels.NAME.webhooks.NAME.{k}" for k in secret_keys])

