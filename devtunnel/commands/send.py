"""``devtunnel send PROVIDER EVENT --to URL``: a realistic, signed sample delivery, like ``stripe trigger``.

The sample comes from the shipped fixtures (``--list`` shows them), gets fresh ids and times,
``--data`` and ``--set`` edits, and a signature made with the provider's secret (its
conventional variable, e.g. ``STRIPE_WEBHOOK_SECRET``, or ``--secret-env``). Sent to a tunnel's
public URL it is captured like a real delivery.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from devtunnel.capture.jsonpath import apply_assignments
from devtunnel.capture.model import Headers
from devtunnel.errors import ConfigError
from devtunnel.webhooks import BUILTIN, Delivery, SignatureError, by_name
from devtunnel.webhooks.samples import list_samples, sample
from devtunnel.webhooks.secrets import secrets_for

__all__ = ["run", "send_url"]

EXIT_USAGE = 2


def send_url(text: str, default_path: str) -> tuple[str, str]:
    """The URL to send to (the sample's path added when ``text`` has none) and the Host to send.

    A ``*.localhost`` host is reached on 127.0.0.1 with its name kept in ``Host``: the
    embedded relay routes by it, and not every resolver knows ``*.localhost``.

    Raises:
        ConfigError: not an http(s) URL with a host.
    """
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--to {text!r}: expected an http:// or https:// URL, e.g. http://payments.localhost:41234/webhooks/stripe")
    if parts.username or parts.password:
        raise ConfigError(f"--to {text!r}: user info in the URL is not supported")
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"--to {text!r}: the port is not a number from 1 to 65535") from None
    path = parts.path if parts.path not in ("", "/") else default_path
    host = parts.netloc
    connect = parts.netloc
    hostname = parts.hostname.lower()
    if parts.scheme == "http" and (hostname == "localhost" or hostname.endswith(".localhost")):
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
        path = Path(data[1:]).expanduser()
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"--data {data}: cannot read it ({exc.strerror or exc})") from None
    return data.encode("utf-8")


def run(args: argparse.Namespace) -> int:
    """Send one sample delivery; exit 0 when the receiver answered 2xx, 1 otherwise, 2 on bad usage."""
    from devtunnel.commands.output import safe

    try:
        if args.list:
            return _list()
        if not args.provider or not args.event or not args.to:
            raise ConfigError("give PROVIDER EVENT --to URL (devtunnel send --list shows the samples)")
        provider = by_name(args.provider.lower(), BUILTIN)
        if provider is None:
            raise ConfigError(f"unknown provider {args.provider!r}; known: {', '.join(p.name for p in BUILTIN)}")
        now = time.time()
        made = sample(provider.name, args.event, now=now)
        url, host = send_url(args.to, made.info.path)
        body = apply_assignments(_body(args.data, made.body), args.set)
        headers = Headers([("Host", host), *made.headers.items()])
        secrets = secrets_for(provider, os.environ, env_name=args.secret_env)
        if secrets:
            public_url = urlunsplit((urlsplit(args.to).scheme, host, urlsplit(url).path, urlsplit(url).query, ""))
            try:
                headers = provider.sign(Delivery("POST", public_url, headers, body), secrets[0], now)
            except SignatureError as exc:
                raise ConfigError(str(exc)) from None
        elif not args.unsigned:
            raise ConfigError(f"no secret for {provider.title}: set {args.secret_env or provider.secret_env} "
                              "to the receiver's secret (or --unsigned to send without a signature)")
    except ConfigError as exc:
        print(f"devtunnel send: {exc}", file=sys.stderr)
        return EXIT_USAGE
    label = f"{provider.name} {made.info.name}"
    delivery_id = provider.delivery_id(Delivery("POST", url, headers, body))
    try:
        with httpx.Client(timeout=args.timeout, trust_env=False, verify=not args.insecure) as client:
            response = client.post(url, headers=[(n, v) for n, v in headers.items() if n.lower() != "content-length"],
                                   content=body)
    except httpx.HTTPError as exc:
        print(f"devtunnel send: {label} to {safe(args.to)} failed: {safe(str(exc) or type(exc).__name__)}", file=sys.stderr)
        return 1
    signed = "signed" if secrets else "unsigned"
    ident = f" ({safe(delivery_id)})" if delivery_id else ""
    print(f"sent {label}{ident}, {signed}, to {safe(args.to)}: {response.status_code} {safe(response.reason_phrase)}")
    if not response.is_success:
        first = response.text.strip().splitlines()[0] if response.text.strip() else ""
        if first:
            print(f"  {safe(first[:300])}")
        return 1
    return 0
