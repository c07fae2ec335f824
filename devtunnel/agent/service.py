"""The agent: tunnels to a relay, each forwarding its streams to a local service.

``AgentService`` holds any number of ``Tunnel``s. Each tunnel keeps one WebSocket to its relay
(``/_devtunnel/connect``) and reconnects by itself when it drops, with exponential backoff and
full jitter capped at ``MAX_BACKOFF``, asking for the same name again with the tunnel's instance
id, so the relay hands the name straight back. A refused token, a name held by another token, or
a name held by another live agent on the first connection ends the tunnel in ``FAILED`` without
retrying; a tunnel that was online keeps retrying while another agent holds its name. With no
relay configured, the service runs an embedded relay on 127.0.0.1 in the same event loop; it
listens on the port it had last time for the same tunnel name when that port is free.

A tunnel with a provider (``TunnelConfig.via``: cloudflared, an ssh service or your own ssh
server) uses the embedded relay too: the provider forwards public traffic to a relay port pinned
to the tunnel (``net.via_runner``), and its URL is the tunnel's public URL.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import random
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidURI

from devtunnel import __version__
from devtunnel.capture.model import DEFAULT_BODY_CAP, Exchange
from devtunnel.errors import (
    AuthError,
    ConfigError,
    NameInUseError,
    NameTakenError,
    NotFoundError,
    RelayUnreachableError,
    TunnelError,
)
from devtunnel.agent.socket import TunnelSocket
from devtunnel.agent.app_runner import AppRunner
from devtunnel.agent.children import LogRing
from devtunnel.agent.forward import DEFAULT_HEAD_TIMEOUT, Forwarder
from devtunnel.agent.hold import HoldGate
from devtunnel.values.names import random_name, validate_name
from devtunnel.agent.port_memory import PortMemory
from devtunnel.agent.recording import LiveSnapshots
from devtunnel.agent.session import HANDSHAKE_TIMEOUT, Session
from devtunnel.values.target import Target, parse_target
from devtunnel.rules import Rule, parse_rules, renumbered
from devtunnel.agent.via_runner import ViaRunner, ViaStatus
from devtunnel.via import Via, parse_via

__all__ = [
    "TunnelConfig",
    "TunnelState",
    "TunnelInfo",
    "Tunnel",
    "AgentService",
    "Backoff",
    "relay_connect_url",
    "CONNECT_PATH",
    "MAX_BACKOFF",
]

log = logging.getLogger("devtunnel.agent")

CONNECT_PATH = "/_devtunnel/connect"
"""Where a relay accepts agent WebSockets."""
MAX_BACKOFF = 30.0
"""The longest wait between two reconnection attempts, in seconds."""


class TunnelState(str, enum.Enum):
    """Where a tunnel is in its life."""

    STARTING = "starting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    """The relay refused the tunnel for a reason retrying cannot fix (token, name)."""
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class TunnelConfig:
    """What a tunnel forwards and where it connects.

    Attributes:
        target: the local service: a port, ``HOST:PORT`` or an ``http(s)://`` URL.
        name: the tunnel name wanted from the relay (default: a random readable one).
        relay: the relay URL (``ws(s)://`` or ``http(s)://``); None means the embedded relay.
        token: the token for the relay.
        host_header: ``"preserve"`` sends the public Host to the local service, ``"rewrite"``
            the target's.
        insecure: do not verify the relay's or an https target's certificate.
        via: the public URL's provider (``cloudflared``, ``ssh:me@host`` ..., see ``devtunnel.via``);
            None or ``relay``: the relay's own URL.
        pool: share ``name`` with the other agents of the same token that ask for it with
            ``pool`` too: the relay spreads requests over them (``docs/relay.md``, "Pools").
        rules: the rules the relay enforces for this tunnel (docs/policy.md).
        run: a shell command that starts the local app; devtunnel watches and restarts it.
        health: a path on the target answering 2xx/3xx once the app is ready (default: the port accepts).
        hold: seconds a request waits for the app while it is down, instead of failing (0: no wait).
    """

    target: str
    name: str | None = None
    relay: str | None = None
    token: str | None = None
    host_header: str = "preserve"
    insecure: bool = False
    via: str | None = None
    pool: bool = False
    rules: tuple[Rule, ...] = ()
    run: str | None = None
    health: str | None = None
    hold: float = 0.0

    def __post_init__(self) -> None:
        if self.host_header not in ("preserve", "rewrite"):
            raise ConfigError(f"host_header must be 'preserve' or 'rewrite', not {self.host_header!r}")
        if self.run is not None and not self.run.strip():
            raise ConfigError("run must be a command line, not empty text")
        if not 0 <= self.hold <= 24 * 3600:
            raise ConfigError(f"hold must be between 0 and 24h, not {self.hold:g} s")
        if self.pool and not self.name:
            raise ConfigError("a pool shares a name: give the tunnel one (--name NAME --pool)")
        if self.provider is not None and self.relay is not None:
            raise ConfigError(f"--via {self.via} carries traffic through the embedded relay: leave out --relay")

    @property
    def provider(self) -> Via | None:
        """The parsed ``via`` when it names a provider to run (None for the relay)."""
        if self.via is None:
            return None
        via = parse_via(self.via)
        return None if via.kind == "relay" else via


@dataclass(frozen=True, slots=True)
class TunnelInfo:
    """A snapshot of one tunnel, as subscribers and the API see it."""

    name: str
    public_url: str | None
    target_url: str
    state: TunnelState
    next_retry_at: float | None = None
    """Seconds since the epoch of the next reconnection attempt (while reconnecting)."""
    error: str | None = None
    """Why the tunnel is not online (the last failure), or None."""
    requests: int = 0
    """Streams carried since the tunnel started."""
    config: TunnelConfig | None = None
    via: ViaStatus | None = None
    """The provider of the public URL, if the tunnel has one (``--via``)."""
    pool_members: int | None = None
    """Agents sharing the name at the relay, this one included (pools only, while online)."""
    app: dict[str, Any] | None = None
    """The app devtunnel runs for this tunnel (``app_runner.app_json``), or None."""


@dataclass
class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` waits ``uniform(0, min(cap, base * 2**n))``."""

    base: float = 0.5
    cap: float = MAX_BACKOFF
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (0-based) of a series of failures."""
        return self.rng.uniform(0.0, min(self.cap, self.base * (2 ** min(attempt, 32))))


def relay_connect_url(relay: str) -> str:
    """The WebSocket URL of a relay's agent endpoint.

    ``http(s)://`` becomes ``ws(s)://``; a URL without a path gets ``/_devtunnel/connect``.

    Raises:
        ConfigError: the text is not a relay URL.
    """
    text = relay.strip()
    if "://" not in text:
        text = "ws://" + text
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"invalid relay URL {relay!r}: {exc}") from exc
    scheme = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}.get(parts.scheme.lower())
    if scheme is None:
        raise ConfigError(f"invalid relay URL {relay!r}: use ws://, wss://, http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"invalid relay URL {relay!r}: the host is missing")
    path = parts.path if parts.path not in ("", "/") else CONNECT_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


ExchangeListener = Callable[[Exchange], None]
TunnelListener = Callable[[TunnelInfo], None]


class Tunnel:
    """One tunnel: a target, a relay, and the loop that keeps them connected.

    Args:
        config: what to forward and where to connect.
        relay_url: the relay's WebSocket URL (``ws(s)://host:port/_devtunnel/connect``).
        sink: receives exchanges (live snapshots and final records).
        on_change: called with a ``TunnelInfo`` on every state change.
        body_cap: bytes of each body to record.
        live: submit long-running exchanges once early.
        backoff: the reconnection delays.
        head_timeout: seconds the local service has to answer.
    """

    def __init__(
        self,
        config: TunnelConfig,
        *,
        relay_url: str,
        sink: Callable[[Exchange, bool], None] | None,
        on_change: TunnelListener,
        body_cap: int = DEFAULT_BODY_CAP,
        live: bool = True,
        backoff: Backoff | None = None,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
    ) -> None:
        self.config = config
        self.target: Target = parse_target(config.target)
        self.name = validate_name(config.name) if config.name else random_name()
        self.instance = secrets.token_urlsafe(18)
        """This tunnel's instance id, sent in every HELLO: the relay gives the name straight back
        to a connection of the same instance (after a network drop), never to another agent
        while this one answers. A credential of sorts: never logged or shown."""
        self.relay_url = relay_url
        self.sink = sink
        self.body_cap = body_cap
        self.live = LiveSnapshots() if live else None
        self.requests = 0
        self.forwarder = Forwarder(
            self.name, self.target, host_header=config.host_header, insecure=config.insecure, head_timeout=head_timeout
        )
        self.routes: dict[int, Forwarder] = self._routes(config)
        """The local targets of the tunnel's ``forward`` rules, by rule number: the only places
        a request the relay routes may go."""
        self._on_change = on_change
        self.app: AppRunner | None = None
        if config.run or config.hold:
            self.forwarder.gate = HoldGate(config.hold)
        if config.run:
            self.app = AppRunner(config.run, self.target, health=config.health, gate=self.forwarder.gate,
                                 on_change=self._app_changed, env={"DEVTUNNEL_TUNNEL": self.name})
        self._backoff = backoff or Backoff()
        self._state = TunnelState.STARTING
        self._public_url: str | None = None
        self._error: str | None = None
        self._next_retry_at: float | None = None
        self._pool_members: int | None = None
        self._runner: asyncio.Task[None] | None = None
        self._session: Session | None = None
        self._first: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.provider: ViaRunner | None = None
        """The public URL's provider (``--via``), set by the service before ``start``."""

    @property
    def state(self) -> TunnelState:
        """The current state."""
        return self._state

    def info(self) -> TunnelInfo:
        """A snapshot of the tunnel.

        With a provider, the public URL is the provider's, and the tunnel is online only while
        both its relay connection and its provider are.
        """
        public_url, state, error = self._public_url, self._state, self._error
        via = self.provider.status if self.provider is not None else None
        if via is not None:
            public_url = via.url
            if state is TunnelState.ONLINE and via.state != "online":
                if via.state == "failed":
                    state = TunnelState.FAILED
                else:
                    state = TunnelState.RECONNECTING if via.url or via.restarts else TunnelState.STARTING
                error = via.message or None
        return TunnelInfo(
            name=self.name,
            public_url=public_url,
            target_url=self.target.url,
            state=state,
            next_retry_at=self._next_retry_at,
            error=error,
            requests=self.requests,
            config=self.config,
            via=via,
            pool_members=self._pool_members,
            app=self.app.json(self.config.hold) if self.app is not None else None,
        )

    def notify(self) -> None:
        """Tell the listener the tunnel changed (its provider calls this)."""
        self._on_change(self.info())

    def _app_changed(self) -> None:
        if self._runner is not None:  # started: subscribers see the app's state with the tunnel's
            self._on_change(self.info())

    async def start(self) -> TunnelInfo:
        """Start connecting; return once the tunnel is online or the first attempt failed.

        A relay that cannot be reached is retried in the background (the state is then
        ``reconnecting``); a refused token or name raises.

        Raises:
            AuthError, NameTakenError, TunnelError: the relay refused the tunnel.
        """
        self._first = asyncio.get_running_loop().create_future()
        if self.app is not None:
            self.app.start()
        self._runner = asyncio.create_task(self._run(), name=f"tunnel-{self.name}")
        await asyncio.shield(self._first)
        return self.info()

    async def stop(self) -> None:
        """Stop the provider, leave the relay and stop reconnecting."""
        if self.provider is not None:
            await self.provider.stop()
        self._stopping = True
        self._wake.set()
        session = self._session
        if session is not None:
            await session.leave("the agent is stopping")
        runner = self._runner
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        self.forwarder.close()
        for route in self.routes.values():
            route.close()
        if self.live is not None:
            self.live.close()
        if self.app is not None:
            await self.app.stop()
        self._set(TunnelState.STOPPED, error=None, next_retry_at=None)

    async def restart(self) -> None:
        """Drop the current connection (if any) and connect again at once."""
        if self._runner is None or self._runner.done():
            self._stopping = False
            self._first = None
            self._runner = asyncio.create_task(self._run(), name=f"tunnel-{self.name}")
            return
        self._wake.set()
        session = self._session
        if session is not None:
            await session.leave("the agent is reconnecting")

    def set_rules(self, rules: tuple[Rule, ...]) -> None:
        """Replace the tunnel's rules; the relay enforces them at once (or from the next HELLO).

        Raises:
            TunnelError: the relay this tunnel is connected to does not enforce rules.
        """
        session = self._session
        if session is not None and rules and not session.rules_enforced:
            raise TunnelError("the relay does not enforce rules (an older devtunnel): upgrade it to use rules")
        old_routes = self.routes
        self.config = replace(self.config, rules=rules)
        self.routes = self._routes(self.config)
        for route in old_routes.values():
            route.close()
        if session is not None and session.rules_enforced:
            session.send_rules()

    def _routes(self, config: TunnelConfig) -> dict[int, Forwarder]:
        return {
            rule.index: Forwarder(
                self.name, parse_target(rule.target), host_header=config.host_header, insecure=config.insecure,
                head_timeout=self.forwarder.head_timeout,
            )
            for rule in config.rules
            if rule.action == "forward"
        }

    def _set(self, state: TunnelState, **changes: Any) -> None:
        self._state = state
        for key, value in changes.items():
            setattr(self, f"_{key}", value)
        self._on_change(self.info())

    def _settle_first(self, exc: BaseException | None = None) -> None:
        first = self._first
        if first is not None and not first.done():
            if exc is None:
                first.set_result(None)
            else:
                first.set_exception(exc)

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._stopping:
                try:
                    reason = await self._connect_once()
                    attempt = 0
                except NameInUseError as exc:
                    if self._public_url is None:  # never online: the name is someone else's
                        self._fail(exc)
                        return
                    # Ours a moment ago (a rival took it while we were away): wait for it.
                    reason = str(exc)
                except (AuthError, NameTakenError) as exc:
                    self._fail(exc)
                    return
                except RelayUnreachableError as exc:
                    reason = str(exc)
                except (TunnelError, ConfigError) as exc:
                    self._fail(exc)
                    return
                except Exception as exc:  # a defect: say so once rather than retry it forever
                    log.exception("tunnel %s: unexpected failure", self.name)
                    self._fail(TunnelError(f"unexpected failure: {exc!r}"))
                    return
                if self._stopping:
                    return
                await self._wait_before_retry(attempt, reason)
                attempt += 1
        finally:
            self._session = None
            self._settle_first()

    def _fail(self, exc: TunnelError | ConfigError) -> None:
        log.error("tunnel %s: %s (not retrying)", self.name, exc)
        self._set(TunnelState.FAILED, error=str(exc), next_retry_at=None)
        self._settle_first(exc)

    async def _wait_before_retry(self, attempt: int, reason: str) -> None:
        if self._wake.is_set():  # restart() asked for a new connection now
            self._wake.clear()
            self._set(TunnelState.RECONNECTING, error=None, next_retry_at=None)
            log.warning("tunnel %s: reconnecting now", self.name)
            return
        delay = self._backoff.delay(attempt)
        at = time.time() + delay
        self._set(TunnelState.RECONNECTING, error=reason, next_retry_at=at)
        self._settle_first()
        log.warning(
            "tunnel %s: %s; reconnecting in %.1f s (at %s)",
            self.name, reason, delay, time.strftime("%H:%M:%S", time.localtime(at)),
        )
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _connect_once(self) -> str:
        """One connection: open, handshake, serve. Returns why it ended (to retry)."""
        ws = await self._open_socket()
        session = Session(self, ws)
        try:
            welcome = await session.handshake(self.config.token or "", self.name, self.instance, pool=self.config.pool)
        except BaseException:
            await ws.close()
            raise
        if self.config.pool and welcome.pool is None:
            await session.leave("this agent asked for a pool")
            raise TunnelError(
                f"the relay at {self.relay_url} does not support pools (it said nothing of --pool): upgrade the"
                " relay, or run this agent without --pool"
            )
        self.name = welcome.name
        self.forwarder.tunnel = welcome.name
        for route in self.routes.values():
            route.tunnel = welcome.name
        self._session = session
        was_online_before = self._public_url is not None
        self._set(
            TunnelState.ONLINE, public_url=welcome.url, error=None, next_retry_at=None, pool_members=welcome.pool
        )
        if was_online_before:
            log.warning("tunnel %s: back online at %s", self.name, welcome.url)
        self._settle_first()
        try:
            return await session.serve()
        finally:
            self._session = None
            self._pool_members = None

    def pool_changed(self, members: int) -> None:
        """The relay says how many agents share this tunnel's name now."""
        if self._state is TunnelState.ONLINE and members != self._pool_members:
            self._set(TunnelState.ONLINE, pool_members=members)

    async def _open_socket(self) -> TunnelSocket:
        parts = urlsplit(self.relay_url)
        options: dict[str, Any] = {}
        if parts.scheme == "wss":
            ctx = ssl.create_default_context()
            if self.config.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            options["ssl"] = ctx
        if _is_loopback(parts.hostname or ""):
            options["proxy"] = None
        try:
            return await connect(  # type: ignore[return-value]
                self.relay_url,
                create_connection=TunnelSocket,
                compression=None,
                max_size=None,
                open_timeout=HANDSHAKE_TIMEOUT,
                close_timeout=2,
                user_agent_header=f"devtunnel/{__version__}",
                **options,
            )
        except InvalidURI as exc:
            raise ConfigError(f"invalid relay URL {self.relay_url!r}: {exc}") from exc
        except TimeoutError as exc:
            raise RelayUnreachableError(f"the relay at {self.relay_url} did not answer in time") from exc
        except (OSError, InvalidHandshake) as exc:
            raise RelayUnreachableError(f"cannot reach the relay at {self.relay_url}: {exc}") from exc


class AgentService:
    """Runs tunnels, records their exchanges and tells subscribers what changed.

    Args:
        store: the capture store the API reads (may be None).
        recorder: where exchanges are recorded; None records nothing.
        body_cap: bytes of each body to record.
        embedded_port: port of the embedded relay (0: any free port), used by tunnels with no relay.
        relay: the relay for tunnels whose config names none (None: the embedded relay).
        token: the token for ``relay``.
        head_timeout: seconds a local service has to answer a request.
        webhooks: the webhook providers and secrets read at start (a ``WebhookContext``), which
            the recorder judges deliveries with; None when there are none.
        ports: where the embedded relay's port is remembered per tunnel name (None: nowhere).
        via_env: the environment providers run in (default: this process's).
    """

    def __init__(
        self,
        *,
        store: Any = None,
        recorder: Any = None,
        webhooks: Any = None,
        body_cap: int = DEFAULT_BODY_CAP,
        embedded_port: int = 0,
        relay: str | None = None,
        token: str | None = None,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
        backoff: Backoff | None = None,
        ports: PortMemory | None = None,
        via_env: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.webhooks = webhooks
        self.body_cap = body_cap if recorder is not None else 0
        self.embedded_port = embedded_port
        self.default_relay = relay
        self.default_token = token
        self.head_timeout = head_timeout
        self.embedded_relay: Any = None
        self.ports = ports
        self.via_env = via_env
        self._backoff = backoff
        self._tunnels: dict[str, Tunnel] = {}
        self._listeners: list[TunnelListener] = []
        self._exchange_listeners: list[ExchangeListener] = []
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Get ready; the embedded relay starts with the first tunnel that needs it."""

    async def stop(self) -> None:
        """Stop every tunnel and the embedded relay."""
        for tunnel in list(self._tunnels.values()):
            await tunnel.stop()
        if self.embedded_relay is not None:
            relay, self.embedded_relay = self.embedded_relay, None
            await relay.stop()

    async def start_tunnel(self, config: TunnelConfig, *, via_wait: float = 15.0) -> TunnelInfo:
        """Start a tunnel; returns when it is online or is retrying an unreachable relay.

        With a provider (``config.via``), waits up to ``via_wait`` seconds more for its public
        URL (or its failure); the provider goes on starting in the background after that.

        Raises:
            ConfigError: the target, name or relay URL is invalid, or the name is in use here.
            AuthError, NameTakenError: the relay refused the tunnel (it is not kept).
        """
        provider = config.provider
        if config.relay is None and self.default_relay is not None and provider is None:
            config = replace(config, relay=self.default_relay, token=config.token or self.default_token)
        async with self._lock:
            relay_url = relay_connect_url(config.relay) if config.relay else await self._embedded_url(config.name)
            tunnel = Tunnel(
                config,
                relay_url=relay_url,
                sink=self._sink,
                on_change=self._changed,
                body_cap=self.body_cap,
                live=self.recorder is not None,
                backoff=self._backoff,
                head_timeout=self.head_timeout,
            )
            key = tunnel.name
            old = self._tunnels.get(key)
            if old is not None and old.state is not TunnelState.FAILED:
                raise ConfigError(f"a tunnel named {key!r} is already running")
            if old is not None:  # a failed tunnel makes way for a new try under its name
                await old.stop()
            self._tunnels[key] = tunnel
            if provider is not None:
                tunnel.provider = ViaRunner(provider, key, self.embedded_relay, on_change=tunnel.notify,
                                            env=self.via_env, memory=self.ports)
        try:
            info = await tunnel.start()
            if tunnel.provider is not None and tunnel.state is TunnelState.ONLINE:
                await tunnel.provider.start()
                info = await self._first_url(tunnel, via_wait)
        except BaseException:
            self._tunnels.pop(key, None)
            await tunnel.stop()
            raise
        if tunnel.name != key:  # the relay gave another name than the one asked for
            self._tunnels = {(tunnel.name if k == key else k): t for k, t in self._tunnels.items()}
        return info

    async def _first_url(self, tunnel: Tunnel, timeout: float) -> TunnelInfo:
        """Wait (up to ``timeout`` seconds) until the provider has a URL or failed; the tunnel's info."""
        changed = asyncio.Event()
        stop = self.subscribe(lambda info: changed.set() if info.name == tunnel.name else None)
        deadline = time.monotonic() + timeout
        try:
            while (status := tunnel.info().via) is not None and status.state not in ("online", "failed"):
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    break
        finally:
            stop()
        return tunnel.info()

    def rules(self, name: str) -> tuple[Rule, ...]:
        """The rules of tunnel ``name``. Raises NotFoundError."""
        return self._tunnel(name).config.rules

    def add_rule(self, name: str, table: dict[str, Any], *, first: bool = True) -> Rule:
        """Parse one rule (a table as in devtunnel.toml) and add it to tunnel ``name``, before
        its other rules (``first``, what a drill wants) or after them; returns it as numbered.

        Raises:
            NotFoundError, RulesError, TunnelError (a relay that does not enforce rules).
        """
        tunnel = self._tunnel(name)
        (rule,) = parse_rules([table], "the new rule")
        rules = (rule, *tunnel.config.rules) if first else (*tunnel.config.rules, rule)
        numbered = renumbered(rules)
        tunnel.set_rules(numbered)
        return numbered[0] if first else numbered[-1]

    def remove_rule(self, name: str, index: int) -> None:
        """Remove rule number ``index`` of tunnel ``name`` (the others are renumbered).

        Raises:
            NotFoundError: no such tunnel or rule.
        """
        tunnel = self._tunnel(name)
        rules = tunnel.config.rules
        if not 1 <= index <= len(rules):
            raise NotFoundError(f"tunnel {name!r} has no rule {index} (it has {len(rules)})")
        tunnel.set_rules(renumbered(rules[: index - 1] + rules[index:]))

    def _tunnel(self, name: str) -> Tunnel:
        tunnel = self._tunnels.get(name)
        if tunnel is None:
            raise NotFoundError(f"no tunnel named {name!r}")
        return tunnel

    async def stop_tunnel(self, name: str) -> None:
        """Stop and forget a tunnel. Raises NotFoundError."""
        tunnel = self._tunnels.pop(name, None)
        if tunnel is None:
            raise NotFoundError(f"no tunnel named {name!r}")
        await tunnel.stop()

    async def restart_tunnel(self, name: str) -> None:
        """Reconnect a tunnel now (resetting its backoff). Raises NotFoundError."""
        tunnel = self._tunnels.get(name)
        if tunnel is None:
            raise NotFoundError(f"no tunnel named {name!r}")
        await tunnel.restart()

    def app_log(self, name: str) -> LogRing:
        """The output of the app tunnel ``name`` runs. Raises NotFoundError (no tunnel, or no app)."""
        tunnel = self._tunnels.get(name)
        if tunnel is None:
            raise NotFoundError(f"no tunnel named {name!r}")
        if tunnel.app is None:
            raise NotFoundError(f"tunnel {name!r} runs no app (start it with --run, or run = ... in devtunnel.toml)")
        return tunnel.app.log

    def tunnels(self) -> list[TunnelInfo]:
        """Every tunnel, in the order they were started."""
        return [t.info() for t in self._tunnels.values()]

    def subscribe(self, callback: TunnelListener) -> Callable[[], None]:
        """Call ``callback(info)`` on every tunnel state change; returns the unsubscribe function."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def subscribe_exchanges(self, callback: ExchangeListener) -> Callable[[], None]:
        """Call ``callback(exchange)`` when an exchange ends; returns the unsubscribe function."""
        self._exchange_listeners.append(callback)
        return lambda: self._exchange_listeners.remove(callback) if callback in self._exchange_listeners else None

    # -- internals -------------------------------------------------------------------------
    async def _embedded_url(self, name: str | None) -> str:
        """The embedded relay's agent URL, starting the relay first if needed.

        The relay listens on ``embedded_port`` when one was given (an error if taken), else on
        the port it had last time for tunnel ``name`` if that is free, else on any free port;
        the port is remembered for ``name``.
        """
        key = validate_name(name) if name else None
        if self.embedded_relay is None:
            remembered = self.ports.get("relay", key) if self.ports is not None and key else None
            port = self.embedded_port or remembered or 0
            try:
                relay = await self._start_relay(port)
            except ConfigError:
                if self.embedded_port or not remembered:
                    raise
                relay = await self._start_relay(0)
                log.warning("port %d, which tunnel %s had last time, is taken: its URL moves to port %d",
                            remembered, key, relay.port)
            self.embedded_relay = relay
        if self.ports is not None and key:
            self.ports.put("relay", key, self.embedded_relay.port)
        return f"ws://127.0.0.1:{self.embedded_relay.port}{CONNECT_PATH}"

    async def _start_relay(self, port: int) -> Any:
        from devtunnel.relay.server import Relay  # the relay pulls in uvicorn
        from devtunnel.relay.settings import RelaySettings

        relay = Relay(RelaySettings(host="127.0.0.1", port=port, domain="localhost", embedded=True))
        try:
            await relay.start()
        except OSError as exc:
            raise ConfigError(f"cannot start the embedded relay on port {port}: {exc}") from exc
        return relay

    def _changed(self, info: TunnelInfo) -> None:
        for listener in list(self._listeners):
            try:
                listener(info)
            except Exception:  # a broken listener must not break the tunnel
                log.exception("tunnel listener failed")

    def _sink(self, exchange: Exchange, final: bool) -> None:
        if self.recorder is not None:
            self.recorder.submit(exchange)
        if final:
            for listener in list(self._exchange_listeners):
                try:
                    listener(exchange)
                except Exception:  # a broken listener must not break forwarding
                    log.exception("exchange listener failed")
