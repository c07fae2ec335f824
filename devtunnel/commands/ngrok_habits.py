"""What ngrok's command-line habits are called in devtunnel: one hint to add to a refusal.

An ngrok user types ``ngrok config add-authtoken``'s older spelling ``devtunnel authtoken TOKEN``,
or ``devtunnel http 8080 --url https://foo.ngrok.app``; argparse refuses both, rightly, and the
hint below says what to type instead rather than leaving them to read ``--help``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from devtunnel.values.names import label_from

__all__ = ["command_hint", "flag_hint", "single_dash_hint"]

_COMMANDS = {
    "authtoken": "devtunnel config add-authtoken TOKEN (a relay's token)",
    "add-authtoken": "devtunnel config add-authtoken TOKEN (a relay's token)",
    "start": "devtunnel up NAME ... (every tunnel of devtunnel.toml without a NAME)",
    "tcp": "only http tunnels exist here, no tcp or tls yet",
    "tls": "only http tunnels exist here, no tcp or tls yet",
    "version": "devtunnel --version",
    "config check": "devtunnel config show (and config path)",
    "config upgrade": "devtunnel config import-ngrok (it reads ngrok.yml v2 and v3)",
    "config add-api-key": "there is no account API here",
}

_PUBLIC_NAME = "the relay names a tunnel NAME.DOMAIN: use --name NAME"

_HTTP_FLAGS = {
    "--url": _PUBLIC_NAME,
    "--domain": _PUBLIC_NAME,
    "--subdomain": _PUBLIC_NAME,
    "--hostname": _PUBLIC_NAME,
    "--region": "the relay you run decides where traffic enters: --relay URL",
    "--scheme": "the relay decides the scheme",
    "--schemes": "the relay decides the scheme",
    "--bind-tls": "the relay decides the scheme",
    "--cidr-allow": "use --allow-ip CIDR",
    "--cidr-deny": "use a deny rule (--rules FILE, docs/policy.md)",
    "--traffic-policy-file": "use --rules FILE (docs/policy.md)",
    "--policy-file": "use --rules FILE (docs/policy.md)",
    "--auth": "use --basic-auth USER:PASS",
    "--pooling-enabled": "use --pool",
    "--web-addr": "use --api-port PORT",
    "--config": "devtunnel reads devtunnel.toml (DEVTUNNEL_CONFIG=FILE); devtunnel config import-ngrok FILE "
                "turns an ngrok.yml into it",
    "--log": "devtunnel http --no-tui logs to stdout and stderr",
    "--inspect": "devtunnel records every exchange; --no-record turns that off",
}


def command_hint(argv: Sequence[str]) -> str | None:
    """What to type for ngrok's command ``argv[0]`` when devtunnel spells it otherwise, or None."""
    for command in (" ".join(argv[:2]), argv[0] if argv else ""):
        spelled = _COMMANDS.get(command)
        if spelled is not None:
            return f"{command} is ngrok's: " + (f"here it is {spelled}" if spelled.startswith("devtunnel ") else spelled)
    return None


def single_dash_hint(argv: Sequence[str]) -> str | None:
    """For ``devtunnel http`` typed with ngrok 2's one-dash flags (``-host-header=rewrite``, which
    argparse reads as ``-h``), the flag with two dashes and what it is here, or None."""
    if not argv or argv[0] != "http":
        return None
    for word in argv[1:]:
        flag = word.split("=", 1)[0]
        if re.fullmatch(r"-[a-z][a-z-]+", flag):
            hint = flag_hint("http", ["-" + word])
            said = hint.split(": ", 1)[1] if hint else f"flags take two dashes here (-{flag})"
            return f"{flag} is ngrok 2's spelling: {said}"
    return None


def flag_hint(command: str | None, unknown: Sequence[str]) -> str | None:
    """A hint for the first of ``unknown`` arguments of ``devtunnel http`` that is an ngrok flag, or None."""
    if command != "http":
        return None
    for i, word in enumerate(unknown):
        flag, _, value = word.partition("=")
        if flag not in _HTTP_FLAGS:
            continue
        hint = _HTTP_FLAGS[flag]
        if hint is _PUBLIC_NAME:
            value = value or (unknown[i + 1] if i + 1 < len(unknown) else "")
            host = value.split("://", 1)[-1].split("/", 1)[0]
            name = label_from(host.split(".", 1)[0]) if host else None
            hint = f"{hint.removesuffix('NAME')}{name}" if name else hint
        return f"{flag} is ngrok's: {hint}"
    return None
