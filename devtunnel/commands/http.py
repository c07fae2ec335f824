"""``devtunnel http TARGET`` and ``devtunnel agent``: run the agent service headless.

``http`` starts one tunnel and prints ``Forwarding PUBLIC_URL -> TARGET_URL`` once it is first
online (scripts wait for that line; again if a ``--via`` provider gives a new URL), then
``API http://127.0.0.1:PORT`` once the agent API serves, then one line per finished exchange,
and for a webhook delivery a second line once the recorder has judged it (``webhook_line``).
``agent`` serves the API with no tunnel. Both run until Ctrl-C or SIGTERM and then exit 0; a
relay that refuses the token or the name ends ``http`` at once with the relay's reason and a
non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TextIO

from devtunnel.commands.config import resolve_http, tunnel_webhook_names, unused_token_note
from devtunnel.commands.log_target import LogTarget, NgrokFormatter, log_target, wants_inspector
from devtunnel.commands.tunnel_args import app_options, check_http_args, check_via
from devtunnel.commands.output import EscapingFormatter, err, no_screen, safe
from devtunnel.config import Settings
from devtunnel.errors import ConfigError, TunnelError
from devtunnel.agent.app_runner import AppLines
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.exchange_log import ExchangeLog, exchange_line, webhook_line
from devtunnel.agent.info import TunnelInfo, TunnelState
from devtunnel.agent.service import AgentService
from devtunnel.agent.port_memory import PortMemory
from devtunnel.values.ngrok_log import started_tunnel, startup_records
from devtunnel.values.sizes import parse_size

__all__ = ["run", "run_headless", "exchange_line", "webhook_line", "AgentOptions", "agent_options"]

log = logging.getLogger("devtunnel.agent")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # uvloop does not exist on Windows
        return None
    return uvloop.new_event_loop


def run(args: argparse.Namespace) -> int:
    """Run ``http`` or ``agent`` until interrupted; returns the exit code."""
    token_given = bool(getattr(args, "token", None) or getattr(args, "token_file", None))
    args = resolve_http(args)  # unset flags from devtunnel.toml and the environment
    note = unused_token_note(token_given, args.relay)
    if note is not None:
        err(note)
    if args.command == "http" and wants_inspector(args):
        no_inspector = no_screen()
        if no_inspector is not None:
            check_http_args(args)  # as the inspector would: a bad argument is one line, with no note before it
            return run_headless(args, no_inspector=no_inspector)
        from devtunnel.commands.inspect import run_http  # the inspector runs this command as its child

        return run_http(args)
    return run_headless(args)


@dataclass(frozen=True)
class AgentOptions:
    """What ``http``, ``agent`` and ``up`` run the agent with, read from their resolved arguments."""

    command: str
    """``http`` (``up`` too) or ``agent``."""
    settings: Settings
    db: str
    record: bool
    body_cap: int
    body_budget: int
    relay: str | None
    token: str | None
    relay_ca: str | None
    head_timeout: float
    embedded_port: int
    api_port: int
    """0: no API (``http --api-port 0``); ``agent`` then takes any free port."""
    api_port_fixed: bool = False
    """``api_port`` was chosen (flag, environment, file): taken is an error; the default moves on."""
    tunnels: list[TunnelConfig] = field(default_factory=list)
    """The tunnels to start (none for ``agent``)."""
    allowed_hosts: list[str] = field(default_factory=list)
    """More Hosts the embedded relay answers (``--allow-host``)."""
    webhook_names: dict[str, str] = field(default_factory=dict)
    """Tunnel name -> the ``[tunnels.NAME]`` whose webhook secrets it takes (``http payments --name other``)."""
    ngrok_log: bool = False
    """Say on stdout, once the API listens, the startup lines of ngrok's log that pyngrok waits for
    (``devtunnel start --none --log stdout``, as pyngrok starts its agent)."""


def agent_options(args: argparse.Namespace, tunnels: list[TunnelConfig] | None = None) -> AgentOptions:
    """Read and check what the agent runs with, from ``resolve_http``'s arguments; nothing is opened or started.

    Args:
        args: the resolved ``http`` or ``agent`` arguments (``up``'s, made ``http``'s).
        tunnels: the tunnels to start instead of the one ``http``'s arguments describe (``up``).

    Raises:
        ConfigError: a bad body cap or budget, --local-timeout, --via, --run, --health or --hold.
    """
    is_http = args.command == "http"
    body_cap = parse_size(args.body_cap)
    body_budget = parse_size(args.body_budget)
    head_timeout = args.local_timeout
    if not head_timeout > 0:
        raise ConfigError(f"--local-timeout must be a positive number of seconds, not {head_timeout:g}")
    via = args.via if is_http else None
    if via:
        check_via(via)
    app = app_options(args) if is_http else {}  # bad --run/--health/--hold: said before anything opens
    if args.relay_ca:
        from devtunnel.agent.tunnel import relay_tls_context

        relay_tls_context(args.relay_ca)  # an unreadable file or no PEM: one line now, not a tunnel failing later
    if tunnels is None:
        tunnels = [TunnelConfig(
            target=args.target,
            name=args.name,
            relay=args.relay,
            token=args.token,
            relay_ca=args.relay_ca,
            host_header=args.host_header,
            insecure=args.insecure,
            via=via,
            pool=bool(args.pool),
            rules=args.rules,
            table=getattr(args, "config_tunnel", None),
            **app,
        )] if is_http else []
    webhook_names = tunnel_webhook_names(args) if is_http else {}
    allowed_hosts = list(getattr(args, "allow_host", None) or [])
    if allowed_hosts:
        from devtunnel.relay.settings import allowed_hostnames

        allowed_hostnames(allowed_hosts)  # a bad --allow-host: said before anything opens
    return AgentOptions(
        command=args.command, settings=args.settings, db=args.db, record=not args.no_record, body_cap=body_cap,
        body_budget=body_budget,
        relay=args.relay, token=args.token, relay_ca=args.relay_ca, head_timeout=head_timeout, embedded_port=args.port,
        api_port=args.api_port, api_port_fixed=args.api_port_fixed, tunnels=tunnels,
        webhook_names=webhook_names, ngrok_log=bool(getattr(args, "ngrok_log", False)),
        allowed_hosts=allowed_hosts,
    )


def run_headless(args: argparse.Namespace, tunnels: list[TunnelConfig] | None = None, no_inspector: str | None = None) -> int:
    """Run the agent with resolved arguments until interrupted.

    Args:
        args: ``resolve_http``'s arguments.
        tunnels: the tunnels to start instead of ``http``'s one (``up``).
        no_inspector: why the inspector asked for cannot run (``output.no_screen``), said on
            stderr once the flags are checked.
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        hurry: list[Callable[[], None]] = []
        return runner.run(_guarded(_main(args, tunnels, hurry, no_inspector), hurry))


async def _guarded(main: Coroutine[Any, Any, int], hurry: list[Callable[[], None]]) -> int:
    """Run ``main``, turning SIGINT / SIGTERM into a clean exit with code 0.

    A second signal while it stops calls ``hurry``'s callbacks: the tunnels stop waiting for
    their running requests (the shutdown itself, the store's last writes included, goes on).
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopping = False

    def on_signal() -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            task.cancel()
        else:
            for callback in hurry:
                callback()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers on Windows
            loop.add_signal_handler(sig, on_signal)
    try:
        return await main
    except asyncio.CancelledError:
        if not stopping:
            raise
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def _setup_logging(target: LogTarget | None = None) -> None:
    """devtunnel's log messages on stderr, or where ``--log`` says (ngrok's records in logfmt or json)."""
    handler = logging.StreamHandler(sys.stderr if target is None else target.out)
    if target is not None and target.ngrok_format is not None:
        handler.setFormatter(NgrokFormatter(target.ngrok_format))
    else:
        handler.setFormatter(EscapingFormatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    # devtunnel.capture: the recorder's lines, "writing captures again" (info) among them.
    for name in ("devtunnel.agent", "devtunnel.relay", "devtunnel.capture"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO if target is None else target.logging_level())
        logger.propagate = False
    # Warnings of every other logger (uvicorn, websockets ...) are escaped too, rather than
    # printed raw by logging's last resort.
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)


def _print(line: str, out: TextIO) -> None:
    out.write(line + "\n")
    out.flush()


async def _main(args: argparse.Namespace, tunnels: list[TunnelConfig] | None, hurry: list[Callable[[], None]],
                no_inspector: str | None = None) -> int:
    from devtunnel.tui.supervisor import follow_supervisor, take_api_pipe, tell_api_pipe

    api_pipe = take_api_pipe()  # the inspector that started us waits for the API line there
    follow_supervisor()  # and we stop when it dies
    target = log_target(args)  # --log FILE that cannot be written: one line, before anything opens
    _setup_logging(target)
    out = sys.stdout if target is None else target.out
    ngrok_format = None if target is None else target.ngrok_format  # ngrok's records rather than devtunnel's lines
    says_info = target is None or target.wants("info")
    options = agent_options(args, tunnels)  # bad flags: said before anything opens
    if no_inspector is not None:
        err(f"{no_inspector}: running without the inspector, one log line per request (as with --no-tui)")
    is_http = options.command == "http"
    api_sock = None
    if options.api_port or not is_http:  # ``http --api-port 0`` turns the API off
        from devtunnel.api.app import api_socket

        # Bound before anything starts: a chosen port that is taken ends the command before an app runs.
        api_sock = api_socket(options.api_port, fixed=options.api_port_fixed)

    store = recorder = None
    webhooks: Any = None
    if options.record:
        from devtunnel.capture.recorder import Recorder, one_malloc_arena
        from devtunnel.capture.store import Store
        from devtunnel.config import webhook_context

        store = Store(options.db, max_exchanges=options.settings.store.max_exchanges,
                      max_bytes=options.settings.store.max_bytes)
        # Providers and secrets are read once, here; the recorder's thread judges each delivery.
        webhooks = webhook_context(options.settings, names=options.webhook_names)
        one_malloc_arena()  # before the thread's first allocation gives it an arena of its own
        recorder = Recorder(store, webhooks=webhooks)
        known = set(webhooks.secrets).union(*(t.secrets for t in webhooks.tunnels.values()))
        if known:  # names only: the secrets themselves stay in memory
            log.info("verifying webhook signatures of %s", ", ".join(sorted(known)))
    service = AgentService(
        store=store, recorder=recorder, body_cap=options.body_cap, body_budget=options.body_budget,
        embedded_port=options.embedded_port, allowed_hosts=options.allowed_hosts,
        relay=options.relay, token=options.token, relay_ca=options.relay_ca, head_timeout=options.head_timeout,
        webhooks=webhooks, insecure=options.settings.agent.insecure,
        ports=PortMemory(), remember_names=is_http,  # a named tunnel of the API keeps its port too
    )
    hurry.append(service.hurry)
    api_server: Any = None
    exchange_log: ExchangeLog | None = None
    try:
        await service.start()
        if is_http:
            if api_pipe is None and says_info:  # under an inspector, which shows every exchange, its log file gets no line of each
                exchange_log = ExchangeLog(out, [config.name for config in options.tunnels], ngrok_format=ngrok_format,
                                           recorded=service.records)
                service.subscribe_exchanges(exchange_log)
                if recorder is not None and webhooks is not None and ngrok_format is None:
                    recorder.subscribe_verdicts(exchange_log.verdicts_from(asyncio.get_running_loop()))
            announced: dict[str, str] = {}  # tunnel name -> the public URL last printed
            app_lines: dict[str, AppLines] = {}  # tunnel name -> what its app's changes of state are said with
            ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            def announce(info: TunnelInfo) -> None:
                if info.state is TunnelState.ONLINE and info.public_url and announced.get(info.name) != info.public_url:
                    announced[info.name] = info.public_url
                    shared = f" (pool of {info.pool_members})" if info.pool_members else ""
                    # The URL is the relay's or a provider's: escaped.
                    if ngrok_format is not None:
                        if says_info:
                            _print(started_tunnel(info.name, info.target_url, info.public_url, ngrok_format), out)
                    elif says_info:
                        _print(f"Forwarding {safe(info.public_url)} -> {safe(info.target_url)}{shared}", out)
                elif info.state is TunnelState.FAILED and info.name in announced and not ended.done():
                    # The relay turned the tunnel away for good (token revoked, name handed to
                    # another agent): a headless agent with nothing to forward says why and exits.
                    ended.set_result(f"tunnel {info.name} stopped: {info.error}")
                if info.app is not None and (said := app_lines.setdefault(info.name, AppLines()).line(
                        info.app["state"], info.app["message"])):
                    log.info("tunnel %s: %s", info.name, said)

            service.subscribe(announce)
            for config in options.tunnels:
                await service.start_tunnel(config, via_wait=0)  # Forwarding is printed when the URL comes
        if api_sock is not None:
            from devtunnel.api.app import serve_api

            api_server, bound = await serve_api(service, api_sock)
            if options.api_port and bound != options.api_port:
                log.info("127.0.0.1:%d is taken: the agent API listens on port %d", options.api_port, bound)
            if ngrok_format is None and says_info:
                _print(f"API http://127.0.0.1:{bound}", out)
            if (options.ngrok_log or ngrok_format is not None) and says_info:
                for line in startup_records(bound, ngrok_format or "logfmt"):
                    _print(line, out)
            tell_api_pipe(api_pipe, f"http://127.0.0.1:{bound}")
        if is_http:
            raise TunnelError(await ended)  # or until SIGINT / SIGTERM cancels us
        await asyncio.Event().wait()  # until SIGINT / SIGTERM cancels us
        return 0
    finally:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # let the shutdown below await normally
        if api_server is not None:
            await api_server.stop()
        elif api_sock is not None:
            api_sock.close()
        await service.stop()
        try:
            if recorder is not None:
                recorder.close()  # its last batch's deliveries are judged: their lines are on their way
        finally:
            if exchange_log is not None:
                await asyncio.sleep(0)  # one turn of the loop: what the recorder sent back arrives
                exchange_log.flush()
            out.flush()
            if target is not None:
                target.close()
        if store is not None:
            store.close()
