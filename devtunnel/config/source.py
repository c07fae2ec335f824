"""Where a value came from, and messages that name it: ``FILE:LINE: KEY: PROBLEM``.

tomllib reports lines only for syntax errors, so the lines of wrong values, unknown keys and
rule tables are found here by a simple scan of the file's text.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any

from devtunnel.errors import ConfigError
from devtunnel.values.secret_files import shared_mode


class Source:
    """Where values come from, for messages: a file (with its text, to find lines) or a label."""

    def __init__(self, label: str, text: str | None = None, folder: Path | None = None,
                 path: Path | None = None) -> None:
        self.label = label
        self.text = text
        self.folder = folder
        """Relative paths in a file are relative to the file's folder, wherever the command runs."""
        self.path = path
        """The file itself, when the values come from one (its mode decides whether it may hold secrets)."""

    def where(self, dotted: str) -> str:
        """``FILE:LINE`` of a key (``FILE`` alone when the line is not found)."""
        line = line_of(self.text, dotted.split(".")) if self.text is not None else None
        return f"{self.label}:{line}" if line else self.label

    def error(self, dotted: str, problem: str) -> ConfigError:
        """``FILE:LINE: KEY: PROBLEM``, the one line a user reads."""
        where = self.where(dotted)
        return ConfigError(f"{where}: {dotted}: {problem}" if where else f"{dotted}: {problem}")


_KEY_RE = re.compile(r"""\s*((?:"[^"]*"|'[^']*'|[\w-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[\w-]+))*)\s*=""")


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


def line_of(text: str, parts: list[str]) -> int | None:
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


_PUBLIC = "a tunnel's public address is its name ([tunnels.NAME]) under its relay's domain"
_RULES = "(docs/policy.md)"
_NGROK_NAMES = {
    "authtoken": "here it is relay.token (devtunnel config add-authtoken TOKEN)",
    "web_addr": "here it is agent.api_port",
    "region": "here it is relay.url: the relay you run decides where traffic enters",
    "addr": "here it is target",
    "inspect": "here it is record",
    "pooling_enabled": "here it is pool",
    "proto": "only http tunnels exist here: leave it out",
    "subdomain": _PUBLIC,
    "hostname": _PUBLIC,
    "domain": _PUBLIC,
    "url": _PUBLIC,
    "auth": f"here it is a basic-auth rule {_RULES}",
    "basic_auth": f"here it is a basic-auth rule {_RULES}",
    "ip_restriction": f"here it is allow-ip and deny rules {_RULES}",
}
"""ngrok.yml's names of settings devtunnel has under another name (devtunnel config import-ngrok
turns a whole ngrok.yml into devtunnel.toml)."""


def unknown_key(source: Source, dotted: str, known: list[str]) -> ConfigError:
    """The error for a key the tree does not have, with the closest known key as a hint (or,
    for an ngrok.yml name such as ``addr`` or ``authtoken``, devtunnel's)."""
    *prefix, name = dotted.split(".")
    if name in _NGROK_NAMES and name not in known:
        return source.error(dotted, f"unknown setting; {name} is ngrok's: {_NGROK_NAMES[name]}")
    guess = difflib.get_close_matches(name, known, n=1) or [k for k in known if k.startswith(name) or name.startswith(k)]
    hint = f"; did you mean {'.'.join([*prefix, guess[0]])}?" if guess else f"; known: {', '.join(known)}"
    return source.error(dotted, f"unknown setting{hint}")


def refuse_shared_secret(source: Source, dotted: str, what: str, instead: str) -> None:
    """Refuse the file ``source`` reads when other users can read it and it holds a secret
    (``what``: "a webhook secret", "the relay token"); ``instead`` says where the secret can go.

    One rule for every secret a settings file may hold: a project's devtunnel.toml is often
    0644 (and committed), and what it holds is then every local user's.
    """
    path = source.path
    mode = None if path is None else shared_mode(path)
    if mode is not None:
        raise source.error(dotted, f"the file holds {what} but other users can read it (mode {mode:03o}):"
                                   f" run chmod 600 {path}, or {instead}")


def check_field(source: Source, dotted: str, f: dataclasses.Field[Any], value: object) -> Any:
    """The value checked by the field's kind; a relative path is made relative to the file's folder."""
    try:
        checked = f.metadata["kind"].check(value)
    except ValueError as exc:
        raise source.error(dotted, str(exc)) from None
    if isinstance(checked, Path) and source.folder is not None:
        checked = source.folder / checked  # an absolute path stays as it is
    return checked


def line_of_table(text: str, dotted: str, number: int) -> int | None:
    """The line of the ``number``-th ``[[dotted]]`` table header (from 1)."""
    want = _split_key(dotted)
    seen = 0
    for line_number, line in enumerate(text.splitlines(), 1):
        stripped = line.split("#", 1)[0].strip()
        if stripped.startswith("[[") and _split_key(stripped.strip("[] ")) == want:
            seen += 1
            if seen == max(number, 1):
                return line_number
    return line_of(text, dotted.split("."))

