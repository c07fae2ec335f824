"""``devtunnel relay``: run the public relay until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
from pathlib import Path

from devtunnel.commands.config import resolve_relay
from devtunnel.commands.output import EscapingFormatter, note_readable_secret, safe
from devtunnel.config.kinds import token_problem
from devtunnel.errors import ConfigError
from devtunnel.rules import rules_flag
from devtunnel.exit_codes import EXIT_OK, EXIT_USAGE
from devtunnel.relay.descriptors import raise_open_file_limit
from devtunnel.relay.server import Relay
from devtunnel.relay.settings import RelaySettings
from devtunnel.values.durations import parse_duration
from devtunnel.values.names import validate_domain
from devtunnel.values.sizes import parse_size
from devtunnel.values.relay_url import quoted_url
from devtunnel.values.terminal import quoted
from devtunnel.values.urls import split_url
from devtunnel.values.numbers import is_decimal

log = logging.getLogger("devtunnel.relay")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``PORT`` (on 127.0.0.1) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    host = host.strip("[]")
    if not is_decimal(port_text) or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--listen {quoted(text)}: expected HOST:PORT with a port of 0-65535, e.g. 0.0.0.0:8000")
    return host or "0.0.0.0", int(port_text)


def read_tokens_file(path: str) -> list[str]:
    """Tokens from a file: one per line; blank lines and lines starting with ``#`` are skipped.

    A file other users can read is said in a note on stderr, not refused: a container's secret
    mount is often readable by all (0444), with no other user to read it.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--tokens-file {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from exc
    tokens: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        problem = token_problem(token)
        if problem is not None:
            raise ConfigError(f"--tokens-file {quoted(path)} line {number}: {problem}")
        tokens.append(token)
    if tokens:
        note_readable_secret("devtunnel relay", "--tokens-file", path, "its tokens open tunnels on this relay")
    return tokens


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings_from_args(args: argparse.Namespace) -> RelaySettings:
    """Relay settings from the parsed ``devtunnel relay`` flags.

    Raises:
        ConfigError: a flag value is invalid, or tokens are missing on a public address.
    """
    host, port = parse_listen(args.listen)
    tokens = list(args.token)
    for token in tokens:
        problem = token_problem(token)
        if problem is not None:
            raise ConfigError(f"--token: {problem}")
    if args.tokens_file:
        tokens += read_tokens_file(args.tokens_file)
    if not tokens and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host}:{port} without a token: anyone could open tunnels."
            " Give --token or --tokens-file"
        )
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{flag} {path}: no such file")
    if not args.head_timeout > 0:
        raise ConfigError(f"--head-timeout {args.head_timeout}: must be more than 0 seconds")
    body_timeout = _given(args, "body_timeout", RelaySettings.body_timeout)
    if not 0 < body_timeout < float("inf"):
        raise ConfigError(f"--body-timeout {body_timeout}: must be more than 0 seconds")
    body_min_rate = _body_min_rate(args.body_min_rate)
    client_share = _given(args, "client_share", RelaySettings.client_share)
    if not 0 < client_share <= 1:
        raise ConfigError(f"--client-share {client_share}: must be more than 0 and at most 1, e.g. 0.25")
    drain_timeout = _drain_timeout(args.drain_timeout)
    public_host = None
    if args.public_url:
        parts = split_url(args.public_url, "--public-url")
        shown = quoted_url(args.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--public-url {shown}: expected http(s)://HOST, e.g. https://tunnel.example.com")
        public_host = _check_public_host(parts.hostname)
    try:
        domain = validate_domain(args.domain)  # [relay_server] domain went through it when read
    except ConfigError as exc:
        raise ConfigError(f"--domain: {exc}") from None
    if public_host is not None and public_host != domain:
        # Tunnel URLs are NAME.<public host>; the relay routes NAME.<domain> (a proxy passes the Host on).
        raise ConfigError(f"--public-url {quoted_url(args.public_url)}: its host {public_host} is not the relay's domain "
                          f"{domain} (--domain): agents would be handed URLs NAME.{public_host} that reach no "
                          f"tunnel; give --domain {public_host}")
    return RelaySettings(
        host=host,
        port=port,
        domain=domain,
        tokens=tokens,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_body=parse_size(args.max_body),
        head_timeout=args.head_timeout,
        body_timeout=body_timeout,
        body_min_rate=body_min_rate,
        client_share=client_share,
        tunnels_per_token=RelaySettings.tunnels_per_token if args.tunnels_per_token is None else args.tunnels_per_token,
        connections_per_token=(
            RelaySettings.connections_per_token if args.connections_per_token is None else args.connections_per_token
        ),
        connections_per_address=args.connections_per_address,
        pending_connections=RelaySettings.pending_connections if args.max_pending is None else args.max_pending,
        pending_per_address=(
            RelaySettings.pending_per_address if args.pending_per_address is None else args.pending_per_address
        ),
        public_url=args.public_url,
        rules=rules_flag(args.rules, relay=True) if args.rules is not None else (),
        trusted_proxies=_trusted_proxies(args.trusted_proxy),
        drain_timeout=drain_timeout,
    )


def _body_min_rate(text: str | None) -> int:
    """``--body-min-rate`` (bytes a second, ``2k`` too) in bytes, or ConfigError."""
    if text is None:
        return RelaySettings.body_min_rate
    try:
        return parse_size(text)
    except ConfigError:
        raise ConfigError(f"--body-min-rate {quoted(text)}: expected bytes a second, e.g. 500 or 2k "
                          "(0: no such bound)") from None


def _drain_timeout(value: str | float | None) -> float:
    """``--drain-timeout`` (text, or seconds from ``[relay_server]``) in seconds, or ConfigError."""
    if value is None:
        return RelaySettings.drain_timeout
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"--drain-timeout: {exc}") from None


def _check_public_host(host: str) -> str:
    """The host of ``--public-url`` as a domain (lowercased, no end dots), or ConfigError: a host
    name. It goes to every agent in the URL of its tunnel (WELCOME), so a control character or a
    space must not pass; and a tunnel's URL puts its name before it (``NAME.HOST``), which an IP
    address cannot take."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            return validate_domain(host)
        except ConfigError as exc:
            raise ConfigError(f"--public-url: {exc}") from None
    else:
        raise ConfigError(f"--public-url: {host} is an IP address, and a tunnel's URL is NAME.HOST: give the "
                          "host name whose subdomains (a wildcard DNS record *.HOST) reach this relay")


def _trusted_proxies(cidrs: list[str]) -> list[str]:
    """``--trusted-proxy`` values, checked (ConfigError naming a bad one)."""
    import ipaddress

    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"--trusted-proxy {quoted(cidr)}: not an address or CIDR, e.g. 10.0.0.0/8") from None
    return [c.strip() for c in cidrs]


def _given(args: argparse.Namespace, name: str, default: float) -> float:
    value = getattr(args, name)
    return default if value is None else float(value)


async def serve(settings: RelaySettings) -> None:
    """Start the relay, print where it listens, and run until SIGINT or SIGTERM; then drain
    (``Relay.drain``, up to ``settings.drain_timeout``; a second signal ends it) and stop."""
    relay = Relay(settings)
    await relay.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    scheme = "https" if settings.tls else "http"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    # The domain and public URL may come from a settings file (a cloned project's): escaped.
    print(safe(f"Relay listening on {scheme}://{host}:{relay.port} (tunnels at {relay.public_url_for('NAME')})"),
          flush=True)
    try:
        await stop.wait()
        stop.clear()
        if settings.drain_timeout > 0:
            await drain(relay, settings.drain_timeout, stop)
    finally:
        await relay.stop()


async def drain(relay: Relay, timeout: float, interrupted: asyncio.Event) -> None:
    """Let the requests in flight finish (``Relay.drain``), saying so in a log line when it
    begins (once no new connection is taken) and one when it ends. With none in flight there
    is nothing to wait for, nor to say."""
    relay.stop_accepting()
    count = relay.requests_in_flight
    if not count:
        return
    log.info(
        "stopping: %s in flight; taking no new connections, waiting up to %g s for them to finish"
        " (a second Ctrl-C or SIGTERM stops at once)",
        _requests(count), timeout,
    )
    left = await relay.drain(timeout, interrupted)
    if not left:
        log.info("stopping: every request in flight finished")
    elif interrupted.is_set():
        log.info("stopping at once (a second signal): %s still in flight cut", _requests(left))
    else:
        log.info("stopping: drain timeout of %g s reached, %s still in flight cut", timeout, _requests(left))


def _requests(count: int) -> str:
    return f"{count} request{'' if count == 1 else 's'}"


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # not available on this platform: the default loop works, slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(args: argparse.Namespace) -> int:
    """Entry point of ``devtunnel relay``."""
    try:
        settings = settings_from_args(resolve_relay(args))  # unset flags from [relay_server]
    except ConfigError as exc:
        print(f"devtunnel relay: error: {safe(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    # Log lines quote clients and agents (names, bad requests): escaped before they reach a terminal.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start/stop chatter repeats ours
    _use_uvloop()
    # Each connection is a descriptor: a soft limit below the hard one (1,024 under systemd, of
    # 524,288) would bound the relay, and the automatic limits derived from it, for nothing.
    raise_open_file_limit()
    try:
        asyncio.run(serve(settings))
    except ConfigError as exc:  # the address is taken, the TLS files do not load ...
        print(f"devtunnel relay: error: {safe(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
