"""One tunnel of the agent: a target, a relay, and the loop that keeps them connected.

An ``AgentTunnel`` keeps one WebSocket to its relay (``/_devtunnel/connect``), a ``Session`` at a time,
and reconnects by itself when it drops, with exponential backoff and full jitter capped at
``MAX_BACKOFF``, asking for the same name again with the tunnel's instance id, so the relay
hands the name straight back. A refused token, a name held by another token, a token at the
relay's limit of names or connections, or a name held by another live agent on the first
connection ends the tunnel in ``FAILED`` without retrying; a tunnel that was online keeps
retrying while another agent holds its name.

The tunnel owns what outlives a connection: its ``Forwarder`` (and one per ``forward`` rule),
the app it runs (``app_runner.py``), its public-URL provider (``via_runner.py``, set by the
service) and the count of requests it carried.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from devtunnel import __version__
from devtunnel.capture.model import DEFAULT_BODY_CAP, Exchange
from devtunnel.errors import (
    AuthError,
    ConfigError,
    NameInUseError,
    NameTakenError,
    RelayUnreachableError,
    TunnelError,
)
from devtunnel.agent.socket import MAX_FRAME, TunnelSocket
from devtunnel.agent.app_runner import AppRunner
from devtunnel.agent.config import TunnelConfig, refuse_address_rules
from devtunnel.agent.forward import DEFAULT_HEAD_TIMEOUT, Forwarder
from devtunnel.agent.hold import HoldGate
from devtunnel.agent.info import TunnelInfo, TunnelListener, TunnelState
from devtunnel.agent.relay_signals import older_path_reading, relay_text
from devtunnel.values.names import random_name, validate_name
from devtunnel.agent.recording import BodyBudget, LiveSnapshots
from devtunnel.agent.session import HANDSHAKE_TIMEOUT, LEAVE_GRACE, Session
from devtunnel.values.target import Target, parse_target
from devtunnel.protocol.events import Welcome
from devtunnel.rules import Rule, rules_from_wire, rules_to_wire
from devtunnel.agent.via_runner import ViaRunner
from devtunnel.agent.ws_client import connect_here
from devtunnel.values.durations import format_duration
from devtunnel.values.terminal import quoted
from devtunnel.webhooks.base import DEFAULT_TOLERANCE

__all__ = ["AgentTunnel", "Backoff", "MAX_BACKOFF", "relay_tls_context"]

log = logging.getLogger("devtunnel.agent")

MAX_BACKOFF = 30.0
"""The longest wait between two reconnection attempts, in seconds."""
HELD_NOTICE_INTERVAL = 0.1
"""Seconds over which changes of the count of held requests are merged into one notice to the
subscribers (``TunnelInfo.waiting``): a burst of 1,000 held requests is one change, not 1,000."""


@dataclass
class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` waits ``uniform(0, min(cap, base * 2**n))``."""

    base: float = 0.5
    cap: float = MAX_BACKOFF
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (0-based) of a series of failures."""
        return self.rng.uniform(0.0, min(self.cap, self.base * (2 ** min(attempt, 32))))


def relay_tls_context(relay_ca: str | None) -> ssl.SSLContext:
    """The TLS context a ``wss://`` relay is verified with: the system's CAs, and ``relay_ca``'s
    certificates when given (a private CA, a self-signed relay).

    Raises:
        ConfigError: ``relay_ca`` cannot be read or holds no certificate.
    """
    context = ssl.create_default_context()
    if relay_ca:
        try:
            context.load_verify_locations(cafile=os.path.expanduser(relay_ca))
        except ssl.SSLError:  # (an OSError too)
            raise ConfigError(f"the relay CA file {quoted(relay_ca)} (--relay-ca, relay.ca) holds no PEM certificate"
                              " (-----BEGIN CERTIFICATE-----)") from None
        except OSError as exc:
            raise ConfigError(f"the relay CA file {quoted(relay_ca)} (--relay-ca, relay.ca) cannot be read"
                              f" ({exc.strerror or exc})") from None
    return context


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AgentTunnel:
    """One tunnel: a target, a relay, and the loop that keeps them connected.

    Args:
        config: what to forward and where to connect.
        name: the name to ask for when ``config`` names none (default: a random one).
        relay_url: the relay's WebSocket URL (``ws(s)://host:port/_devtunnel/connect``).
        sink: receives exchanges (live snapshots and final records).
        on_change: called with a ``TunnelInfo`` on every state change.
        body_cap: bytes of each body to record.
        budget: the agent's bound on the body bytes all its captures in flight keep (None: none).
        live: submit long-running exchanges once early; False for a tunnel that records nothing,
            whose captures then keep what the hints read (``ExchangeCapture``).
        backoff: the reconnection delays.
        head_timeout: seconds the local service has to answer.
    """

    def __init__(
        self,
        config: TunnelConfig,
        *,
        name: str | None = None,
        relay_url: str,
        sink: Callable[[Exchange, bool], None] | None,
        on_change: TunnelListener,
        body_cap: int = DEFAULT_BODY_CAP,
        budget: BodyBudget | None = None,
        live: bool = True,
        backoff: Backoff | None = None,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
    ) -> None:
        self.config = config
        self.target: Target = parse_target(config.target)
        name = name or config.name
        self.name = validate_name(name) if name else random_name()
        """Asked for in every HELLO and never changed: a WELCOME for another name is refused."""
        self.instance = secrets.token_urlsafe(18)
        """This tunnel's instance id, sent in every HELLO: the relay gives the name straight back
        to a connection of the same instance (after a network drop), never to another agent
        while this one answers. A credential of sorts: never logged or shown."""
        self.relay_url = relay_url
        self.sink = sink
        self.body_cap = body_cap
        self.budget = budget
        self.live = LiveSnapshots() if live else None
        self.recorded = live
        """Whether its exchanges reach the store: its own ``record`` and an agent that records (not ``--no-record``)."""
        self.requests = 0
        self.hinted: set[str] = set()
        """The dev server refusals the agent's log has said what to do about (``devservers.Hint.key``)."""
        self.hints: list[str] = []
        """Their lines, in the order said (at most ``devservers.MAX_HINTS``): ``TunnelInfo.hints``."""
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
            self.forwarder.gate.on_waiting = self._waiting_changed
        if config.hold > DEFAULT_TOLERANCE:
            log.warning("tunnel %s: --hold %s is longer than the %s a Stripe, Slack or Standard Webhooks signature"
                        " stays valid: a delivery held longer reaches the app stale, and its receiver refuses it",
                        self.name, format_duration(config.hold), format_duration(DEFAULT_TOLERANCE))
        if config.run:
            self.app = AppRunner(config.run, self.target, health=config.health, gate=self.forwarder.gate,
                                 on_change=self._app_changed, env={"DEVTUNNEL_TUNNEL": self.name})
        self._waiting_notice: asyncio.TimerHandle | None = None
        """The notice of a change of ``waiting`` due at the end of its ``HELD_NOTICE_INTERVAL``."""
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
        self._said: str | None = None
        """The reason the last reconnection line gave (None: none since the tunnel was online):
        a retry for the same reason is logged at debug level, so an outage is one line."""
        self._welcome: Welcome | None = None
        """The last connection's WELCOME (what the relay said it does)."""
        self._path_warning: str | None = None
        """What ``_warn_path_reading`` said last: a reconnection to the same relay does not say it again."""
        self.provider: ViaRunner | None = None
        """The public URL's provider (``--via``), set by the service before ``start``."""

    @property
    def state(self) -> TunnelState:
        """The current state."""
        return self._state

    @property
    def held_requests(self) -> int:
        """Request body bytes from the relay the local service has not taken yet (``Session.held``)."""
        session = self._session
        return 0 if session is None else session.held

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
            config=self.config if self.recorded or not self.config.record else replace(self.config, record=False),
            via=via,
            pool_members=self._pool_members,
            app=self.app.json(self.config.hold) if self.app is not None else None,
            waiting=self.forwarder.gate.waiting if self.forwarder.gate is not None else 0,
            hints=tuple(self.hints),
        )

    def notify(self) -> None:
        """Tell the listener the tunnel changed (its provider calls this)."""
        self._on_change(self.info())

    def _app_changed(self) -> None:
        if self._runner is not None:  # started: subscribers see the app's state with the tunnel's
            self._on_change(self.info())

    def _waiting_changed(self) -> None:
        """A request was held or let go: subscribers hear of the count once per
        ``HELD_NOTICE_INTERVAL``, whatever the number of changes within it."""
        if self._waiting_notice is None and self._runner is not None:
            self._waiting_notice = asyncio.get_running_loop().call_later(HELD_NOTICE_INTERVAL, self._tell_waiting)

    def _tell_waiting(self) -> None:
        self._waiting_notice = None
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
        if self.forwarder.gate is not None:
            self.forwarder.gate.end_holding("devtunnel is stopping")
        session = self._session
        if session is not None:
            await session.leave("the agent is stopping", grace=LEAVE_GRACE)
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
        if self._waiting_notice is not None:
            self._waiting_notice.cancel()
            self._waiting_notice = None
        self._set(TunnelState.STOPPED, error=None, next_retry_at=None)

    def hurry(self) -> None:
        """Cut short a ``stop`` that is letting requests finish: the connection closes now."""
        session = self._session
        if session is not None:
            session.hurry()

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
            RulesError: a rule by client address on a tunnel behind a provider (``refuse_address_rules``),
                or rules the relay would refuse as sent (more than ``MAX_RULES``).
        """
        if self.config.provider is not None:
            refuse_address_rules(rules, self.config.via or "")
        rules_from_wire(rules_to_wire(rules), "the tunnel's rules")  # as the relay will read them
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
            self._warn_path_reading()

    def _warn_path_reading(self) -> None:
        """Say once that the relay reads paths as older relays do, when a rule looks at them."""
        warning = older_path_reading(self._welcome, self.config.rules) if self._welcome is not None else None
        if warning is not None and warning != self._path_warning:
            log.warning("tunnel %s: %s", self.name, warning)
        self._path_warning = warning

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
            self._said = None  # asked for: the outcome of this attempt is said again
            self._set(TunnelState.RECONNECTING, error=None, next_retry_at=None)
            log.warning("tunnel %s: reconnecting now", self.name)
            return
        delay = self._backoff.delay(attempt)
        at = time.time() + delay
        self._set(TunnelState.RECONNECTING, error=reason, next_retry_at=at)
        self._settle_first()
        # One line when the tunnel goes offline and one when the reason changes, not one per
        # attempt: the API and the inspector show when the next one is.
        level = logging.DEBUG if reason == self._said else logging.WARNING
        self._said = reason
        log.log(
            level, "tunnel %s: %s; reconnecting in %.1f s (at %s)",
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
        self._session = session
        self._said = None
        was_online_before = self._public_url is not None
        self._set(
            TunnelState.ONLINE, public_url=welcome.url, error=None, next_retry_at=None, pool_members=welcome.pool
        )
        if was_online_before:
            log.warning("tunnel %s: back online at %s", self.name, welcome.url)
        self._welcome = welcome
        self._warn_path_reading()
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
            # Always verified: --insecure is for a local https target's self-signed certificate,
            # and the token must never go to a relay that is not the one named.
            options["ssl"] = relay_tls_context(self.config.relay_ca)
        if _is_loopback(parts.hostname or ""):
            options["proxy"] = None
        try:
            return await connect_here(  # type: ignore[return-value]
                self.relay_url,
                create_connection=TunnelSocket,
                compression=None,
                max_size=(None, MAX_FRAME),
                open_timeout=HANDSHAKE_TIMEOUT,
                close_timeout=2,
                user_agent_header=f"devtunnel/{__version__}",
                **options,
            )
        except InvalidURI as exc:
            raise ConfigError(f"invalid relay URL {quoted(self.relay_url)}: {exc}") from exc
        except TimeoutError as exc:
            raise RelayUnreachableError(f"the relay at {self.relay_url} did not answer in time") from exc
        except InvalidStatus as exc:
            location = exc.response.headers.get("Location")
            if 300 <= exc.response.status_code < 400 and location is not None:
                # Not followed (ws_client.py): the token goes to the relay URL given, nowhere else.
                raise RelayUnreachableError(
                    f"the relay at {self.relay_url} answered with a redirect to {quoted(relay_text(location))},"
                    " which devtunnel does not follow (the token goes only to the relay URL given):"
                    " give the relay's own URL with --relay"
                ) from exc
            raise RelayUnreachableError(f"cannot reach the relay at {self.relay_url}: {relay_text(str(exc))}") from exc
        except (OSError, InvalidHandshake) as exc:
            # (An invalid handshake quotes the relay's answer: its status line or a header.)
            hint = ""
            if isinstance(exc, ssl.SSLCertVerificationError):
                hint = ("; the relay's certificate is not trusted here: give the CA that signed it with --relay-ca PEM"
                        " ([relay] ca in devtunnel.toml), or fix the relay's certificate")
                if self.config.insecure:
                    # Older devtunnels skipped this check with it (a settings file may say so still): say what changed.
                    hint += ("; --insecure (agent.insecure) no longer skips it: it is for a local https target's"
                             " certificate")
            raise RelayUnreachableError(
                f"cannot reach the relay at {self.relay_url}: {relay_text(str(exc))}{hint}") from exc
