"""Rules as data: ``[[tunnels.NAME.rules]]`` tables (or a rules file) into typed, checked rules.

Every problem is one line naming the file, the rule's number (from 1), the key and, for a
``match`` filter, the column: ``devtunnel.toml: rule 2: match: column 7: unknown field 'pth'``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import importlib
import ipaddress
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtunnel.capture.filters import Filter, parse
from devtunnel.capture.filters.base import RegexLeaf
from devtunnel.capture.filters.fields import Path as PathPrefix
from devtunnel.errors import ConfigError, FilterSyntaxError
from devtunnel.rules.ngrok import header_edits_table
from devtunnel.rules.paths import rule_path
from devtunnel.values.http1 import FRAMING, HOP_BY_HOP, field_problem, is_token
from devtunnel.values.secret_files import CLEAR_PASSWORDS, HASH_INSTEAD, HEADER_VALUES, note_shared_secrets
from devtunnel.values.target import parse_target
from devtunnel.values.terminal import quoted

WIRE_VERSION = 1
"""Version of the rules a HELLO carries (``docs/protocol.md``, "Rules")."""

ACTIONS = ("basic-auth", "deny", "allow-ip", "rate-limit", "forward", "respond", "headers")
"""Every action, in the order docs/policy.md explains them."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Header = tuple[str, str]

# Filters a rule can judge: fields a request has at the relay before it is answered (by the
# exact class: ``~c`` is a Status, ``~bs`` a body, ``~hs`` a header of the response).
_REQUEST_FILTERS = frozenset({
    "MatchAll", "MAll", "And", "Or", "Not", "Method", "MMethod", "Path", "PathRegex", "Host", "MDomain", "Url",
    "MUrl", "Header", "MHead", "MHeadRequest", "MContentType", "MContentTypeRequest", "Body", "RequestBody", "MBody",
    "MBodyRequest", "WebSocket", "MWebSocket", "Ip",
})
# Filters only the agent can answer (its tunnel's name, its webhook secrets and records): at the
# relay they would never match (and, negated, always would).
_AGENT_FILTERS = frozenset({"Tunnel", "SignatureState", "WebhookProvider", "EventType", "DeliveryId", "Duplicate"})
# Filters on when an exchange began, against an instant fixed when the filter is parsed.
_CLOCK_FILTERS = frozenset({"Since", "Until"})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m)?")
_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}
_UNEDITABLE = HOP_BY_HOP | FRAMING
"""Headers a ``headers`` rule may not touch: a set Content-Length or Transfer-Encoding breaks
the response (or the request) it is written into."""
BODILESS = (204, 304)
"""Statuses whose answers carry no body (nor, for 204, a Content-Length)."""
MAX_RULES = 256
MAX_BODY = 64 * 1024


class RulesError(ConfigError):
    """A rule is invalid; the message is one line (file, rule number, key, column).

    Attributes:
        number: the rule's number (from 1), or 0 for a problem with the whole list or file.
        detail: the message without the file (``rule 2: match: column 7: ...``).
    """

    def __init__(self, message: str, number: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.number = number
        self.detail = detail or message


@dataclass(frozen=True, slots=True)
class Credential:
    """One basic-auth user: the password in clear, or its ``sha256:HEX`` / bcrypt hash."""

    user: str
    secret: str = field(repr=False)

    def accepts(self, password: bytes) -> bool:
        """Whether ``password`` is this user's, compared in constant time."""
        secret = self.secret
        if secret.startswith("sha256:"):
            digest = hashlib.sha256(password).hexdigest()
            return hmac.compare_digest(digest, secret[7:].lower())
        if secret.startswith("$2"):
            bcrypt = importlib.import_module("bcrypt")
            return bool(bcrypt.checkpw(password, secret.encode()))
        return hmac.compare_digest(password, secret.encode())


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: where it applies (``match``), what it does (``action``) and its settings."""

    index: int
    """Its number in its list, from 1 (what errors, records and the inspector show)."""
    action: str
    match: str = ""
    """The filter expression; empty applies to every request."""
    filter: Filter | None = field(default=None, compare=False, repr=False)
    # basic-auth
    users: tuple[Credential, ...] = ()
    realm: str = "devtunnel"
    forward_auth: bool = False
    # allow-ip
    networks: tuple[Network, ...] = ()
    # rate-limit
    rate: float = 0.0
    """Requests per second."""
    rate_text: str = ""
    burst: int = 0
    # forward
    target: str = ""
    """The local target (agent side only: it never travels to the relay)."""
    # respond / deny
    status: int = 0
    body: str = ""
    headers: tuple[Header, ...] = ()
    count: int | None = None
    delay: float = 0.0
    drop: bool = False
    # headers
    request_set: tuple[Header, ...] = field(default=(), repr=False)  # its values may be secrets (``hide_secrets``)
    request_remove: tuple[str, ...] = ()
    response_set: tuple[Header, ...] = field(default=(), repr=False)
    response_remove: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for people: ``rule 2 rate-limit 20/s (path:/api)``."""
        what = {
            "rate-limit": f" {self.rate_text}",
            "respond": f" {self.status}" + (f" x{self.count}" if self.count is not None else ""),
            "forward": f" to {self.target}" if self.target else "",
            "allow-ip": " " + " ".join(str(n) for n in self.networks),
        }.get(self.action, "")
        return f"rule {self.index} {self.action}{what}" + (f" ({self.match})" if self.match else "")


class _Problem(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def parse_rules(
    tables: Sequence[Any], source: str, *, relay: bool = False, base: Path | None = None, wire: bool = False,
    files: bool = True,
) -> tuple[Rule, ...]:
    """Typed rules from a list of tables (TOML or JSON). ``relay``: relay-wide rules, which
    cannot forward (the relay knows no local targets); ``wire``: rules from a HELLO, whose
    forward rules carry no target; ``files=False``: rules from the agent API, which may not name
    a file to read (``users_file``: the agent would read any file it can and answer about it).

    Raises:
        RulesError: one line naming ``source``, the rule's number and key.
    """
    if not isinstance(tables, (list, tuple)):
        raise RulesError(f"{source}: rules must be a list of tables ([[rules]])")
    if len(tables) > MAX_RULES:
        raise RulesError(f"{source}: {len(tables)} rules; at most {MAX_RULES}")
    rules = []
    for number, table in enumerate(tables, 1):
        try:
            rules.append(_rule(number, table, relay, base, wire, files))
        except _Problem as exc:
            key = f"{exc.key}: " if exc.key else ""
            detail = f"rule {number}: {key}{exc}"
            raise RulesError(f"{source}: {detail}", number, detail) from None
    return tuple(rules)


def load_rules_file(path: str | Path, *, relay: bool = False) -> tuple[Rule, ...]:
    """The rules of a TOML file (``[[rules]]`` tables). One that holds secrets in clear while
    other users can read it is used, with a note on stderr (``note_rule_secrets``).

    Raises:
        RulesError: the file cannot be read, is not TOML, or a rule is invalid.
    """
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: not a valid TOML file: {exc}") from None
    unknown = sorted(set(data) - {"rules"})
    if unknown:
        raise RulesError(f"{path}: unknown key {quoted(unknown[0])}; a rules file holds [[rules]] tables")
    rules = parse_rules(data.get("rules", []), str(path), relay=relay, base=file.parent)
    try:
        check_passwords(rules)
    except RulesError as exc:
        raise RulesError(f"{path}: {exc.detail}", exc.number, exc.detail) from None
    note_rule_secrets(file, data.get("rules", []))
    return rules


def clear_secrets(tables: object) -> list[str]:
    """The kinds of secret rule tables (``[[rules]]`` as a file writes them) hold in clear:
    ``CLEAR_PASSWORDS`` for a basic-auth user in ``users`` whose password is neither
    ``sha256:HEX`` nor a bcrypt hash (a ``users_file`` is another file, said when it is read),
    ``HEADER_VALUES`` for a headers rule setting a request header to a value. Tables of any
    shape are read: what is no such rule holds nothing."""
    held: list[str] = []
    for table in tables if isinstance(tables, list) else []:
        if not isinstance(table, Mapping):
            continue
        users = table.get("users") if table.get("action") == "basic-auth" else None
        if isinstance(users, list) and any(_clear_password(user) for user in users):
            held.append(CLEAR_PASSWORDS)
        request = table.get("request") if table.get("action") == "headers" else None
        edits = request.get("set") if isinstance(request, Mapping) else None
        if isinstance(edits, Mapping) and any(isinstance(value, str) and value.strip() for value in edits.values()):
            held.append(HEADER_VALUES)
    return list(dict.fromkeys(held))


def note_rule_secrets(path: Path, tables: object) -> None:
    """The note of ``note_shared_secrets`` for a file whose rule tables hold secrets in clear
    (``clear_secrets``) while other users can read it."""
    held = clear_secrets(tables)
    note_shared_secrets(path, held, HASH_INSTEAD if CLEAR_PASSWORDS in held else "")


def _clear_password(user: object) -> bool:
    """Whether ``name:password`` (a ``users`` entry) has a password that is no hash."""
    if not isinstance(user, str):
        return False
    password = user.partition(":")[2]
    return bool(password) and password != HIDDEN and not _hashed(password)


def rules_flag(value: str, *, relay: bool = False) -> tuple[Rule, ...]:
    """The rules of the file ``--rules`` names (``~`` expanded).

    Raises:
        RulesError: as ``load_rules_file``; an empty value (``--rules "$RULES"`` with RULES
            unset) is refused too, rather than taken as no rules: a guard left out is said.
    """
    if not value.strip():
        raise RulesError("--rules must name a rules file, not empty text")
    return load_rules_file(Path(value).expanduser(), relay=relay)


def renumbered(rules: Sequence[Rule]) -> tuple[Rule, ...]:
    """``rules`` numbered 1, 2, ... in this order (rules from several places make one list).

    Raises:
        RulesError: two ``basic-auth`` rules no request could pass both of (``check_passwords``).
    """
    numbered = tuple(dataclasses.replace(rule, index=number) for number, rule in enumerate(rules, 1))
    check_passwords(numbered)
    return numbered


def check_passwords(rules: Sequence[Rule]) -> None:
    """Refuse two ``basic-auth`` rules that surely ask the same requests for a password (one of
    them has no ``match``, or both the same one) with no user in common: one Authorization
    header can pass only one of them, so those requests would get 401 whatever is typed (the
    ``--basic-auth`` flag beside a ``[[tunnels.NAME.rules]]`` one, say). Rules whose matches
    merely may overlap are not judged.

    Raises:
        RulesError: naming both rules.
    """
    asking = [rule for rule in rules if rule.action == "basic-auth"]
    for n, first in enumerate(asking):
        for second in asking[n + 1:]:
            if (first.match and second.match and first.match.strip() != second.match.strip()) or _common_user(first, second):
                continue
            if not first.match or not second.match:
                wide = first if not first.match else second
                where = f"rule {wide.index} asks every request for a password"
            else:
                where = f"both ask the requests of {first.match.strip()!r} for a password"
            detail = (f"rule {second.index}: users: no user in common with rule {first.index}, and {where}: one "
                      f"Authorization header passes only one of them, so those requests would always get 401;"
                      f" give both rules the same users, or keep one")
            raise RulesError(detail, second.index, detail)


def _common_user(first: Rule, second: Rule) -> bool:
    """Whether some name and password pass both rules (a hash against a hash of another kind
    cannot be told: counted as common, so nothing is refused that might work)."""
    for a in first.users:
        for b in second.users:
            if a.user != b.user:
                continue
            if a.secret == b.secret:
                return True
            hashed_a, hashed_b = _hashed(a.secret), _hashed(b.secret)
            if hashed_a and hashed_b:
                return True
            if (not hashed_a and b.accepts(a.secret.encode())) or (not hashed_b and a.accepts(b.secret.encode())):
                return True
    return False


def _hashed(secret: str) -> bool:
    return secret.startswith(("sha256:", "$2"))


HEADER_FLAGS = ("--request-header-add", "--request-header-remove", "--response-header-add", "--response-header-remove")
"""ngrok's flags of header edits, which ``devtunnel http`` takes too (one headers rule)."""


def shorthand_rules(
    basic_auth: Sequence[str] = (), allow_ip: Sequence[str] = (), rate_limit: str | None = None,
    header_edits: Sequence[Sequence[str]] = ((), (), (), ()), deny_ip: Sequence[str] = (),
) -> tuple[Rule, ...]:
    """The rules ``--deny-ip``, ``--allow-ip``, ``--basic-auth``, ``--rate-limit`` and the header
    flags (``HEADER_FLAGS``: ``header_edits`` are their four lists, in that order) stand for, in
    that order. An address list may join several by commas (ngrok's ``--cidr-allow`` and
    ``--cidr-deny`` are string lists).

    Raises:
        RulesError: naming the flag.
    """
    tables: list[tuple[str, dict[str, object]]] = []
    denied = _joined_list(deny_ip)
    if denied:
        for ip in denied:  # checked as allow-ip's are, so a bad one is said the same way
            try:
                network(ip, "ips")
            except _Problem as exc:
                raise RulesError(f"--deny-ip: {exc}") from None
        tables.append(("--deny-ip", {"action": "deny", "match": "ip:" + ",".join(denied)}))
    if allow_ip:
        tables.append(("--allow-ip", {"action": "allow-ip", "ips": _joined_list(allow_ip)}))
    if basic_auth:
        tables.append(("--basic-auth", {"action": "basic-auth", "users": list(basic_auth)}))
    if rate_limit is not None:
        tables.append(("--rate-limit", {"action": "rate-limit", "rate": rate_limit}))
    try:
        edits = header_edits_table(*header_edits, keys=HEADER_FLAGS)
    except ValueError as exc:
        raise RulesError(str(exc)) from None
    if edits is not None:
        tables.append((" / ".join(flag for flag, given in zip(HEADER_FLAGS, header_edits) if given), edits))
    out: list[Rule] = []
    for flag, table in tables:
        try:
            out += parse_rules([table], flag)
        except RulesError as exc:
            raise RulesError(f"{flag}: {exc.detail.split(': ', 2)[-1]}") from None
    return tuple(out)


def _joined_list(values: Sequence[str]) -> list[str]:
    """Every item of ``values``, each split at its commas, blanks left out."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


HIDDEN = "********"
"""What a listing shows in place of a secret a rule holds (``hide_secrets``)."""


def rules_to_tables(rules: Sequence[Rule], *, mask: bool = True) -> list[dict[str, object]]:
    """The rules as TOML tables: for people (``config show``, the agent API: secrets hidden,
    ``hide_secrets``), or with ``mask=False`` for a private rules file that reads back as the
    same rules."""
    out = []
    for table, rule in zip(rules_to_wire(rules), rules):
        if mask:
            hide_secrets(rule, table)
        if rule.action == "forward":
            table["target"] = rule.target
        out.append(table)
    return out


def hide_secrets(rule: Rule, table: dict[str, object]) -> None:
    """Replace in ``table`` (``rule`` as ``rules_to_wire`` writes it) each secret by ``HIDDEN``:
    a basic-auth user's password (``alice:********``), and the value of every header a headers
    rule adds (``{"Authorization": "********"}``), whose names stay. What a rule adds to requests
    is most often the service's credential (``--request-header-add "Authorization: Bearer ..."``),
    and no listing can tell a token from a harmless value, so none is shown (as ngrok's dashboard
    hides them); what it adds to responses is hidden alike, for one rule people can rely on."""
    if rule.action == "basic-auth":
        table["users"] = [f"{c.user}:{HIDDEN}" for c in rule.users]
    elif rule.action == "headers":
        for side, edits in (("request", rule.request_set), ("response", rule.response_set)):
            spec = table.get(side)
            if edits and isinstance(spec, dict):
                spec["set"] = {name: HIDDEN for name, _ in edits}


def rules_to_wire(rules: Sequence[Rule]) -> list[dict[str, object]]:
    """The rules as the HELLO carries them: what the relay needs, never a local target."""
    out: list[dict[str, object]] = []
    for rule in rules:
        item: dict[str, object] = {"action": rule.action}
        if rule.match:
            item["match"] = rule.match
        if rule.action == "basic-auth":
            item.update(users=[f"{c.user}:{c.secret}" for c in rule.users], realm=rule.realm, forward_auth=rule.forward_auth)
        elif rule.action == "allow-ip":
            item["ips"] = [str(n) for n in rule.networks]
        elif rule.action == "rate-limit":
            item.update(rate=rule.rate_text, burst=rule.burst)
        elif rule.action in ("respond", "deny"):
            item["status"] = rule.status
            if rule.body:
                item["body"] = rule.body
            if rule.headers:
                item["headers"] = dict(rule.headers)
            if rule.count is not None:
                item["count"] = rule.count
            if rule.delay:
                item["delay"] = f"{rule.delay:g}s"
            if rule.drop:
                item["drop"] = True
        elif rule.action == "headers":
            for side, edits, removals in (("request", rule.request_set, rule.request_remove),
                                          ("response", rule.response_set, rule.response_remove)):
                spec: dict[str, object] = {}
                if edits:
                    spec["set"] = dict(edits)
                if removals:
                    spec["remove"] = list(removals)
                if spec:
                    item[side] = spec
        out.append(item)
    return out


def rules_from_wire(items: object, source: str = "the agent's rules") -> tuple[Rule, ...]:
    """Rules from a HELLO or a RULES frame; RulesError if the agent sent something invalid.
    The agent runs it on the rules it is about to send (``source``: "the tunnel's rules"), so a
    change the relay would refuse (a 257th rule) is refused before it is sent."""
    return parse_rules(items if isinstance(items, list) else {}, source, wire=True)  # type: ignore[arg-type]


# -- one rule ---------------------------------------------------------------------------


_COMMON = {"action", "match"}
_KEYS = {
    "basic-auth": {"users", "users_file", "realm", "forward_auth"},
    "deny": {"status", "body", "headers"},
    "allow-ip": {"ips"},
    "rate-limit": {"rate", "burst"},
    "forward": {"target"},
    "respond": {"status", "body", "headers", "count", "delay", "drop"},
    "headers": {"request", "response"},
}


def _rule(number: int, table: object, relay: bool, base: Path | None, wire: bool = False, files: bool = True) -> Rule:
    if not isinstance(table, Mapping):
        raise _Problem("", "must be a table with an action")
    action = table.get("action")
    if action is None:
        raise _Problem("action", f"missing: every rule has one of {', '.join(ACTIONS)}")
    if action not in _KEYS:
        raise _Problem("action", f"expected one of {', '.join(ACTIONS)}, not {quoted(action)}")
    unknown = sorted(set(table) - _COMMON - _KEYS[action])
    if unknown:
        raise _Problem(unknown[0], f"not a key of a {action} rule (it takes {', '.join(sorted(_KEYS[action]))})")
    match = table.get("match", "")
    if not isinstance(match, str):
        raise _Problem("match", "must be a filter expression (a string)")
    flt = _match_filter(match) if match.strip() else None
    fields: dict[str, Any] = {"index": number, "action": action, "match": match.strip(), "filter": flt}
    if action == "basic-auth":
        fields.update(_basic_auth(table, base, files))
    elif action == "allow-ip":
        ips = table.get("ips")
        if isinstance(ips, str):
            ips = [ips]
        if not isinstance(ips, list) or not ips or not all(isinstance(i, str) for i in ips):
            raise _Problem("ips", "must be a list of addresses or CIDRs, e.g. [\"10.0.0.0/8\"]")
        fields["networks"] = tuple(network(i, "ips") for i in ips)
    elif action == "rate-limit":
        fields.update(_rate(table))
    elif action == "forward":
        if relay:
            raise _Problem("action", "a relay's own rules cannot forward: only an agent knows its local targets")
        target = table.get("target")
        if wire and target is None:
            target = "?"
        if isinstance(target, bool) or not isinstance(target, (int, str)) or str(target).strip() == "":
            raise _Problem("target", "must be a port or a URL of a local service, e.g. 8001")
        fields["target"] = str(target).strip()
        if not wire:
            try:
                parse_target(fields["target"])
            except ConfigError as exc:
                raise _Problem("target", str(exc)) from None
    elif action in ("respond", "deny"):
        fields.update(_respond(table, default_status=200 if action == "respond" else 403))
    elif action == "headers":
        for side in ("request", "response"):
            spec = table.get(side, {})
            if not isinstance(spec, Mapping) or set(spec) - {"set", "remove"}:
                raise _Problem(side, f"takes {side}.set (a table of headers) and {side}.remove (a list of names)")
            fields[f"{side}_set"] = _header_table(spec.get("set", {}), f"{side}.set")
            remove = spec.get("remove", [])
            if not isinstance(remove, list) or not all(isinstance(n, str) and is_token(n) for n in remove):
                raise _Problem(f"{side}.remove", "must be a list of header names")
            fields[f"{side}_remove"] = tuple(n.lower() for n in remove)
            _editable(f"{side}.set", [n for n, _ in fields[f"{side}_set"]])
            _editable(f"{side}.remove", remove)
    return Rule(**fields)


def _editable(key: str, names: Sequence[str]) -> None:
    """``_Problem`` for the first of ``names`` that frames a message (``_UNEDITABLE``)."""
    framing = next((n for n in names if n.lower().encode() in _UNEDITABLE), None)
    if framing is not None:
        raise _Problem(key, f"{framing} says how the message is framed on one connection; the relay and"
                       " the agent write it themselves, a rule cannot set or remove it")


def _match_filter(match: str) -> Filter:
    try:
        flt = parse(match)
    except FilterSyntaxError as exc:
        raise _Problem("match", f"column {exc.position + 1}: {exc.message}") from None
    problem = _unjudged(flt)
    if problem is not None:
        raise _Problem("match", problem)
    _read_paths(flt)
    return flt


def _read_paths(flt: Filter) -> None:
    """Read each ``path:`` prefix of ``flt`` as the request's path is read (``rule_path``)."""
    for leaf in _leaves(flt):
        if type(leaf) is PathPrefix:
            leaf.prefix = rule_path(leaf.prefix)


PATH_READING = 1
"""How rules read a request's path (``rules.paths``), as a relay announces it (``RULE_PATHS``
in WELCOME): 1 drops the ``;`` parameters of an empty, ``.`` or ``..`` segment and reads a
backslash as a slash, besides decoding escapes and resolving dot segments."""

_PATH_FILTERS = frozenset({"Path", "PathRegex", "Url", "MUrl"})


def judges_path(rule: Rule) -> bool:
    """Whether ``rule``'s match looks at the request's path (``path:``, ``~u``, ``url:`` ...)."""
    return any(type(leaf).__name__ in _PATH_FILTERS for leaf in _leaves(rule.filter))


def judges_client_address(rule: Rule) -> bool:
    """Whether ``rule`` tells clients apart by their address: ``allow-ip``, or ``ip:`` in its match."""
    return rule.action == "allow-ip" or any(type(leaf).__name__ == "Ip" for leaf in _leaves(rule.filter))


def uses_regex(rule: Rule) -> bool:
    """Whether ``rule``'s match runs a regex (``path:~``, ``~h``, ``~b`` ...): what the tunnel's
    share of the relay's time is spent on (``rules.share``)."""
    return any(isinstance(leaf, RegexLeaf) for leaf in _leaves(rule.filter))


def _leaves(flt: object, depth: int = 0) -> list[Filter]:
    if depth > 64 or not isinstance(flt, Filter):
        return []
    out = [flt]
    for value in vars(flt).values() if hasattr(flt, "__dict__") else ():
        for child in value if isinstance(value, (list, tuple)) else [value]:
            out += _leaves(child, depth + 1)
    return out


def _unjudged(flt: object, depth: int = 0) -> str | None:
    """Why the first leaf of ``flt`` a rule cannot judge (``status:``, ``sig:`` ...) is
    refused, or None when the relay can judge every leaf."""
    if depth > 64:
        return None
    name = type(flt).__name__
    if name not in _REQUEST_FILTERS:
        code = str(getattr(flt, "code", "") or name)
        field = code if code.startswith("~") else f"{code}:"
        if name in _AGENT_FILTERS:
            return (f"{field} is known only to the agent (its tunnel's records and webhook secrets); the relay"
                    " deciding a rule never sees it (the rule would never match, or negated match every request)")
        if name in _CLOCK_FILTERS:
            return (f"{field} names an instant fixed when the rule is read, not a property of a request"
                    " (a rule that would stop matching, or start matching every request, as time passes)")
        return f"{field} is known only once a response exists; a rule decides before that"
    for value in vars(flt).values() if hasattr(flt, "__dict__") else ():
        children = value if isinstance(value, (list, tuple)) else [value]
        for child in children:
            if isinstance(child, Filter):
                found = _unjudged(child, depth + 1)
                if found:
                    return found
    return None


def network(text: str, key: str) -> Network:
    """An address or CIDR (IPv4 or IPv6) as a network; ``_Problem`` naming ``key`` otherwise."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise _Problem(key, f"{quoted(text)} is not an IP address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)") from None


def _basic_auth(table: Mapping[str, Any], base: Path | None, files: bool = True) -> dict[str, Any]:
    entries: list[str] = []
    users = table.get("users", [])
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise _Problem("users", "must be a list of \"name:password\" (or name:sha256:HEX) strings")
    entries += users
    users_file = table.get("users_file")
    if users_file is not None:
        if not files:
            raise _Problem("users_file", "not taken here: give the users themselves (\"name:sha256:HEX\"),"
                           " or put the rule in devtunnel.toml or a --rules file")
        if not isinstance(users_file, str):
            raise _Problem("users_file", "must be a path")
        path = Path(users_file).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise _Problem("users_file", f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        from_file = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        entries += from_file
        if any(_clear_password(entry) for entry in from_file):
            note_shared_secrets(path, [CLEAR_PASSWORDS], HASH_INSTEAD)
    if not entries:
        raise _Problem("users", "a basic-auth rule needs at least one user (users or users_file)")
    credentials: list[Credential] = []
    for entry in entries:
        user, sep, secret = entry.partition(":")
        if not sep or not user or not secret:
            raise _Problem("users", "each user is \"name:password\", \"name:sha256:HEX\" or \"name:$2b$...\" (bcrypt)")
        if secret == HIDDEN:  # a listing's (``hide_secrets``), posted or written back
            raise _Problem("users", f"user {quoted(user)}: {HIDDEN} is what a listing shows in place of the password: give the password")
        if any(c.user == user for c in credentials):
            # Two passwords for one name would both be accepted: almost always a stale line left behind.
            raise _Problem("users", f"user {quoted(user)} is given twice; keep one password per user")
        if secret.startswith("sha256:") and not re.fullmatch(r"[0-9a-fA-F]{64}", secret[7:]):
            raise _Problem("users", f"user {quoted(user)}: a sha256 hash is 64 hex digits after 'sha256:'")
        if secret.startswith("$2") and not re.fullmatch(r"\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}", secret):
            raise _Problem("users", f"user {quoted(user)}: not a bcrypt hash ($2b$, the cost, $, then 53 characters)")
        if secret.startswith("$2"):
            try:
                importlib.import_module("bcrypt")
            except ImportError:
                raise _Problem("users", f"user {quoted(user)}: bcrypt hashes need the bcrypt package; use sha256:HEX") from None
        credentials.append(Credential(user, secret))
    realm = table.get("realm", "devtunnel")
    if not isinstance(realm, str) or '"' in realm or "\\" in realm or not realm.isprintable():
        raise _Problem("realm", "must be printable text without quotes or backslashes")
    forward_auth = table.get("forward_auth", False)
    if not isinstance(forward_auth, bool):
        raise _Problem("forward_auth", "must be true or false")
    return {"users": tuple(credentials), "realm": realm, "forward_auth": forward_auth}


def _rate(table: Mapping[str, Any]) -> dict[str, Any]:
    text = table.get("rate")
    m = _RATE.fullmatch(text.strip()) if isinstance(text, str) else None  # group(0): the stripped text
    if m is None or float(m.group(1)) <= 0:
        raise _Problem("rate", f"expected a rate like \"20/s\", \"600/m\" or \"1000/h\", not {quoted(text)}")
    amount = float(m.group(1))
    rate = amount / _PER[m.group(2)]
    burst = table.get("burst", max(1, math.ceil(amount)))  # a full period's worth may come at once
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise _Problem("burst", "must be a whole number of requests, at least 1")
    return {"rate": rate, "rate_text": m.group(0), "burst": burst}


def duration(value: object, key: str) -> float:
    """Seconds from ``"250ms"``, ``"2s"``, ``"1m"`` or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 3600:
        return float(value)
    m = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise _Problem(key, f"expected a duration like \"0s\", \"250ms\" or \"2s\", not {quoted(value)}")
    seconds = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(2) or "s"]
    if seconds > 3600:
        raise _Problem(key, "at most an hour")
    return seconds


def _respond(table: Mapping[str, Any], default_status: int) -> dict[str, Any]:
    status = table.get("status", default_status)
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise _Problem("status", f"must be an HTTP status from 200 to 599, not {quoted(status)}")
    body = table.get("body", "")
    if not isinstance(body, str) or len(body.encode()) > MAX_BODY:
        raise _Problem("body", f"must be text of at most {MAX_BODY // 1024} KiB")
    if body and status in BODILESS:
        # Written after a 204 or 304 head, it would be read as the start of the next response.
        raise _Problem("body", f"a {status} answer has no body: leave body out, or answer another status")
    count = table.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise _Problem("count", "must be a whole number, at least 1 (leave it out for every request)")
    drop = table.get("drop", False)
    if not isinstance(drop, bool):
        raise _Problem("drop", "must be true or false")
    headers = _header_table(table.get("headers", {}), "headers")
    _editable("headers", [n for n, _ in headers])
    return {
        "status": status,
        "body": body,
        "headers": headers,
        "count": count,
        "delay": duration(table.get("delay", 0), "delay"),
        "drop": drop,
    }


def _header_table(value: object, key: str) -> tuple[Header, ...]:
    if not isinstance(value, Mapping):
        raise _Problem(key, "must be a table of header names to values")
    out = []
    for name, text in value.items():
        if not isinstance(name, str) or not is_token(name):
            raise _Problem(key, f"{quoted(name)} is not a valid header name")
        if not isinstance(text, str) or not all(ord(c) < 256 for c in text) or field_problem(
                name.encode(), text.encode("latin-1")) is not None:
            # The relay writes it as it is: a control byte but tab (uvicorn's rule too) made
            # every answer the rule touched an empty reply.
            raise _Problem(key, f"the value of {name} must be one line of Latin-1 text without control characters")
        if text == HIDDEN:  # a listing's, posted or written back: the service would get the stars
            raise _Problem(key, f"the value of {name} is {HIDDEN}, what a listing shows in place of the value: give the value")
        out.append((name, text))
    return tuple(out)
