"""Kinds of value: how each setting is checked, read from text and written back.

Each field of the settings tree (``devtunnel.config.settings``) names its kind in its metadata
(``metadata={"kind": ...}``). A kind answers three questions:

- ``check(value)``: is this value from TOML (or a flag) right? It returns the setting's Python
  value, or raises ``ValueError`` with the problem in words; the reader adds the file, line and key.
- ``from_text(text)``: what TOML value does text from the environment or ``config set`` stand for?
- ``to_toml(value)``: what is written back for a Python value (``config show``, ``config set``)?

``Kind`` itself is plain, non-empty text; the others narrow or convert it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from devtunnel.errors import ConfigError
from devtunnel.rules import Rule, RulesError, parse_rules, rules_to_tables
from devtunnel.values.durations import format_duration, parse_duration
from devtunnel.values.health_path import health_path_problem
from devtunnel.values.names import validate_domain
from devtunnel.values.http1 import is_token
from devtunnel.values.relay_url import relay_connect_url
from devtunnel.values.sizes import parse_size, size_text
from devtunnel.values.target import parse_target
from devtunnel.values.terminal import quoted


class Kind:
    """Plain text."""

    def check(self, value: object) -> Any:
        """The setting's Python value; raises ValueError with the problem in words."""
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected non-empty text, got {shown(value)}")
        return value.strip()

    def from_text(self, text: str) -> object:
        """The TOML value that ``text`` (from the environment or the command line) stands for."""
        return text

    def to_toml(self, value: Any) -> object:
        """The TOML value written for a Python value."""
        return value


class Int(Kind):
    def __init__(self, low: int, high: int | None = None, what: str = "an integer") -> None:
        self.low, self.high, self.what = low, high, what

    def check(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected {self.what}, got {shown(value)}")
        if value < self.low or (self.high is not None and value > self.high):
            bounds = f"{self.low}-{self.high}" if self.high is not None else f"{self.low} or more"
            raise ValueError(f"expected {self.what} of {bounds}, got {value}")
        return value

    def from_text(self, text: str) -> object:
        try:
            return int(text.strip())
        except ValueError:
            return text  # check() says what was expected


class Seconds(Kind):
    def check(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number of seconds, got {shown(value)}")
        if not value > 0:
            raise ValueError(f"expected more than 0 seconds, got {value}")
        return float(value)

    def from_text(self, text: str) -> object:
        try:
            return float(text.strip())
        except ValueError:
            return text


class Fraction(Seconds):
    def check(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a fraction such as 0.25, got {shown(value)}")
        if not 0 < value <= 1:
            raise ValueError(f"expected a fraction more than 0 and at most 1, got {value}")
        return float(value)


class Bool(Kind):
    _TEXT = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}

    def check(self, value: object) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {shown(value)}")
        return value

    def from_text(self, text: str) -> object:
        return self._TEXT.get(text.strip().lower(), text)


class Size(Kind):
    """A byte count: an integer, or text such as ``"10mb"`` (``devtunnel.values.sizes``)."""

    def __init__(self, low: int = 0) -> None:
        self.low = low

    def check(self, value: object) -> int:
        if isinstance(value, str):
            if value.strip().startswith("-"):
                raise ValueError(f"a size cannot be negative, got {quoted(value)}")
            try:
                value = parse_size(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a size such as 10mb, got {shown(value)}")
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        if value < self.low:
            raise ValueError(f"expected at least {self.low} byte, got {value}")
        return value

    def to_toml(self, value: Any) -> object:
        return size_text(value)


def token_problem(token: str) -> str | None:
    """What makes ``token`` unusable as a relay token, in words; None if it is one.

    A token is one word of printable characters: a space or a control character (a pasted
    newline) would make a token no relay's tokens file (one per line, trimmed) can hold, and no
    agent can send. The relay's ``--token``/``--tokens-file`` and the agent's token use this rule.

    The words never quote the token: they reach stderr, a CI log or a relay's journal, and a
    token with a stray space is still most of a real one. They name the first character at
    fault and where it is.
    """
    if not token:
        return "a token cannot be empty"
    for place, ch in enumerate(token, 1):
        if ch.isspace() or not ch.isprintable():
            return (f"a token cannot hold spaces or control characters: its character {place} of {len(token)}"
                    f" is {_named_character(ch)} (the token is not shown: it is a secret)")
    return None


_CHARACTER_NAMES = {" ": "a space", "\t": "a tab", "\n": "a line feed", "\r": "a carriage return"}


def _named_character(ch: str) -> str:
    """``a space``, ``a line feed``, ``U+001B``: one character of a secret, named without the others."""
    return _CHARACTER_NAMES.get(ch) or f"U+{ord(ch):04X}"


class Token(Kind):
    """A relay token (``token_problem`` says which texts are not)."""

    def check(self, value: object) -> str:
        token = super().check(value)
        problem = token_problem(str(token))
        if problem is not None:
            raise ValueError(problem)
        return str(token)


class Choice(Kind):
    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def check(self, value: object) -> str:
        if value not in self.choices:
            raise ValueError(f"expected one of {', '.join(map(repr, self.choices))}, got {shown(value)}")
        return str(value)


class FilePath(Kind):
    def check(self, value: object) -> Path:
        text = super().check(value)
        if text.endswith(("/", os.sep)):  # Path() would drop the slash: a file named as the folder was meant
            raise ValueError(f"expected the path of a file, got a folder's: {shown(value)}")
        return Path(text).expanduser()

    def to_toml(self, value: Any) -> object:
        return str(value)


class RelayUrl(Kind):
    def check(self, value: object) -> str:
        text: str = super().check(value)
        try:
            relay_connect_url(text)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return text


class Via(Kind):
    """A public-URL provider (``devtunnel.via``)."""

    def check(self, value: object) -> str:
        text: str = super().check(value)
        from devtunnel.via import parse_via

        try:
            return parse_via(text).describe()
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc


class Target(Kind):
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


class Listen(Kind):
    _RE = re.compile(r"(?:(\[[^\]]*\]|[^:\[\]]*):)?(\d{1,5})")

    def check(self, value: object) -> str:
        text: str = super().check(value)
        match = self._RE.fullmatch(text)
        if match is None or int(match.group(2)) > 65535:
            raise ValueError(f"expected HOST:PORT with a port of 0-65535, e.g. 0.0.0.0:8000, got {quoted(text)}")
        return text


class Domain(Kind):
    """A host name (``values.names.validate_domain``, the rule of ``devtunnel relay --domain``)."""

    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a host name such as tunnel.example.com, got {shown(value)}")
        try:
            return validate_domain(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class Command(Kind):
    def check(self, value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a command line such as \"uvicorn app:app --port 8000\", got {shown(value)}")
        if "\x00" in value:
            raise ValueError("expected a command line without NUL characters")
        return value


class HealthPath(Kind):
    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a path such as \"/healthz\", got {shown(value)}")
        problem = health_path_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class Duration(Kind):
    def check(self, value: object) -> float:
        if not isinstance(value, str | int | float):
            raise ValueError(f"expected a duration such as \"30s\", got {shown(value)}")
        return parse_duration(value)

    def to_toml(self, value: Any) -> object:
        return format_duration(value)


class HeaderNames(Kind):
    """Header names: a TOML array of strings (typed text: names separated by commas)."""

    def check(self, value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list of header names such as [\"X-Build\"], got {shown(value)}")
        for name in value:
            if not isinstance(name, str) or not is_token(name):
                raise ValueError(f"expected header names such as X-Build, got {shown(name)}")
        return tuple(value)

    def to_toml(self, value: Any) -> object:
        return list(value)


class EnvName(Kind):
    """The name of an environment variable."""

    _RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

    def check(self, value: object) -> str:
        text: str = super().check(value)
        if not self._RE.fullmatch(text):
            # Not quoted: text that is no variable name is most often the secret itself, written
            # in the key that names where it is.
            raise ValueError("expected an environment variable name such as STRIPE_WEBHOOK_SECRET (letters, digits and"
                             " _, not starting with a digit); the value is not shown: it may be a secret")
        if text.lower().startswith("whsec_"):
            raise ValueError("expected an environment variable name such as STRIPE_WEBHOOK_SECRET, got a webhook"
                             " secret (whsec_...; not shown): give the secret with secret, or put it in a variable"
                             " and name that")
        return text


class Template(Kind):
    """Text that may be empty (a prefix)."""

    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected text, got {shown(value)}")
        return value


class RuleTables(Kind):
    """``[[tunnels.NAME.rules]]`` tables (``devtunnel.rules``); ``load.py`` reads them itself, to name the line of each rule."""

    def check(self, value: object) -> tuple[Rule, ...]:
        try:
            return parse_rules(value if isinstance(value, list) else {}, "rules")  # type: ignore[arg-type]
        except RulesError as exc:
            raise ValueError(exc.detail) from None

    def from_text(self, text: str) -> object:
        raise ValueError("rules are tables: write them in the file as [[tunnels.NAME.rules]] (docs/policy.md)")

    def to_toml(self, value: Any) -> object:
        return rules_to_tables(value) if value else None


_KIND_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "text", dict: "a table", list: "an array"}


def shown(value: object, where: str = "") -> str:
    """How a wrong value is named in a message: text as itself, anything else by its type.

    Text found where a secret may be (``where``, a dotted key: ``relay`` or any ``webhooks``
    table, ``secret_holder``) is named by its type alone: ``relay = "s3cret"`` or
    ``[webhooks] stripe = "whsec_..."`` is the secret written one level too high, and the
    message goes to a terminal, a CI log or an issue."""
    if isinstance(value, str):
        return "text (not shown: it may be a secret)" if secret_holder(where) else quoted(value)
    return _KIND_NAMES.get(type(value), type(value).__name__)


def secret_holder(where: str) -> bool:
    """True for a dotted key whose values may be secrets: ``relay`` (its token) and every
    ``webhooks`` table, top-level or a tunnel's (their ``secret``)."""
    parts = where.split(".")
    return parts[0] == "relay" or "webhooks" in parts
