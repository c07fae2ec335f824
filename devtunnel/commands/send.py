"""``devtunnel send PROVIDER EVENT --to URL``: a realistic, signed sample delivery, like ``stripe trigger``.

The sample comes from the shipped fixtures (``--list`` shows them), gets fresh ids and times,
``--data`` and ``--set`` edits, and a signature made with the provider's secret (``--secret-env``,
else those devtunnel.toml gives or points to and its conventional variable, e.g.
``STRIPE_WEBHOOK_SECRET``, as a replay signs). Sent to a tunnel's public URL it is captured like
a real delivery.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from devtunnel.capture.jsonpath import apply_assignments
from devtunnel.capture.outcome import body_excerpt
from devtunnel.capture.model import Headers
from devtunnel.errors import ConfigError, DevtunnelError
from devtunnel.values.relay_url import quoted_url
from devtunnel.values.terminal import quoted
from devtunnel.values.urls import is_localhost_name, split_url
from devtunnel.webhooks import BUILTIN, Delivery, Provider, SignatureError, by_name
from devtunnel.webhooks.context import WebhookContext
from devtunnel.webhooks.samples import list_samples, sample
from devtunnel.webhooks.secrets import secrets_for

__all__ = ["SendFailed", "Sent", "missing_secret", "run", "send_sample", "send_url", "signing_secrets"]

EXIT_USAGE = 2
_LONGEST_TIMEOUT = 365 * 86400.0


def send_url(text: str, default_path: str) -> tuple[str, str]:
    """The URL to send to (the sample's path added when ``text`` has none) and the Host to send.

    A ``*.localhost`` host is reached on 127.0.0.1 with its name kept in ``Host``: the
    embedded relay routes by it, and not every resolver knows ``*.localhost``.

    A host name that is not ASCII goes in ``Host`` in its IDNA form (``xn--...``), as on the wire.

    Raises:
        ConfigError: not an http(s) URL with a host, or one that cannot be sent (a control
            character, a host name that is not one: an empty label or one over 63 characters).
    """
    parts = split_url(text, "--to")
    shown = quoted_url(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--to {shown}: expected an http:// or https:// URL, e.g. http://payments.localhost:41234/webhooks/stripe")
    if parts.username or parts.password:
        raise ConfigError(f"--to {shown}: user info in the URL is not supported")
    try:
        # What httpx would refuse when sending (InvalidURL), and the name as the resolver takes
        # it (the IDNA codec refuses an empty label or one over 63 characters: UnicodeError).
        wire = httpx.URL(text)
        wire.raw_host.decode("ascii").encode("idna")
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ConfigError(f"--to {shown}: not a valid URL ({exc})") from None
    path = parts.path if parts.path not in ("", "/") else default_path
    host = wire.netloc.decode("ascii")
    connect = host
    hostname = parts.hostname.lower()
    if parts.scheme == "http" and is_localhost_name(hostname):
        connect = "127.0.0.1" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, connect, path, parts.query, "")), host


def _list() -> int:
    rows = [(s.provider, s.name, s.event, s.path) for s in list_samples()]
    widths = [max(len(r[i]) for r in rows + [("PROVIDER", "NAME", "EVENT", "PATH")]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(("PROVIDER", "NAME", "EVENT", "PATH"), widths)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _body(data: str | None, default: bytes) -> bytes:
    if data is None:
        return default
    if data.startswith("@"):
        if not data[1:]:
            raise ConfigError("--data @FILE: give the file's path after @")
        path = Path(data[1:]).expanduser()
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"--data {data}: cannot read it ({exc.strerror or exc})") from None
    return data.encode("utf-8")


class SendFailed(DevtunnelError):
    """The sample could not be delivered (the receiver was unreachable, or the connection broke)."""


@dataclass(frozen=True)
class Sent:
    """What came of sending one sample."""

    label: str
    """``stripe invoice.paid``: the provider and the sample's name."""
    url: str
    """Where it was sent: ``--to`` with the sample's path when it gave none, its host as sent in ``Host``."""
    delivery_id: str | None
    """The delivery's id (the same one the inspector shows), or None for providers without one."""
    signed: bool
    """False when sent without a signature."""
    status: int
    reason: str
    """The response's reason phrase read as UTF-8, a byte that is not kept as a surrogate (from
    the network: escape it before showing it, ``values.terminal.escape`` shows that byte as ``\\xNN``)."""
    first_line: str
    """The first line of a response body that is not 2xx (from the network), else ``""``."""

    @property
    def ok(self) -> bool:
        """The receiver answered 2xx."""
        return 200 <= self.status < 300


def signing_secrets(provider: Provider, environ: Mapping[str, str], env_name: str | None = None,
                    webhooks: WebhookContext | None = None) -> tuple[list[str], str]:
    """The secrets a sample of ``provider`` is signed with, and the variable that holds or would hold them.

    ``env_name`` (``--secret-env``) wins; else ``webhooks`` (``config.webhook_context``: those
    devtunnel.toml gives or points to, then the conventional variable); else ``environ`` alone.
    """
    variable = env_name or provider.secret_env
    if env_name is None and webhooks is not None:
        return list(webhooks.secrets.get(provider.name, ())), webhooks.secret_envs.get(provider.name, variable)
    return secrets_for(provider, environ, env_name=env_name), variable


def missing_secret(provider_name: str, environ: Mapping[str, str], env_name: str | None = None,
                   webhooks: WebhookContext | None = None) -> str | None:
    """The variable to set when ``provider_name`` has no secret to sign with, else None."""
    provider = by_name(provider_name, BUILTIN)
    if provider is None:
        return None
    secrets, variable = signing_secrets(provider, environ, env_name, webhooks)
    return None if secrets else variable


def _provider(name: str) -> Provider:
    provider = by_name(name.lower(), BUILTIN)
    if provider is None:
        raise ConfigError(f"unknown provider {quoted(name)}; known: {', '.join(p.name for p in BUILTIN)}")
    return provider


def check_sample(provider_name: str, event: str) -> None:
    """Raise ``ConfigError`` (naming those there are) unless the provider has a sample ``event``:
    a usage error said before a running agent is looked for."""
    sample(_provider(provider_name).name, event, now=0.0)


def send_sample(provider_name: str, event: str, to: str, *, environ: Mapping[str, str],
                data: str | None = None, assignments: Sequence[str] = (), env_name: str | None = None,
                unsigned: bool = False, timeout: float = 10.0, insecure: bool = False,
                webhooks: WebhookContext | None = None) -> Sent:
    """Make a fresh sample delivery, sign it with the provider's secret and POST it to ``to``.

    The one sending path of ``devtunnel send`` and the inspector's "Send a sample webhook".

    Args:
        provider_name: ``stripe``, ``github`` ... (any case).
        event: the sample's name (``devtunnel send --list``).
        to: the URL; the sample's path is added when it has none.
        environ: where the secret is read (its provider's variable, or ``env_name``).
        data: a body instead of the sample's (``@FILE`` reads a file).
        assignments: ``PATH=VALUE`` edits of the body (JSON, or a form's fields).
        unsigned: send without a signature (with no secret known, sending is otherwise an error).
        webhooks: the secrets devtunnel.toml adds or points to, as a replay signs with them
            (``config.webhook_context``); ``env_name`` wins over them.

    Raises:
        ConfigError: bad usage (unknown provider or sample, bad URL, no secret, a bad edit).
        SendFailed: the receiver could not be reached, or the exchange broke.
    """
    provider = _provider(provider_name)
    now = time.time()
    made = sample(provider.name, event, now=now)
    url, host = send_url(to, made.info.path)
    parts = urlsplit(url)
    public_url = urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
    body = apply_assignments(_body(data, made.body), list(assignments), made.headers.get("Content-Type"))
    headers = Headers([("Host", host), *made.headers.items()])
    secrets, variable = signing_secrets(provider, environ, env_name, webhooks)
    if unsigned:
        secrets = []
    elif secrets:
        try:
            headers = provider.sign_with_each(Delivery("POST", public_url, headers, body), secrets, now)
        except SignatureError as exc:
            raise ConfigError(str(exc)) from None
    else:
        raise ConfigError(f"no secret for {provider.title}: set {variable} "
                          "to the receiver's secret (or --unsigned to send without a signature)")
    label = f"{provider.name} {made.info.name}"
    delivery_id = provider.delivery_id(Delivery("POST", url, headers, body))
    try:
        # A socket takes no timeout past time_t's range (OverflowError); a year is as good as forever.
        with httpx.Client(timeout=min(timeout, _LONGEST_TIMEOUT), trust_env=False, verify=not insecure) as client:
            response = client.post(url, headers=[(n, v) for n, v in headers.items() if n.lower() != "content-length"],
                                   content=body)
    except httpx.HTTPError as exc:
        raise SendFailed(f"{label} to {public_url} failed: {str(exc) or type(exc).__name__}") from exc
    first = ""
    if not response.is_success:  # what replay says of an error body, the same way (an HTML page's text)
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        first = body_excerpt(response.content, media_type, 300)
    # httpx reads the reason as ASCII and drops the rest ("Größe" -> "Gre"): read its bytes as
    # Response.reason_text reads a captured one, UTF-8 with any other byte shown as \xNN once escaped.
    raw_reason = response.extensions.get("reason_phrase")
    reason = raw_reason.decode("utf-8", "surrogateescape") if isinstance(raw_reason, bytes) else response.reason_phrase
    return Sent(label, public_url, delivery_id, bool(secrets), response.status_code, reason, first)


def _running_tunnel(args: argparse.Namespace) -> tuple[str, str]:
    """The name of the ``[tunnels.NAME]`` whose webhook tables sign for the running tunnel to send
    to without ``--to`` (the table it was started from, else its own name, as the agent judges its
    deliveries), and its public URL: the agent's only one, or the one ``--tunnel`` names. Raises
    ConfigError (which one is unclear) or DevtunnelError (none)."""
    from devtunnel.commands.agent_api import candidates, running_tunnels
    from devtunnel.commands.config import settings_of

    tunnels = running_tunnels(candidates(args.api, settings_of(args).agent.api_port))
    names = ", ".join(quoted(t.name) for t in tunnels)
    if args.tunnel:
        chosen = [t for t in tunnels if t.name == args.tunnel]
        if not chosen:
            raise DevtunnelError(f"no running tunnel is named {quoted(args.tunnel)}" + (f" (running: {names})" if names else ""))
    else:
        chosen = tunnels
        if not chosen:
            raise DevtunnelError("the running agent has no tunnel: start one (n in the inspector), or give --to URL")
        if len(chosen) > 1:
            raise ConfigError(f"several tunnels are running ({names}): choose one with --tunnel NAME, or give --to URL")
    return chosen[0].table or chosen[0].name, chosen[0].public_url


def run(args: argparse.Namespace) -> int:
    """Send one sample delivery; exit 0 when the receiver answered 2xx, 1 otherwise, 2 on bad usage."""
    from devtunnel.commands.config import settings_of
    from devtunnel.commands.output import safe
    from devtunnel.config import webhook_context
    from devtunnel.config.kinds import EnvName

    try:
        if args.list:
            return _list()
        if not args.provider or not args.event:
            raise ConfigError("give PROVIDER EVENT (devtunnel send --list shows the samples)")
        path = args.to if args.to and args.to.startswith("/") else None  # on the running tunnel's URL
        if args.to and not path and (args.tunnel or args.api):
            raise ConfigError("--to URL sends there: --tunnel and --api choose a running tunnel instead"
                              " (--to /PATH sends to a path of it)")
        check_sample(args.provider, args.event)
        webhooks = webhook_context(settings_of(args), os.environ)
        if args.to and not path:
            to = args.to
        else:  # signed as that tunnel's deliveries are judged: its [tunnels.NAME.webhooks.*] tables
            table, to = _running_tunnel(args)
            webhooks = webhooks.for_tunnel(table)
            if path:
                to = to.rstrip("/") + path
        env_name = args.secret_env
        if env_name is not None:
            # An empty one (--secret-env "$VAR" with VAR unset) read the usual secrets instead.
            try:
                env_name = EnvName().check(env_name)
            except ValueError as exc:
                raise ConfigError(f"--secret-env: {exc}") from None
        sent = send_sample(args.provider, args.event, to, environ=os.environ, data=args.data,
                           assignments=args.set or (), env_name=env_name, unsigned=args.unsigned,
                           timeout=args.timeout, insecure=args.insecure, webhooks=webhooks)
    except ConfigError as exc:
        print(f"devtunnel send: {safe(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except (SendFailed, DevtunnelError) as exc:  # not delivered, or no running tunnel to deliver to
        print(f"devtunnel send: {safe(str(exc))}", file=sys.stderr)
        return 1
    ident = f" ({safe(sent.delivery_id)})" if sent.delivery_id else ""
    signed = "signed" if sent.signed else "unsigned"
    print(f"sent {sent.label}{ident}, {signed}, to {safe(sent.url)}: {sent.status} {safe(sent.reason)}")
    if sent.first_line:
        print(f"  {safe(sent.first_line)}")
    return 0 if sent.ok else 1
