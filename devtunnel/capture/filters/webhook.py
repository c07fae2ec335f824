"""The webhook filters: ``sig:``, ``provider:``, ``event:``, ``delivery:`` and ``dup``.

They read the verdict recorded with each exchange (``Exchange.webhook``; the ``wh_*`` columns
of the store). An exchange that no provider recognised matches none of them, and ``not`` of each.
"""

from __future__ import annotations

import re

from devtunnel.capture.filters.base import Filter, Leaf, SqlParams, fold, regexp
from devtunnel.capture.model import Exchange
from devtunnel.errors import FilterSyntaxError
from devtunnel.capture.verdict import Signature

__all__ = ["SignatureState", "WebhookProvider", "EventType", "DeliveryId", "Duplicate", "WEBHOOK_FIELDS"]

_STATES = [s.value for s in Signature]


class SignatureState(Leaf):
    code = "sig"
    syntax = "sig:valid  sig:invalid  sig:unsigned  sig:unverified"
    help = "webhook signature: verified, did not verify (the verdict says why), absent, or not checked (no secret)"

    def __init__(self, state: str) -> None:
        self.state = state

    def __call__(self, ex: Exchange) -> bool:
        return ex.webhook is not None and ex.webhook.signature.value == self.state

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.wh_signature IS NOT NULL AND e.wh_signature = ?)", [self.state]


class WebhookProvider(Leaf):
    code = "provider"
    syntax = "provider:stripe"
    help = "webhook from this provider: stripe, github, slack, shopify, standard, twilio or one from config"

    def __init__(self, name: str) -> None:
        self.name = fold(name)

    def __call__(self, ex: Exchange) -> bool:
        return ex.webhook is not None and ex.webhook.provider == self.name

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.wh_provider IS NOT NULL AND e.wh_provider = ?)", [self.name]


def _glob_pattern(glob: str) -> str:
    """A regex for a glob where ``*`` is any text and ``?`` one character; ASCII case ignored."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return rf"(?ais)\A{body}\Z"


class EventType(Leaf):
    code = "event"
    syntax = "event:invoice.paid  event:invoice.*"
    help = "webhook event type (case-insensitive; * matches any text, ? one character)"

    def __init__(self, glob: str) -> None:
        self.glob = glob
        self.pattern = _glob_pattern(glob) if any(c in glob for c in "*?") else None
        self.cost = 2 if self.pattern else 1

    def __call__(self, ex: Exchange) -> bool:
        event = ex.webhook.event_type if ex.webhook is not None else None
        if event is None:
            return False
        if self.pattern is not None:
            return bool(regexp(self.pattern, event))
        return fold(event) == fold(self.glob)

    def sql(self) -> tuple[str, SqlParams]:
        if self.pattern is not None:
            return "(e.wh_event REGEXP ?)", [self.pattern]  # REGEXP of NULL is 0, never NULL
        return "(e.wh_event IS NOT NULL AND e.wh_event = ? COLLATE NOCASE)", [self.glob]


class DeliveryId(Leaf):
    code = "delivery"
    syntax = "delivery:ID"
    help = "webhook delivery id, exactly (a provider's retries and devtunnel's replays keep it)"

    def __init__(self, delivery_id: str) -> None:
        self.delivery_id = delivery_id

    def __call__(self, ex: Exchange) -> bool:
        return ex.webhook is not None and ex.webhook.delivery_id == self.delivery_id

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.wh_delivery IS NOT NULL AND e.wh_delivery = ?)", [self.delivery_id]


class Duplicate(Leaf):
    code = "dup"
    syntax = "dup"
    help = "a webhook delivery whose delivery id was recorded before (a provider's retry; replays are not)"

    def __call__(self, ex: Exchange) -> bool:
        return ex.webhook is not None and ex.webhook.duplicate_of is not None

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.wh_duplicate_of IS NOT NULL)", []


def _needs(name: str, value: str, pos: int) -> str:
    if value == "":
        raise FilterSyntaxError(f"{name} expects a value after '{name}:'", pos)
    return value


def _state(value: str, pos: int) -> Filter:
    state = value.lower()
    if state not in _STATES:
        raise FilterSyntaxError(f"sig expects {', '.join(_STATES)}", pos)
    return SignatureState(state)


WEBHOOK_FIELDS = {
    "sig": (SignatureState, _state),
    "provider": (WebhookProvider, lambda v, p: WebhookProvider(_needs("provider", v, p))),
    "event": (EventType, lambda v, p: EventType(_needs("event", v, p))),
    "delivery": (DeliveryId, lambda v, p: DeliveryId(_needs("delivery", v, p))),
}
"""``field:value`` names of the webhook filters -> (class, builder), as in ``fields.FIELDS``."""
