"""What a tunnel is asked to do: ``TunnelConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field

from devtunnel.errors import ConfigError
from devtunnel.rules import Rule, RulesError, judges_client_address
from devtunnel.values.terminal import quoted
from devtunnel.via import Via, parse_via

__all__ = ["TunnelConfig", "refuse_address_rules"]

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
        insecure: do not verify an https target's certificate (the relay's is always verified).
        relay_ca: a PEM file of the CA (or certificate) to trust for the relay's certificate,
            beside the system's: a relay with a private CA or a self-signed certificate.
        via: the public URL's provider (``cloudflared``, ``ssh:me@host`` ..., see ``devtunnel.via``);
            None or ``relay``: the relay's own URL.
        pool: share ``name`` with the other agents of the same token that ask for it with
            ``pool`` too: the relay spreads requests over them (``docs/relay.md``, "Pools").
        rules: the rules the relay enforces for this tunnel (docs/policy.md).
        run: a shell command that starts the local app; devtunnel watches and restarts it.
        health: a path on the target answering 2xx/3xx once the app is ready (default: the port accepts).
        hold: seconds a request waits for the app while it is down, instead of failing (0: no wait).
        record: False keeps this tunnel's exchanges out of the store and the inspector (ngrok's
            ``inspect: false``); they are still forwarded, counted and logged.
        table: the ``[tunnels.NAME]`` table of devtunnel.toml it was started from (``devtunnel
            http payments --name other``: ``payments``), whose webhook tables sign what is sent to
            it (``devtunnel send``); None for one started from flags or the API alone.
    """

    target: str
    name: str | None = None
    relay: str | None = None
    token: str | None = field(default=None, repr=False)  # a secret: never in a message or log
    host_header: str = "preserve"
    insecure: bool = False
    relay_ca: str | None = None
    via: str | None = None
    pool: bool = False
    rules: tuple[Rule, ...] = ()
    run: str | None = None
    health: str | None = None
    hold: float = 0.0
    record: bool = True
    table: str | None = None

    def __post_init__(self) -> None:
        if self.host_header not in ("preserve", "rewrite"):
            raise ConfigError(f"host_header must be 'preserve' or 'rewrite', not {quoted(self.host_header)}")
        if self.run is not None and not self.run.strip():
            raise ConfigError("run must be a command line, not empty text")
        if not 0 <= self.hold <= 24 * 3600:
            raise ConfigError(f"hold must be between 0 and 24h, not {self.hold:g} s")
        if self.pool and not self.name:
            raise ConfigError("a pool shares a name: give the tunnel one (--name NAME --pool)")
        if self.provider is not None and self.relay is not None:
            raise ConfigError(f"--via {self.via} carries traffic through the embedded relay: leave out --relay")
        if self.provider is not None:
            refuse_address_rules(self.rules, self.via or "")

    @property
    def provider(self) -> Via | None:
        """The parsed ``via`` when it names a provider to run (None for the relay)."""
        if self.via is None:
            return None
        via = parse_via(self.via)
        return None if via.kind == "relay" else via


def refuse_address_rules(rules: tuple[Rule, ...], via: str) -> None:
    """Refuse rules that tell clients apart by address on a tunnel whose public URL is a
    provider's that does not say the client's address (``Via.forwards_client_address``):
    every request reaches the embedded relay from the provider's program on this machine, so
    ``allow-ip 127.0.0.1`` would let every client in and any other list none.

    Raises:
        RulesError: naming the first such rule.
    """
    if parse_via(via).forwards_client_address:
        return
    for rule in rules:
        if judges_client_address(rule):
            raise RulesError(
                f"rule {rule.index} ({rule.action}{' ' + rule.match if rule.match else ''}): behind --via {via} every"
                " client is 127.0.0.1 (the provider's program), so rules by client address cannot tell them"
                " apart; use a relay of your own (--relay) for them", rule.index)
