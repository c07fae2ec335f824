"""Where a provider's secrets come from: config first, then the provider's conventional variable.

A variable may hold several secrets separated by commas or white space, as during a rotation
(``STRIPE_WEBHOOK_SECRET="whsec_new,whsec_old"``); any one of them may verify a delivery. A replay
is signed with the one that verified the captured delivery; anything else carries a signature made
with each where the scheme holds several (``Provider.sign_with_each``), else with the first. Secrets
never leave this process: they are not stored, exported, logged or served by the agent API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from devtunnel.webhooks.base import Provider

__all__ = ["secrets_for", "known_secrets", "split_secrets"]


def split_secrets(text: str) -> list[str]:
    """The secrets in one variable's value (comma or white space between them)."""
    return [part for part in re.split(r"[\s,]+", text) if part]


def secrets_for(provider: Provider, environ: Mapping[str, str], configured: Sequence[str] = (),
                env_name: str | None = None) -> list[str]:
    """The secrets known for ``provider``: ``configured`` ones, then those in its variable.

    Args:
        provider: the provider.
        environ: the environment to read (``os.environ`` in the agent).
        configured: secrets from config, in order.
        env_name: another variable to read instead of the provider's conventional one.
    """
    out = list(configured)
    for secret in split_secrets(environ.get(env_name or provider.secret_env, "")):
        if secret not in out:
            out.append(secret)
    return out


def known_secrets(providers: Iterable[Provider], environ: Mapping[str, str],
                  configured: Mapping[str, Sequence[str]] | None = None,
                  env_names: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """Every provider's secrets, by provider name (providers without one are left out)."""
    out: dict[str, list[str]] = {}
    for provider in providers:
        found = secrets_for(provider, environ, (configured or {}).get(provider.name, ()),
                            (env_names or {}).get(provider.name))
        if found:
            out[provider.name] = found
    return out
