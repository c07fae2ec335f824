"""Realistic sample deliveries for ``devtunnel send``, shipped as JSON fixtures beside this module.

A fixture (``fixtures/PROVIDER__NAME.json``) holds the provider, the name people type, the event
type it produces, a suggested path, the headers a real delivery carries (signature headers left
empty: they are made when the sample is signed) and a JSON ``body`` or a ``form``. Strings may
hold placeholders, filled fresh for every delivery so that each looks new to the receiver:

``${now}``      the Unix time (a number when it is the whole value)
``${now_iso}``  the time in ISO 8601, UTC
``${uuid}``     a random UUID
``${id:PRE}``   ``PRE`` and 24 random letters and digits, as provider ids look (``evt_…``)
``${sid:PRE}``  ``PRE`` and 32 random lowercase hex digits, as Twilio's SIDs are (``SM…``, ``AC…``)

The same placeholder is the same value throughout one delivery (a Twilio message's three sids).
"""

from __future__ import annotations

import difflib
import json
import random
import re
import string
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from devtunnel.capture.model import Headers
from devtunnel.errors import ConfigError
from devtunnel.values.terminal import quoted
from devtunnel.webhooks.base import timestamp_text

__all__ = ["Sample", "SampleInfo", "list_samples", "sample"]

_PLACEHOLDER = re.compile(r"\$\{(now|now_iso|uuid|id:[A-Za-z_]*|sid:[A-Z]*)\}")
_ID_CHARS = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class SampleInfo:
    """What ``devtunnel send --list`` shows of a fixture."""

    provider: str
    name: str
    event: str
    path: str


@dataclass(frozen=True, slots=True)
class Sample:
    """A sample delivery, unsigned: ``headers`` lack the signature headers."""

    info: SampleInfo
    headers: Headers
    body: bytes


def _fixtures() -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    folder = resources.files("devtunnel.webhooks") / "fixtures"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            out[(data["provider"], data["name"])] = data
    return out


def list_samples() -> list[SampleInfo]:
    """Every shipped sample, by provider then name."""
    return [SampleInfo(d["provider"], d["name"], d["event"], d["path"]) for d in _fixtures().values()]


def _fill(value: Any, now: float, rng: random.Random, memo: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, now, rng, memo) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, now, rng, memo) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in memo:
            if key == "now":
                memo[key] = timestamp_text(now)  # the text a re-signed timestamp header holds
            elif key == "now_iso":
                memo[key] = datetime.fromtimestamp(int(now), tz=timezone.utc).isoformat().replace("+00:00", "Z")
            elif key == "uuid":
                memo[key] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            elif key.startswith("sid:"):
                memo[key] = key[4:] + f"{rng.getrandbits(128):032x}"
            else:
                memo[key] = key[3:] + "".join(rng.choice(_ID_CHARS) for _ in range(24))
        return memo[key]

    if value == "${now}":
        return int(now)
    return _PLACEHOLDER.sub(one, value)


def sample(provider: str, name: str, *, now: float, rng: random.Random | None = None) -> Sample:
    """A fresh delivery of the fixture ``provider``/``name`` (ids and times made now); ``name``
    may also be the event type of the one fixture of ``provider`` that sends it.

    Raises:
        ConfigError: no such fixture; the message lists the provider's.
    """
    fixtures = _fixtures()
    data = fixtures.get((provider, name))
    if data is None:  # the EVENT column of ``send --list`` (slack app_mention is event_callback), where one sample has it
        by_event = [d for (p, _), d in fixtures.items() if p == provider and d["event"] == name]
        data = by_event[0] if len(by_event) == 1 else None
    if data is None:
        names = sorted(n for p, n in fixtures if p == provider)
        if not names:
            providers = sorted({p for p, _ in fixtures})
            raise ConfigError(f"no samples for provider {quoted(provider)}; providers: {', '.join(providers)}")
        near = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
        guess = f"did you mean {near[0]}? " if near else ""
        raise ConfigError(f"no {provider} sample named {quoted(name)}; {guess}{provider} has: {', '.join(names)}")
    rng = rng or random.SystemRandom()
    memo: dict[str, str] = {}
    headers = [(k, str(_fill(v, now, rng, memo))) for k, v in data["headers"].items() if v != ""]
    if "form" in data:
        body = urlencode(_fill(data["form"], now, rng, memo)).encode()
    else:
        body = (json.dumps(_fill(data["body"], now, rng, memo), indent=2, ensure_ascii=False) + "\n").encode()
    return Sample(SampleInfo(data["provider"], data["name"], data["event"], data["path"]), Headers(headers), body)
