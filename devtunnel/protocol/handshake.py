"""HELLO and WELCOME: how each side introduces itself, and the limits it announces.

Both are JSON objects (``docs/protocol.md``, "Handshake and versioning"). Each side's limits
travel in the ``info`` object under the keys of ``PeerLimits``; a missing key means the default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from devtunnel.errors import ProtocolError
from devtunnel.protocol import frames as f
from devtunnel.values.terminal import clipped, quoted

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (PROTOCOL_VERSION,)
DEFAULT_MAX_FRAME_SIZE = 1 << 20  # largest frame payload accepted (bytes)
DEFAULT_INITIAL_WINDOW = 1 << 20  # per-stream flow-control window (bytes)
DEFAULT_MAX_STREAMS = 1024  # concurrent streams a relay may open on one agent
DEFAULT_MAX_HEAD_SIZE = 256 << 10  # largest HELLO/WELCOME/REQUEST/RESPONSE payload accepted
MIN_FRAME_SIZE = 1024  # smallest max_frame_size / max_head_size either side may announce

UNSUPPORTED_VERSION = 10  # ErrorCode.UNSUPPORTED_VERSION, without importing the connection

INSTANCE_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
MIN_INSTANCE_LENGTH = 16  # an instance id stands for its agent: too short would be guessable
MAX_INSTANCE_LENGTH = 128

RULES_ACK = "rules"
"""WELCOME ``info`` key by which a relay says it enforces the rules of the HELLO (their version).
A relay that does not know rules ignores the HELLO's ``rules`` and never sets it: the agent
then refuses to go online (``docs/protocol.md``, "Rules")."""

RULE_PATHS = "rule_paths"
"""WELCOME ``info`` key by which a relay that enforces rules says how it reads a request's path
for them (``rules.PATH_READING``). Relays before it read ``/public/..;/admin`` and paths written
with backslashes as under ``/public``: the agent warns that a rule on the path can be passed
there (``docs/protocol.md``, "Rules")."""

RULE_BODIES = "rule_bodies"
"""HELLO ``info`` key by which an agent says it reads the request body a rule's notice says is
cut (``1``): a relay sends part of a body only to such an agent (``docs/protocol.md``, "Rules")."""


@dataclass(frozen=True, slots=True)
class PeerLimits:
    """The limits one side of a connection enforces, announced to the other in its handshake."""

    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    """Largest payload accepted for frames other than heads."""
    max_head_size: int = DEFAULT_MAX_HEAD_SIZE
    """Largest HELLO, WELCOME, REQUEST or RESPONSE payload accepted."""
    initial_window: int = DEFAULT_INITIAL_WINDOW
    """Flow-control credit granted to the peer on every new stream."""
    max_streams: int = DEFAULT_MAX_STREAMS
    """Concurrent streams (relay: opens at most; agent: accepts at most)."""

    @staticmethod
    def bounds() -> dict[str, tuple[int, int]]:
        """The accepted range of every setting."""
        return {
            "max_frame_size": (MIN_FRAME_SIZE, f.MAX_LENGTH),
            "max_head_size": (MIN_FRAME_SIZE, f.MAX_LENGTH),
            "initial_window": (1, f.MAX_WINDOW),
            "max_streams": (1, f.MAX_WINDOW),
        }

    def check(self) -> None:
        """Raise ValueError for a setting out of range (our own configuration)."""
        for key, (low, high) in self.bounds().items():
            value = getattr(self, key)
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"{key} must be an integer in {low}..{high}, not {quoted(value)}")

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> PeerLimits:
        """The settings a peer announced in its handshake ``info``; ProtocolError if invalid."""
        values: dict[str, int] = {}
        for key, (low, high) in cls.bounds().items():
            if key not in info:
                continue
            value = info[key]
            if type(value) is not int or not low <= value <= high:
                # The value is the peer's (a HELLO of 64 KiB, before any token): cut, for the log and the GOAWAY.
                raise ProtocolError(f"handshake setting {key}={clipped(quoted(value), 40)} is not an integer in {low}..{high}")
            values[key] = value
        return cls(**values)

    def into(self, info: dict[str, object] | None) -> dict[str, object]:
        """``info`` plus these settings (ours win over keys the caller chose)."""
        merged = dict(info or {})
        merged.update(dataclasses.asdict(self))
        return merged


@dataclass(frozen=True, slots=True)
class HelloFields:
    """What a HELLO payload carries."""

    versions: list[int]
    token: str
    name: str | None
    info: dict[str, Any]
    instance: str | None = None
    """The agent instance id (``docs/protocol.md``), or None from an agent that sends none."""
    pool: bool = False
    """The agent asks to share its name with other agents of the same token (a pool)."""
    rules: dict[str, Any] | None = None
    """``{"version": N, "list": [...]}``: rules the relay must enforce (None: none sent)."""


@dataclass(frozen=True, slots=True)
class WelcomeFields:
    """What a WELCOME payload carries."""

    version: int
    name: str
    url: str
    info: dict[str, Any]
    pool: int | None = None
    """Agents sharing the name (in answer to a HELLO asking for a pool), or None."""


def check_instance(instance: str) -> None:
    """Raise ValueError unless ``instance`` is a valid agent instance id."""
    if not MIN_INSTANCE_LENGTH <= len(instance) <= MAX_INSTANCE_LENGTH or not set(instance) <= INSTANCE_ALPHABET:
        raise ValueError(
            f"an agent instance id is {MIN_INSTANCE_LENGTH}-{MAX_INSTANCE_LENGTH} characters of A-Z, a-z, 0-9, - and _"
        )


def encode_hello(
    versions: tuple[int, ...],
    token: str,
    name: str | None,
    info: dict[str, object],
    instance: str | None = None,
    *,
    pool: bool = False,
    rules: dict[str, object] | None = None,
) -> bytes:
    """The HELLO payload (``instance``, ``pool`` and ``rules`` only when given: older relays never
    see the keys otherwise)."""
    obj: dict[str, object] = {"versions": list(versions), "token": token, "name": name, "info": info}
    if instance is not None:
        obj["instance"] = instance
    if pool:
        obj["pool"] = True
    if rules is not None:
        obj["rules"] = rules
    return f.encode_json(obj)


def decode_hello(payload: bytes) -> HelloFields:
    """Validate a HELLO payload."""
    obj = f.decode_json(payload, "HELLO")
    versions, token, name, info = obj.get("versions"), obj.get("token"), obj.get("name"), obj.get("info", {})
    instance = obj.get("instance")
    if not isinstance(versions, list) or not all(type(v) is int for v in versions):
        raise ProtocolError("HELLO versions must be a list of integers")
    if not isinstance(token, str) or not (name is None or isinstance(name, str)):
        raise ProtocolError("HELLO token must be a string and name a string or null")
    if not isinstance(info, dict):
        raise ProtocolError("HELLO info must be a JSON object")
    if instance is not None:
        if not isinstance(instance, str):
            raise ProtocolError("HELLO instance must be a string or absent")
        try:
            check_instance(instance)
        except ValueError as exc:
            raise ProtocolError(f"HELLO instance is invalid: {exc}") from None
    pool = obj.get("pool", False)
    if type(pool) is not bool:
        raise ProtocolError("HELLO pool must be true, false or absent")
    rules = obj.get("rules")
    if rules is not None:
        check_rules(rules, "HELLO")
    return HelloFields(versions, token, name, info, instance, pool, rules)


def encode_rules(rules: dict[str, object]) -> bytes:
    """A RULES payload: the same object a HELLO carries under ``rules``."""
    return f.encode_json(rules)


def decode_rules(payload: bytes, what: str = "RULES") -> dict[str, Any]:
    """Validate a RULES payload (``{"version": N, "list": [...]}``)."""
    rules = f.decode_json(payload, what)
    check_rules(rules, what)
    return rules


def check_rules(rules: object, what: str) -> None:
    """ProtocolError unless ``rules`` is ``{"version": N, "list": [...]}``."""
    if not isinstance(rules, dict) or type(rules.get("version")) is not int or not isinstance(rules.get("list"), list):
        raise ProtocolError(f'{what} rules must be an object {{"version": N, "list": [...]}}')


def choose_version(offered: list[int], spoken: tuple[int, ...]) -> int:
    """The highest version both sides speak; ProtocolError UNSUPPORTED_VERSION when none."""
    common = set(offered) & set(spoken)
    if not common:
        raise ProtocolError(
            f"no common protocol version: the agent speaks {sorted(offered)}, the relay speaks {sorted(spoken)}",
            code=UNSUPPORTED_VERSION,
        )
    return max(common)


def encode_welcome(version: int, name: str, url: str, info: dict[str, object], *, pool: int | None = None) -> bytes:
    """The WELCOME payload; ``pool`` (the agents sharing the name, this one included) only in
    answer to a HELLO that asked for a pool."""
    obj: dict[str, object] = {"version": version, "name": name, "url": url, "info": info}
    if pool is not None:
        obj["pool"] = {"members": pool}
    return f.encode_json(obj)


def encode_pool(members: int) -> bytes:
    """The POOL payload: how many agents share the name now."""
    return f.encode_json({"members": members})


def decode_pool(payload: bytes) -> int:
    """Validate a POOL payload: the number of agents sharing the name."""
    return _members(f.decode_json(payload, "POOL"), "POOL")


def _members(value: object, what: str) -> int:
    """The member count of a WELCOME's ``pool`` object or a POOL payload."""
    members = value.get("members") if isinstance(value, dict) else None
    if type(members) is not int or not 1 <= members <= f.MAX_WINDOW:
        raise ProtocolError(f"{what} must be an object with members, a positive integer")
    return members


def decode_welcome(payload: bytes, offered: tuple[int, ...]) -> WelcomeFields:
    """Validate a WELCOME payload against the versions we offered."""
    obj = f.decode_json(payload, "WELCOME")
    version, name, url, info = obj.get("version"), obj.get("name"), obj.get("url"), obj.get("info", {})
    if type(version) is not int or version not in offered:
        raise ProtocolError(
            f"the relay chose protocol version {quoted(version)}, not one of {list(offered)}", code=UNSUPPORTED_VERSION
        )
    if not isinstance(name, str) or not isinstance(url, str):
        raise ProtocolError("WELCOME name and url must be strings")
    if not isinstance(info, dict):
        raise ProtocolError("WELCOME info must be a JSON object")
    pool = _members(obj["pool"], "WELCOME pool") if "pool" in obj else None
    return WelcomeFields(version, name, url, info, pool)
