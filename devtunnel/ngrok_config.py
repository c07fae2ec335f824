"""Read an ngrok agent configuration (ngrok.yml, v2 or v3) as devtunnel named tunnels.

Text in, an :class:`NgrokImport` out (``read_ngrok_files``: several files read as one, as ngrok's
repeated ``--config``); ``load_ngrok_files`` reads the files ``ngrok_files`` finds. ``devtunnel
config import-ngrok`` writes the result, ``devtunnel start`` runs it (``tunnel_sections``: the
tunnels as devtunnel.toml's reader checks them) and ``config check --config`` checks it.
What maps:

==========================================  =============================================
ngrok                                       devtunnel ``[tunnels.NAME]``
==========================================  =============================================
v2 ``tunnels.NAME`` / v3 ``endpoints[].name``  ``NAME`` (made a valid DNS label if it is not)
``addr`` (v2), ``upstream.url`` (v3)        ``target`` (port 443 without a scheme: ``https://``)
``host_header: rewrite`` / ``preserve``     ``host_header``
``auth`` / ``basic_auth`` (v2)              a ``basic-auth`` rule, passwords stored as ``sha256:HEX``
``ip_restriction`` (v2)                     ``deny`` (``deny_cidrs``) and ``allow-ip`` (``allow_cidrs``) rules
``request_header`` / ``response_header``    a ``headers`` rule (``add: ["Name: value"]`` sets, ``remove`` removes)
``pooling_enabled: true``                   ``pool = true``
==========================================  =============================================

A tunnel with a protection devtunnel cannot enforce at its relay (OAuth, OIDC, mutual TLS,
webhook verification, a traffic policy), an internal endpoint (``bindings``, a ``url`` on
``*.internal``), or a labeled tunnel (``labels``: reached through an ngrok edge, whose
protections are set at ngrok), is not imported: a tunnel that silently lost its protection would expose the
service; nor is an ``http2`` upstream. Settings that change nothing important (``inspect``,
``schemes``, metadata) are left out with a note; so are the agent's own settings, each named
(``authtoken`` is an ngrok account's, not a relay token; ``web_addr`` with the command that
moves devtunnel's API there, which ``devtunnel start`` serves on a loopback ``web_addr`` itself).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from devtunnel.config import TunnelSection
from devtunnel.errors import ConfigError
from devtunnel.values.names import label_from
from devtunnel.values.ngrok_keys import (
    agent_mutual_tls, edge_labels, internal_binding, pooling, shown, upstream_protocol_problem, url_first_label,
)
from devtunnel.values.secret_files import CLEAR_PASSWORDS, HEADER_VALUES, note_shared_secrets
from devtunnel.values.target import parse_target
from devtunnel.rules import RulesError, ngrok_header_rules, ngrok_protection_rules, parse_rules
from devtunnel.values.terminal import clipped, quoted
from devtunnel.values.numbers import is_decimal

__all__ = ["ImportedTunnel", "NgrokImport", "WebAddr", "web_addr", "read_ngrok_config", "read_ngrok_files", "default_ngrok_paths",
           "ngrok_files", "load_ngrok_files", "tunnel_sections", "PROTECTIONS"]

PROTECTIONS = {
    "oauth": "OAuth",
    "oidc": "OpenID Connect",
    "mutual_tls_cas": "mutual TLS",
    "webhook_verification": "webhook verification",
    "verify_webhook": "webhook verification",  # the key ngrok.yml documents
    "traffic_policy": "a traffic policy",
    "traffic_policy_file": "a traffic policy",
    "policy": "a traffic policy",  # traffic_policy's name before ngrok agent 3.14
    "user_agent_filter": "a user agent filter",
}
"""Tunnel keys whose loss would expose the service and that have no rule to carry them: a tunnel
with any of them is not imported."""

MAX_FILE_BYTES = 1024 * 1024
"""The largest ngrok.yml read (ngrok's own are a few KiB)."""
MAX_EXPANDED = 4_000_000
"""The most characters a file's values may come to with every alias written out: well above what
a file of ``MAX_FILE_BYTES`` without aliases comes to, far below what exhausts memory."""

_TAKEN = frozenset({"proto", "addr", "upstream", "host_header", "name", "url", "subdomain", "hostname", "domain",
                    "auth", "basic_auth", "ip_restriction", "pooling_enabled", "verify_upstream_tls", "app_protocol",
                    "inspect", "request_header", "response_header"})

_IGNORED = {
    "schemes": "the relay decides the scheme",
    "bind_tls": "the relay decides the scheme",
    "metadata": "labels have no equivalent",
    "description": "labels have no equivalent",
    "bindings": "public is the only binding: every devtunnel tunnel is public on its relay",
    "compression": "no equivalent",
    "circuit_breaker": "no equivalent",
    "websocket_tcp_converter": "no equivalent",
    "labels": "labeled tunnels have no equivalent",
    "agent_tls_termination": "the relay terminates TLS with its own certificate: the server_certificate is not "
                             "used, and the relay, not only this machine, reads the traffic",
    "crt": "the relay holds the certificate",
    "key": "the relay holds the certificate",
    "client_cas": "mutual TLS is not supported yet",
}

_RULE_KINDS = {"basic-auth": "basic auth", "allow-ip": "IP restrictions", "deny": "IP restrictions",
               "headers": "header edits"}
"""What a note calls the rules an ngrok tunnel's settings become."""

_AGENT_NOTES = {
    "authtoken": "authtoken: ngrok's account token means nothing to a devtunnel relay: not imported "
                 "(devtunnel config add-authtoken takes a relay's token)",
    "api_key": "api_key: ngrok's API key has no equivalent: not imported",
}


@dataclass(frozen=True, slots=True)
class ImportedTunnel:
    """One tunnel as devtunnel will define it."""

    name: str
    target: str
    host_header: str | None = None
    source: str = ""
    """The tunnel's name in ngrok.yml."""
    rules: tuple[dict[str, Any], ...] = ()
    """``[[tunnels.NAME.rules]]`` tables carrying ngrok's basic auth and IP restrictions."""
    pool: bool = False
    """ngrok's ``pooling_enabled``: the name is shared with other agents (``tunnels.NAME.pool``)."""
    record: bool = True
    """ngrok's ``inspect``: false keeps the tunnel's exchanges out of the store (``tunnels.NAME.record``)."""

    def table(self) -> dict[str, Any]:
        """The ``[tunnels.NAME]`` table (without the name)."""
        out: dict[str, Any] = {"target": self.target}
        if self.host_header is not None:
            out["host_header"] = self.host_header
        if self.pool:
            out["pool"] = True
        if not self.record:
            out["record"] = False
        if self.rules:
            out["rules"] = [dict(rule) for rule in self.rules]
        return out


@dataclass(frozen=True, slots=True)
class WebAddr:
    """ngrok's ``web_addr`` as devtunnel's agent API takes it (``web_addr()``)."""

    text: str
    """As a message shows it: ``127.0.0.1:4141``, ``false``, ``'0.0.0.0:4141'``."""
    port: int | None
    """The port the agent API takes on 127.0.0.1 (0: ``false``, no API), or None when it cannot."""
    why: str = ""
    """Why it cannot (``port`` None)."""

    def says(self, where: str) -> str:
        """What ``devtunnel start`` does with it, ``where`` naming the file(s): a line for ``config check``."""
        if self.port == 0:
            return (f"web_addr false: devtunnel start runs no agent API, as ngrok (with the inspector, its agent "
                    f"takes a free port); --api-port or agent.api_port wins over {where}")
        if self.port is None:
            return (f"web_addr {self.text} not used: {self.why}; devtunnel start serves the agent API on "
                    "127.0.0.1:4040 or the next free port")
        return (f"web_addr {self.text}: devtunnel start serves the agent API on 127.0.0.1:{self.port} (an error if "
                f"it is taken, as in ngrok); --api-port or agent.api_port wins over {where}")


@dataclass
class NgrokImport:
    """What an ngrok.yml turns into: the tunnels, those left out and why, and notes on dropped keys."""

    version: str
    tunnels: list[ImportedTunnel] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    web_addr: WebAddr | None = None
    """The agent's ``web_addr``, when the files give one."""
    secrets: dict[str, list[str]] = field(default_factory=dict)
    """The kinds of secret each file (by its source) holds in clear, its tunnels imported or not:
    ``CLEAR_PASSWORDS`` (``auth``, ``basic_auth``), ``HEADER_VALUES`` (``request_header.add``)."""

    def named(self, name: str) -> ImportedTunnel | str | None:
        """The tunnel ``ngrok start NAME`` starts: the one of that name in the file, or of the
        name it is imported as (``My Hooks`` or ``my-hooks``); the reason when the file has it
        but it is not imported (it would lose a protection ...); None when no such name is defined."""
        label = label_from(name)
        found = next((t for t in self.tunnels if t.source == name), None) or next(
            (t for t in self.tunnels if t.name == label), None)
        if found is not None:
            return found
        return next((why for skipped, why in self.skipped if skipped in (name, label)), None)


def default_ngrok_paths(environ: Mapping[str, str] | None = None, platform: str | None = None) -> list[Path]:
    """Where ngrok keeps its configuration on this system, newest location first.

    Linux: ``$XDG_CONFIG_HOME/ngrok/ngrok.yml`` (``~/.config``); macOS:
    ``~/Library/Application Support/ngrok/ngrok.yml``; Windows: ``%LocalAppData%\\ngrok\\ngrok.yml``;
    everywhere, ngrok 2's ``~/.ngrok2/ngrok.yml`` last.
    """
    env = os.environ if environ is None else environ
    platform = platform or sys.platform
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform == "darwin":
        first = home / "Library" / "Application Support" / "ngrok" / "ngrok.yml"
    elif platform.startswith("win"):
        local = env.get("LOCALAPPDATA")
        first = (Path(local) if local else home / "AppData" / "Local") / "ngrok" / "ngrok.yml"
    else:
        config_home = env.get("XDG_CONFIG_HOME")
        first = (Path(config_home) if config_home else home / ".config") / "ngrok" / "ngrok.yml"
    return [first, home / ".ngrok2" / "ngrok.yml"]


def ngrok_files(named: Sequence[str]) -> list[Path]:
    """The ngrok.yml files to read: those named (ngrok's ``--config FILE``, repeatable), else the
    first of ``default_ngrok_paths()`` that exists.

    Raises:
        ConfigError: none is named and none is found where ngrok keeps it.
    """
    if named:
        return [Path(name).expanduser() for name in named]
    candidates = default_ngrok_paths()
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise ConfigError("no ngrok.yml found at " + " or ".join(str(p) for p in candidates) + "; name the file")
    return [found]


def load_ngrok_files(paths: Sequence[Path]) -> NgrokImport:
    """The tunnels of the ngrok.yml files at ``paths``, read as one (``read_ngrok_files``). A file
    that holds secrets in clear (``NgrokImport.secrets``) while other users can read it is read,
    with a note on stderr (``note_shared_secrets``).

    Raises:
        ConfigError: a file cannot be read, is larger than ``MAX_FILE_BYTES``, or is not a valid
            ngrok configuration; the message names it.
    """
    texts = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)  # bounded: a path may name a device or a huge file
            if len(data) > MAX_FILE_BYTES:
                raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB: not an ngrok configuration")
            texts.append((data.decode("utf-8"), str(path)))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    result = read_ngrok_files(texts)
    for path in paths:  # one that holds secrets in clear and that other users can read: said, and used
        note_shared_secrets(path, result.secrets.get(str(path), ()))
    return result


def tunnel_sections(tunnels: Sequence[ImportedTunnel], source: str) -> tuple[TunnelSection, ...]:
    """The tunnels as devtunnel.toml's ``[tunnels.NAME]`` tables read them: checked by the same
    reader, so what ``devtunnel start`` runs is what ``config import-ngrok`` would save.

    Raises:
        ConfigError: a table is not valid (the message names ``source`` and the key).
    """
    from devtunnel.config.load import read_document
    from devtunnel.config.source import Source

    layer = read_document({"tunnels": {t.name: t.table() for t in tunnels}}, Source(source))
    return tuple(layer.get("tunnels", {}).values())


class _Refused(Exception):
    """What ``_StrictLoader`` refuses in a document that is valid YAML: said as the file's error."""


def _expanded_size(root: Any) -> int:
    """The characters of the document at ``root`` (a node) with every alias written out in full,
    a value counting one more than its text: counted once per node and added up, never expanded.

    Raises:
        _Refused: past ``MAX_EXPANDED``, or an alias inside the value it names (a recursive value).
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        if children_done:
            on_path.discard(key)
            own = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            sizes[key] = 1 + own + sum(sizes[id(child)] for child in children)
            if sizes[key] > MAX_EXPANDED:
                raise _Refused(f"its aliases (*NAME) expand it to more than {MAX_EXPANDED:,} characters: not read")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _Refused("an alias (*NAME) stands inside the value it names: a value without end")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


MAX_NUMBER_TEXT = 100
"""Characters of a number ngrok.yml may write (a port, a timeout: a few): a longer one is
refused before it is built (PyYAML builds a base-60 one, ``1:59:59...``, in quadratic time, and
a hexadecimal one past Python's 4,300 digits, which then cannot be shown)."""


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]
    """``yaml.SafeLoader`` refusing a key given twice in one mapping, as ngrok does: PyYAML keeps
    the last one, so a second ``web:`` tunnel would silently replace the first.

    Aliases (``*NAME``, as go-yaml, ngrok's reader, takes them) are bounded: a document whose
    aliases would write out more than ``MAX_EXPANDED`` characters is refused before any value is
    built (a file of a few hundred bytes aliasing a list of ten lists, nine times over, is a
    billion values wherever it is walked or printed)."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node)
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *shared``: its keys come first, and the mapping's own replace them
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader says so itself
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{shown(key)} is given twice in the same mapping", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


def _bounded_number(build: Any) -> Any:
    def construct(loader: _StrictLoader, node: Any) -> Any:
        if len(node.value) > MAX_NUMBER_TEXT:
            raise _Refused(f"a number written in {len(node.value):,} characters (line {node.start_mark.line + 1}):"
                           " not read")
        return build(loader, node)
    return construct


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _bounded_number(yaml.SafeLoader.construct_yaml_int))
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _bounded_number(yaml.SafeLoader.construct_yaml_float))


def read_ngrok_config(text: str, source: str = "ngrok.yml") -> NgrokImport:
    """The devtunnel tunnels an ngrok.yml describes.

    Raises:
        ConfigError: the text is not YAML, not a mapping, or not of a known version; the message
            names ``source``.
    """
    return read_ngrok_files([(text, source)])


def read_ngrok_files(files: Sequence[tuple[str, str]]) -> NgrokImport:
    """The devtunnel tunnels of several ngrok.yml files (text, source) read as one, as ngrok
    reads its repeated ``--config FILE``: in order, a later file's setting replacing an earlier
    one's, a tunnel (and an ``agent:`` setting) replacing the one of the same name whole.

    Raises:
        ConfigError: a file is not YAML, not a mapping, or not of a known version; the message
            names it.
    """
    doc: dict[Any, Any] = {}
    secrets: dict[str, list[str]] = {}
    for text, source in files:
        document = _document(text, source)
        held = _clear_secrets(document)
        if held:
            secrets[source] = held
        for key, value in document.items():
            earlier = doc.get(key)
            if key in ("tunnels", "agent") and isinstance(earlier, dict) and isinstance(value, dict):
                doc[key] = {**earlier, **value}
            else:
                doc[key] = value
    result = _read_document(doc, ", ".join(source for _, source in files) or "ngrok.yml")
    result.secrets = secrets
    return result


def _clear_secrets(doc: dict[Any, Any]) -> list[str]:
    """The kinds of secret one ngrok.yml holds in clear in its tunnels and endpoints: basic-auth
    passwords (``auth``, ``basic_auth``: ngrok takes no hash there) and the values of request
    headers to add (``request_header.add``). Definitions of any shape are read."""
    tunnels, endpoints = doc.get("tunnels"), doc.get("endpoints")
    bodies = [*(tunnels.values() if isinstance(tunnels, dict) else ()), *(endpoints if isinstance(endpoints, list) else ())]
    held: list[str] = []
    for body in bodies:
        if not isinstance(body, dict):
            continue
        for key in ("auth", "basic_auth"):
            value = body.get(key)
            credentials = [value] if isinstance(value, str) else value if isinstance(value, list) else []
            if any(isinstance(c, str) and c.partition(":")[2] for c in credentials):
                held.append(CLEAR_PASSWORDS)
        request = body.get("request_header")
        adds = request.get("add") if isinstance(request, dict) else None
        if isinstance(adds, list) and any(isinstance(a, str) and a.partition(":")[2].strip() for a in adds):
            held.append(HEADER_VALUES)
    return list(dict.fromkeys(held))


def _document(text: str, source: str) -> dict[Any, Any]:
    """One ngrok.yml parsed, checked to be a mapping of a known version."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_FILE_BYTES // 1024} KiB: not an ngrok configuration")
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except _Refused as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: its values are nested too deeply: not an ngrok configuration") from None
    except (ValueError, ArithmeticError, LookupError, TypeError) as exc:
        # A scalar that cannot be built: an integer of 4301 digits, a 13th month, ``!!int ''``,
        # ``!!bool maybe``, a float too large.
        said = str(exc).split('; use ')[0] or type(exc).__name__
        raise ConfigError(f"{source}: not valid YAML: a value that cannot be read: {clipped(said, 200)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if problem.startswith("found character '\\t'"):  # PyYAML spells the tab as backslash-t
            problem = "a tab, where YAML indents with spaces only"
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(doc).__name__}")
    version = _version(doc)
    if version not in ("1", "2", "3"):
        said = shown(version) if version else shown(doc.get("version"))
        raise ConfigError(f"{source}: version {said} is not an ngrok configuration version (2 or 3)")
    return doc


def _version(doc: dict[Any, Any]) -> str:
    """The file's ``version`` as text (``2`` when not given; ``""`` when it is no scalar)."""
    value = doc.get("version", "2")
    if not isinstance(value, (str, int, float)):
        return ""
    return str(value).strip().strip('"')


def _read_document(doc: dict[Any, Any], source: str) -> NgrokImport:
    version = _version(doc)
    result = NgrokImport(version=version)
    agent = doc.get("agent") if version == "3" else doc
    if isinstance(agent, dict):
        _agent_notes(result, agent)
    elif version == "3" and agent is not None:  # ngrok refuses such a file; said, not passed over
        result.notes.append("agent left out: not a mapping of the agent's settings")
    stray = sorted(str(key) for key in doc if key not in _NOT_AGENT_SETTINGS) if version == "3" else []
    if stray:  # v2's top-level agent settings in a v3 file: ngrok refuses them; said, not dropped unseen
        result.notes.append(f"{_key_list(stray)} left out: not keys of a version 3 file's top level (the agent's "
                            "settings go under agent:)")
    if version != "3" and "agent" in doc:
        result.notes.append(f"agent left out: a section of version 3 files, and this one is version {version}")
    # Endpoints first: ngrok starts an endpoint rather than a tunnel of the same name.
    definitions: list[tuple[str, Any]] = []
    endpoints = doc.get("endpoints")
    if endpoints is not None:
        if not isinstance(endpoints, list):
            raise ConfigError(f"{source}: endpoints: expected a list of endpoints")
        for i, body in enumerate(endpoints):
            name = body.get("name") if isinstance(body, dict) else None
            definitions.append((str(name) if name else _unnamed(body, i), body))
    endpoint_names = {name for name, _ in definitions}
    tunnels = doc.get("tunnels")
    if tunnels is not None:
        if not isinstance(tunnels, dict):
            raise ConfigError(f"{source}: tunnels: expected a mapping of name to tunnel")
        for name, body in tunnels.items():
            if str(name) in endpoint_names:
                result.skipped.append((str(name), "the endpoint of the same name is imported instead, as ngrok "
                                                  "starts it (its endpoints take precedence over its tunnels)"))
            else:
                definitions.append((str(name), body))
    taken: dict[str, str] = {}
    for name, body in definitions:
        _one(result, name, body, taken)
    return result


def _unnamed(body: object, index: int) -> str:
    """The name of an endpoint without one: its ``url``'s first label, as the agent API names it
    (``https://shop.ngrok.app`` -> ``shop``), else ``endpoint N``."""
    url = body.get("url") if isinstance(body, dict) else None
    try:
        label = url_first_label(url)[1] if isinstance(url, str) else ""
    except ValueError:
        label = ""
    return label or f"endpoint {index + 1}"


def _agent_notes(result: NgrokImport, agent: dict[Any, Any]) -> None:
    """Say what becomes of the agent's own settings (v2: the top level; v3: ``agent:``)."""
    result.notes.extend(note for key, note in _AGENT_NOTES.items() if agent.get(key))
    if "web_addr" in agent:
        result.web_addr = web_addr(agent["web_addr"])
        note = _web_addr_note(agent["web_addr"])
        if note is not None:
            result.notes.append(note)
    rest = sorted(str(key) for key in agent if key not in _NOT_AGENT_SETTINGS and key not in _AGENT_NOTES)
    if rest:
        result.notes.append(f"{_key_list(rest)} left out: settings of ngrok's agent with no devtunnel equivalent")


def _key_list(keys: list[str]) -> str:
    """Keys of a file, comma-separated, each quoted unless a plain name."""
    return ", ".join(quoted(key) if not key.isidentifier() else key for key in keys)


_NOT_AGENT_SETTINGS = frozenset({"version", "tunnels", "endpoints", "agent", "web_addr"})


def web_addr(value: object) -> WebAddr:
    """ngrok's ``web_addr`` (where its agent API listens) as devtunnel's agent API can take it:
    the port of a loopback address (``localhost``, ``127.0.0.1``, ``[::1]``), 0 for ``false`` (no
    API), or none, with why (another address, ``0.0.0.0`` or ``:PORT`` among them: devtunnel's API
    listens on 127.0.0.1 only)."""
    if value is False or (isinstance(value, str) and value.strip().lower() == "false"):
        return WebAddr("false", 0)
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        return WebAddr(shown(value), None, "not HOST:PORT")
    text = str(value).strip()
    host, _, port = text.rpartition(":")
    if not is_decimal(port) or not 0 < int(port) < 65536:
        return WebAddr(shown(text), None, "not HOST:PORT")
    if host.strip("[]").lower() not in ("localhost", "127.0.0.1", "::1"):
        return WebAddr(quoted(text), None, "devtunnel's agent API listens on 127.0.0.1 only")
    return WebAddr(quoted(text), int(port))


def _web_addr_note(value: object) -> str | None:
    """What ``config import-ngrok`` says of ngrok's ``web_addr``; None when devtunnel's default
    is the same place (``localhost:4040``)."""
    found = web_addr(value)
    if found.port == 0:
        return ("web_addr false: to turn devtunnel's agent API off too (for http): "
                "devtunnel config set agent.api_port 0 (devtunnel start takes it from the file)")
    if found.port is None:
        left = "left out" if found.why == "not HOST:PORT" else "not imported"
        return f"web_addr {found.text} {left}: {found.why}"
    if found.port == 4040:
        return None
    return (f"web_addr {found.text} not imported: devtunnel's agent API is on 127.0.0.1:4040; to move it: "
            f"devtunnel config set agent.api_port {found.port} (devtunnel start takes it from the file)")


def _one(result: NgrokImport, name: str, body: object, taken: dict[str, str]) -> None:
    if not isinstance(body, dict):
        result.skipped.append((name, "not a mapping of settings"))
        return
    protections = sorted({what for key, what in PROTECTIONS.items() if body.get(key)}
                         | ({"mutual TLS"} if agent_mutual_tls(body) else set()))
    if protections:
        result.skipped.append((name, f"it has {' and '.join(protections)}, which devtunnel cannot enforce yet: "
                                     "importing it would expose the service without it"))
        return
    internal = internal_binding(body)
    if internal is not None:
        result.skipped.append((name, f"{internal}: importing it would expose the service"))
        return
    labeled = edge_labels(body)
    if labeled is not None:
        result.skipped.append((name, f"{labeled}: importing it would expose the service without them"))
        return
    given = body.get("proto", "http")
    proto = given.lower() if isinstance(given, str) else shown(given)
    url = body.get("url")
    if isinstance(url, str) and "://" in url:
        proto = url.split("://", 1)[0].lower()
    if proto not in ("http", "https"):
        result.skipped.append((name, f"{clipped(proto, 100)} tunnels are not supported (only http)"))
        return
    upstream = body.get("upstream")
    protocol = upstream_protocol_problem(body)
    if protocol is not None:
        result.skipped.append((name, protocol))
        return
    try:
        pool = pooling(body)
    except ValueError as exc:
        result.skipped.append((name, str(exc)))
        return
    addr = upstream.get("url") if isinstance(upstream, dict) else body.get("addr", upstream)
    if addr is None:
        result.skipped.append((name, "it has no addr (v2) or upstream.url (v3)"))
        return
    if not isinstance(addr, (str, int)) or isinstance(addr, bool):
        key = "upstream url" if isinstance(upstream, dict) else "addr"
        result.skipped.append((name, f"its {key} {shown(addr)} is not a port, HOST:PORT or URL"))
        return
    addr_text = str(addr)
    if addr_text.startswith("file://"):
        result.skipped.append((name, "serving files has no equivalent"))
        return
    if "://" not in addr_text and (addr_text == "443" or addr_text.endswith(":443")):
        # ngrok speaks https to port 443 when the address has no scheme (443, localhost:443):
        # imported as http, every request would reach an https server in plain text.
        addr_text = "https://" + (addr_text if ":" in addr_text else "localhost:443")
    if "://" not in addr_text and addr_text.startswith("localhost:") and is_decimal(addr_text[10:]):
        addr_text = addr_text[10:]  # ngrok's localhost is devtunnel's default host
    try:
        parse_target(addr_text)
    except ConfigError as exc:
        result.skipped.append((name, str(exc)))
        return
    label = label_from(name)
    if label is None:
        result.skipped.append((name, "its name has no letters or digits to make a tunnel name of"))
        return
    if label in taken:
        result.skipped.append((name, f"its name becomes {quoted(label)}, already taken by {quoted(taken[label])}"))
        return
    taken[label] = name
    if label != name:
        result.notes.append(f"{name}: named {quoted(label)} (tunnel names are DNS labels)")
    host_header = body.get("host_header")
    mode: str | None = None
    if host_header in ("rewrite", "preserve"):
        mode = str(host_header)
    elif host_header:
        result.notes.append(f"{name}: host_header {shown(host_header)}: only rewrite or preserve exist; left out")
    public = next((body.get(k) for k in ("url", "domain", "hostname", "subdomain") if body.get(k)), None)
    if public:
        result.notes.append(f"{name}: public address {shown(public)} left out: the relay names it {label}.DOMAIN")
    for key in sorted((k for k in set(body) - _TAKEN), key=str):  # keys of mixed types (80, x, ~)
        reason = _IGNORED.get(key, "no equivalent")
        result.notes.append(f"{name}: {key if isinstance(key, str) else shown(key)} left out ({reason})")
    try:
        rules = ngrok_protection_rules(body)
        parse_rules(list(rules), f"tunnels.{label}.rules")
    except (ValueError, RulesError) as exc:
        why = exc.detail if isinstance(exc, RulesError) else str(exc)
        result.skipped.append((name, f"{why}: importing it without that protection would expose the service"))
        taken.pop(label, None)
        return
    if addr_text.lower().startswith("https://") and body.get("verify_upstream_tls") is not True:
        # A local https service often has a self-signed certificate: its tunnel would answer 502.
        unset = "verify_upstream_tls false left out: " if body.get("verify_upstream_tls") is False else ""
        result.notes.append(f"{name}: {unset}devtunnel verifies the certificate of {addr_text}: for a self-signed "
                            "one, devtunnel config set agent.insecure true (every tunnel) or devtunnel http --insecure")
    try:
        edits = ngrok_header_rules(body)
        parse_rules(list(edits), f"tunnels.{label}.rules")
    except (ValueError, RulesError) as exc:
        why = exc.detail if isinstance(exc, RulesError) else str(exc)
        result.skipped.append((name, f"{why}: importing it without its header edits would change what its service "
                                     "and its clients get"))
        taken.pop(label, None)
        return
    rules += edits
    if rules:
        kinds = sorted({_RULE_KINDS[r["action"]] for r in rules})
        result.notes.append(f"{name}: {' and '.join(kinds)} carried over as rules at the relay"
                            + (" (passwords stored as sha256 hashes)" if "basic auth" in kinds else ""))
    inspect = body.get("inspect", True)
    if not isinstance(inspect, bool):
        result.notes.append(f"{name}: inspect {shown(inspect)} is not true or false: left out (recorded)")
        inspect = True
    result.tunnels.append(ImportedTunnel(name=label, target=addr_text, host_header=mode, source=name, rules=rules,
                                         pool=pool, record=inspect))
