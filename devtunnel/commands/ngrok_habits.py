"""What ngrok's command-line habits are called in devtunnel: one hint to add to a refusal.

An ngrok user types ``ngrok config add-authtoken``'s older spelling ``devtunnel authtoken TOKEN``,
or ``devtunnel http 8080 --url https://foo.ngrok.app``; argparse refuses both, rightly, and the
hint below says what to type instead rather than leaving them to read ``--help``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from devtunnel.values.names import label_from
from devtunnel.values.terminal import quoted

__all__ = ["command_hint", "file_target_hint", "ngrok_flag_hint", "pyngrok_agent_argv", "secret_flag",
           "shown_arguments", "single_dash_hint"]

_COMMANDS = {
    "authtoken": "devtunnel config add-authtoken TOKEN (a relay's token)",
    "add-authtoken": "devtunnel config add-authtoken TOKEN (a relay's token)",
    "tcp": "only http tunnels exist here, no tcp or tls yet",
    "tls": "only http tunnels exist here, no tcp or tls yet",
    "version": "devtunnel --version",
    "config upgrade": "devtunnel config import-ngrok (it reads ngrok.yml v2 and v3)",
    "config add-api-key": "there is no account API here",
    "update": "updates come from the package manager that installed devtunnel",
    "service": "no service of its own: run devtunnel up (or devtunnel agent) under your system's service manager",
    "tunnel": "labeled tunnels (ngrok edges) have no equivalent: devtunnel http PORT --name NAME",
    "completion": "no shell completion yet: devtunnel help COMMAND lists a command's flags",
    "credits": "devtunnel --version",
    "api": "there is no account API here: the agent's own API is on 127.0.0.1:4040 (docs/api.md)",
    "diagnose": "devtunnel config show (the relay and token in use); a running agent's /api/tunnels says why a "
                "tunnel is offline",
}

_PUBLIC_NAME = "the relay names a tunnel NAME.DOMAIN: use --name NAME"
_GUARDS = "--basic-auth USER:PASS and --allow-ip CIDR guard a tunnel at the relay (docs/policy.md)"

_HTTP_FLAGS = {
    "--url": _PUBLIC_NAME,
    "--domain": _PUBLIC_NAME,
    "--subdomain": _PUBLIC_NAME,
    "--hostname": _PUBLIC_NAME,
    "--region": "the relay you run decides where traffic enters: --relay URL",
    "--scheme": "the relay decides the scheme",
    "--schemes": "the relay decides the scheme",
    "--bind-tls": "the relay decides the scheme",
    "--traffic-policy": "use --rules FILE (docs/policy.md)",
    "--traffic-policy-file": "use --rules FILE (docs/policy.md)",
    "--policy-file": "use --rules FILE (docs/policy.md)",
    "--auth": "use --basic-auth USER:PASS",
    "--pooling-enabled": "use --pool",
    "--web-addr": "use --api-port PORT",
    "--config": "devtunnel reads devtunnel.toml (DEVTUNNEL_CONFIG=FILE); devtunnel config import-ngrok FILE "
                "turns an ngrok.yml into it",
    "--inspect": "devtunnel records every exchange; --no-record turns that off",
    "--oauth": f"no OAuth at the relay yet: {_GUARDS}",
    "--oidc": f"no OpenID Connect at the relay yet: {_GUARDS}",
    "--mutual-tls-cas": f"no mutual TLS at the relay yet: {_GUARDS}",
    "--verify-webhook": "devtunnel checks each delivery's signature with the provider's secret (STRIPE_WEBHOOK_SECRET, "
                        "...) and records the verdict, without refusing any at the relay (docs/webhooks.md)",
    "--ua-filter-allow": "use a deny rule matching header:user-agent=TEXT (--rules FILE, docs/policy.md)",
    "--ua-filter-deny": "use a deny rule matching header:user-agent=TEXT (--rules FILE, docs/policy.md)",
    "--circuit-breaker": "no circuit breaker; --rate-limit RATE limits each client",
    "--compression": "the relay forwards responses as the local service sends them",
    "--websocket-tcp-converter": "WebSockets are forwarded as they are",
    "--upstream-protocol": "devtunnel speaks HTTP/1.1 to the local service",
    "--app-protocol": "devtunnel speaks HTTP/1.1 to the local service",
    "--upstream-tls-verify": "devtunnel verifies an https target's certificate (the system's CAs); --insecure "
                             "turns that off",
    "--proxy-proto": "no PROXY protocol to the local service: the client's address is in X-Forwarded-For",
    "--binding": "every devtunnel tunnel is public on its relay",
    "--description": "labels have no equivalent: --name NAME names the tunnel",
    "--metadata": "labels have no equivalent: --name NAME names the tunnel",
    "--api-key": "there is no account API here",
}
"""ngrok's ``http`` flags, each with what devtunnel does instead. A flag that begins with one
of these and a dash is of its family (``--oauth-client-id`` is ``--oauth``'s)."""

_SECRET_WORDS = re.compile(r"secret|token|passw|(?<!o)auth|key|credential|cookie")  # not --oauth PROVIDER
"""Words in a flag's name that say its value may be a secret: ngrok's (``--verify-webhook-secret``,
``--oauth-client-secret``, ``--api-key``, ngrok 2's ``--auth USER:PASS``), devtunnel's own given
to a command that does not take it (``relay --authtoken``, ``inspect --token``) or misspelt
(``--basic_auth``), and what a user guesses (``--password``)."""


def secret_flag(flag: str) -> bool:
    """Whether the value of ``flag`` (``--name``, as typed) may be a secret, to be shown masked
    when the flag is refused: a refusal goes to a terminal, a CI log or a bug report."""
    return _SECRET_WORDS.search(flag.lower()) is not None


def shown_arguments(words: Sequence[str]) -> str:
    """Arguments argparse did not take (``unrecognized arguments: ...``), as typed but for the
    value of a flag ``secret_flag`` names (``--flag=VALUE``, or the word after it that is no
    flag), shown as ``********``."""
    shown: list[str] = []
    masked_next = False
    for word in words:
        flag, equals, value = word.partition("=")
        if masked_next and not word.startswith("-"):
            shown.append("********")
        elif flag.startswith("-") and equals and value and secret_flag(flag):
            shown.append(f"{flag}=********")
        else:
            shown.append(word)
        masked_next = word.startswith("-") and not equals and secret_flag(word)
    return " ".join(shown)

_SWITCHES = frozenset({"--pooling-enabled", "--compression", "--websocket-tcp-converter", "--inspect",
                       "--upstream-tls-verify"})
"""ngrok's flags that take no value unless written ``--flag=VALUE`` (Go's boolean flags)."""


def command_hint(argv: Sequence[str]) -> str | None:
    """What to type for ngrok's command ``argv[0]`` when devtunnel spells it otherwise, or None.

    ``start NAME...`` and ``start --all`` are devtunnel's too (``commands.start``); ``start
    --none``, ngrok's agent with no tunnel, is ``devtunnel agent`` (pyngrok's ``start --none
    --log stdout`` is run as it, ``pyngrok_agent_argv``)."""
    if argv and argv[0] == "start":
        if "--none" in argv:
            return "start --none is ngrok's: here it is devtunnel agent (the agent and its API on 127.0.0.1:4040, no tunnel)"
        return None
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
            _, hint = _hint(["-" + word], 0) or ("", None)
            said = hint.split(": ", 1)[1] if hint else f"flags take two dashes here (-{flag})"
            return f"{flag} is ngrok 2's spelling: {said}"
    return None


def file_target_hint(argv: Sequence[str]) -> str | None:
    """For ``devtunnel http file:///DIR`` (ngrok serves the folder), how to serve it here: a
    static server on a port, and that port's tunnel; else None."""
    if not argv or argv[0] != "http":
        return None
    target = next((word for word in argv[1:] if word.lower().startswith("file://")), None)
    if target is None:
        return None
    folder = target[len("file://"):] or "."
    server = f"python3 -m http.server 8000 --bind 127.0.0.1 --directory {shlex.quote(folder)}"
    return (f"{target}: serving files is ngrok's: devtunnel forwards to an HTTP service; to serve the folder: "
            f"devtunnel http 8000 --run {shlex.quote(server)}")


def ngrok_flag_hint(argv: Sequence[str]) -> str | None:
    """For ``devtunnel http`` typed with one of ngrok's flags that devtunnel has not, or has under
    another name, argparse's refusal with the flag and its value as typed and what to use here
    (``unrecognized arguments: --url https://foo.ngrok.app (--url is ngrok's: ... use --name foo)``);
    else None.

    Read from the whole command line, not from what argparse left over: with the flag before
    the port (``http --url https://foo.ngrok.app 8080``), argparse takes the URL for the target
    and leaves ``--url 8080``.
    """
    if argv[:1] == ["start"]:  # start takes ngrok's --config, --log ... and --authtoken; not --region
        found = next((_hint(argv, i) for i, word in enumerate(argv) if word.split("=", 1)[0] == "--region"), None)
        if found is None:
            return None
        return f"unrecognized arguments: {found[0]} ({found[1].replace('--relay URL', 'relay.url in devtunnel.toml')})"
    if not argv or argv[0] != "http":
        return None
    words = list(argv[1:])
    if "--" in words:
        words = words[: words.index("--")]
    for i in range(len(words)):
        found = _hint(words, i)
        if found is not None:
            shown, hint = found
            return f"unrecognized arguments: {shown} ({hint})"
        host = _host_header_value(words, i)
        if host is not None:
            return (f"argument --host-header: {host} is ngrok's way to send a Host of its own: here --host-header "
                    "takes rewrite (the target's Host) or preserve (the client's, the default); another Host is not "
                    "supported yet")
    return None


def _host_header_value(words: Sequence[str], i: int) -> str | None:
    """ngrok's ``--host-header=example.com`` (any Host): the value as typed, quoted, when
    ``words[i]`` is ``--host-header`` with a Host (``localhost``, a dot or a colon in it); else None."""
    flag, equals, value = words[i].partition("=")
    if flag != "--host-header":
        return None
    if not equals:
        if i + 1 >= len(words) or words[i + 1].startswith("-"):
            return None  # argparse says the value is missing
        value = words[i + 1]
    looks_like_a_host = "." in value or ":" in value or value.lower() == "localhost"
    return quoted(value) if looks_like_a_host else None  # else argparse's "invalid choice"


def _family(flag: str) -> str | None:
    """The flag of ``_HTTP_FLAGS`` that ``flag`` is, or is of the family of, or None."""
    if flag in _HTTP_FLAGS:
        return flag
    return next((known for known in _HTTP_FLAGS if flag.startswith(known + "-")), None)


def _hint(words: Sequence[str], i: int) -> tuple[str, str] | None:
    """For ``words[i]`` an ngrok flag: the flag and its value as typed, and the hint; else None."""
    flag, equals, value = words[i].partition("=")
    known = _family(flag)
    if known is None:
        return None
    if not equals and flag not in _SWITCHES and i + 1 < len(words) and not words[i + 1].startswith("-"):
        equals, value = " ", words[i + 1]
    shown = f"{flag}{equals}{'********' if secret_flag(flag) and value else value}"
    hint = _HTTP_FLAGS[known]
    if hint is _PUBLIC_NAME:
        host = value.split("://", 1)[-1].split("/", 1)[0]
        name = label_from(host.split(".", 1)[0]) if host else None
        hint = f"{hint.removesuffix('NAME')}{name}" if name else hint
    return shown, f"{flag} is ngrok's: {hint}"


def pyngrok_agent_argv(argv: Sequence[str]) -> list[str] | None:
    """``devtunnel agent --ngrok-log`` for ``start --none --log stdout``, the command line pyngrok
    runs its ``ngrok_path`` with (and ``--config FILE``, ``--authtoken``, ``--region``, which mean
    nothing here and are dropped): pyngrok with ``ngrok_path`` set to ``devtunnel`` starts
    devtunnel's agent and drives its API as ngrok's. None for any other command line."""
    if argv[:1] != ["start"] or "--none" not in argv:
        return None
    words = list(argv)
    log = next((w.split("=", 1)[1] for w in words if w.startswith("--log=")), None)
    if log is None and "--log" in words and words.index("--log") + 1 < len(words):
        log = words[words.index("--log") + 1]
    return ["agent", "--ngrok-log"] if log == "stdout" else None

