"""Writing the settings: ``to_toml`` (``config show``), ``set_value`` (``config set``) and ``add_tunnels``.

A file is rewritten whole: the document as it would be is checked by the reader first, then
replaced atomically with mode 0600 (it may hold a token). Comments in it are not kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from devtunnel.config.kinds import Kind, shown
from devtunnel.config.load import parse_file, read_document
from devtunnel.config.settings import SECTIONS, TUNNEL_KEYS, WEBHOOK_KEYS, Settings, WebhookSection, fields_of
from devtunnel.config.source import Source, unknown_key
from devtunnel.errors import ConfigError
from devtunnel.values.names import validate_name
from devtunnel.values.terminal import escape, is_plain, needs_escape

_NOT_UTF8 = re.compile("[\\ud800-\\udfff]")
"""A byte that was not UTF-8 (a ``surrogateescape`` surrogate), or any lone surrogate."""


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
    for name, cls in SECTIONS.items():
        doc[name] = _section_toml(getattr(settings, name), fields_of(cls))
    token = settings.relay.token
    if mask_token and token is not None:
        doc["relay"] = {**doc["relay"], "token": masked(token)}  # type: ignore[dict-item]
    if settings.tunnels:
        tunnels = {t.name: _section_toml(t, TUNNEL_KEYS) for t in settings.tunnels}
        for t in settings.tunnels:
            if not t.pool:  # a switch that is off says nothing a reader needs
                tunnels[t.name].pop("pool", None)
            if t.record:  # nor one that is on by default
                tunnels[t.name].pop("record", None)
            if t.webhooks:
                tunnels[t.name]["webhooks"] = _webhooks_toml(t.webhooks, mask_token)
        doc["tunnels"] = tunnels
    if settings.webhooks:
        doc["webhooks"] = _webhooks_toml(settings.webhooks, mask_token)
    return visible_toml(tomli_w.dumps(doc))


def visible_toml(text: str) -> str:
    """TOML ``text`` with every character ``values.terminal`` would escape written as a TOML escape
    (``\\u202e``): the same document, safe to print (``tomli_w`` escapes controls only).

    A line holding a byte that is not UTF-8 (a path or a value from the environment, carried as a
    ``surrogateescape`` surrogate) is printed as a comment, the byte shown as ``\\xNN``: TOML
    strings are Unicode, with no escape for such a byte (``\\udcff`` is refused), so no value
    would name the same file; the rest of the document still loads.
    """
    if is_plain(text.replace("\\", "").replace("\n", "")):
        return text
    return "\n".join(_visible_line(line) for line in text.split("\n"))


def _visible_line(line: str) -> str:
    if _NOT_UTF8.search(line):
        return (f"# {escape(line, double_backslash=False)}"
                "  # left out: holds a byte that is not UTF-8, which TOML cannot write")
    return "".join(_toml_escape(ch) if needs_escape(ch) else ch for ch in line)


def _toml_escape(ch: str) -> str:
    # Such characters occur only inside the basic strings tomli_w writes, where \u and \U are escapes.
    code = ord(ch)
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _webhooks_toml(sections: tuple[WebhookSection, ...], mask: bool) -> dict[str, object]:
    out: dict[str, object] = {}
    for section in sections:
        table = _section_toml(section, WEBHOOK_KEYS)
        if section.secrets:
            table["secrets"] = [masked(s) if mask else s for s in section.secrets]
        out[section.name] = table
    return out



def _key_field(dotted: str) -> tuple[list[str], dataclasses.Field[Any]]:
    parts = dotted.split(".")
    source = Source("")  # the key was typed: no file to name
    if parts[0] == "tunnels":
        if len(parts) != 3:
            raise ConfigError(f"{dotted}: tunnel keys are tunnels.NAME.KEY, e.g. tunnels.web.target")
        try:
            parts[1] = validate_name(parts[1])
        except ConfigError as exc:
            raise ConfigError(f"{dotted}: not a tunnel name: {exc}") from None
        if parts[2] not in TUNNEL_KEYS:
            raise unknown_key(source, dotted, list(TUNNEL_KEYS))
        return parts, TUNNEL_KEYS[parts[2]]
    if parts[0] == "webhooks":
        raise ConfigError(f"{dotted}: webhook settings are written in the file itself (devtunnel config path "
                          "shows where); keep secrets in a variable named by secret_env, or in a file of mode 0600")
    if parts[0] not in SECTIONS:
        raise unknown_key(source, parts[0], [*SECTIONS, "tunnels"])
    fields = fields_of(SECTIONS[parts[0]])
    if len(parts) != 2:
        raise ConfigError(f"{dotted}: keys are SECTION.KEY, e.g. {parts[0]}.{next(iter(fields))}")
    if parts[1] not in fields:
        raise unknown_key(source, dotted, list(fields))
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
    kind: Kind = f.metadata["kind"]
    try:
        checked = kind.check(kind.from_text(text))
        if isinstance(checked, Path):
            checked = checked.absolute()  # typed here: relative to where the command runs
        value = kind.to_toml(checked)
    except ValueError as exc:
        raise ConfigError(f"{dotted}: {exc}") from None
    doc = parse_file(path)[1] if path.exists() else {}
    table = doc
    for depth, part in enumerate(parts[:-1]):
        child = table.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: {part}: expected a table, got {shown(child, '.'.join(parts[:depth + 1]))}")
        table = child
    table[parts[-1]] = value
    read_document(doc, Source(str(path)))  # the file as it would be must load
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
    doc = parse_file(path)[1] if path.exists() else {}
    table = doc.setdefault("tunnels", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: tunnels: expected a table, got {shown(table)}")
    written: list[str] = []
    kept: list[str] = []
    for name, values in tunnels.items():
        if name in table and not force:
            kept.append(name)
            continue
        table[name] = dict(values)
        written.append(name)
    if written:
        read_document(doc, Source(str(path)))  # the file as it would be must load
        _write(path, tomli_w.dumps(doc))
    return written, kept


def _write(path: Path, text: str) -> None:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a byte of the command line that is not UTF-8 (a lone surrogate)
        bad = ", ".join(f"the byte 0x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"U+{ord(c):04X}"
                        for c in exc.object[exc.start:exc.end])
        raise ConfigError(f"{path}: not written: a value holds {bad}, which is not UTF-8, and a TOML file is UTF-8 only") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a stale file of the same name
        os.replace(tmp, path)
    except OSError as exc:
        # Not only "no such file": a folder on the way that is a file ($XDG_CONFIG_HOME naming
        # one) fails the unlink too, with the same reason as the write.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"{path}: cannot write it ({exc.strerror or exc})") from None
