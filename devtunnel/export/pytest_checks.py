"""What a test of ``export --format pytest`` expects of the service's answer, and why.

A capture records what the service answered, which may be the very bug the developer is chasing:
a receiver that answered 500, or 400 to a genuine delivery because its verification was wrong. A
test asserting that status would pass while the bug is there and fail once it is fixed. So a test
asserts what the other side of the exchange counts as right (:func:`expectation`), and a Slack
``url_verification`` handshake checks its echoed challenge too (:func:`slack_challenge`).
``asserts="captured"`` asserts the captured status instead, as a snapshot of today's behaviour.

Pure: an exchange in, an :class:`Expectation` out. Nothing here is captured text put into code:
the module writes these values as ASCII literals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from devtunnel.capture.model import Exchange
from devtunnel.capture.verdict import Signature
from devtunnel.errors import ExportError
from devtunnel.values.terminal import quoted
from devtunnel.webhooks import Provider, delivery_of

__all__ = ["ASSERTS", "Asserts", "Expectation", "check_asserts", "expectation", "slack_challenge"]

Asserts = Literal["expected", "captured"]
ASSERTS: tuple[Asserts, ...] = ("expected", "captured")
"""The values of the exporter's ``asserts`` option: what a webhook sender or client expects of
the answer (the default), or the status captured."""

_UNDELIVERED = {
    "stripe": "Stripe retries a delivery not answered 2xx",
    "github": "GitHub records a delivery not answered 2xx as failed",
    "slack": "Slack retries an event not answered 2xx",
    "shopify": "Shopify retries a delivery not answered 2xx",
    "standard": "a Standard Webhooks sender retries a delivery not answered 2xx",
    "twilio": "Twilio reports a webhook not answered 2xx as failed (error 11200)",
}
"""Why a delivery of each built-in provider must be answered 2xx, as its failed test says it."""

_ALWAYS_SIGNED = {
    "stripe": "Stripe signs every delivery (Stripe-Signature)",
    "slack": "Slack signs every request (X-Slack-Signature)",
    "shopify": "Shopify signs every delivery (X-Shopify-Hmac-Sha256)",
    "standard": "a Standard Webhooks sender signs every delivery (webhook-signature)",
    "twilio": "Twilio signs every request (X-Twilio-Signature)",
}
"""Built-in providers whose every genuine delivery is signed, and how a failed test says so: one
of theirs that came unsigned is not theirs, and a receiver refuses it. (GitHub signs only when the
hook has a secret: an unsigned delivery of GitHub's may be genuine.)"""

_MAX_REASON = 120
"""Characters of a verdict's reason a failed test repeats (it is one line of its message)."""


@dataclass(frozen=True, slots=True)
class Expectation:
    """The statuses a generated test accepts, from ``lowest`` to ``highest``, and why.

    Attributes:
        lowest: the lowest status accepted.
        highest: the highest status accepted.
        said: how the failed test names what it expected: ``2xx``, ``4xx``, ``any status but 5xx``, ``404``.
        why: the reason, said by the failed test after ``expected SAID``.
        comment: a line the test carries above its assertion, without any captured value (it is
            a comment: a newline in it would end it), or ``""`` where the captured status is
            asserted as it is.
        refusal: the test checks that the receiver refuses a delivery it cannot verify: the
            delivery is sent with its captured signature, never signed afresh (it would pass).
    """

    lowest: int
    highest: int
    said: str
    why: str
    comment: str = ""
    refusal: bool = False

    def condition(self, status: str = "response.status_code") -> str:
        """The Python expression over ``status`` the test asserts."""
        if self.lowest == self.highest:
            return f"{status} == {self.lowest}"
        if self.lowest <= 100:
            return f"{status} < {self.highest + 1}"
        return f"{self.lowest} <= {status} < {self.highest + 1}"

    @property
    def message(self) -> str:
        """What the failed test says first: what it expected, and why."""
        return f"expected {self.said}: {self.why}"


def check_asserts(asserts: str) -> Asserts:
    """``asserts`` as one of ``ASSERTS``.

    Raises:
        ExportError: another value.
    """
    for known in ASSERTS:
        if asserts == known:
            return known
    raise ExportError(f"the pytest format's asserts= is expected or captured, not {quoted(asserts)}")


def expectation(exchange: Exchange, provider: Provider | None, *, asserts: Asserts = "expected") -> Expectation:
    """What the test of ``exchange`` (answered: its response is recorded) asserts of the status.

    The captured status says what the service did, not what it should do. The rule:

    - A webhook delivery (``provider`` recognised it, or devtunnel judged it when it came) whose
      signature was judged invalid when it came (its ``webhook`` verdict: another secret, a
      stale timestamp, a forged body) must be refused: 4xx, whatever was captured. A receiver
      that answered it 2xx accepted what it could not verify.
    - A delivery that came unsigned from a provider that signs every one (``_ALWAYS_SIGNED``: all
      built-in ones but GitHub, whose hooks may have no secret) is not that provider's: 4xx.
    - Any other delivery must be answered 2xx, whatever was captured: Stripe, Shopify, Slack and
      Standard Webhooks senders retry one that is not, GitHub and Twilio record it as failed.
    - A request of no webhook that was answered with a server error (5xx) must be answered
      with anything but one: what it should have been is not known, but not that.
    - Any other request: the status captured, as it was.

    ``asserts="captured"`` asserts the captured status, whatever it was (a snapshot of today's
    behaviour: a capture of a fault passes only while the fault is there); a delivery judged
    invalid that was refused (4xx) is still sent with its captured signature.
    """
    assert exchange.response is not None
    status = exchange.response.status
    verdict = exchange.webhook
    invalid = verdict is not None and verdict.signature is Signature.INVALID
    if asserts == "captured":
        refused = invalid and 400 <= status < 500
        return Expectation(status, status, str(status), "the status captured (asserts='captured')", refusal=refused)
    if invalid:
        assert verdict is not None
        reason = verdict.reason[:_MAX_REASON] + ("..." if len(verdict.reason) > _MAX_REASON else "")
        judged = f"its signature was judged invalid when it came ({reason})" if reason else \
            "its signature was judged invalid when it came"
        return Expectation(
            400, 499, "4xx", f"{judged}: a receiver refuses a delivery it cannot verify; captured {status}",
            f"# expected a refusal (4xx), what a receiver answers a delivery it cannot verify (captured {status})",
            refusal=True)
    name = provider.name if provider is not None else verdict.provider if verdict is not None else None
    if verdict is not None and verdict.signature is Signature.UNSIGNED and name in _ALWAYS_SIGNED:
        assert name is not None
        return Expectation(
            400, 499, "4xx", f"it came unsigned, and {_ALWAYS_SIGNED[name]}: a receiver refuses it; captured {status}",
            f"# expected a refusal (4xx): it came unsigned, and its sender signs every delivery (captured {status})",
            refusal=True)
    if name is not None:
        why = _UNDELIVERED.get(name, "a webhook sender counts only a 2xx as delivered")
        return Expectation(200, 299, "2xx", f"{why}; captured {status}",
                           f"# a webhook delivery: expected 2xx, what its sender counts as delivered (captured {status})")
    if status >= 500:
        return Expectation(100, 499, "any status but 5xx", f"captured {status}, a server error",
                           f"# the capture was a server error ({status}): expected any status but 5xx")
    return Expectation(status, status, str(status), "the status captured")


def slack_challenge(exchange: Exchange, provider: Provider | None) -> str | None:
    """The ``challenge`` of a Slack ``url_verification`` delivery (the handshake Slack sends when
    an Events API URL is set), which the answer must echo; None for any other exchange."""
    if provider is None or provider.name != "slack":
        return None
    data = delivery_of(exchange.request, exchange.scheme).json()
    if not isinstance(data, dict) or data.get("type") != "url_verification":
        return None
    challenge = data.get("challenge")
    return challenge if isinstance(challenge, str) else None
