"""The agent: tunnels to a relay, each forwarding its streams to a local service.

``AgentService`` holds any number of tunnels (``AgentTunnel``, ``tunnel.py``: each keeps its own
connection to its relay and reconnects by itself), records their exchanges and tells
subscribers what changed. With no relay configured, the service runs an embedded relay on
127.0.0.1 in the same event loop; it listens on the port it had last time for the same tunnel
name when that port is free.

A tunnel with a provider (``TunnelConfig.via``: cloudflared, an ssh service or your own ssh
server) uses the embedded relay too: the provider forwards public traffic to a relay port pinned
to the tunnel (``via_runner.py``), and its URL is the tunnel's public URL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from devtunnel.capture.model import DEFAULT_BODY_CAP, Exchange
from devtunnel.errors import ConfigError, NameTakenError, NotFoundError
from devtunnel.agent.children import LogRing
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.devservers import MAX_HINTS, STATUSES, refusal_hint, target_hint
from devtunnel.values.relay_url import CONNECT_PATH, relay_connect_url, same_relay
from devtunnel.agent.forward import DEFAULT_HEAD_TIMEOUT
from devtunnel.agent.hold import HoldGate
from devtunnel.agent.info import TunnelInfo, TunnelListener, TunnelState
from devtunnel.values.names import no_tunnel_named, validate_name
from devtunnel.values.target import parse_target
from devtunnel.agent.port_memory import MOVED, RELAY, PortMemory
from devtunnel.agent.recording import DEFAULT_BODY_BUDGET, BodyBudget
from devtunnel.rules import Rule, parse_rules, renumbered
from devtunnel.agent.tunnel import AgentTunnel, Backoff
from devtunnel.agent.via_runner import ViaRunner
from devtunnel.via import Via
from devtunnel.values.terminal import quoted

__all__ = ["AgentService"]

log = logging.getLogger("devtunnel.agent")

ExchangeListener = Callable[[Exchange], None]

RAN_KEPT = 1000
"""Names of tunnels started ``AgentService.ran`` keeps at most (the oldest are forgotten first)."""


class AgentService:
    """Runs tunnels, records their exchanges and tells subscribers what changed.

    Args:
        store: the capture store the API reads (may be None).
        recorder: where exchanges are recorded; None records nothing.
        body_cap: bytes of each body to record.
        body_budget: bytes of bodies all the exchanges in flight keep together, at most (never
            less than ``body_cap``): past it, their records are cut (``recording.BodyBudget``).
        embedded_port: port of the embedded relay (0: any free port), used by tunnels with no relay.
        allowed_hosts: more Hosts the embedded relay answers (``RelaySettings.allowed_hosts``).
        relay: the relay for tunnels whose config names none (None: the embedded relay).
        token: the token for ``relay``.
        relay_ca: a PEM file of a CA to trust for ``relay``'s certificate (``--relay-ca``).
        insecure: every tunnel leaves its https target's certificate unverified (``agent.insecure``),
            those started through the API too.
        head_timeout: seconds a local service has to answer a request.
        webhooks: the webhook providers and secrets read at start (a ``WebhookContext``), which
            the recorder judges deliveries with; None when there are none.
        ports: where the embedded relay's port is remembered per tunnel name (None: nowhere).
        remember_names: a tunnel started without a name gets the one its target had last time
            (in ``ports``); else a new random one.
        via_env: the environment providers run in (default: this process's).
    """

    def __init__(
        self,
        *,
        store: Any = None,
        recorder: Any = None,
        webhooks: Any = None,
        body_cap: int = DEFAULT_BODY_CAP,
        body_budget: int = DEFAULT_BODY_BUDGET,
        embedded_port: int = 0,
        allowed_hosts: Sequence[str] = (),
        relay: str | None = None,
        token: str | None = None,
        relay_ca: str | None = None,
        insecure: bool = False,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
        backoff: Backoff | None = None,
        ports: PortMemory | None = None,
        remember_names: bool = True,
        via_env: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.webhooks = webhooks
        self.body_cap = body_cap if recorder is not None else 0
        self.budget = BodyBudget(max(body_budget, self.body_cap))
        """Shared by the captures of every tunnel that records: ``budget.used`` is what they keep now."""
        self.embedded_port = embedded_port
        self.allowed_hosts = tuple(allowed_hosts)
        self.default_relay = relay
        self.default_token = token
        self.default_relay_ca = relay_ca
        self.default_insecure = insecure
        self.head_timeout = head_timeout
        self.embedded_relay: Any = None
        self.ports = ports
        self.remember_names = remember_names
        self.via_env = via_env
        self.started_at = time.time()
        """When the service was made: every exchange its tunnels record has a later id (``ran``)."""
        self._ran: dict[str, None] = {}
        self._backoff = backoff
        self._tunnels: dict[str, AgentTunnel] = {}
        self._stopped: dict[str, TunnelConfig] = {}
        """Tunnels stopped here (``stop_tunnel``) by name, as they last ran: ``restart_tunnel``
        starts one again with every setting kept (the app of ``up``, its hold, its rules)."""
        self._listeners: list[TunnelListener] = []
        self._exchange_listeners: list[ExchangeListener] = []
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Get ready; the embedded relay starts with the first tunnel that needs it."""

    async def stop(self) -> None:
        """Stop every tunnel, all at once, then the embedded relay.

        Each tunnel lets its open requests finish for up to ``tunnel.LEAVE_GRACE`` seconds
        before it leaves; stopped together, they wait those seconds once, not once each. The
        relay stops even when a tunnel's stop fails; the first failure is raised after it.
        """
        outcomes = await asyncio.gather(*(t.stop() for t in list(self._tunnels.values())), return_exceptions=True)
        if self.embedded_relay is not None:
            relay, self.embedded_relay = self.embedded_relay, None
            await relay.stop()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def hurry(self) -> None:
        """Cut short a ``stop`` under way: tunnels stop waiting for their running requests."""
        for tunnel in list(self._tunnels.values()):
            tunnel.hurry()

    async def start_tunnel(self, config: TunnelConfig, *, via_wait: float = 15.0) -> TunnelInfo:
        """Start a tunnel; returns when it is online or is retrying an unreachable relay.

        With a provider (``config.via``), waits up to ``via_wait`` seconds more for its public
        URL (or its failure); the provider goes on starting in the background after that.

        Raises:
            ConfigError: the target, name or relay URL is invalid, or the name is in use here.
            AuthError, NameTakenError: the relay refused the tunnel (it is not kept).
        """
        provider = config.provider
        if self.default_insecure and not config.insecure:
            config = replace(config, insecure=True)
        # The agent's token goes to the agent's relay only, however a tunnel names it.
        if self.default_relay is not None and provider is None and (
                config.relay is None or same_relay(config.relay, self.default_relay)):
            config = replace(config, relay=config.relay or self.default_relay,
                             token=config.token or self.default_token,
                             relay_ca=config.relay_ca or self.default_relay_ca)
        # An unnamed tunnel keeps the name its target had last time (and, on the embedded relay,
        # the relay's port with it): the same URL, run after run. A relay that gives that name
        # to someone else now gets a new one asked for instead.
        remember = not config.name and self.ports is not None and self.remember_names
        try:
            return await self._start(config, provider, via_wait, remember=remember)
        except NameTakenError as exc:
            if not remember:
                raise
            # Its first sentence: the advice after it (stop the other agent, pick a name) is for a name asked for.
            log.warning("%s: the name this target had last time is not free; asking for a new one this run",
                        str(exc).split(". ", 1)[0])
            return await self._start(config, provider, via_wait, remember=False)

    async def _start(self, config: TunnelConfig, provider: Via | None, via_wait: float, *, remember: bool) -> TunnelInfo:
        async with self._lock:
            name = config.name
            if remember and self.ports is not None:
                running = {key for key, t in self._tunnels.items() if t.state is not TunnelState.FAILED}
                name = self.ports.name_for(parse_target(config.target).url, taken=running)
            relay_url = relay_connect_url(config.relay) if config.relay else await self._embedded_url(name)
            tunnel = AgentTunnel(
                config,
                name=name,
                relay_url=relay_url,
                sink=self._sink if config.record else self._sink_unrecorded,
                on_change=self._changed,
                body_cap=self.body_cap if config.record else 0,
                budget=self.budget if config.record else None,
                live=self.recorder is not None and config.record,
                backoff=self._backoff,
                head_timeout=self.head_timeout,
            )
            key = tunnel.name
            old = self._tunnels.get(key)
            if old is not None and old.state is not TunnelState.FAILED:
                raise ConfigError(f"a tunnel named {quoted(key)} is already running")
            if old is not None:  # a failed tunnel makes way for a new try under its name
                await old.stop()
            self._stopped.pop(key, None)  # started anew: its old settings are forgotten
            self._tunnels[key] = tunnel
            self._ran.pop(key, None)
            self._ran[key] = None  # the newest last
            while len(self._ran) > RAN_KEPT:
                del self._ran[next(iter(self._ran))]
            if provider is not None:
                # An unnamed tunnel is known by its target (its name may be new this run).
                tunnel.provider = ViaRunner(provider, key, self.embedded_relay, on_change=tunnel.notify,
                                            env=self.via_env, memory=self.ports,
                                            remember_as=None if config.name else f"to {tunnel.target.url}")
        try:
            info = await tunnel.start()
            if tunnel.provider is not None and tunnel.state is TunnelState.ONLINE:
                await tunnel.provider.start()
                info = await self._first_url(tunnel, via_wait)
        except BaseException:
            self._tunnels.pop(key, None)
            await tunnel.stop()
            raise
        return info

    async def _first_url(self, tunnel: AgentTunnel, timeout: float) -> TunnelInfo:
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
        (rule,) = parse_rules([table], "the new rule", files=False)
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
            raise NotFoundError(f"tunnel {quoted(name)} has no rule {index} (it has {len(rules)})")
        tunnel.set_rules(renumbered(rules[: index - 1] + rules[index:]))

    def _missing(self, name: str) -> NotFoundError:
        """``no tunnel named 'nope' (running: api, web)``: the names a caller may have meant."""
        return NotFoundError(no_tunnel_named(name, list(self._tunnels)))

    def _tunnel(self, name: str) -> AgentTunnel:
        tunnel = self._tunnels.get(name)
        if tunnel is None:
            raise self._missing(name)
        return tunnel

    async def stop_tunnel(self, name: str) -> None:
        """Stop a tunnel; it is listed no more (ngrok's ``DELETE``), but ``restart_tunnel`` can
        start it again as it ran. Raises NotFoundError."""
        tunnel = self._tunnels.pop(name, None)
        if tunnel is None:
            raise self._missing(name)
        # Under the name it had (a random one too), with the rules it was given since it started.
        self._stopped[name] = replace(tunnel.config, name=name)
        await tunnel.stop()

    async def restart_tunnel(self, name: str) -> TunnelInfo:
        """Reconnect a tunnel now (resetting its backoff) and start the app it runs again, every
        setting kept (its app, hold, rules ...); a tunnel stopped here (``stop_tunnel``) is
        started again so. Its info. Raises NotFoundError, or ``start_tunnel``'s errors."""
        tunnel = self._tunnels.get(name)
        if tunnel is None and name in self._stopped:
            return await self.start_tunnel(self._stopped[name])
        if tunnel is None:
            raise self._missing(name)
        await tunnel.restart()
        if tunnel.app is not None:
            await tunnel.app.restart()
        return tunnel.info()

    def app_log(self, name: str) -> LogRing:
        """The output of the app tunnel ``name`` runs. Raises NotFoundError (no tunnel, or no app)."""
        tunnel = self._tunnels.get(name)
        if tunnel is None:
            raise self._missing(name)
        if tunnel.app is None:
            raise NotFoundError(f"tunnel {quoted(name)} runs no app (start it with --run, or run = ... in devtunnel.toml)")
        return tunnel.app.log

    def hold_gate(self, name: str) -> HoldGate | None:
        """The gate tunnel ``name``'s requests wait at while its app is down (``hold.py``), or None."""
        tunnel = self._tunnels.get(name)
        return tunnel.forwarder.gate if tunnel is not None else None

    def tunnels(self) -> list[TunnelInfo]:
        """Every tunnel, in the order they were started."""
        return [t.info() for t in self._tunnels.values()]

    def ran(self) -> list[str]:
        """The name of every tunnel started here (the newest ``RAN_KEPT``), running, failed or
        stopped since: what this agent recorded is under these names, with ids from ``started_at``."""
        return list(self._ran)

    def records(self, exchange: Exchange) -> bool:
        """Whether ``exchange``, told to the exchange listeners, is recorded (``devtunnel show``
        finds it): recording is on and its tunnel records (``TunnelConfig.record``), or it is a
        replay (replays are recorded where recording is on)."""
        if self.recorder is None:
            return False
        tunnel = self._tunnels.get(exchange.tunnel)
        config = tunnel.config if tunnel is not None else self._stopped.get(exchange.tunnel)
        return exchange.replay_of is not None or config is None or config.record

    def tell_exchange(self, exchange: Exchange) -> None:
        """Tell the exchange listeners (the headless log, ``subscribe_exchanges``) of a finished
        exchange: the tunnels' own, and a replay the agent API made."""
        for listener in list(self._exchange_listeners):
            try:
                listener(exchange)
            except Exception:  # a broken listener must not break forwarding
                log.exception("exchange listener failed")

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

        The relay listens on ``embedded_port`` when one was given (an error if taken), which
        becomes tunnel ``name``'s port; else on ``name``'s port if that is free, else on the one
        it moved to last time its port was taken, else on any free port. A name without a port
        gets the one it runs on; a run that moves keeps the name's port for later runs and
        remembers where it moved as the second choice (``PortMemory.relay_ports``).
        """
        key = validate_name(name) if name else None
        choices = self.ports.relay_ports(key) if self.ports is not None and key else []
        if self.embedded_relay is None:
            self.embedded_relay = await (self._start_relay(self.embedded_port) if self.embedded_port
                                         else self._start_moving(key, choices))
        # The user's port becomes the name's; a port the name has stays its own, though another
        # tunnel's relay or a move puts this run elsewhere.
        if self.ports is not None and key and (self.embedded_port or not choices):
            self.ports.put(RELAY, key, self.embedded_relay.port)
        return f"ws://127.0.0.1:{self.embedded_relay.port}{CONNECT_PATH}"

    async def _start_moving(self, key: str | None, choices: list[int]) -> Any:
        """The embedded relay for tunnel ``key``, on the first of its ``choices`` that is free,
        else on any free port, which becomes its second choice (``MOVED``)."""
        for port in choices:
            try:
                relay = await self._start_relay(port)
            except ConfigError:
                continue
            break
        else:
            relay = await self._start_relay(0)
            if choices and self.ports is not None and key:
                self.ports.put(MOVED, key, relay.port)
        if choices and relay.port != choices[0]:
            both = relay.port not in choices and len(choices) == 2  # its second choice was taken too
            log.warning("%s of tunnel %s %s taken: this run's URL is on port %d, %s; %s keeps port %d for later runs",
                        "ports {} and {}".format(*choices) if both else f"port {choices[0]}", key,
                        "are" if both else "is", relay.port,
                        "its second choice" if relay.port in choices else "remembered as its second choice",
                        key, choices[0])
        return relay

    async def _start_relay(self, port: int) -> Any:
        from devtunnel.relay.server import Relay  # the relay pulls in uvicorn
        from devtunnel.relay.settings import RelaySettings

        relay = Relay(RelaySettings(host="127.0.0.1", port=port, domain="localhost", embedded=True,
                                    allowed_hosts=self.allowed_hosts))
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
        self._sink_unrecorded(exchange, final)

    def _sink_unrecorded(self, exchange: Exchange, final: bool) -> None:
        """A tunnel that records nothing (``TunnelConfig.record``): its exchanges are still
        told to the listeners (the headless log line, the API's events)."""
        if final:
            response = exchange.response
            if exchange.error is not None or (response is not None and (response.status in STATUSES or exchange.websocket)):
                self._hint(exchange)
            self.tell_exchange(exchange)

    def _hint(self, exchange: Exchange) -> None:
        """Say once per tunnel what to do about a known dev server refusing the tunnel's Host
        or Origin, or a target one address away (``devservers``): the log showed a bare 403 or 502.

        Said whether or not the tunnel records (``ExchangeCapture``, with no ``live``), and at most
        ``MAX_HINTS`` times a tunnel: a key may quote an Origin a client chose."""
        tunnel = self._tunnels.get(exchange.tunnel)
        if tunnel is None:
            return
        hint = target_hint(exchange) or refusal_hint(exchange, rewrite=tunnel.config.host_header == "rewrite")
        if hint is not None:
            self._add_hint(tunnel, hint.key, hint.line)

    def add_hint(self, name: str, key: str, line: str) -> TunnelInfo:
        """Say ``line`` about tunnel ``name`` once (per ``key``) in the log and its ``hints``, as
        the dev-server hints are; its info. Raises NotFoundError."""
        tunnel = self._tunnel(name)
        self._add_hint(tunnel, key, line)
        return tunnel.info()

    def _add_hint(self, tunnel: AgentTunnel, key: str, line: str) -> None:
        if key not in tunnel.hinted and len(tunnel.hints) < MAX_HINTS:
            tunnel.hinted.add(key)
            tunnel.hints.append(line)
            log.warning("tunnel %s: %s", tunnel.name, line)
            if tunnel.app is not None:  # and in the app's log (``devtunnel logs``, l in the inspector)
                tunnel.app.log.add("devtunnel", line)
            tunnel.notify()  # and in /api/tunnels, /api/events and the inspector's tunnels panel
