"""Tunnel names: random readable ones (``brave-otter-4821``) and the DNS-label rule; the relay's domain."""

from __future__ import annotations

import random
import re

from devtunnel.errors import ConfigError
from devtunnel.values.terminal import quoted

ADJECTIVES = (
    "amber", "bold", "brave", "bright", "calm", "clever", "cosmic", "crisp", "daring", "eager",
    "fancy", "fierce", "gentle", "glad", "golden", "happy", "humble", "jolly", "keen", "kind",
    "lively", "lucky", "mellow", "merry", "mighty", "nimble", "noble", "plucky", "polite", "proud",
    "quick", "quiet", "rapid", "rosy", "shiny", "silent", "snug", "solar", "spry", "steady",
    "sunny", "swift", "tidy", "vivid", "warm", "wild", "wise", "witty", "zany", "zesty",
)
ANIMALS = (
    "badger", "beaver", "bison", "crane", "dingo", "dolphin", "eagle", "falcon", "ferret", "finch",
    "fox", "gecko", "heron", "hippo", "ibis", "jackal", "koala", "lemur", "lion", "llama",
    "lynx", "marten", "mink", "moose", "newt", "ocelot", "orca", "otter", "owl", "panda",
    "parrot", "puffin", "quail", "raven", "robin", "salmon", "seal", "shrew", "sloth", "stoat",
    "swan", "tapir", "tiger", "toucan", "trout", "turtle", "walrus", "wombat", "yak", "zebra",
)

_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def random_name(rng: random.Random | None = None) -> str:
    """A readable name such as ``brave-otter-4821`` (2.5 million combinations)."""
    rng = rng or random.SystemRandom()
    return f"{rng.choice(ADJECTIVES)}-{rng.choice(ANIMALS)}-{rng.randrange(1000, 10000)}"


def validate_name(name: str) -> str:
    """Return ``name`` lowercased if it is a valid DNS label, as tunnel names must be, and not a
    reserved one: ``--`` as its 3rd and 4th characters (RFC 5891 4.2.3.1) marks a label of
    another kind, ``xn--`` an internationalised name's punycode, which a browser's address bar
    may show as other letters (``xn--pple-43d`` as ``аpple``, a Cyrillic ``а``). On a relay
    shared by a team, one agent could otherwise take a name shown as another's, for webhooks or
    a login page meant for it.

    Raises:
        ConfigError: the name cannot be a host name label, or is reserved; the message says why.
    """
    label = name.lower()
    if _LABEL_RE.fullmatch(label):
        if label[2:4] != "--":
            return label
        raise ConfigError(f"tunnel name {quoted(name)} is reserved: '--' as its 3rd and 4th characters marks an "
                          "internationalised (punycode, xn--) name, which a browser may show as other letters")
    if not label:
        why = "it is empty"
    elif len(label) > 63:
        why = f"it is {len(label)} characters long (at most 63)"
    elif label.startswith("-") or label.endswith("-"):
        why = "it starts or ends with '-'"
    else:
        why = "only letters a-z, digits and '-' are allowed"
    raise ConfigError(f"tunnel name {quoted(name)} is not a valid DNS label: {why}")


def validate_domain(text: str) -> str:
    """``text`` as the relay's domain (``NAME.DOMAIN`` goes to tunnel NAME): lowercased, without
    the dots at its ends, every label a DNS label (letters a-z, digits and ``-``, not at a label's
    ends, 1 to 63 characters), 253 characters at most. ``--domain`` and ``[relay_server] domain``
    are both checked here.

    Raises:
        ConfigError: not such a host name; the message says why (the caller adds the flag or key).
    """
    domain = text.strip().strip(".").lower()
    if not domain:
        raise ConfigError("the domain is empty; give a host name such as tunnel.example.com")
    if len(domain) > 253:
        raise ConfigError(f"the domain is {len(domain)} characters long (at most 253)")
    for label in domain.split("."):
        if not _LABEL_RE.fullmatch(label):
            why = ("it has an empty label (two dots in a row)" if not label else
                   f"its label {quoted(label)} starts or ends with '-'" if label.startswith("-") or label.endswith("-") else
                   f"its label {quoted(label)} is {len(label)} characters long (at most 63)" if len(label) > 63 else
                   "only letters a-z, digits, '-' and '.' are allowed")
            raise ConfigError(f"'{text}' is not a host name: {why}")  # not repr: the terminal rule escapes once
    return domain


def label_from(text: str) -> str | None:
    """The closest valid tunnel name to ``text`` (``"http-8080/x"`` -> ``"http-8080-x"``), or None.

    Used where a name comes from a tool with looser rules (ngrok names any string): letters are
    lowercased, every run of other characters becomes one ``-``, and the result is cut to 63.
    """
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].rstrip("-")
    return label or None


def no_tunnel_named(name: str, running: list[str], what: str = "tunnel") -> str:
    """``no tunnel named 'nope' (running: api, web)``: the message for a name no running tunnel
    has, with the names a caller may have meant (the first ten, sorted)."""
    names = sorted(running)
    shown = ", ".join(quoted(n) if _LABEL_RE.fullmatch(n) is None else n for n in names[:10])
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return f"no {what} named {quoted(name)} " + (f"(running: {shown}{more})" if names else "(none is running)")
