"""Command-line parsing and wiring only: each command's work lives in ``devtunnel.commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import shlex
import sys
from collections.abc import Sequence
from typing import NoReturn

from devtunnel import __version__
from devtunnel.commands.log_target import add_log_flags
from devtunnel.commands.output import EscapingFormatter, err, escape_tracebacks, safe, tolerant_output
from devtunnel.errors import ConfigError, DevtunnelError, TunnelError
from devtunnel.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_TUNNEL_REFUSED, EXIT_USAGE, HELP_TABLE
from devtunnel.values.numbers import is_decimal
from devtunnel.values.terminal import quoted

__all__ = ["main", "build_parser", "EXIT_TUNNEL_REFUSED"]

_F = argparse.RawDescriptionHelpFormatter


_WORDS: list[str] = []
"""The command line ``main`` parses, for what an error says of it (``_joined_value_hint``)."""


def _joined_value_hint(message: str) -> str:
    """For argparse's ``argument --filter/-f: expected one argument`` when the value typed after the
    flag starts with ``-`` (``--filter -status:2xx``, ``--hold -1s``): argparse took it for a flag;
    say to join it to the flag. Empty otherwise."""
    found = re.match(r"argument (\S+): expected one argument$", message)
    if found is None:
        return ""
    spellings = found.group(1).split("/")
    for word, after in zip(_WORDS, _WORDS[1:]):
        if word in spellings and after.startswith("-") and after != "--":
            flag = next((s for s in spellings if s.startswith("--")), word)
            return f" ({shlex.quote(after)} starts with -, which reads as a flag: join it, {flag}={shlex.quote(after)})"
    return ""


class _Parser(argparse.ArgumentParser):
    """argparse with bad usage said in one line (and where to read more), exit status 2."""

    def error(self, message: str) -> NoReturn:
        message += _joined_value_hint(message)
        self.exit(EXIT_USAGE, f"{self.prog}: {safe(message)} (see: {self.prog} --help)\n")


def _port(text: str) -> int:
    """A TCP port number, 0 included (0 means "any free port" or "off", as each flag says)."""
    if not is_decimal(text) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number of 0-65535, not {quoted(text)}")
    return int(text)


def _count(text: str) -> int:
    """A whole number of 0 or more."""
    if not is_decimal(text):
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, not {quoted(text)}")
    return int(text)


def _seconds(text: str) -> float:
    """A positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {quoted(text)}")
    return value

MAIN_EXAMPLES = """\
examples:
  devtunnel http 8080                      tunnel to localhost:8080 on an embedded relay, open the inspector
  devtunnel http 8080 --no-tui             same, headless: one log line per request
  devtunnel http 8000 --run 'uvicorn app:app --port 8000 --reload' --hold 30s
                                           also start your app, restart it, hold requests while it is down
  devtunnel init && devtunnel up           a devtunnel.toml for this folder, then its tunnels and apps
  devtunnel relay --listen 0.0.0.0:8000 --domain t.example.com --token s3cret
                                           run the public relay on a server
  devtunnel requests --filter 'status:>=400'
                                           list captured requests
  devtunnel                                open the inspector with no tunnel yet
  devtunnel help filters                   the filter language

""" + HELP_TABLE


def _add_db(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's unset --db must not hide one given before the subcommand.
    p.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                   help="capture database (default: $XDG_STATE_HOME/devtunnel/captures.db)")


def _add_app_flags(p: argparse.ArgumentParser) -> None:
    # Unset flags are None: ``http NAME`` takes them from [tunnels.NAME] in devtunnel.toml.
    p.add_argument("--run", metavar="CMD",
                   help="start the local app with this shell command; devtunnel watches, restarts and stops it")
    p.add_argument("--health", metavar="PATH",
                   help="with --run: the app is ready when GET PATH answers 2xx/3xx (default: when its port accepts)")
    p.add_argument("--hold", metavar="DURATION",
                   help="requests wait this long (e.g. 30s) while the app is down or restarting, then get 503")


def _add_relay_port(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=_port, default=0, help="port for the embedded relay (default: any free port)")
    p.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                   help="a Host the embedded relay answers besides NAME.localhost, 127.0.0.1 and a --via URL's"
                        " (.example.test: every name under it; repeatable); others get 421 (DNS rebinding)")


def _add_body_cap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--body-cap", metavar="SIZE", help="bytes of each body to record (default: 10mb)")
    p.add_argument("--body-budget", metavar="SIZE",
                   help="bytes of bodies the requests in flight keep together, at least one body cap; past it their"
                        " records are cut, never the traffic (default: 64mb)")


def _add_local_timeout(p: argparse.ArgumentParser, service: str) -> None:
    p.add_argument("--local-timeout", type=_seconds, default=60.0, metavar="SECONDS",
                   help=f"seconds {service} has to start its response before the client gets 504 (default: %(default)s)")


def _add_agent_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``http``, ``up`` and ``start``, which run an agent with its inspector or headless."""
    p.add_argument("--no-tui", action="store_true", help="no inspector: print one log line per request")
    add_log_flags(p)
    _add_relay_port(p)
    p.add_argument("--api-port", type=_port, metavar="PORT",
                   help="agent API port on 127.0.0.1, an error if taken (default: 4040, or the next free one; 0 disables)")


def _add_no_record(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-record", action="store_true", help="do not record exchanges")


def _add_up_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``up`` and ``start``, which run named tunnels the same way."""
    _add_agent_flags(p)
    _add_no_record(p)
    _add_db(p)


class _Version(argparse.Action):
    """``--version``: the version, and whether the per-request modules run compiled (native.py).

    Looked up when asked for, not each time the command line is parsed."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from devtunnel.native import describe

        # "NAME version X", as ngrok prints it: pyngrok's get_version() reads what follows "version ".
        print(f"devtunnel version {__version__} ({describe()})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The whole command-line grammar."""
    parser = _Parser(
        prog="devtunnel",
        description="Give a local service a public URL and inspect, diff, edit and replay every request.",
        epilog=MAIN_EXAMPLES,
        formatter_class=_F,
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version (and whether it runs compiled) and exit")
    _add_db(parser)
    parser.set_defaults(db=None, settings=None)  # settings: loaded by main() for the commands that take them
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # relay -----------------------------------------------------------------------
    p = sub.add_parser(
        "relay",
        help="run the public relay that agents connect to",
        formatter_class=_F,
        description="Serve public HTTP(S) for NAME.DOMAIN and route it to the agent that holds tunnel NAME.",
        epilog="""\
examples:
  devtunnel relay --listen 0.0.0.0:8000 --domain tunnel.example.com --token s3cret
  devtunnel relay --listen 0.0.0.0:443 --domain tunnel.example.com --tokens-file /etc/devtunnel/tokens \\
      --tls-cert fullchain.pem --tls-key privkey.pem
""",
    )
    # Unset flags are None: the command takes them from [relay_server] in devtunnel.toml, then the defaults.
    p.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (default: 127.0.0.1:8000)")
    p.add_argument("--domain", help="NAME.DOMAIN goes to tunnel NAME (default: localhost)")
    p.add_argument("--token", action="append", default=[],
                   help="accepted agent token (repeatable); other users see it in `ps`: prefer --tokens-file")
    p.add_argument("--tokens-file", metavar="FILE", help="file with one accepted token per line (# comments)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS/WSS with this certificate chain")
    p.add_argument("--tls-key", metavar="PEM", help="private key for --tls-cert")
    p.add_argument("--max-body", metavar="SIZE", help="largest request body, e.g. 10mb (default: unlimited)")
    p.add_argument("--head-timeout", type=_seconds, metavar="SECONDS", help="drop clients that take longer to send a request head (default: 10)")
    p.add_argument("--public-url", metavar="URL", help="public base URL when behind a TLS proxy, e.g. https://tunnel.example.com")
    p.add_argument("--body-timeout", type=float, metavar="SECONDS", help="drop a request body (408) after this long without a byte (default: 30)")
    p.add_argument("--client-share", type=float, metavar="FRACTION", help="share of a tunnel's concurrent requests one client address may hold; more get 429 (default: 0.25; 1 turns it off)")
    p.add_argument("--tunnels-per-token", type=_count, metavar="N", help="tunnel names one token may hold at once; a pool counts once (default: 32; 0: no limit)")
    p.add_argument("--connections-per-token", type=_count, metavar="N", help="agent connections one token may hold at once; each member of a pool counts (default: 64; 0: no limit)")
    p.add_argument("--body-min-rate", metavar="SIZE",
                   help="bytes a second a request body must average once --body-timeout has passed, or it gets 408 "
                        "(500, 2k; default: 500; 0: no such bound)")
    p.add_argument("--connections-per-address", type=_count, metavar="N",
                   help="connections one client address may hold open at once over all tunnels, in any state; "
                        "one more gets 429 (default: a quarter of the open-file limit, between 16 and 4096; 0: no limit)")
    p.add_argument("--pending-per-address", type=_count, metavar="N",
                   help="connections one client address may hold waiting to send a request (agents: their HELLO); "
                        "one more gets 429 (default: 256; 0: no limit)")
    p.add_argument("--max-pending", type=_count, metavar="N",
                   help="connections waiting to send a request the relay holds in all; past it the oldest is dropped "
                        "(default: 0: half the open-file limit, between 64 and 4096)")
    p.add_argument("--drain-timeout", metavar="SECONDS",
                   help="on SIGTERM or SIGINT, take no new requests and let those in flight finish for up to this long "
                        "(10, 30s, 1m; default: 10; 0: stop at once)")
    p.add_argument("--rules", metavar="FILE", help="rules for every tunnel, applied before each tunnel's own (docs/policy.md)")
    p.add_argument("--trusted-proxy", action="append", default=[], metavar="CIDR",
                   help="a proxy in front of the relay: its X-Forwarded-For names the client for rules (repeatable)")

    # http ------------------------------------------------------------------------
    p = sub.add_parser(
        "http",
        help="tunnel a local HTTP service and inspect its traffic",
        formatter_class=_F,
        description="Give TARGET a public URL. Without --relay an embedded relay on 127.0.0.1 is used.",
        epilog="""\
TARGET is a port (8080), HOST:PORT (127.0.0.1:8080) or a URL (https://localhost:8443).

examples:
  devtunnel http 8080
  devtunnel http 8080 --no-tui
  devtunnel http 8080 --log stdout --log-format json    no inspector: ngrok's log records, as scripts read them
  devtunnel http 3000 --relay wss://tunnel.example.com --token s3cret --name payments
  devtunnel http 8000 --via cloudflared           a public https URL from Cloudflare, no server needed
  devtunnel http 8000 --via ssh:me@myhost.example.com:22
  devtunnel http 8000 --run 'uvicorn app:app --port 8000 --reload' --hold 30s
  DEVTUNNEL_RELAY=wss://tunnel.example.com DEVTUNNEL_TOKEN=s3cret devtunnel http 3000
""",
    )
    p.add_argument("target", help="port, HOST:PORT or URL of the local service, or a tunnel NAME from devtunnel.toml")
    p.add_argument("--relay", metavar="URL", help="relay to connect to (env DEVTUNNEL_RELAY; default: embedded relay)")
    p.add_argument("--token", "--authtoken", dest="token",
                   help="token for the relay; other users see it in `ps`: prefer --token-file, DEVTUNNEL_TOKEN "
                        "or `devtunnel config add-token -`")
    p.add_argument("--token-file", metavar="FILE", help="read the relay token from the first line of FILE")
    p.add_argument("--relay-ca", metavar="PEM", help="trust the CA in PEM (beside the system's) for the relay's certificate: "
                                                     "a relay with a private CA or a self-signed certificate")
    p.add_argument("--name", help="tunnel name (default: the one this target had last time, else a random readable one)")
    p.add_argument("--via", metavar="PROVIDER",
                   help="public URL from cloudflared, localhost.run, pinggy, serveo or ssh:USER@HOST[:PORT] "
                        "instead of a relay; traffic still passes through devtunnel (docs/via.md)")
    p.add_argument("--pool", action="store_true", default=None,
                   help="share --name with the other agents of the same token started with --pool: the relay spreads requests over them")
    # Unset flags are None: the command takes them from devtunnel.toml, then the defaults.
    p.add_argument("--host-header", choices=["preserve", "rewrite"], help="send the client's Host (preserve, the default) or the target's (rewrite)")
    _add_agent_flags(p)
    _add_body_cap(p)
    _add_no_record(p)
    p.add_argument("--insecure", action="store_true",
                   help="do not verify an https target's certificate (the relay's always is: see --relay-ca)")
    p.add_argument("--rules", metavar="FILE", help="a TOML file of [[rules]] the relay enforces for this tunnel (docs/policy.md)")
    p.add_argument("--basic-auth", action="append", default=[], metavar="USER:PASS",
                   help="ask for this user and password at the relay (repeatable; PASS may be sha256:HEX); other "
                        "users see it in `ps`: prefer sha256:HEX, or the users in devtunnel.toml or a --rules FILE")
    p.add_argument("--allow-ip", "--cidr-allow", action="append", default=[], metavar="CIDR",
                   help="answer only these client addresses or networks, others get 403 (repeatable, or several "
                        "joined by commas as ngrok's --cidr-allow)")
    p.add_argument("--deny-ip", "--cidr-deny", action="append", default=[], metavar="CIDR",
                   help="refuse these client addresses or networks with 403 (repeatable, or several joined by "
                        "commas as ngrok's --cidr-deny)")
    p.add_argument("--rate-limit", metavar="RATE", help="requests per client address, e.g. 20/s or 600/m; more get 429")
    for flag, what in (("--request-header-add", "set this header on each request forwarded (replacing one of its name)"),
                       ("--request-header-remove", "remove this header from each request forwarded"),
                       ("--response-header-add", "set this header on each response (replacing one of its name)"),
                       ("--response-header-remove", "remove this header from each response")):
        # A value added to requests is most often the service's credential; one added to responses every client gets.
        ps = ("; other users see it in `ps`: prefer a headers rule (request.set) in devtunnel.toml or a --rules FILE"
              if flag == "--request-header-add" else "")
        p.add_argument(flag, action="append", default=[], metavar="NAME" if flag.endswith("remove") else "NAME:VALUE",
                       help=f"{what}, at the relay, as ngrok's flag (repeatable){ps}")
    _add_local_timeout(p, "the local service")
    _add_app_flags(p)
    _add_db(p)

    # capture commands ---------------------------------------------------------------
    p = sub.add_parser("requests", help="list captured requests", formatter_class=_F,
                       description=("List the newest captured requests, oldest first, one line each. The ID column is the\n"
                                    "shortest prefix that names each one; show, export, replay and diff take it."),
                       epilog="""\
examples:
  devtunnel requests
  devtunnel requests --filter 'method:POST path:/webhooks status:>=400' --limit 20
  devtunnel requests --filter 'since:10m'      what came in the last ten minutes
  devtunnel requests --json | jq '.[].id'
  devtunnel requests --follow --filter 'status:>=500'
                                               each failing request as it ends, as --no-tui prints it
  devtunnel requests --follow --json | jq -c '{id, status}'

The filter language: devtunnel help filters
""")
    p.add_argument("--filter", "-f", default="", metavar="EXPR", help="filter expression (devtunnel help filters)")
    p.add_argument("--limit", "-n", type=_count, default=None, metavar="N",
                   help="the newest N (default: 50, with --follow 10; 0 for all); when more match, a line on "
                        "stderr says how many")
    p.add_argument("--json", action="store_true", help="print a JSON array (with --follow: one object a line)")
    p.add_argument("--follow", action="store_true",
                   help="then print each request as it ends, until Ctrl-C (the line of http --no-tui)")
    _add_db(p)

    p = sub.add_parser("show", help="show one exchange in full", formatter_class=_F,
                       description=("Print one captured exchange: timing, request and response heads and bodies, WebSocket\n"
                                    "messages. Captured text is escaped so it cannot drive the terminal."),
                       epilog="examples:\n  devtunnel show 01JD3X4K9A\n  devtunnel show 01JD3X4K9A --json | jq .response\n")
    p.add_argument("id", metavar="ID", help="exchange id, or any prefix of it that names one exchange")
    p.add_argument("--json", action="store_true", help="print as JSON (ngrok API shape)")
    _add_db(p)

    p = sub.add_parser("export", help="export exchanges as curl, HAR, raw HTTP, httpie or a pytest module", formatter_class=_F,
                       description="Write captured exchanges as curl commands, a HAR file, raw HTTP, httpie commands or a pytest module.",
                       epilog="""\
examples:
  devtunnel export 01JD3X4K9A --format curl
  devtunnel export 01JD3X4K9A 01JD3X7TQ2 --format har -o hooks.har
  devtunnel export 01JD3X4K9A --format curl --redact
  devtunnel export 01JD3X4K9A --format curl --to http://127.0.0.1:8080
  devtunnel export 01JD3X4K9A --format curl --to local
  devtunnel export 01JD3X4K9A --format pytest -o tests/test_hooks.py
  devtunnel export 01JD3X4K9A --format pytest --assert captured -o tests/test_today.py
  devtunnel export --filter 'path:/webhooks' --limit 20 --format har -o hooks.har
""")
    p.add_argument("ids", nargs="*", metavar="ID", help="exchange ids or unique prefixes (default with --filter: every match)")
    p.add_argument("--format", "-F", default="curl", help="curl, har, raw, httpie or pytest (default: %(default)s)")
    p.add_argument("--filter", "-f", default="", metavar="EXPR", help="export every exchange matching EXPR")
    p.add_argument("--limit", "-n", type=_count, default=0, metavar="N",
                   help="with --filter: the newest N matches, written oldest first (default: 0, every match)")
    p.add_argument("--redact", action="store_true",
                   help="replace credentials, signatures and secret fields (query, form, JSON) with placeholders")
    p.add_argument("--to", metavar="URL",
                   help="send to this base URL (scheme://host[:port][/prefix]; path and query kept) instead of the "
                        "public URL, or 'local' for each exchange's local service (curl, httpie, har)")
    p.add_argument("--assert", dest="asserts", choices=("expected", "captured"), metavar="WHAT",
                   help="pytest: what each test asserts of the answer: expected (the default: 2xx for a webhook "
                        "delivery, 4xx for one judged invalid, anything but 5xx for a request captured 5xx, else "
                        "the status captured) or captured (the status captured, whatever it was)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout (- is stdout)")
    _add_db(p)

    p = sub.add_parser("replay", help="send captured requests again", formatter_class=_F,
                       description=("Send captured requests again to the tunnel's local service (or --to URL), optionally edited,\n"
                                    "and record the answers as new exchanges."),
                       epilog="""\
examples:
  devtunnel replay 01JD3X4K9A
  devtunnel replay 01JD3X4K9A --to http://127.0.0.1:9000
  devtunnel replay --filter 'path:/webhooks status:5xx'
  devtunnel replay --filter status:500 --limit 10
  devtunnel replay 01JD3X4K9A --method PUT --header 'X-Debug: 1' --body @event.json
  devtunnel replay 01JD3X4K9A --ignore-header X-Build --ignore-header ETag
  devtunnel replay 01JD3X4K9A --set data.object.amount=999
  devtunnel replay 01JD3X4K9A --as-captured

A webhook delivery (Stripe, GitHub, Slack, Shopify, Standard Webhooks, Twilio) is signed afresh
with the secret in its provider's variable (STRIPE_WEBHOOK_SECRET ...): what is sent, with a
fresh timestamp and the same delivery id, when that secret verifies the delivery as captured
(or it was judged valid when it came). One it does not verify may not come from its provider:
it is sent with its captured signature, and --sign-unverified signs it anyway (a receiver that
holds another secret). --as-captured sends the captured signature instead.
The method is sent as typed (methods are case-sensitive). A replay's response is "the same"
when its status, headers and body match the original's, less volatile headers (Date, Age,
Expires, Server-Timing, X-Request-Id and other per-request ids and traces) and any named
with --ignore-header.
An edit that does not fit one of several captures (--set on a body without that field) leaves
that one out, named on stderr; the others are sent.

exit status: 0 when every replay was answered with success (a webhook delivery 2xx, as its
provider and send count it; another request 2xx or 3xx), 1 when one was answered 4xx or 5xx,
got no answer or was left out, 2 on bad usage (nothing sent).
""")
    p.add_argument("ids", nargs="*", metavar="ID", help="exchange ids or unique prefixes (or a webhook's delivery id)")
    p.add_argument("--filter", "-f", default="", metavar="EXPR",
                   help="replay every match, oldest first: each webhook delivery once, replays left out unless the"
                        " filter names them")
    p.add_argument("--limit", "-n", type=_count, metavar="N",
                   help="with --filter: the newest N matches, sent oldest first (without it, more than 100 "
                        "matches are refused; 0: every match)")
    p.add_argument("--to", metavar="URL", help="send to this base URL instead of the tunnel's target")
    p.add_argument("--api", metavar="URL", help="the agent API asked whether the tunnel holds requests while its app "
                                                "restarts (--hold), to wait as they do (default: the first agent on "
                                                "127.0.0.1 from agent.api_port on)")
    p.add_argument("--method", help="replace the method (sent as typed)")
    p.add_argument("--path", help="replace the path and query")
    p.add_argument("--header", "-H", action="append", default=[], metavar="'NAME: VALUE'", help="set a header (NAME: to delete)")
    p.add_argument("--body", metavar="TEXT|@FILE", help="replace the body")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="set a field of the JSON body by dotted path, after --body (VALUE read as JSON when it is), "
                        "or of a form body (Body=hi; payload.action=closed in a field holding JSON); repeatable")
    p.add_argument("--as-captured", action="store_true",
                   help="send a webhook's captured signature headers unchanged instead of signing it afresh")
    p.add_argument("--sign-unverified", action="store_true",
                   help="sign a webhook afresh even when its secret does not verify it as captured (it may"
                        " not come from its provider)")
    p.add_argument("--insecure", action="store_true", help="do not verify an https destination's certificate")
    p.add_argument("--ignore-header", action="append", default=[], metavar="NAME",
                   help="leave this response header out when telling whether the response differs (repeatable)")
    p.add_argument("--json", action="store_true", help="print the new exchanges as JSON")
    _add_db(p)

    p = sub.add_parser("diff", help="compare two exchanges", formatter_class=_F,
                       description=("Print a unified diff of two captured exchanges: heads, then bodies compared as JSON, form\n"
                                    "fields or text. Exits 0 when they are the same, 1 when they differ, 2 on trouble, as diff(1).\n"
                                    "Volatile response headers (Date, Age, Expires, X-Request-Id, Traceparent, CF-Ray ..., and\n"
                                    "[replay] ignore_headers) are shown when they differ but do not count, as for replay's\n"
                                    "'same response'; --strict counts them."),
                       epilog="""\
examples:
  devtunnel diff 01JD3X4K9A 01JD3X7TQ2
  devtunnel diff 01JD3X4K9A 01JD3X7TQ2 --side response --ignore id --ignore data.object.created
""")
    p.add_argument("a", metavar="ID1", help="the first exchange (id or unique prefix), shown as -")
    p.add_argument("b", metavar="ID2", help="the second exchange (id or unique prefix), shown as +")
    p.add_argument("--side", choices=["request", "response", "both"], default="both",
                   help="compare only the requests, only the responses, or both (default: %(default)s)")
    p.add_argument("--ignore", action="append", default=[], metavar="PATH", help="JSON path or form field to leave out (repeatable)")
    p.add_argument("--strict", action="store_true",
                   help="count volatile response headers (Date, X-Request-Id ...) as differences too")
    _add_db(p)

    p = sub.add_parser("agent", help="run the agent service headless, with no tunnel until one is started through its API",
                       formatter_class=_F,
                       description=("Run the agent with its API on 127.0.0.1 and no tunnel; tunnels are started through the API\n"
                                    "(POST /api/tunnels, shaped like ngrok's). Prints 'API http://127.0.0.1:PORT' when ready."),
                       epilog="examples:\n  devtunnel agent --api-port 4040\n")
    p.add_argument("--api-port", type=_port, metavar="PORT",
                   help="agent API port on 127.0.0.1, an error if taken (default: 4040, or the next free one; 0: any free port)")
    _add_relay_port(p)
    _add_body_cap(p)
    _add_local_timeout(p, "a local service")
    _add_db(p)
    p.add_argument("--ngrok-log", action="store_true",
                   help="also print ngrok's startup log lines once the API listens, which pyngrok waits for "
                        "(docs/api.md, pyngrok); `devtunnel start --none --log stdout`, as pyngrok runs it, is this")
    # ``agent`` runs the code of ``http`` with no tunnel: what http's flags would say comes from the settings.
    p.set_defaults(relay=None, token=None, token_file=None, relay_ca=None, host_header=None, insecure=False, no_record=False)

    p = sub.add_parser("up", help="start every tunnel of devtunnel.toml (or those named) with their apps",
                       formatter_class=_F,
                       description=("Start the tunnels defined in devtunnel.toml ([tunnels.NAME]), all of them or those named,\n"
                                    "with the apps they run, in one agent and one inspector."),
                       epilog="""\
examples:
  devtunnel init                 write a devtunnel.toml for this folder first
  devtunnel up
  devtunnel up payments --no-tui
""")
    p.add_argument("names", nargs="*", metavar="NAME", help="tunnels to start (default: every one defined)")
    _add_up_flags(p)

    p = sub.add_parser("start", help="start tunnels of ngrok.yml (ngrok's start: NAME..., --all) in one agent",
                       formatter_class=_F,
                       description=("Start the tunnels an ngrok agent configuration defines, those named or --all of them,\n"
                                    "in one agent and one inspector, as up does for devtunnel.toml. The files are read as\n"
                                    "config import-ngrok reads them: a tunnel it would not import (OAuth, mutual TLS,\n"
                                    "labels, tcp ...) is not started, and said. Relay, token and agent settings come from\n"
                                    "devtunnel.toml as for up. --none: the agent alone (devtunnel agent)."),
                       epilog="""\
examples:
  devtunnel start web                          tunnel web of ngrok's own ngrok.yml
  devtunnel start --all --config ngrok.yml --config more.yml
  devtunnel start web --log stdout --log-format json
""")
    p.add_argument("names", nargs="*", metavar="NAME", help="tunnels of the ngrok.yml to start")
    p.add_argument("--all", action="store_true", help="start every tunnel the files define")
    p.add_argument("--none", action="store_true", help="start no tunnel: the agent alone (devtunnel agent)")
    p.add_argument("--config", action="append", default=[], metavar="FILE", dest="ngrok_config",
                   help="an ngrok.yml, repeatable, later files winning (default: where ngrok keeps it, "
                        "e.g. ~/.config/ngrok/ngrok.yml)")
    p.add_argument("--authtoken", dest="token", metavar="TOKEN",
                   help="token for the relay, as http's --authtoken (an ngrok account's token means nothing to a "
                        "relay); other users see it in `ps`: prefer DEVTUNNEL_TOKEN or `devtunnel config add-token -`")
    _add_up_flags(p)

    sub.add_parser("init", help="write a commented devtunnel.toml for this folder (never replaces one)",
                   formatter_class=_F,
                   description=("Write ./devtunnel.toml with one tunnel named after the folder, its run command guessed\n"
                                "from pyproject.toml, requirements.txt, manage.py or package.json. Asks nothing;\n"
                                "an existing file is left as it is (exit status 2)."),
                   epilog="examples:\n  devtunnel init && devtunnel up\n")

    p = sub.add_parser("logs", help="print the output of the app a tunnel runs (--run), -f to follow it",
                       formatter_class=_F,
                       description=("Print the last lines the app of tunnel NAME wrote (stdout and stderr), read from the agent\n"
                                    "that runs it; -f keeps printing new lines until Ctrl-C."),
                       epilog="""\
examples:
  devtunnel logs payments
  devtunnel logs payments -f
  devtunnel logs payments --grep Traceback -n 500
""")
    p.add_argument("name", metavar="NAME", help="the tunnel whose app's output to print")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as they come")
    p.add_argument("-n", "--lines", type=_count, default=100, help="the last N lines (default: %(default)s; 0 for all kept)")
    p.add_argument("--grep", metavar="TEXT", help="only lines containing TEXT (case-insensitive)")
    p.add_argument("--api", metavar="URL", help="the agent API (default: the first agent on 127.0.0.1 from agent.api_port on)")

    p = sub.add_parser("inspect", help="open the inspector on stored captures without starting tunnels", formatter_class=_F,
                       description="Browse, filter, diff and export the exchanges in a capture database, with no agent and no tunnel.",
                       epilog="examples:\n  devtunnel inspect\n  devtunnel inspect --db ./captures.db\n")
    _add_db(p)

    p = sub.add_parser("send", help="send a realistic, signed sample webhook delivery (like stripe trigger)",
                       formatter_class=_F,
                       description="Send a sample delivery of a provider's event, with fresh ids and times, signed "
                                   "with the secret the receiver reads (its conventional variable, e.g. "
                                   "STRIPE_WEBHOOK_SECRET). Sent to a tunnel's public URL, it is captured like a "
                                   "real delivery.",
                       epilog="""\
examples:
  devtunnel send --list
  devtunnel send stripe invoice.paid                 # to the running tunnel (devtunnel http/up)
  devtunnel send stripe invoice.paid --tunnel payments
  devtunnel send stripe invoice.paid --to /api/stripe/events    # a path of the running tunnel's URL
  devtunnel send stripe invoice.paid --to http://payments.localhost:41234/webhooks/stripe
  devtunnel send github push --to http://127.0.0.1:8000/webhooks/github --set ref=refs/heads/dev
  devtunnel send stripe payment_intent.succeeded --to http://127.0.0.1:8000 --set data.object.amount=999
""")
    p.add_argument("provider", nargs="?", metavar="PROVIDER", help="stripe, github, slack, shopify, standard or twilio")
    p.add_argument("event", nargs="?", metavar="EVENT", help="the sample's name, e.g. invoice.paid (see --list)")
    p.add_argument("--to", metavar="URL|/PATH", help="where to send it (the sample's path is added to a URL without "
                                                     "one), or this path of the running tunnel's public URL; default: "
                                                     "the sample's path there")
    p.add_argument("--tunnel", metavar="NAME", help="send to this running tunnel's public URL (when the agent has several)")
    p.add_argument("--api", metavar="URL", help="the agent to find the tunnel at (default: the first answering on 127.0.0.1 from "
                                                "agent.api_port, 4040)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="change a JSON field by dotted path, e.g. data.object.amount=999, or a form's field, "
                        "e.g. Body=hi (repeatable)")
    p.add_argument("--data", metavar="TEXT|@FILE", help="send this body instead of the sample's")
    p.add_argument("--secret-env", metavar="VAR", help="read the secret from VAR instead of devtunnel.toml and the provider's usual variable")
    p.add_argument("--unsigned", action="store_true", help="send without a signature, even with a secret set")
    p.add_argument("--insecure", action="store_true", help="do not verify an https URL's certificate")
    p.add_argument("--timeout", type=_seconds, default=30.0, metavar="SECONDS", help="give up after this long (default: %(default)s)")
    p.add_argument("--list", action="store_true", help="list the samples and exit")

    # config ----------------------------------------------------------------------
    p = sub.add_parser("config", help="show and change devtunnel.toml settings", formatter_class=_F,
                       description="Show where settings come from, print the effective ones, or save one in a file.",
                       epilog="""\
Settings come from flags, then DEVTUNNEL_RELAY / DEVTUNNEL_TOKEN / DEVTUNNEL_DB and the file
$DEVTUNNEL_CONFIG names, then ./devtunnel.toml, then the user file, then defaults (docs/config.md).

examples:
  devtunnel config add-token s3cret          (or add-authtoken, as with ngrok)
  devtunnel config import-ngrok              ngrok.yml's tunnels as [tunnels.NAME]
  devtunnel config set relay.url wss://tunnel.example.com
  devtunnel config set tunnels.web.target 3000 --project      then: devtunnel http web
  devtunnel config show
  devtunnel config check                     is every file valid (ngrok's config check)
  EDITOR=vi devtunnel config edit
""")
    config = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    config.add_parser("path", help="list the files settings are read from, in order, and which exist",
                      description="List the settings files in the order they are read (later ones win) and "
                                  "whether each exists.")
    config.add_parser("show", help="print the effective settings as TOML (token masked)",
                      description="Print the settings in effect, from every file, the environment and the "
                                  "defaults, as TOML; the token and webhook secrets are masked.")
    q = config.add_parser("set", help="check a value and save it in the user file (or --project)",
                          description="Check VALUE for KEY, check the whole file as it would be, and only then "
                                      "save it (mode 0600; comments in the file are not kept). Keys: docs/config.md.")
    q.add_argument("key", metavar="KEY", help="SECTION.KEY or tunnels.NAME.KEY, e.g. relay.url")
    q.add_argument("value", metavar="VALUE", help="the value as you would type it: 3000, wss://..., 10mb, 30s; "
                                                  "a list comma-separated")
    q.add_argument("--project", action="store_true", help="save in ./devtunnel.toml instead")
    q = config.add_parser("add-token", aliases=["add-authtoken"],
                          help="save the relay token (relay.token) in a file only you can read",
                          description="Save the relay token as relay.token in the user file (or --project), "
                                      "mode 0600. add-authtoken is the same, by ngrok's name.")
    q.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin; other users see it in "
                                                  "`ps`: prefer -")
    q.add_argument("--project", action="store_true", help="save in ./devtunnel.toml instead")
    # ngrok's flags, as pyngrok's set_auth_token() passes them to its ngrok_path.
    q.add_argument("--config", metavar="FILE", dest="ngrok_config",
                   help="ngrok's configuration file, as pyngrok names it: left as it is (devtunnel's agent reads "
                        "its token from devtunnel.toml), and said so")
    q.add_argument("--log", metavar="TARGET", help="accepted for ngrok's command line (pyngrok's --log stdout): "
                                                   "the outcome is one line on stdout")
    q.add_argument("--log-level", metavar="LEVEL", help="accepted for ngrok's command line, like --log")
    q.add_argument("--log-format", metavar="FORMAT", help="accepted for ngrok's command line, like --log")
    q = config.add_parser("import-ngrok", help="turn the tunnels of an ngrok.yml (v2 or v3) into named tunnels",
                          description="Read an ngrok agent configuration and save its http tunnels and endpoints "
                                      "as [tunnels.NAME] in the user file (or --project). Basic auth and IP restrictions "
                                      "become rules at the relay; tunnels with protections devtunnel cannot enforce "
                                      "yet (OAuth, OIDC, mutual TLS, traffic policies) are not imported; every key "
                                      "left out is reported.")
    q.add_argument("path", nargs="?", metavar="PATH",
                   help="the ngrok.yml (default: ngrok's own location, e.g. ~/.config/ngrok/ngrok.yml)")
    q.add_argument("--config", metavar="FILE", dest="ngrok_config",
                   help="the ngrok.yml, as ngrok's own commands name it (the same as PATH)")
    q.add_argument("--project", action="store_true", help="save in ./devtunnel.toml instead")
    q.add_argument("--force", action="store_true", help="replace tunnels of the same name already defined there")
    q.add_argument("--dry-run", action="store_true", help="print what would be saved, save nothing")

    q = config.add_parser("check", help="check devtunnel.toml (or an ngrok.yml, --config FILE) and say what is wrong",
                          description="Check every devtunnel.toml that is read (config path lists them): 'Valid "
                                      "configuration file at PATH' for each, exit 0; or each problem with its file, "
                                      "line and key, exit 2 (as for any invalid config file). --config FILE checks "
                                      "that file instead: an ngrok.yml "
                                      "(.yml, .yaml) as config import-ngrok and start read it, a .toml as devtunnel.toml.")
    q.add_argument("--config", action="append", default=[], metavar="FILE", dest="ngrok_config",
                   help="check this file instead (repeatable), as ngrok's config check takes it")
    config.add_parser("edit", help="open ./devtunnel.toml in $VISUAL or $EDITOR (written from init's template if "
                                   "missing), then check it",
                      description="Open ./devtunnel.toml in $VISUAL, else $EDITOR; a missing file is written first "
                                  "from devtunnel init's template. When the editor exits, the file is checked as "
                                  "config check does.")

    # help ------------------------------------------------------------------------
    p = sub.add_parser("help", help="help on a command, or on a topic: filters", formatter_class=_F,
                       description="Print the help of COMMAND, or the reference of TOPIC.",
                       epilog="examples:\n  devtunnel help filters\n  devtunnel help replay\n")
    p.add_argument("topic", nargs="?", metavar="COMMAND|TOPIC", help="a command, or 'filters' (the filter language)")
    return parser


# command name -> module in devtunnel.commands with ``run(args) -> int``
_COMMANDS = {
    "relay": "relay",
    "http": "http",
    "requests": "captures",
    "show": "captures",
    "export": "captures",
    "replay": "captures",
    "diff": "captures",
    "agent": "http",
    "inspect": "inspect",
    "logs": "logs",
    "up": "up",
    "start": "start",
    "init": "init",
    "config": "config",
    "send": "send",
    "help": "help",
    None: "inspect",
}


def _command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of ``command``, else ``parser``."""
    found = parser
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            found = action.choices[command]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``devtunnel`` console script.

    Every error ends as one escaped ``devtunnel: ...`` line on stderr (a relay's refusal reason
    comes from the network) and an exit status from ``devtunnel.exit_codes``.
    """
    tolerant_output()
    escape_tracebacks()
    if logging.lastResort is not None:
        # A warning in a command that sets up no logging (the capture database's upgrade notice
        # quotes its path) is printed by logging's last resort: escaped like every other line.
        logging.lastResort.setFormatter(EscapingFormatter())
    from devtunnel.commands.ngrok_habits import (
        command_hint, file_target_hint, ngrok_flag_hint, pyngrok_agent_argv, shown_arguments, single_dash_hint,
    )

    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    words = pyngrok_agent_argv(words) or words  # pyngrok starting "ngrok" with ngrok_path set to devtunnel
    _WORDS[:] = words
    hint = command_hint(words)  # ``devtunnel authtoken TOKEN``: said before argparse's list of commands
    if hint is not None:
        parser.error(hint)
    # ``http -host-header=rewrite``, which argparse reads as -h, then ``http --url URL 8080``,
    # where argparse takes the URL for the target: both said from the words as typed.
    hint = single_dash_hint(words) or ngrok_flag_hint(words) or file_target_hint(words)
    if hint is not None:
        _command_parser(parser, words[0]).error(hint)
    args, extra = parser.parse_known_args(words)
    if extra:  # said by the command's own parser, whose --help lists the flags it takes
        _command_parser(parser, args.command).error(f"unrecognized arguments: {shown_arguments(extra)}")
    if args.command == "help":
        args.parser = parser
    module = importlib.import_module(f"devtunnel.commands.{_COMMANDS[args.command]}")
    if args.command not in ("config", "help"):  # ``config`` reads the files itself, to repair a broken one
        from devtunnel.config import load

        try:
            args.settings = load()
        except ConfigError as exc:
            err(str(exc))
            return EXIT_USAGE
    try:
        code = int(module.run(args) or EXIT_OK)
        sys.stdout.flush()  # here, so a reader gone before a buffered stdout's first write is met below
        return code
    except TunnelError as exc:
        err(str(exc))
        return EXIT_TUNNEL_REFUSED
    except ConfigError as exc:  # a bad flag value or argument found past argparse
        err(str(exc))
        return EXIT_USAGE
    except DevtunnelError as exc:
        err(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # The reader went away (``| head``, ``| less`` quit): no message, as with any Unix tool.
        # stdout goes to /dev/null so the flush at exit does not fail on the closed pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
