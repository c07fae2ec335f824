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
import functools
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from devtunnel.capture.model import Exchange
from devtunnel.capture.verdict import DUPLICATE_MARK
from devtunnel.commands.config import resolve_http
from devtunnel.commands.tunnel_args import app_options, check_via
from devtunnel.commands.output import EscapingFormatter, human_duration, safe, truncate
from devtunnel.config import Settings
from devtunnel.errors import ConfigError, TunnelError
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.info import TunnelInfo, TunnelState
from devtunnel.agent.service import AgentService
from devtunnel.agent.port_memory import PortMemory
from devtunnel.values.sizes import parse_size
from devtunnel.values.exchange_ids import stable_short_id
from devtunnel.values.terminal import is_plain

__all__ = ["run", "run_headless", "exchange_line", "webhook_line", "AgentOptions", "agent_options"]

log = logging.getLogger("devtunnel.agent")


@functools.lru_cache(maxsize=4)
def _clock_text(second: int) -> str:
    """``HH:MM:SS`` local time of a second since the epoch (requests arrive many to a second)."""
    return time.strftime("%H:%M:%S", time.localtime(second))


_SHOWN = 300
"""Columns of a path shown in a log line at most (cut with "…"; ``devtunnel show ID`` has it all)."""


def _line_start(ex: Exchange, tunnel_width: int) -> str:
    """What every log line of an exchange starts with: time, short id, and with ``tunnel_width``
    (an agent carrying several tunnels) the tunnel's name padded to it."""
    start = f"{_clock_text(int(ex.started_at))}  {stable_short_id(ex.id)}  "
    if tunnel_width:
        start += f"{safe(ex.tunnel):<{tunnel_width}}  "
    return start


def exchange_line(ex: Exchange, tunnel_width: int = 0) -> str:
    """One log line for a finished exchange: time, short id, method, path, status, duration
    (and the tunnel's name after the id, ``tunnel_width`` columns, when there are several).

    The id is the fixed-length short form (``stable_short_id``): ``devtunnel show``, ``replay``
    and ``export`` take it as it is, whatever is recorded later. Everything taken from the
    request is made safe for a terminal first, and a very long method or path is cut (``…``).
    """
    request, response = ex.request, ex.response
    method = "WS" if ex.websocket else request.method
    url = request.display_url
    if not is_plain(method + url):  # one check for both: the usual method and path need no escape
        method, url = safe(method), safe(url)
    if len(method) + len(url) > _SHOWN // 2:  # a client's 60 KB path must not fill the screen
        method, url = truncate(method, 40), truncate(url, _SHOWN)
    status = str(response.status) if response is not None else "---"
    line = f"{_line_start(ex, tunnel_width)}{method:<7} {url}  {status}  {human_duration(ex.duration)}"
    if ex.error:
        line += f"  {ex.error}"
    return line


_SHOWN_FIELD = 100
"""Columns of a delivery's event type or id shown in a log line at most (``devtunnel show ID`` has it all)."""


def webhook_line(ex: Exchange, tunnel_width: int = 0) -> str:
    """The line that follows a webhook delivery's own once the recorder has judged it: time and
    short id (and tunnel) as on the delivery's line, then provider, event type, delivery id and
    signature::

        10:00:00  01M8V2JDA09PA  -->     stripe invoice.paid [evt_123]  ✓ signature valid
        10:00:01  01M8V2JE3K1QC  -->     github push [72d3162e-...]  ? signature unverified: no secret: set GITHUB_WEBHOOK_SECRET
        10:00:02  01M8V2JF7Q2RD  -->     stripe invoice.paid [evt_123]  ✓ signature valid  ≡ duplicate of 01M8V2JDA09PA

    A delivery whose id was captured before ends with the inspector's mark (``DUPLICATE_MARK``)
    and the first capture's short id. The event type, delivery id and reason come from the
    sender: each is made safe for a terminal, and a very long one is cut (``…``).
    """
    verdict = ex.webhook
    assert verdict is not None, "webhook_line is for a judged delivery"
    event = truncate(safe(verdict.event_type or "?"), _SHOWN_FIELD)
    delivery = f" [{truncate(safe(verdict.delivery_id), _SHOWN_FIELD)}]" if verdict.delivery_id else ""
    reason = f": {truncate(safe(verdict.reason), _SHOWN)}" if verdict.reason else ""
    duplicate = (f"  {DUPLICATE_MARK} duplicate of {safe(stable_short_id(verdict.duplicate_of))}"
                 if verdict.duplicate_of else "")
    return (f"{_line_start(ex, tunnel_width)}{'-->':<7} {safe(verdict.provider)} "
            f"{event}{delivery}  {verdict.mark} signature {verdict.signature.value}{reason}{duplicate}")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # uvloop does not exist on Windows
        return None
    return uvloop.new_event_loop


def run(args: argparse.Namespace) -> int:
    """Run ``http`` or ``agent`` until interrupted; returns the exit code."""
    args = resolve_http(args)  # unset flags from devtunnel.toml and the environment
    if args.command == "http" and not args.no_tui:
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
    relay: str | None
    token: str | None
    head_timeout: float
    embedded_port: int
    api_port: int
    """0: no API (``http --api-port 0``); ``agent`` then takes any free port."""
    tunnels: list[TunnelConfig] = field(default_factory=list)
    """The tunnels to start (none for ``agent``)."""
    webhook_names: dict[str, str] = field(default_factory=dict)
    """Tunnel name -> the ``[tunnels.NAME]`` whose webhook secrets it takes (``http payments --name other``)."""


def agent_options(args: argparse.Namespace, tunnels: list[TunnelConfig] | None = None) -> AgentOptions:
    """Read and check what the agent runs with, from ``resolve_http``'s arguments; nothing is opened or started.

    Args:
        args: the resolved ``http`` or ``agent`` arguments (``up``'s, made ``http``'s).
        tunnels: the tunnels to start instead of the one ``http``'s arguments describe (``up``).

    Raises:
        ConfigError: a bad body cap, --local-timeout, --via, --run, --health or --hold.
    """
    is_http = args.command == "http"
    body_cap = parse_size(args.body_cap)
    head_timeout = args.local_timeout
    if not head_timeout > 0:
        raise ConfigError(f"--local-timeout must be a positive number of seconds, not {head_timeout:g}")
    via = args.via if is_http else None
    if via:
        check_via(via)
    app = app_options(args) if is_http else {}  # bad --run/--health/--hold: said before anything opens
    if tunnels is None:
        tunnels = [TunnelConfig(
            target=args.target,
            name=args.name,
            relay=args.relay,
            token=args.token,
            host_header=args.host_header,
            insecure=args.insecure,
            via=via,
            pool=bool(args.pool),
            rules=args.rules,
            **app,
        )] if is_http else []
    # ``http payments --name other``: tunnel other takes the webhook secrets of [tunnels.payments].
    webhook_names = {args.name: args.config_tunnel} if is_http and args.config_tunnel and args.name else {}
    return AgentOptions(
        command=args.command, settings=args.settings, db=args.db, record=not args.no_record, body_cap=body_cap,
        relay=args.relay, token=args.token, head_timeout=head_timeout, embedded_port=args.port,
        api_port=args.api_port, tunnels=tunnels, webhook_names=webhook_names,
    )


def run_headless(args: argparse.Namespace, tunnels: list[TunnelConfig] | None = None) -> int:
    """Run the agent with resolved arguments until interrupted (``tunnels``: those to start instead of ``http``'s one)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        hurry: list[Callable[[], None]] = []
        return runner.run(_guarded(_main(args, tunnels, hurry), hurry))


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


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    for name in ("devtunnel.agent", "devtunnel.relay"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    # Warnings of every other logger (uvicorn, websockets ...) are escaped too, rather than
    # printed raw by logging's last resort.
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)


def _print(line: str, out: TextIO) -> None:
    out.write(line + "\n")
    out.flush()


class _ExchangeLog:
    """Writes one line per finished exchange, flushing at most every ``FLUSH_AFTER`` seconds.

    A flush per line costs a system call per request under load; lines still reach a pipe
    within a fraction of a second.

    A webhook delivery gets a second line (``webhook_line``) once the recorder's thread has
    judged it: ``verdicts`` is called back on the loop, for deliveries only, so the line of a
    request waits for nothing and traffic that is no webhook costs the loop nothing more.
    """

    FLUSH_AFTER = 0.05

    def __init__(self, out: TextIO, tunnels: Sequence[str] = ()) -> None:
        self.out = out
        # Several tunnels (``devtunnel up``): each line names its tunnel, in a column as wide as
        # the longest name. One tunnel: its name is in the Forwarding line already.
        self._tunnel_width = max(len(safe(name)) for name in tunnels) if len(tunnels) > 1 else 0
        self._lines: list[str] = []
        self._flush: asyncio.TimerHandle | None = None

    def __call__(self, exchange: Exchange) -> None:
        # Kept here, not written: an unbuffered stdout (a terminal, PYTHONUNBUFFERED) would
        # otherwise cost one write() per request.
        self._lines.append(exchange_line(exchange, self._tunnel_width))
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.FLUSH_AFTER, self.flush)

    def verdicts(self, exchanges: list[Exchange]) -> None:
        """Keep a line for each delivery the recorder has judged (on the loop)."""
        for exchange in exchanges:
            if exchange.replay_of is None:  # a replay made through the API had no line of its own
                self._lines.append(webhook_line(exchange, self._tunnel_width))
        if self._lines and self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.FLUSH_AFTER, self.flush)

    def verdicts_from(self, loop: asyncio.AbstractEventLoop) -> Callable[[list[Exchange]], None]:
        """A listener for ``Recorder.subscribe_verdicts``: called on the recorder's thread, it
        hands the deliveries to ``verdicts`` on ``loop``."""

        def listener(exchanges: list[Exchange]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the agent is gone
                loop.call_soon_threadsafe(self.verdicts, exchanges)

        return listener

    def flush(self) -> None:
        """Write the lines kept so far (also called once on the way out)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._lines:
            self.out.write("\n".join(self._lines) + "\n")
            self._lines.clear()
        self.out.flush()


async def _main(args: argparse.Namespace, tunnels: list[TunnelConfig] | None, hurry: list[Callable[[], None]]) -> int:
    from devtunnel.tui.supervisor import follow_supervisor, take_api_pipe, tell_api_pipe

    api_pipe = take_api_pipe()  # the inspector that started us waits for the API line there
    follow_supervisor()  # and we stop when it dies
    _setup_logging()
    out = sys.stdout
    options = agent_options(args, tunnels)  # bad flags: said before anything opens
    is_http = options.command == "http"

    store = recorder = None
    webhooks: Any = None
    if options.record:
        from devtunnel.capture.recorder import Recorder, one_malloc_arena
        from devtunnel.capture.store import Store
        from devtunnel.config import webhook_context

        store = Store(options.db, max_exchanges=options.settings.store.max_exchanges,
                      max_bytes=options.settings.store.max_bytes)
        # Providers and secrets are read once, here; the recorder's thread judges each delivery.
        webhooks = webhook_context(options.settings)
        for name, section_name in options.webhook_names.items():
            section = webhooks.tunnels.get(section_name)
            if section is not None:
                webhooks = replace(webhooks, tunnels={**webhooks.tunnels, name: section})
        one_malloc_arena()  # before the thread's first allocation gives it an arena of its own
        recorder = Recorder(store, webhooks=webhooks)
        known = set(webhooks.secrets).union(*(t.secrets for t in webhooks.tunnels.values()))
        if known:  # names only: the secrets themselves stay in memory
            log.info("verifying webhook signatures of %s", ", ".join(sorted(known)))
    service = AgentService(
        store=store, recorder=recorder, body_cap=options.body_cap, embedded_port=options.embedded_port,
        relay=options.relay, token=options.token, head_timeout=options.head_timeout, webhooks=webhooks,
        ports=PortMemory() if is_http else None,
    )
    hurry.append(service.hurry)
    api_server: Any = None
    exchange_log: _ExchangeLog | None = None
    try:
        await service.start()
        if is_http:
            if api_pipe is None:  # under an inspector, which shows every exchange, its log file gets no line of each
                exchange_log = _ExchangeLog(out, [config.name for config in options.tunnels])
                service.subscribe_exchanges(exchange_log)
                if recorder is not None and webhooks is not None:
                    recorder.subscribe_verdicts(exchange_log.verdicts_from(asyncio.get_running_loop()))
            announced: dict[str, str] = {}  # tunnel name -> the public URL last printed
            app_states: dict[str, str] = {}
            ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            def announce(info: TunnelInfo) -> None:
                if info.state is TunnelState.ONLINE and info.public_url and announced.get(info.name) != info.public_url:
                    announced[info.name] = info.public_url
                    shared = f" (pool of {info.pool_members})" if info.pool_members else ""
                    # The URL is the relay's or a provider's: escaped.
                    _print(f"Forwarding {safe(info.public_url)} -> {safe(info.target_url)}{shared}", out)
                elif info.state is TunnelState.FAILED and info.name in announced and not ended.done():
                    # The relay turned the tunnel away for good (token revoked, name handed to
                    # another agent): a headless agent with nothing to forward says why and exits.
                    ended.set_result(f"tunnel {info.name} stopped: {info.error}")
                if info.app is not None and app_states.get(info.name) != info.app["state"]:
                    app_states[info.name] = info.app["state"]
                    log.info("tunnel %s: app %s%s", info.name, info.app["state"],
                             f" ({info.app['message']})" if info.app["message"] else "")

            service.subscribe(announce)
            for config in options.tunnels:
                await service.start_tunnel(config, via_wait=0)  # Forwarding is printed when the URL comes
        api_port = options.api_port
        if api_port or not is_http:  # ``http --api-port 0`` turns the API off
            from devtunnel.api.app import serve_api

            api_server, bound = await serve_api(service, api_port)
            _print(f"API http://127.0.0.1:{bound}", out)
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
        await service.stop()
        try:
            if recorder is not None:
                recorder.close()  # its last batch's deliveries are judged: their lines are on their way
        finally:
            if exchange_log is not None:
                await asyncio.sleep(0)  # one turn of the loop: what the recorder sent back arrives
                exchange_log.flush()
            out.flush()
        if store is not None:
            store.close()
