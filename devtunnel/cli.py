"""Command-line parsing and wiring only: each command's work lives in ``devtunnel.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from devtunnel import __version__
from devtunnel.errors import ConfigError, DevtunnelError, TunnelError

EXIT_TUNNEL_REFUSED = 3
"""Exit status when the relay refused the tunnel for good (token, name): retrying cannot help."""

_F = argparse.RawDescriptionHelpFormatter

MAIN_EXAMPLES = """\
examples:
  devtunnel http 8080                      tunnel to localhost:8080 on an embedded relay, open the inspector
  devtunnel http 8080 --no-tui             same, headless: one log line per request
  devtunnel relay --domain t.example.com --token s3cret
                                           run the public relay on a server
  devtunnel requests --filter 'status:>=400'
                                           list captured requests
  devtunnel                                open the inspector with no tunnel yet

exit status: 0 done (Ctrl-C included), 1 error, 2 bad usage or config file,
             3 the relay refused the tunnel (token or name): retrying cannot help
"""


def _add_db(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's unset --db must not hide one given before the subcommand.
    p.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                   help="capture database (default: $XDG_STATE_HOME/devtunnel/captures.db)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command-line grammar."""
    parser = argparse.ArgumentParser(
        prog="devtunnel",
        description="Give a local service a public URL and inspect, diff, edit and replay every request.",
        epilog=MAIN_EXAMPLES,
        formatter_class=_F,
    )
    parser.add_argument("--version", action="version", version=f"devtunnel {__version__}")
    _add_db(parser)
    parser.set_defaults(db=None)
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
    p.add_argument("--token", action="append", default=[], help="accepted agent token (repeatable)")
    p.add_argument("--tokens-file", metavar="FILE", help="file with one accepted token per line (# comments)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS/WSS with this certificate chain")
    p.add_argument("--tls-key", metavar="PEM", help="private key for --tls-cert")
    p.add_argument("--max-body", metavar="SIZE", help="largest request body, e.g. 10mb (default: unlimited)")
    p.add_argument("--head-timeout", type=float, metavar="SECONDS", help="drop clients that take longer to send a request head (default: 10)")
    p.add_argument("--public-url", metavar="URL", help="public base URL when behind a TLS proxy, e.g. https://tunnel.example.com")

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
  devtunnel http 3000 --relay wss://tunnel.example.com --token s3cret --name payments
  devtunnel http 8000 --via cloudflared           a public https URL from Cloudflare, no server needed
  devtunnel http 8000 --via ssh:me@myhost.example.com:22
  DEVTUNNEL_RELAY=wss://tunnel.example.com DEVTUNNEL_TOKEN=s3cret devtunnel http 3000
""",
    )
    p.add_argument("target", help="port, HOST:PORT or URL of the local service, or a tunnel NAME from devtunnel.toml")
    p.add_argument("--relay", metavar="URL", help="relay to connect to (env DEVTUNNEL_RELAY; default: embedded relay)")
    p.add_argument("--token", "--authtoken", dest="token",
                   help="token for the relay; other users see it in `ps`: prefer --token-file, DEVTUNNEL_TOKEN "
                        "or `devtunnel config add-token -`")
    p.add_argument("--token-file", metavar="FILE", help="read the relay token from the first line of FILE")
    p.add_argument("--name", help="tunnel name (default: a random readable one)")
    p.add_argument("--via", metavar="PROVIDER",
                   help="public URL from cloudflared, localhost.run, pinggy, serveo or ssh:USER@HOST[:PORT] "
                        "instead of a relay; traffic still passes through devtunnel (docs/via.md)")
    # Unset flags are None: the command takes them from devtunnel.toml, then the defaults.
    p.add_argument("--host-header", choices=["preserve", "rewrite"], help="send the client's Host (preserve, the default) or the target's (rewrite)")
    p.add_argument("--no-tui", action="store_true", help="no inspector: print one log line per request")
    p.add_argument("--port", type=int, default=0, help="port for the embedded relay (default: any free port)")
    p.add_argument("--api-port", type=int, help="agent API port on 127.0.0.1 (default: 4040; next free one if taken; 0 disables)")
    p.add_argument("--body-cap", metavar="SIZE", help="bytes of each body to record (default: 10mb)")
    p.add_argument("--no-record", action="store_true", help="do not record exchanges")
    p.add_argument("--insecure", action="store_true", help="do not verify the relay's or an https target's certificate")
    p.add_argument("--local-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="seconds the local service has to start its response before the client gets 504 (default: %(default)s)")
    _add_db(p)

    # capture commands ---------------------------------------------------------------
    p = sub.add_parser("requests", help="list captured requests", formatter_class=_F, epilog="""\
examples:
  devtunnel requests
  devtunnel requests --filter 'method:POST path:/webhooks status:>=400' --limit 20
  devtunnel requests --json | jq '.[].id'
""")
    p.add_argument("--filter", "-f", default="", metavar="EXPR", help="filter expression (see docs/filters.md)")
    p.add_argument("--limit", "-n", type=int, default=50, help="newest N (default: %(default)s; 0 for all)")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    _add_db(p)

    p = sub.add_parser("show", help="show one exchange in full", formatter_class=_F, epilog="examples:\n  devtunnel show 01JD3X\n")
    p.add_argument("id", help="exchange id (a unique prefix is enough)")
    p.add_argument("--json", action="store_true", help="print as JSON (ngrok API shape)")
    _add_db(p)

    p = sub.add_parser("export", help="export exchanges as curl, HAR, raw HTTP or httpie", formatter_class=_F, epilog="""\
examples:
  devtunnel export 01JD3X --format curl
  devtunnel export 01JD3X 01JD3Y --format har -o hooks.har
  devtunnel export 01JD3X --format curl --redact
""")
    p.add_argument("ids", nargs="*", metavar="ID", help="exchange ids (default with --filter: every match)")
    p.add_argument("--format", "-F", default="curl", help="curl, har, raw or httpie (default: %(default)s)")
    p.add_argument("--filter", "-f", default="", metavar="EXPR", help="export every exchange matching EXPR")
    p.add_argument("--redact", action="store_true", help="replace credentials and signatures with placeholders")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    _add_db(p)

    p = sub.add_parser("replay", help="send captured requests again", formatter_class=_F, epilog="""\
examples:
  devtunnel replay 01JD3X
  devtunnel replay 01JD3X --to http://127.0.0.1:9000
  devtunnel replay --filter 'path:/webhooks status:5xx'
  devtunnel replay 01JD3X --method PUT --header 'X-Debug: 1' --body @event.json
""")
    p.add_argument("ids", nargs="*", metavar="ID", help="exchange ids")
    p.add_argument("--filter", "-f", default="", metavar="EXPR", help="replay every match, oldest first")
    p.add_argument("--to", metavar="URL", help="send to this base URL instead of the tunnel's target")
    p.add_argument("--method", help="replace the method")
    p.add_argument("--path", help="replace the path and query")
    p.add_argument("--header", "-H", action="append", default=[], metavar="'NAME: VALUE'", help="set a header (NAME: to delete)")
    p.add_argument("--body", metavar="TEXT|@FILE", help="replace the body")
    p.add_argument("--insecure", action="store_true", help="do not verify an https destination's certificate")
    p.add_argument("--json", action="store_true", help="print the new exchanges as JSON")
    _add_db(p)

    p = sub.add_parser("diff", help="compare two exchanges", formatter_class=_F, epilog="""\
examples:
  devtunnel diff 01JD3X 01JD3Y
  devtunnel diff 01JD3X 01JD3Y --side response --ignore id --ignore data.object.created
""")
    p.add_argument("a", metavar="ID1")
    p.add_argument("b", metavar="ID2")
    p.add_argument("--side", choices=["request", "response", "both"], default="both")
    p.add_argument("--ignore", action="append", default=[], metavar="PATH", help="JSON path or form field to leave out (repeatable)")
    _add_db(p)

    p = sub.add_parser("agent", help="run the agent service headless, with no tunnel until one is started through its API",
                       formatter_class=_F, epilog="examples:\n  devtunnel agent --api-port 4040\n")
    p.add_argument("--api-port", type=int, help="agent API port on 127.0.0.1 (default: 4040; next free one if taken)")
    p.add_argument("--port", type=int, default=0, help="port for the embedded relay (default: any free port)")
    p.add_argument("--body-cap", metavar="SIZE", help="bytes of each body to record (default: 10mb)")
    p.add_argument("--local-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="seconds a local service has to start its response before the client gets 504 (default: %(default)s)")
    _add_db(p)

    p = sub.add_parser("inspect", help="open the inspector on stored captures without starting tunnels", formatter_class=_F,
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
  devtunnel send stripe invoice.paid --to http://payments.localhost:41234/webhooks/stripe
  devtunnel send github push --to http://127.0.0.1:8000/webhooks/github --set ref=refs/heads/dev
  devtunnel send stripe payment_intent.succeeded --to http://127.0.0.1:8000 --set data.object.amount=999
""")
    p.add_argument("provider", nargs="?", metavar="PROVIDER", help="stripe, github, slack, shopify, standard or twilio")
    p.add_argument("event", nargs="?", metavar="EVENT", help="the sample's name, e.g. invoice.paid (see --list)")
    p.add_argument("--to", metavar="URL", help="where to send it (the sample's path is added to a URL without one)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="change a JSON field by dotted path, e.g. data.object.amount=999 (repeatable)")
    p.add_argument("--data", metavar="TEXT|@FILE", help="send this body instead of the sample's")
    p.add_argument("--secret-env", metavar="VAR", help="read the secret from VAR instead of the provider's usual variable")
    p.add_argument("--unsigned", action="store_true", help="send without a signature when no secret is set")
    p.add_argument("--insecure", action="store_true", help="do not verify an https URL's certificate")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="give up after this long (default: %(default)s)")
    p.add_argument("--list", action="store_true", help="list the samples and exit")

    # config ----------------------------------------------------------------------
    p = sub.add_parser("config", help="show and change devtunnel.toml settings", formatter_class=_F, epilog="""\
Settings come from flags, then DEVTUNNEL_RELAY / DEVTUNNEL_TOKEN / DEVTUNNEL_DB and the file
$DEVTUNNEL_CONFIG names, then ./devtunnel.toml, then the user file, then defaults (docs/config.md).

examples:
  devtunnel config add-token s3cret          (or add-authtoken, as with ngrok)
  devtunnel config import-ngrok              ngrok.yml's tunnels as [tunnels.NAME]
  devtunnel config set relay.url wss://tunnel.example.com
  devtunnel config set tunnels.web.target 3000 --project      then: devtunnel http web
  devtunnel config show
""")
    config = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    config.add_parser("path", help="list the files settings are read from, in order, and which exist")
    config.add_parser("show", help="print the effective settings as TOML (token masked)")
    q = config.add_parser("set", help="check a value and save it in the user file (or --project)")
    q.add_argument("key", metavar="KEY", help="SECTION.KEY or tunnels.NAME.KEY, e.g. relay.url")
    q.add_argument("value", metavar="VALUE")
    q.add_argument("--project", action="store_true", help="save in ./devtunnel.toml instead")
    q = config.add_parser("add-token", aliases=["add-authtoken"],
                          help="save the relay token (relay.token) in a file only you can read")
    q.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin")
    q.add_argument("--project", action="store_true", help="save in ./devtunnel.toml instead")
    q = config.add_parser("import-ngrok", help="turn the tunnels of an ngrok.yml (v2 or v3) into named tunnels",
                          description="Read an ngrok agent configuration and save its http tunnels and endpoints "
                                      "as [tunnels.NAME] in the user file (or --project). Tunnels with protections "
                                      "devtunnel cannot enforce yet (basic auth, IP restrictions, OAuth, policies) "
                                      "are not imported; every key left out is reported.")
    q.add_argument("path", nargs="?", metavar="PATH",
                   help="the ngrok.yml (default: ngrok's own location, e.g. ~/.config/ngrok/ngrok.yml)")
    q.add_argument("--project", action="store_true", help="save in ./devtunnel.toml instead")
    q.add_argument("--force", action="store_true", help="replace tunnels of the same name already defined there")
    q.add_argument("--dry-run", action="store_true", help="print what would be saved, save nothing")
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
    "config": "config",
    "send": "send",
    None: "inspect",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``devtunnel`` console script."""
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f"devtunnel.commands.{_COMMANDS[args.command]}")
    if args.command != "config":  # ``config`` reads the files itself, to repair a broken one
        from devtunnel.config import load

        try:
            args.settings = load()
        except ConfigError as exc:
            print(f"devtunnel: {exc}", file=sys.stderr)
            return 2
    try:
        return int(module.run(args) or 0)
    except TunnelError as exc:
        print(f"devtunnel: {exc}", file=sys.stderr)
        return EXIT_TUNNEL_REFUSED
    except ConfigError as exc:  # bad usage: a flag, a file or a value the user gave
        print(f"devtunnel: {exc}", file=sys.stderr)
        return 2
    except DevtunnelError as exc:
        print(f"devtunnel: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
