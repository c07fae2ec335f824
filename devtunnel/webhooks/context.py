"""What the recorder needs to judge deliveries: the providers to try and the secrets it knows.

Built once when the agent starts (from the environment and devtunnel.toml, see
``devtunnel.config.webhook_context``) and handed to the recorder, which judges each finished
exchange in its own thread: verification never runs in the forwarding path.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from devtunnel.capture.model import Exchange, Headers
from devtunnel.capture.verdict import no_secret
from devtunnel.webhooks import BUILTIN, Delivery, Provider, Signature, Verdict, by_name, judge

__all__ = ["WebhookContext", "MAX_FIELD"]

MAX_FIELD = 512
"""Characters of an event type or delivery id kept: they come from the sender, and are stored."""


def _field(text: str | None) -> str | None:
    """A sender's event type or delivery id as it can be stored: bounded, and valid text.

    A JSON body may hold lone surrogates (``"\\ud800"``), which no database text can; they are
    written as their escapes instead of costing the capture.
    """
    if text is None:
        return None
    text = text[:MAX_FIELD]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class _IndexedHeaders(Headers):
    """Headers whose ``get`` is one dict lookup.

    Detection asks each provider for its headers in turn, a dozen lookups per request; each of
    ``Headers.get`` scans every field. One pass that indexes the first value of each name makes
    judging traffic that is no webhook cost the recorder's thread little.
    """

    __slots__ = ("_first",)

    def __init__(self, headers: Headers) -> None:
        self._fields = headers.fields
        first: dict[str, bytes] = {}
        for name, value in self._fields:
            first.setdefault(name.lower().decode("latin-1"), value)
        self._first = first

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self._first.get(name.lower())
        if value is None:
            return default
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")


class _Probe(Headers):
    """No headers at all, noting the name of every header asked for."""

    __slots__ = ("asked",)

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, name: str, default: str | None = None) -> str | None:
        self.asked.add(name.lower())
        return default

    def get_all(self, name: str) -> list[str]:
        self.asked.add(name.lower())
        return []

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.asked.add(name.lower())
        return False


@functools.cache
def _markers(provider: Provider) -> frozenset[bytes] | None:
    """Header names (lower case) one of which a request must carry for ``provider`` to recognise it.

    Found by asking the provider about a request without headers: it looks for these and, finding
    none, says no. A request carrying none of them takes the same path to the same answer
    (detection depends on headers alone), so it need not be asked. None when the provider
    recognises even a request without headers: it is always asked.
    """
    probe = _Probe()
    if provider.detects(Delivery("POST", "http://probe/", probe, b"")):
        return None
    return frozenset(name.encode("latin-1") for name in probe.asked)


_name = operator.itemgetter(0)
_value = operator.itemgetter(1)

_Plan = tuple[tuple[Provider, tuple[bytes, ...] | None], ...]
"""Providers to ask, in order, each with the texts one of which the header values must contain
for it to be asked (None: asked whatever the values)."""


class _Screen:
    """Which of some providers could recognise a request, from its header names (and at most one
    look at its values); the others need not be asked.

    Most traffic is no webhook. The header names a request carries among those any provider's
    ``detects`` reads (``_markers``) settle which providers to ask, and how is worked out once per
    set of such names: a provider none of whose names is there is left out, and one whose names
    there are only ``value_markers`` is asked only when the values hold one of their texts.
    Detection depends on headers alone, so a provider left out would have said no.
    """

    __slots__ = ("providers", "names", "plans")

    _MAX_PLANS = 256
    """Sets of names remembered (a few in practice; bounded against a sender that varies them)."""

    def __init__(self, providers: tuple[Provider, ...]) -> None:
        self.providers = providers
        names: set[bytes] = set()
        for provider in providers:
            names.update(_markers(provider) or ())
        self.names = frozenset(names)
        self.plans: dict[frozenset[bytes], _Plan] = {}

    def candidates(self, fields: tuple[tuple[bytes, bytes], ...]) -> list[Provider]:
        """The providers that could recognise a request with these header fields, in order."""
        # One join, lower and split in C instead of a lower() per name. A name holding the
        # separator only adds pieces, which are no marker: what is found is never less.
        found = self.names.intersection(b"\0".join(map(_name, fields)).lower().split(b"\0"))
        plan = self.plans.get(found)
        if plan is None:
            plan = self._plan(found)
        if not plan:
            return []
        values = b""
        candidates = []
        for provider, texts in plan:
            if texts is not None:
                values = values or b"\0".join(map(_value, fields))
                for text in texts:
                    if text in values:
                        break
                else:
                    continue
            candidates.append(provider)
        return candidates

    def _plan(self, found: frozenset[bytes]) -> _Plan:
        plan: list[tuple[Provider, tuple[bytes, ...] | None]] = []
        for provider in self.providers:
            markers = _markers(provider)
            if markers is None:
                plan.append((provider, None))
                continue
            present = markers & found
            if not present:
                continue
            by_value = {name.lower().encode("latin-1"): text.encode("utf-8")
                        for name, text in provider.value_markers.items()}
            if present <= by_value.keys():
                plan.append((provider, tuple(by_value[name] for name in sorted(present))))
            else:
                plan.append((provider, None))
        if len(self.plans) >= self._MAX_PLANS:
            self.plans.clear()
        self.plans[found] = result = tuple(plan)
        return result


@functools.cache
def _screen(providers: tuple[Provider, ...]) -> _Screen:
    return _Screen(providers)


@dataclass(frozen=True)
class WebhookContext:
    """Providers and secrets, with other secrets for some tunnels.

    Attributes:
        providers: the providers to try, in order (custom ones first).
        secrets: known secrets by provider name (never shown: ``repr`` leaves them out).
        secret_envs: the variable each provider's secret is read from, where config names
            another than the conventional one (for the "no secret: set ..." reason).
        tunnels: the context of tunnels that have secrets of their own, by tunnel name.
        configured: the providers a tunnel's own tables name (``[tunnels.NAME.webhooks.PROVIDER]``),
            in the order written: the tunnel's providers (the inspector's sample palette starts
            on the first); empty for the context of every tunnel.
    """

    providers: tuple[Provider, ...] = BUILTIN
    secrets: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    secret_envs: Mapping[str, str] = field(default_factory=dict)
    tunnels: Mapping[str, WebhookContext] = field(default_factory=dict)
    configured: tuple[str, ...] = ()

    def for_tunnel(self, name: str) -> WebhookContext:
        """The context for exchanges of tunnel ``name``."""
        return self.tunnels.get(name, self)

    def judge(self, exchange: Exchange) -> Verdict | None:
        """The verdict on an exchange at the time it began (``duplicate_of`` is the store's to set)."""
        ctx = self.for_tunnel(exchange.tunnel)
        candidates = _screen(ctx.providers).candidates(exchange.request.headers.fields)
        if not candidates:
            return None
        probe = Delivery(exchange.request.method, "", exchange.request.headers, b"")  # detection reads headers alone
        provider = next((p for p in candidates if p.detects(probe)), None)
        if provider is None:
            return None
        request = replace(exchange.request, headers=_IndexedHeaders(exchange.request.headers))
        verdict = judge(request, scheme=exchange.scheme, now=exchange.started_at,
                        secrets=ctx.secrets, providers=(provider,))
        if verdict is not None:
            event, delivery = _field(verdict.event_type), _field(verdict.delivery_id)
            if (event, delivery) != (verdict.event_type, verdict.delivery_id):
                verdict = replace(verdict, event_type=event, delivery_id=delivery)
        if verdict is None or verdict.signature is not Signature.UNVERIFIED or ctx.secrets.get(verdict.provider):
            return verdict
        variable = ctx.secret_envs.get(verdict.provider)
        provider = by_name(verdict.provider, ctx.providers)
        if variable and provider is not None and verdict.reason == no_secret(provider.secret_env):
            return replace(verdict, reason=no_secret(variable))
        return verdict
