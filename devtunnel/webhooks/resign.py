"""Sign a replayed webhook delivery again, so the receiver's own verification accepts it.

A replay an hour after the delivery carries a timestamp its receiver refuses; an edited body no
longer matches its signature. :func:`resign` takes the request about to be sent (the edit
applied) and the URL it is sent as, finds its provider by the request itself, and gives back
the request with fresh signature headers made with the known secret that verified the captured delivery (during a rotation, the
old one the receiver still holds), else with each secret where the scheme holds several
signatures (``Provider.sign_with_each``): a fresh timestamp
where the scheme has one, the same delivery id. When it cannot, the request goes as it is and
the result says why, once::

    result = resign(request, url, keys=Keys.from_environment(os.environ), now=time.time())
    result.request     # what to send
    result.provider    # "stripe" when re-signed, else None
    result.notice      # "signature not refreshed: set STRIPE_WEBHOOK_SECRET", or ""

Pure: the clock and the secrets are passed in.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from devtunnel.capture.model import Request
from devtunnel.webhooks import (
    BUILTIN,
    Delivery,
    Provider,
    Signature,
    SignatureError,
    Verdict,
    by_name,
    detect,
)
from devtunnel.webhooks.secrets import known_secrets

__all__ = ["Keys", "Resigned", "resign", "signs_unverified", "unknown_provider", "SIGN_ANYWAY", "notice_for"]


@dataclass(frozen=True)
class Keys:
    """The providers to recognise and the secrets to sign with.

    Any object with ``providers`` and ``secrets`` (and optionally ``secret_envs`` and
    ``for_tunnel(name)``) serves as well, such as the agent's webhook context.

    Attributes:
        providers: the providers to try, in order (custom ones first).
        secrets: known secrets by provider name; the one that verified the
            captured delivery signs, else each (or the first).
        secret_envs: the variable a provider's secret is read from where it is not the
            conventional one (for the "set ..." notice).
    """

    providers: tuple[Provider, ...] = BUILTIN
    secrets: Mapping[str, Sequence[str]] = field(default_factory=dict, repr=False)
    secret_envs: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], providers: tuple[Provider, ...] = BUILTIN) -> Keys:
        """The built-in providers with the secrets in their conventional variables."""
        return cls(providers, known_secrets(providers, environ))


@dataclass(frozen=True)
class Resigned:
    """What re-signing came to.

    Attributes:
        request: the request to send (with fresh signature headers when ``provider`` is set).
        provider: the name of the provider whose signature was made afresh, or None.
        notice: one line for the user when something is worth saying (no secret, a scheme that
            cannot be re-signed, a secret that did not verify the delivery as captured), or "";
            it starts with ``signature``.
    """

    request: Request
    provider: str | None = None
    notice: str = ""


def _ageless(provider: Provider) -> Provider:
    """``provider`` judging signatures whatever their timestamp's age: does the secret fit?"""
    if provider.tolerance is None:
        return provider
    lenient = copy.copy(provider)
    lenient.tolerance = math.inf
    return lenient


def _variable(provider: Provider, keys: Any) -> str:
    return (getattr(keys, "secret_envs", None) or {}).get(provider.name) or provider.secret_env


def resign(request: Request, url: str, *, keys: Any, now: float,
           captured: Request | None = None, captured_url: str = "", judged: Verdict | None = None,
           unverified: bool = False) -> Resigned:
    """``request`` with fresh signature headers, or as it is with the reason why not.

    Args:
        request: the request about to be sent (edit applied, framing computed).
        url: the URL the receiver will see it called at (``scheme://Host/target``): Twilio signs it.
        keys: providers and secrets (a :class:`Keys` or the agent's webhook context).
        now: seconds since the epoch: the fresh timestamp.
        captured: the request as captured, to tell when the known secret did not verify it
            (then the receiver will likely refuse the re-signed one too: a wrong secret) and
            when the edit changed the signature headers itself.
        captured_url: the URL the captured request was called at.
        judged: the captured delivery's verdict: a signed delivery of a provider ``keys`` does
            not know (a custom one described in another folder's devtunnel.toml) is sent as
            captured, and the notice says so.
        unverified: sign afresh even a delivery that no known secret verifies as captured.

    A request its provider did not sign (no signature header) is sent unsigned, as captured; one
    whose signature headers differ from ``captured``'s (typed by hand) is sent as it is. A
    delivery the known secrets do not verify as captured (whatever its timestamp's age), and
    that was not judged valid when it came, is sent with its captured signature unless
    ``unverified``: anyone can post a delivery to a public URL, and signing it afresh would make
    a forged one pass the receiver's check.
    """
    delivery = Delivery(request.method, url, request.headers, request.body)
    providers = getattr(keys, "providers", BUILTIN)
    provider = detect(delivery, providers)
    if provider is None and (unknown := unknown_provider(judged, providers)):
        return Resigned(request, notice=f"signature not refreshed: {unknown}")
    if provider is None or not provider.signed(delivery):
        return Resigned(request)
    if captured is not None:
        changed = [name for name in provider.signature_headers
                   if request.headers.get_all(name) != captured.headers.get_all(name)]
        if changed:  # a signature typed by hand is what the user means to send
            return Resigned(request, notice=f"signature sent as edited ({', '.join(changed)} changed by hand)")
    secrets = list(getattr(keys, "secrets", {}).get(provider.name, ()))
    if not secrets:
        return Resigned(request, notice=f"signature not refreshed: set {_variable(provider, keys)}")
    fitting, notice = None, ""
    if captured is not None and not captured.body_truncated:
        original = Delivery(captured.method, captured_url or url, captured.headers, captured.body)
        fitting = _fitting(provider, original, secrets, now)  # during a rotation, the one the receiver accepted
        if fitting is None:
            check = _ageless(provider).verify(original, secrets, now)
            if not signs_unverified(judged, unverified=unverified) and check.signature is Signature.INVALID:
                return Resigned(request, notice=(
                    f"signature not refreshed: {_variable(provider, keys)} does not verify the delivery as captured"
                    f" ({check.reason}): it may not come from {provider.name}; sent with its captured signature"
                    f" ({SIGN_ANYWAY['cli']} signs it anyway)"))
            if check.signature is Signature.INVALID and "does not match" in check.reason:
                notice = (f"signature made with {_variable(provider, keys)}, which did not verify the captured "
                          "delivery: the receiver may hold another secret")
    problem = provider.secret_problem(fitting or secrets[0])
    if problem:
        return Resigned(request, notice=f"signature not refreshed: {problem}")
    try:  # else with each secret where the scheme can carry several, as the provider does in a rotation
        headers = (provider.sign(delivery, fitting, now) if fitting is not None
                   else provider.sign_with_each(delivery, secrets, now))
    except SignatureError as exc:
        return Resigned(request, notice=f"signature not refreshed: {exc}")
    collapsed = [f"{name} ({len(request.headers.get_all(name))} in the capture)" for name in provider.signature_headers
                 if len(request.headers.get_all(name)) > 1 and len(headers.get_all(name)) == 1]
    if collapsed and not notice:  # a stale second signature would be read by a receiver reading the other
        notice = f"signature made afresh in one {', one '.join(collapsed)}"
    return Resigned(replace(request, headers=headers), provider.name, notice)


SIGN_ANYWAY = {
    "cli": "--sign-unverified",
    "api": '"sign_unverified": true',
    "inspector": "the editor's sign though unverified, ctrl+o,",
}
"""How each surface's user asks to sign afresh a delivery the secret does not verify, as the
notice that it was not (``resign``) names it: the command line's flag, the agent API's field,
the inspector's box."""


def notice_for(notice: str, surface: str) -> str:
    """``notice`` (of ``resign``, or as another surface said it) naming ``surface``'s way to
    sign it anyway (``SIGN_ANYWAY``)."""
    for spelling in SIGN_ANYWAY.values():
        said = f"({spelling} signs it anyway)"
        if notice.endswith(said):
            return notice.removesuffix(said) + f"({SIGN_ANYWAY[surface]} signs it anyway)"
    return notice


def signs_unverified(judged: Verdict | None, *, unverified: bool = False) -> bool:
    """Whether a delivery that no known secret verifies as captured is signed afresh all the same:
    when it was judged valid when it came (its secret was rotated since), or on request
    (``unverified``: ``--sign-unverified``). Else it goes with its captured signature: anyone can
    post a delivery to a public URL, and signing it afresh would make a forged one pass the
    receiver's check. The rule of a replay and of a pytest export's module (which applies it when
    it runs, where the secret is known)."""
    return unverified or (judged is not None and judged.signature is Signature.VALID)


def unknown_provider(judged: Verdict | None, providers: Sequence[Provider]) -> str:
    """Why a delivery judged signed by a provider that ``providers`` lacks cannot be signed afresh
    (a custom one described in the devtunnel.toml of another folder), or "" (none such): what a
    replay and a pytest export of it say."""
    if judged is None or judged.signature is Signature.UNSIGNED or by_name(judged.provider, providers) is not None:
        return ""
    return f"no provider {judged.provider} is described here (add [webhooks.{judged.provider}] to devtunnel.toml)"


def _fitting(provider: Provider, original: Delivery, secrets: Sequence[str], now: float) -> str | None:
    """The first of ``secrets`` that verifies the captured delivery whatever its timestamp's age, or None.

    During a rotation (``STRIPE_WEBHOOK_SECRET="whsec_new,whsec_old"``) a delivery signed with the
    old secret was accepted by a receiver that holds only the old one: the first secret would
    make a signature it refuses.
    """
    lenient = _ageless(provider)
    for secret in secrets:
        if provider.secret_problem(secret) is None and lenient.check(original, secret, now).signature is Signature.VALID:
            return secret
    return None
