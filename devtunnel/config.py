"""One typed settings tree, and the one place that reads and writes ``devtunnel.toml``.

Every setting has one precedence order, later layers winning::

    defaults                      the field defaults below
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
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from devtunnel.capture.store import DEFAULT_MAX_BYTES, DEFAULT_MAX_EXCHANGES
from devtunnel.errors import ConfigError
from devtunnel.values import paths
from devtunnel.values.names import validate_name
from devtunnel.values.sizes import parse_size
from devtunnel.values.target import parse_target
from devtunnel.rules import Rule, RulesError, parse_rules, rules_to_tables
from devtunnel.webhooks import BUILTIN, CustomProvider
from devtunnel.webhooks.custom import ALGORITHMS, ENCODINGS

if TYPE_CHECKING:
    from devtunnel.webhooks.context import WebhookContext
from devtunnel.values.durations import format_duration, parse_duration
from devtunnel.values.health_path import health_path_problem

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
    "config_files",
    "key_names",
    "load",
    "masked",
    "project_file",
    "set_value",
    "size_text",
    "to_toml",
    "user_file",
    "webhook_context",
    "with_flags",
]

FILE_NAME = "devtunnel.toml"
ENV_CONFIG = "DEVTUNNEL_CONFIG"
# environment variable -> setting it stands for
ENV_SETTINGS = {"DEVTUNNEL_RELAY": "relay.url", "DEVTUNNEL_TOKEN": "relay.token", "DEVTUNNEL_DB": "store.path"}


# Kinds of value ---------------------------------------------------------------------------
# Each field names its kind in its metadata: how a value from TOML is checked, how text from
# the environment or ``config set`` becomes a TOML value, and how it is written back.


class _Kind:
    """Plain text."""

    def check(self, value: object) -> Any:
        """The setting's Python value; raises ValueError with the problem in words."""
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected non-empty text, got {_shown(value)}")
        return value.strip()

    def from_text(self, text: str) -> object:
        """The TOML value that ``text`` (from the environment or the command line) stands for."""
        return text

    def to_toml(self, value: Any) -> object:
        """The TOML value written for a Python value."""
        return value


class _Int(_Kind):
    def __init__(self, low: int, high: int | None = None, what: str = "an integer") -> None:
        self.low, self.high, self.what = low, high, what

    def check(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected {self.what}, got {_shown(value)}")
        if value < self.low or (self.high is not None and value > self.high):
            bounds = f"{self.low}-{self.high}" if self.high is not None else f"{self.low} or more"
            raise ValueError(f"expected {self.what} of {bounds}, got {value}")
        return value

    def from_text(self, text: str) -> object:
        try:
            return int(text.strip())
        except ValueError:
            return text  # check() says what was expected


class _Seconds(_Kind):
    def check(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number of seconds, got {_shown(value)}")
        if not value > 0:
            raise ValueError(f"expected more than 0 seconds, got {value}")
        return float(value)

    def from_text(self, text: str) -> object:
        try:
            return float(text.strip())
        except ValueError:
            return text


class _Fraction(_Seconds):
    def check(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a fraction such as 0.25, got {_shown(value)}")
        if not 0 < value <= 1:
            raise ValueError(f"expected a fraction more than 0 and at most 1, got {value}")
        return float(value)


class _Bool(_Kind):
    _TEXT = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}

    def check(self, value: object) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_shown(value)}")
        return value

    def from_text(self, text: str) -> object:
        return self._TEXT.get(text.strip().lower(), text)


class _Size(_Kind):
    """A byte count: an integer, or text such as ``"10mb"`` (``devtunnel.values.sizes``)."""

    def __init__(self, low: int = 0) -> None:
        self.low = low

    def check(self, value: object) -> int:
        if isinstance(value, str):
            if value.strip().startswith("-"):
                raise ValueError(f"a size cannot be negative, got {value!r}")
            try:
                value = parse_size(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a size such as 10mb, got {_shown(value)}")
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        if value < self.low:
            raise ValueError(f"expected at least {self.low} byte, got {value}")
        return value

    def to_toml(self, value: Any) -> object:
        return size_text(value)


class _Choice(_Kind):
    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def check(self, value: object) -> str:
        if value not in self.choices:
            raise ValueError(f"expected one of {', '.join(map(repr, self.choices))}, got {_shown(value)}")
        return str(value)


class _Path(_Kind):
    def check(self, value: object) -> Path:
        return Path(super().check(value)).expanduser()

    def to_toml(self, value: Any) -> object:
        return str(value)


class _RelayUrl(_Kind):
    def check(self, value: object) -> str:
        text: str = super().check(value)
        from devtunnel.agent.service import relay_connect_url  # loads websockets: only when a URL is set

        try:
            relay_connect_url(text)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return text


class _Via(_Kind):
    """A public-URL provider (``devtunnel.via``)."""

    def check(self, value: object) -> str:
        text: str = super().check(value)
        from devtunnel.via import parse_via

        try:
            return parse_via(text).describe()
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc


class _Target(_Kind):
    """A tunnel target: a port number, ``HOST:PORT`` or a URL."""

    def check(self, value: object) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        text: str = super().check(value)
        try:
            parse_target(text)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return text


class _Listen(_Kind):
    _RE = re.compile(r"(?:(\[[^\]]*\]|[^:\[\]]*):)?(\d{1,5})")

    def check(self, value: object) -> str:
        text: str = super().check(value)
        match = self._RE.fullmatch(text)
        if match is None or int(match.group(2)) > 65535:
            raise ValueError(f"expected HOST:PORT with a port of 0-65535, e.g. 0.0.0.0:8000, got {text!r}")
        return text


class _Command(_Kind):
    def check(self, value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a command line such as \"uvicorn app:app --port 8000\", got {_shown(value)}")
        if "\x00" in value:
            raise ValueError("expected a command line without NUL characters")
        return value


class _HealthPath(_Kind):
    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a path such as \"/healthz\", got {_shown(value)}")
        problem = health_path_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class _Duration(_Kind):
    def check(self, value: object) -> float:
        if not isinstance(value, str | int | float):
            raise ValueError(f"expected a duration such as \"30s\", got {_shown(value)}")
        return parse_duration(value)

    def to_toml(self, value: Any) -> object:
        return format_duration(value)


class _HeaderNames(_Kind):
    """Header names: a TOML array of strings (typed text: names separated by commas)."""

    _TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

    def check(self, value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list of header names such as [\"X-Build\"], got {_shown(value)}")
        for name in value:
            if not isinstance(name, str) or not self._TOKEN.fullmatch(name):
                raise ValueError(f"expected header names such as X-Build, got {_shown(name)}")
        return tuple(value)

    def to_toml(self, value: Any) -> object:
        return list(value)
class _EnvName(_Kind):
    """The name of an environment variable."""

    _RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

    def check(self, value: object) -> str:
        text: str = super().check(value)
        if not self._RE.fullmatch(text):
            raise ValueError(f"expected an environment variable name such as STRIPE_WEBHOOK_SECRET, got {text!r}")
        return text


class _Template(_Kind):
    """Text that may be empty (a prefix)."""

    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected text, got {_shown(value)}")
        return value


class _Rules(_Kind):
    """``[[tunnels.NAME.rules]]`` tables (``devtunnel.rules``); read by ``_read_tunnels``."""

    def check(self, value: object) -> tuple[Rule, ...]:
        try:
            return parse_rules(value if isinstance(value, list) else {}, "rules")  # type: ignore[arg-type]
        except RulesError as exc:
            raise ValueError(exc.detail) from None

    def from_text(self, text: str) -> object:
        raise ValueError("rules are tables: write them in the file as [[tunnels.NAME.rules]] (docs/policy.md)")

    def to_toml(self, value: Any) -> object:
        return rules_to_tables(value) if value else None


def _shown(value: object) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "text", dict: "a table", list: "an array"}
    return f"{value!r}" if isinstance(value, str) else kind.get(type(value), type(value).__name__)


def _kind(kind: _Kind) -> dict[str, _Kind]:
    return {"kind": kind}


# The tree -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelaySection:
    """``[relay]``: the relay that ``devtunnel http`` connects to."""

    url: str | None = field(default=None, metadata=_kind(_RelayUrl()))
    """Relay URL such as ``wss://tunnel.example.com``; unset runs an embedded relay on 127.0.0.1."""
    token: str | None = field(default=None, metadata=_kind(_Kind()))
    """Token the relay accepts (``devtunnel config add-token`` saves it)."""


@dataclass(frozen=True, slots=True)
class AgentSection:
    """``[agent]``: how the agent forwards and records."""

    api_port: int = field(default=4040, metadata=_kind(_Int(0, 65535, "a port")))
    """Agent API port on 127.0.0.1 (the next free one if taken; 0 turns the API off for ``http``)."""
    body_cap: int = field(default=10 << 20, metadata=_kind(_Size()))
    """Bytes of each body to record, e.g. ``"10mb"``."""
    host_header: str = field(default="preserve", metadata=_kind(_Choice("preserve", "rewrite")))
    """Send the client's Host (``preserve``) or the target's (``rewrite``)."""
    insecure: bool = field(default=False, metadata=_kind(_Bool()))
    """Do not verify the relay's or an https target's certificate."""


@dataclass(frozen=True, slots=True)
class StoreSection:
    """``[store]``: the capture database."""

    path: Path = field(default_factory=paths.db_path, metadata=_kind(_Path()))
    """The SQLite file (default ``$XDG_STATE_HOME/devtunnel/captures.db``)."""
    max_exchanges: int = field(default=DEFAULT_MAX_EXCHANGES, metadata=_kind(_Int(1)))
    """Keep at most this many exchanges; the oldest go first."""
    max_bytes: int = field(default=DEFAULT_MAX_BYTES, metadata=_kind(_Size(low=1)))
    """Keep about this many bytes of captures, e.g. ``"2gb"``; the oldest go first."""


_SECRET_KEYS = ("secret", "secrets")
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
    secret_env: str | None = field(default=None, metadata=_kind(_EnvName()))
    """The environment variable to read the secret(s) from, instead of the conventional one."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """Secrets written in the file (``secret = "..."`` or ``secrets = [...]`` while rotating)."""
    header: str | None = field(default=None, metadata=_kind(_Kind()))
    """Custom provider: the header that carries the signature."""
    algorithm: str | None = field(default=None, metadata=_kind(_Choice(*ALGORITHMS)))
    """Custom provider: the HMAC's hash (default sha256)."""
    encoding: str | None = field(default=None, metadata=_kind(_Choice(*ENCODINGS)))
    """Custom provider: how the digest is written (default hex)."""
    prefix: str | None = field(default=None, metadata=_kind(_Template()))
    """Custom provider: text before the digest (``sha256=``)."""
    template: str | None = field(default=None, metadata=_kind(_Template()))
    """Custom provider: what is signed, with ``{body}`` ``{timestamp}`` ``{id}`` ``{url}`` (default ``{body}``)."""
    timestamp_header: str | None = field(default=None, metadata=_kind(_Kind()))
    """Custom provider: the header that carries the signed timestamp."""
    tolerance: float | None = field(default=None, metadata=_kind(_Seconds()))
    """Custom provider: seconds the timestamp may be off (default 300)."""
    id_header: str | None = field(default=None, metadata=_kind(_Kind()))
    """Custom provider: the header that carries the delivery id."""
    event_path: str | None = field(default=None, metadata=_kind(_Kind()))
    """Custom provider: the dotted JSON path of the event type (``type``, ``event.type``)."""
    origin: str = field(default="", compare=False, repr=False)
    """Where the table is (``FILE:LINE``), for messages about it after the files are merged."""

    @property
    def custom(self) -> bool:
        """True when this describes a provider devtunnel does not know by name."""
        return self.name not in _BUILTIN_NAMES


_BUILTIN_NAMES = frozenset(p.name for p in BUILTIN)
_WEBHOOK_KEYS = {f.name: f for f in dataclasses.fields(WebhookSection) if "kind" in f.metadata}
_SCHEME_KEYS = [k for k in _WEBHOOK_KEYS if k != "secret_env"]
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


@dataclass(frozen=True, slots=True)
class TunnelSection:
    """``[tunnels.NAME]``: a named tunnel that ``devtunnel http NAME`` starts."""

    name: str
    """The tunnel name (the table's key), also its public host name label."""
    target: str = field(metadata=_kind(_Target()))
    """Port, ``HOST:PORT`` or URL of the local service."""
    relay: str | None = field(default=None, metadata=_kind(_RelayUrl()))
    """Relay for this tunnel; unset uses ``relay.url``."""
    host_header: str | None = field(default=None, metadata=_kind(_Choice("preserve", "rewrite")))
    """Host header mode for this tunnel; unset uses ``agent.host_header``."""
    webhooks: tuple[WebhookSection, ...] = ()
    """``[tunnels.NAME.webhooks.PROVIDER]``: secrets for this tunnel, replacing ``[webhooks.PROVIDER]``'s."""
    via: str | None = field(default=None, metadata=_kind(_Via()))
    """Where the public URL comes from: ``cloudflared``, ``localhost.run``, ``pinggy``, ``serveo``,
    ``ssh:USER@HOST[:PORT]`` or ``relay`` (the default: the relay's own URL)."""
    pool: bool = field(default=False, metadata=_kind(_Bool()))
    """Share the name with the other agents of the same token that ask for it with ``pool``: the
    relay spreads requests over them."""
    rules: tuple[Rule, ...] = field(default=(), metadata=_kind(_Rules()))
    """``[[tunnels.NAME.rules]]``: what the relay does with a request first (docs/policy.md)."""
    rules_file: Path | None = field(default=None, metadata=_kind(_Path()))
    """A TOML file of ``[[rules]]`` tables, applied after ``rules``."""
    run: str | None = field(default=None, metadata=_kind(_Command()))
    """Shell command that starts the local app; devtunnel starts, watches and restarts it."""
    health: str | None = field(default=None, metadata=_kind(_HealthPath()))
    """Path on the target answering 2xx/3xx once the app is ready; unset: its port accepts connections."""
    hold: float | None = field(default=None, metadata=_kind(_Duration()))
    """How long requests wait while the app is down, e.g. ``"30s"`` (answered 503 after); unset: no wait."""


@dataclass(frozen=True, slots=True)
class RelayServerSection:
    """``[relay_server]``: what ``devtunnel relay`` serves."""

    listen: str = field(default="127.0.0.1:8000", metadata=_kind(_Listen()))
    """Address to serve on, ``HOST:PORT``."""
    domain: str = field(default="localhost", metadata=_kind(_Kind()))
    """``NAME.DOMAIN`` goes to tunnel NAME."""
    tokens_file: Path | None = field(default=None, metadata=_kind(_Path()))
    """File with one accepted agent token per line (``#`` comments)."""
    max_body: int = field(default=0, metadata=_kind(_Size()))
    """Largest request body, e.g. ``"10mb"``; 0 means unlimited."""
    head_timeout: float = field(default=10.0, metadata=_kind(_Seconds()))
    """Seconds a client has to send a request head."""
    body_timeout: float = field(default=30.0, metadata=_kind(_Seconds()))
    """Seconds a request body may go without a byte before it is dropped (408)."""
    client_share: float = field(default=0.25, metadata=_kind(_Fraction()))
    """Share of a tunnel's concurrent requests one client address may hold (1: no cap)."""
    rules_file: Path | None = field(default=None, metadata=_kind(_Path()))
    """A TOML file of ``[[rules]]`` applied to every tunnel, before each tunnel's own (docs/policy.md)."""


@dataclass(frozen=True, slots=True)
class ReplaySection:
    """``[replay]``: how a replay's response is compared with the original's."""

    ignore_headers: tuple[str, ...] = field(default=(), metadata=_kind(_HeaderNames()))
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

    def tunnel(self, name: str) -> TunnelSection | None:
        """The tunnel defined under ``name``, if any."""
        return next((t for t in self.tunnels if t.name == name.lower()), None)


_SECTIONS: dict[str, type[Any]] = {
    "relay": RelaySection,
    "agent": AgentSection,
    "store": StoreSection,
    "relay_server": RelayServerSection,
    "replay": ReplaySection,
}
_TUNNEL_KEYS = {f.name: f for f in dataclasses.fields(TunnelSection) if f.name not in ("name", "webhooks")}


def _keys(section: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(section)}


def key_names() -> list[str]:
    """Every settable key, dotted (``tunnels.NAME.KEY`` stands for the tunnel keys)."""
    names = [f"{s}.{k}" for s, cls in _SECTIONS.items() for k in _keys(cls)]
    secret_keys = ["secret_env", *_SECRET_KEYS]
    return (names + [f"tunnels.NAME.{k}" for k in _TUNNEL_KEYS]
            + [f"webhooks.NAME.{k}" for k in secret_keys + _SCHEME_KEYS]
            + [f"tunnels.NAME.webhooks.NAME.{k}" for k in secret_keys])


# Where the files are ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """One file in the order files are read."""

    path: Path
    """Where it is."""
    role: str
    """``user``, ``project`` or ``DEVTUNNEL_CONFIG``."""

    @property
    def exists(self) -> bool:
        """Whether there is something at ``path``."""
        return self.path.exists()


def user_file(environ: Mapping[str, str] | None = None) -> Path:
    """``devtunnel.toml`` in ``values.paths.config_dir()`` (``$XDG_CONFIG_HOME/devtunnel/``, else ``~/.config/devtunnel/``)."""
    return paths.config_dir(environ) / FILE_NAME


def project_file(cwd: Path | None = None) -> Path:
    """``./devtunnel.toml``."""
    return (cwd or Path.cwd()) / FILE_NAME


def config_files(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> list[ConfigFile]:
    """The files settings are read from, lowest precedence first."""
    env = os.environ if environ is None else environ
    files = [ConfigFile(user_file(env), "user"), ConfigFile(project_file(cwd), "project")]
    if env.get(ENV_CONFIG):
        files.append(ConfigFile(Path(env[ENV_CONFIG]).expanduser(), ENV_CONFIG))
    return files


# Reading ------------------------------------------------------------------------------------

# One layer: {"relay": {"url": ...}, ..., "tunnels": {name: TunnelSection}}, checked values only.
_Layer = dict[str, dict[str, Any]]


class _Source:
    """Where values come from, for messages: a file (with its text, to find lines) or a label."""

    def __init__(self, label: str, text: str | None = None, folder: Path | None = None,
                 path: Path | None = None) -> None:
        self.label = label
        self.text = text
        self.folder = folder
        self.path = path
        """The file itself, when the values come from one (its mode decides whether it may hold secrets)."""
        """Relative paths in a file are relative to the file's folder, wherever the command runs."""

    def where(self, dotted: str) -> str:
        """``FILE:LINE`` of a key (``FILE`` alone when the line is not found)."""
        line = _line_of(self.text, dotted.split(".")) if self.text is not None else None
        return f"{self.label}:{line}" if line else self.label

    def error(self, dotted: str, problem: str) -> ConfigError:
        where = self.where(dotted)
        return ConfigError(f"{where}: {dotted}: {problem}" if where else f"{dotted}: {problem}")


_KEY_RE = re.compile(r"""\s*((?:"[^"]*"|'[^']*'|[\w-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[\w-]+))*)\s*=""")


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


def _line_of(text: str, parts: list[str]) -> int | None:
    """The line where the key ``parts`` is set (or its table starts), found by a simple scan.

    tomllib reports lines only for syntax errors; this finds them for wrong values too, in the
    usual layouts (``[table]`` headers and ``key = value`` or ``a.b = value`` lines).
    """
    want = tuple(parts)
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.split("#", 1)[0].strip()
        if stripped.startswith("["):
            table = _split_key(stripped.strip("[] "))
            if table[: len(want)] == want:
                return number
            continue
        match = _KEY_RE.match(line)
        if match and (table + _split_key(match.group(1)))[: len(want)] == want:
            return number
    return None


def _unknown(source: _Source, dotted: str, known: list[str]) -> ConfigError:
    *prefix, name = dotted.split(".")
    guess = difflib.get_close_matches(name, known, n=1) or [k for k in known if k.startswith(name) or name.startswith(k)]
    hint = f"; did you mean {'.'.join([*prefix, guess[0]])}?" if guess else f"; known: {', '.join(known)}"
    return source.error(dotted, f"unknown setting{hint}")


def _check(source: _Source, dotted: str, f: dataclasses.Field[Any], value: object) -> Any:
    try:
        checked = f.metadata["kind"].check(value)
    except ValueError as exc:
        raise source.error(dotted, str(exc)) from None
    if isinstance(checked, Path) and source.folder is not None:
        checked = source.folder / checked  # an absolute path stays as it is
    return checked


def _read_document(doc: Mapping[str, Any], source: _Source) -> _Layer:
    """Check a parsed TOML document against the tree; return its values."""
    layer: _Layer = {}
    for section, table in doc.items():
        if section == "tunnels":
            layer["tunnels"] = _read_tunnels(table, source)
            continue
        if section == "webhooks":
            layer["webhooks"] = _read_webhooks(table, source, "webhooks", custom=True)
            continue
        if section not in _SECTIONS:
            raise _unknown(source, section, [*_SECTIONS, "tunnels", "webhooks"])
        if not isinstance(table, dict):
            raise source.error(section, f"expected a table ([{section}]), got {_shown(table)}")
        fields = _keys(_SECTIONS[section])
        values = layer.setdefault(section, {})
        for key, value in table.items():
            if key not in fields:
                raise _unknown(source, f"{section}.{key}", list(fields))
            values[key] = _check(source, f"{section}.{key}", fields[key], value)
    return layer


def _read_tunnels(table: object, source: _Source) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise source.error("tunnels", f"expected tables such as [tunnels.web], got {_shown(table)}")
    tunnels: dict[str, Any] = {}
    for raw_name, definition in table.items():
        prefix = f"tunnels.{raw_name}"
        try:
            name = validate_name(raw_name)
        except ConfigError as exc:
            raise source.error(prefix, f"not a tunnel name: {exc}") from None
        if not isinstance(definition, dict):
            raise source.error(prefix, f"expected a table ([{prefix}]), got {_shown(definition)}")
        values: dict[str, Any] = {"name": name}
        for key, value in definition.items():
            if key == "webhooks":
                values[key] = tuple(_read_webhooks(value, source, f"{prefix}.webhooks", custom=False).values())
                continue
            if key not in _TUNNEL_KEYS:
                raise _unknown(source, f"{prefix}.{key}", list(_TUNNEL_KEYS))
            if key == "rules":
                values[key] = _read_rules(source, f"{prefix}.rules", value)
                continue
            values[key] = _check(source, f"{prefix}.{key}", _TUNNEL_KEYS[key], value)
        if "target" not in values:
            raise source.error(prefix, "target is missing, e.g. target = \"3000\"")
        tunnels[name] = TunnelSection(**values)
    return tunnels


def _read_webhooks(table: object, source: _Source, prefix: str, *, custom: bool) -> dict[str, WebhookSection]:
    """``[webhooks.NAME]`` tables (``custom``: custom providers allowed) or a tunnel's, by name."""
    if not isinstance(table, dict):
        raise source.error(prefix, f"expected tables such as [{prefix}.stripe], got {_shown(table)}")
    out: dict[str, WebhookSection] = {}
    for raw_name, definition in table.items():
        where = f"{prefix}.{raw_name}"
        name = raw_name.lower()
        if not _PROVIDER_NAME.fullmatch(name):
            raise source.error(where, "a provider name is letters, digits, - and _ (up to 40), e.g. stripe or acme")
        if not isinstance(definition, dict):
            raise source.error(where, f"expected a table ([{where}]), got {_shown(definition)}")
        values: dict[str, Any] = {"name": name, "origin": source.where(where)}
        for key, value in definition.items():
            dotted = f"{where}.{key}"
            if key in _SECRET_KEYS:
                values["secrets"] = _secrets(source, dotted, key, value, values.get("secrets"))
                continue
            if key not in _WEBHOOK_KEYS or key == "secrets":
                raise _unknown(source, dotted, ["secret_env", "secret", "secrets",
                                                *(_SCHEME_KEYS if custom and name not in _BUILTIN_NAMES else [])])
            if key != "secret_env" and (not custom or name in _BUILTIN_NAMES):
                why = (f"{name} is built in: only secret, secrets and secret_env apply" if name in _BUILTIN_NAMES
                       else "a tunnel's table takes only secret, secrets and secret_env; describe the provider "
                            f"under [webhooks.{name}]")
                raise source.error(dotted, why)
            values[key] = _check(source, dotted, _WEBHOOK_KEYS[key], value)
        section = WebhookSection(**values)
        if custom and section.custom:
            _custom_provider(section, source)  # checks the scheme now, naming the file and line
        out[name] = section
    return out


def _secrets(source: _Source, dotted: str, key: str, value: object, before: object) -> tuple[str, ...]:
    """The secrets of ``secret = "..."`` or ``secrets = [...]``; never says what they are."""
    if before is not None:
        raise source.error(dotted, "give secret or secrets, not both")
    items = [value] if key == "secret" else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v.strip() for v in items):
        expected = "non-empty text" if key == "secret" else "a non-empty array of non-empty texts"
        raise source.error(dotted, f"expected {expected} (the value is not shown: it is a secret)")
    path = source.path
    if path is not None and os.name != "nt":
        try:
            mode = path.stat().st_mode
        except OSError:
            mode = 0
        if mode & 0o044:
            raise source.error(dotted, f"the file holds a webhook secret but other users can read it (mode "
                                       f"{mode & 0o777:03o}): run chmod 600 {path}, or move the secret to an "
                                       "environment variable and name it with secret_env")
    return tuple(v.strip() for v in items)


def _custom_provider(section: WebhookSection, source: _Source | None = None) -> CustomProvider:
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


def _check_tunnel_providers(settings: Settings) -> None:
    """Every ``[tunnels.NAME.webhooks.PROVIDER]`` names a built-in provider or one under ``[webhooks]``."""
    known = _BUILTIN_NAMES | {w.name for w in settings.webhooks}
    for tunnel in settings.tunnels:
        for section in tunnel.webhooks:
            if section.name not in known:
                raise ConfigError(
                    f"{section.origin}: tunnels.{tunnel.name}.webhooks.{section.name}: no provider named "
                    f"{section.name}: use one of {', '.join(sorted(_BUILTIN_NAMES))}, or describe it under "
                    f"[webhooks.{section.name}] (header = ...)")


def _read_rules(source: _Source, dotted: str, value: object) -> tuple[Rule, ...]:
    """``[[tunnels.NAME.rules]]``; an error names the line of the rule's own table."""
    try:
        return parse_rules(value if isinstance(value, list) else {}, dotted, base=source.folder)  # type: ignore[arg-type]
    except RulesError as exc:
        line = _line_of_table(source.text, dotted, exc.number) if source.text is not None else None
        where = f"{source.label}:{line}" if line else source.label
        raise ConfigError(f"{where}: {dotted}: {exc.detail}" if where else f"{dotted}: {exc.detail}") from None


def _line_of_table(text: str, dotted: str, number: int) -> int | None:
    """The line of the ``number``-th ``[[dotted]]`` table header (from 1)."""
    want = _split_key(dotted)
    seen = 0
    for line_number, line in enumerate(text.splitlines(), 1):
        stripped = line.split("#", 1)[0].strip()
        if stripped.startswith("[[") and _split_key(stripped.strip("[] ")) == want:
            seen += 1
            if seen == max(number, 1):
                return line_number
    return _line_of(text, dotted.split("."))


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text at byte {exc.start}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _parse_file(path: Path) -> tuple[str, dict[str, Any]]:
    text = _read_text(path)
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _read_file(path: Path) -> _Layer:
    text, doc = _parse_file(path)
    return _read_document(doc, _Source(str(path), text, path.parent, path))


def _environment_layer(env: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for variable, dotted in ENV_SETTINGS.items():
        text = env.get(variable)
        if not text:  # set but empty means unset, as a shell's VAR= does
            continue
        section, key = dotted.split(".")
        f = _keys(_SECTIONS[section])[key]
        value = f.metadata["kind"].from_text(text)
        layer.setdefault(section, {})[key] = _check(_Source(f"environment variable {variable}"), dotted, f, value)
    return layer


def _apply(settings: Settings, layer: _Layer) -> Settings:
    changes: dict[str, Any] = {}
    for section, values in layer.items():
        if section in ("tunnels", "webhooks"):
            # A definition replaces one of the same name whole: half of each would be a surprise.
            merged = {t.name: t for t in getattr(settings, section)}
            merged.update(values)
            changes[section] = tuple(merged.values())
        elif values:
            changes[section] = dataclasses.replace(getattr(settings, section), **values)
    return dataclasses.replace(settings, **changes)


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
    _check_tunnel_providers(settings)
    return settings


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
        f = _keys(_SECTIONS[section])[key]
        try:
            checked = f.metadata["kind"].check(value)
        except ValueError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
        layer.setdefault(section, {})[key] = checked
    return _apply(settings, layer)


# Writing ------------------------------------------------------------------------------------


def size_text(n: int) -> object:
    """A byte count as ``parse_size`` reads it back: ``"10mb"`` when whole, else the integer."""
    for unit, factor in (("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return n


def masked(token: str) -> str:
    """A token shown without giving it away: its last 4 characters only when it is long."""
    return "********" + token[-4:] if len(token) >= 16 else "********"


def _section_toml(section: Any, fields: Mapping[str, dataclasses.Field[Any]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, f in fields.items():
        value = getattr(section, key)
        if value is not None and key != "name":
            shown = f.metadata["kind"].to_toml(value)
            if shown is not None:
                out[key] = shown
    return out


def to_toml(settings: Settings, *, mask_token: bool = True) -> str:
    """The settings as a ``devtunnel.toml`` document (unset values left out)."""
    doc: dict[str, object] = {}
    for name, cls in _SECTIONS.items():
        doc[name] = _section_toml(getattr(settings, name), _keys(cls))
    token = settings.relay.token
    if mask_token and token is not None:
        doc["relay"] = {**doc["relay"], "token": masked(token)}  # type: ignore[dict-item]
    if settings.tunnels:
        doc["tunnels"] = {t.name: _section_toml(t, _TUNNEL_KEYS) for t in settings.tunnels}
        for t in settings.tunnels:
            if not t.pool:  # a switch that is off says nothing a reader needs
                doc["tunnels"][t.name].pop("pool", None)  # type: ignore[index, union-attr]
            if t.webhooks:
                doc["tunnels"][t.name]["webhooks"] = _webhooks_toml(t.webhooks, mask_token)  # type: ignore[index]
    if settings.webhooks:
        doc["webhooks"] = _webhooks_toml(settings.webhooks, mask_token)
    return tomli_w.dumps(doc)


def _webhooks_toml(sections: tuple[WebhookSection, ...], mask: bool) -> dict[str, object]:
    out: dict[str, object] = {}
    for section in sections:
        table = _section_toml(section, _WEBHOOK_KEYS)
        if section.secrets:
            table["secrets"] = [masked(s) if mask else s for s in section.secrets]
        out[section.name] = table
    return out


def webhook_context(settings: Settings, environ: Mapping[str, str] | None = None) -> WebhookContext:
    """Providers and secrets as the agent judges deliveries with, read once when it starts.

    Custom providers from ``[webhooks.NAME]`` come first, then the built-in ones. Each
    provider's secrets: those written in config, then those in its variable (``secret_env``,
    else the conventional one, such as ``STRIPE_WEBHOOK_SECRET``). A tunnel with tables of its
    own (``[tunnels.NAME.webhooks.PROVIDER]``) gets a context where those replace the global ones.
    """
    from devtunnel.webhooks.context import WebhookContext
    from devtunnel.webhooks.secrets import known_secrets

    env = os.environ if environ is None else environ
    providers = tuple(_custom_provider(w) for w in settings.webhooks if w.custom) + BUILTIN

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
            tunnels[tunnel.name] = context(merged.values())
    return dataclasses.replace(context(settings.webhooks), tunnels=tunnels)


def _key_field(dotted: str) -> tuple[list[str], dataclasses.Field[Any]]:
    parts = dotted.split(".")
    source = _Source("")  # the key was typed: no file to name
    if parts[0] == "tunnels":
        if len(parts) != 3:
            raise ConfigError(f"{dotted}: tunnel keys are tunnels.NAME.KEY, e.g. tunnels.web.target")
        try:
            parts[1] = validate_name(parts[1])
        except ConfigError as exc:
            raise ConfigError(f"{dotted}: not a tunnel name: {exc}") from None
        if parts[2] not in _TUNNEL_KEYS:
            raise _unknown(source, dotted, list(_TUNNEL_KEYS))
        return parts, _TUNNEL_KEYS[parts[2]]
    if parts[0] == "webhooks":
        raise ConfigError(f"{dotted}: webhook settings are written in the file itself (devtunnel config path "
                          "shows where); keep secrets in a variable named by secret_env, or in a file of mode 0600")
    if parts[0] not in _SECTIONS:
        raise _unknown(source, parts[0], [*_SECTIONS, "tunnels"])
    fields = _keys(_SECTIONS[parts[0]])
    if len(parts) != 2:
        raise ConfigError(f"{dotted}: keys are SECTION.KEY, e.g. {parts[0]}.{next(iter(fields))}")
    if parts[1] not in fields:
        raise _unknown(source, dotted, list(fields))
    return parts, fields[parts[1]]


def set_value(path: Path, dotted: str, text: str) -> object:
    """Set ``dotted`` (e.g. ``relay.url``) to ``text`` in the file at ``path``; returns the value written.

    The value is checked, then the whole file is checked with it, then the file is replaced
    atomically with mode 0600 (it may hold a token). Comments in the file are not kept.

    Raises:
        ConfigError: unknown key, bad value, or the file cannot be read, parsed or written.
            Nothing is written then.
    """
    parts, f = _key_field(dotted)
    kind: _Kind = f.metadata["kind"]
    try:
        checked = kind.check(kind.from_text(text))
        if isinstance(checked, Path):
            checked = checked.absolute()  # typed here: relative to where the command runs
        value = kind.to_toml(checked)
    except ValueError as exc:
        raise ConfigError(f"{dotted}: {exc}") from None
    doc = _parse_file(path)[1] if path.exists() else {}
    table = doc
    for part in parts[:-1]:
        child = table.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: {part}: expected a table, got {_shown(child)}")
        table = child
    table[parts[-1]] = value
    _read_document(doc, _Source(str(path)))  # the file as it would be must load
    _write(path, tomli_w.dumps(doc))
    return value


def add_tunnels(path: Path, tunnels: Mapping[str, Mapping[str, Any]], *, force: bool = False) -> tuple[list[str], list[str]]:
    """Write ``[tunnels.NAME]`` tables into the file at ``path``; returns (written, kept) names.

    A tunnel the file already defines is kept as it is unless ``force``. The file as it would be
    is checked before it is replaced (atomically, mode 0600); comments in it are not kept.

    Raises:
        ConfigError: the file cannot be read, parsed or written, or a table is invalid. Nothing
            is written then.
    """
    doc = _parse_file(path)[1] if path.exists() else {}
    table = doc.setdefault("tunnels", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: tunnels: expected a table, got {_shown(table)}")
    written: list[str] = []
    kept: list[str] = []
    for name, values in tunnels.items():
        if name in table and not force:
            kept.append(name)
            continue
        table[name] = dict(values)
        written.append(name)
    if written:
        _read_document(doc, _Source(str(path)))  # the file as it would be must load
        _write(path, tomli_w.dumps(doc))
    return written, kept


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a stale file of the same name
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write it ({exc.strerror or exc})") from None
