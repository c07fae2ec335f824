"""What the recorder needs to judge deliveries: the providers to try and the secrets it knows.

Built once when the agent starts (from the environment and devtunnel.toml, see
``devtunnel.config.webhook_context``) and handed to the recorder, which judges each finished
exchange in its own thread: verification never runs in the forwarding path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from devtunnel.capture.model import Exchange, Headers
from devtunnel.webhooks import BUILTIN, Provider, Signature, Verdict, by_name, judge

__all__ = ["WebhookContext"]


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


@dataclass(frozen=True)
class WebhookContext:
    """Providers and secrets, with other secrets for some tunnels.

    Attributes:
        providers: the providers to try, in order (custom ones first).
        secrets: known secrets by provider name (never shown: ``repr`` leaves them out).
        secret_envs: the variable each provider's secret is read from, where config names
            another than the conventional one (for the "no secret: set ..." reason).
        tunnels: the context of tunnels that have secrets of their own, by tunnel name.
    """

    providers: tuple[Provider, ...] = BUILTIN
    secrets: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    secret_envs: Mapping[str, str] = field(default_factory=dict)
    tunnels: Mapping[str, WebhookContext] = field(default_factory=dict)

    def for_tunnel(self, name: str) -> WebhookContext:
        """The context for exchanges of tunnel ``name``."""
        return self.tunnels.get(name, self)

    def judge(self, exchange: Exchange) -> Verdict | None:
        """The verdict on an exchange at the time it began (``duplicate_of`` is the store's to set)."""
        ctx = self.for_tunnel(exchange.tunnel)
        request = replace(exchange.request, headers=_IndexedHeaders(exchange.request.headers))
        verdict = judge(request, scheme=exchange.scheme, now=exchange.started_at,
                        secrets=ctx.secrets, providers=ctx.providers)
        if verdict is None or verdict.signature is not Signature.UNVERIFIED or ctx.secrets.get(verdict.provider):
            return verdict
        variable = ctx.secret_envs.get(verdict.provider)
        provider = by_name(verdict.provider, ctx.providers)
        if variable and provider is not None and verdict.reason == f"no secret: set {provider.secret_env}":
            return replace(verdict, reason=f"no secret: set {variable}")
        return verdict
