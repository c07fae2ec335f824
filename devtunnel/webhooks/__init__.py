"""Webhook providers: detect a delivery's provider, judge its signature, sign it again.

The pure core behind the ``webhook`` verdict of every captured request, re-signing on replay,
``devtunnel send`` and the pytest exporter::

    provider = detect(delivery, PROVIDERS)            # Stripe, GitHub, ... or None
    verdict = provider.verdict(delivery, secrets, now) # valid / invalid (with the reason) / unsigned / unverified
    headers = provider.sign(delivery, secret, now)     # fresh signature, same delivery id

Secrets come from the provider's conventional environment variable or from config (see
:mod:`devtunnel.webhooks.secrets`); nothing here reads either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from devtunnel.capture.model import Request
from devtunnel.capture.verdict import Signature, Verdict
from devtunnel.webhooks.base import Check, Delivery, Provider, SignatureError
from devtunnel.webhooks.custom import CustomProvider
from devtunnel.webhooks.providers import GitHub, Shopify, Slack, StandardWebhooks, Stripe, Twilio

__all__ = [
    "BUILTIN",
    "Check",
    "CustomProvider",
    "Delivery",
    "Provider",
    "Signature",
    "SignatureError",
    "Verdict",
    "by_name",
    "delivery_of",
    "detect",
    "expired_signature",
    "judge",
]

BUILTIN: tuple[Provider, ...] = (Stripe(), GitHub(), Slack(), Shopify(), StandardWebhooks(), Twilio())
"""The providers devtunnel knows by name, in the order they are tried."""


def detect(delivery: Delivery, providers: Iterable[Provider] = BUILTIN) -> Provider | None:
    """The first provider that recognises the delivery, or None."""
    return next((p for p in providers if p.detects(delivery)), None)


def by_name(name: str, providers: Iterable[Provider] = BUILTIN) -> Provider | None:
    """The provider called ``name`` (``stripe``), or None."""
    return next((p for p in providers if p.name == name), None)


def delivery_of(request: Request, scheme: str = "http") -> Delivery:
    """A captured request as a delivery; its URL is ``scheme://Host target`` (what the sender called)."""
    return Delivery(request.method, f"{scheme}://{request.host}{request.url_text}", request.headers, request.body)


def judge(request: Request, *, scheme: str, now: float, secrets: Mapping[str, Sequence[str]],
          providers: Sequence[Provider] = BUILTIN) -> Verdict | None:
    """The verdict on a captured request, or None when no provider recognises it.

    Args:
        request: the request as captured (``body_truncated`` makes the signature unverified).
        scheme: the public side's scheme, for providers that sign the URL.
        now: when it was delivered (seconds since the epoch): timestamps are judged against it.
        secrets: known secrets by provider name.
        providers: the providers to try, custom ones first.
    """
    delivery = delivery_of(request, scheme)
    provider = detect(delivery, providers)
    if provider is None:
        return None
    return provider.verdict(delivery, list(secrets.get(provider.name, ())), now, complete=not request.body_truncated)


def expired_signature(request: Request, *, scheme: str, now: float,
                      providers: Sequence[Provider] = BUILTIN) -> tuple[Provider, str] | None:
    """The provider of a captured delivery and why its library refuses the captured signature at
    ``now`` for its timestamp's age alone (``Provider.expired``); None when nothing about time
    stands in the way (no delivery, a scheme without a timestamp, one still within the tolerance).

    An export that sends the captured signature again (curl, httpie, HAR, raw) says so: the
    receiver will refuse it whatever the secret, where a replay signs afresh.
    """
    delivery = delivery_of(request, scheme)
    provider = detect(delivery, providers)
    if provider is None or not provider.signed(delivery):
        return None
    reason = provider.expired(delivery, now)
    return None if reason is None else (provider, reason)
