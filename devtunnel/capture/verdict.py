"""What devtunnel concluded about a captured webhook delivery: a value stored with its exchange.

It lives with the capture model (an ``Exchange`` carries one, the store keeps its columns) rather
than with the providers in ``webhooks/``, which judge deliveries and import it from here: so the
model never needs the providers, and imports point one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["DUPLICATE_MARK", "SIGNATURE_MARKS", "Signature", "Verdict"]


class Signature(StrEnum):
    """How a delivery's signature fared."""

    VALID = "valid"
    INVALID = "invalid"
    UNSIGNED = "unsigned"
    """The provider's signature header is absent."""
    UNVERIFIED = "unverified"
    """No secret is known for the provider, or the body was recorded only in part."""


SIGNATURE_MARKS: dict[Signature, tuple[str, str]] = {
    Signature.VALID: ("✓", "signature valid (matches a known secret)"),
    Signature.INVALID: ("✗", "signature invalid (the detail says why)"),
    Signature.UNSIGNED: ("–", "unsigned: the provider's signature header is absent"),
    Signature.UNVERIFIED: ("?", "not verified: no secret known (or the body was recorded only in part)"),
}
"""Per signature state: its one-cell mark (the inspector's table, ``devtunnel requests``) and what it means."""

NO_SECRET = "no secret: set "
"""How the reason of a verdict left unverified for want of a secret starts (``no_secret``)."""


def no_secret(variable: str) -> str:
    """The reason of a verdict left unverified because no secret was known: which variable to set."""
    return NO_SECRET + variable


DUPLICATE_MARK = "≡"
"""Marks a delivery whose id was captured before (a provider's retry, or a resend)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What devtunnel concluded about one captured request from a webhook provider.

    ``duplicate_of`` is the id of the first captured exchange with the same provider and delivery
    id (set by the store, which alone knows the earlier ones).
    """

    provider: str
    event_type: str | None
    delivery_id: str | None
    signature: Signature
    reason: str = ""
    duplicate_of: str | None = None

    @property
    def mark(self) -> str:
        """The signature's one-cell mark (``SIGNATURE_MARKS``)."""
        return SIGNATURE_MARKS.get(self.signature, SIGNATURE_MARKS[Signature.UNVERIFIED])[0]

    @property
    def missing_secret(self) -> str:
        """The variable to set (``STRIPE_WEBHOOK_SECRET``) when it was not verified for want of a secret, else ``""``."""
        if self.signature is Signature.UNVERIFIED and self.reason.startswith(NO_SECRET):
            return self.reason[len(NO_SECRET):].strip()
        return ""

    def to_json(self) -> dict[str, Any]:
        """The ``webhook`` object of ``requests --json``, ``show --json`` and the agent API."""
        return {
            "provider": self.provider,
            "event_type": self.event_type,
            "delivery_id": self.delivery_id,
            "signature": self.signature.value,
            "reason": self.reason or None,
            "duplicate_of": self.duplicate_of,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        """The inverse of :meth:`to_json`."""
        return cls(
            provider=str(data["provider"]),
            event_type=data.get("event_type"),
            delivery_id=data.get("delivery_id"),
            signature=Signature(data["signature"]),
            reason=data.get("reason") or "",
            duplicate_of=data.get("duplicate_of"),
        )
