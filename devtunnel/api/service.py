"""What the agent API uses of the agent service, and nothing more.

The routes are written against :class:`Service`, so the type checker says when a route reaches
for something the service does not offer, and this file lists everything the API needs of the
agent. ``AgentService`` is the one implementation (checked at the bottom of this file).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import HTTPConnection

from devtunnel.agent.children import LogRing
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.hold import HoldGate
from devtunnel.agent.info import TunnelInfo
from devtunnel.agent.recording import BodyBudget
from devtunnel.capture.model import Exchange
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.store import Store
from devtunnel.rules import Rule
from devtunnel.webhooks.context import WebhookContext

__all__ = ["Service", "service_of"]


class Service(Protocol):
    """The agent service as the API sees it: its tunnels, their rules and app logs, and the capture store."""

    @property
    def store(self) -> Store | None:
        """The capture store the API reads (None when recording is off)."""

    @property
    def recorder(self) -> Recorder | None:
        """Where replays are recorded, and whose commits ``/api/events`` announces (None when recording is off)."""

    @property
    def budget(self) -> BodyBudget:
        """The bytes of bodies the captures in flight keep now (``used``), and may keep (``limit``)."""

    @property
    def webhooks(self) -> WebhookContext | None:
        """The webhook secrets replays are signed afresh with (None when there are none)."""

    @property
    def started_at(self) -> float:
        """When the agent started: what its tunnels recorded has later ids."""

    def tunnels(self) -> list[TunnelInfo]:
        """Every running tunnel."""

    def ran(self) -> list[str]:
        """The name of every tunnel the agent started, running or not: the captures of the
        agent's own (``GET /api/requests/http``'s default scope) are recorded under these."""

    def tell_exchange(self, exchange: Exchange) -> None:
        """Tell the agent's exchange listeners (its headless log) of a finished exchange: a replay."""

    def add_hint(self, name: str, key: str, line: str) -> TunnelInfo:
        """Say ``line`` once (per ``key``) about tunnel ``name`` in the log and its ``hints``; its info."""

    async def start_tunnel(self, config: TunnelConfig) -> TunnelInfo:
        """Start a tunnel; returns it once it is first online (or has failed)."""

    async def restart_tunnel(self, name: str) -> TunnelInfo:
        """Reconnect the tunnel ``name`` and start its app again, settings kept, or start again one
        ``stop_tunnel`` stopped (NotFoundError when there is none)."""

    async def stop_tunnel(self, name: str) -> None:
        """Stop the tunnel ``name`` (NotFoundError when there is none)."""

    def subscribe(self, callback: Callable[[TunnelInfo], None]) -> Callable[[], None]:
        """Call ``callback`` with a tunnel each time it changes; returns the unsubscribe function."""

    def app_log(self, name: str) -> LogRing:
        """The output of the app tunnel ``name`` runs (NotFoundError when there is none)."""

    def hold_gate(self, name: str) -> HoldGate | None:
        """The gate where requests to tunnel ``name``'s target wait while its app is down (``--hold``,
        ``--run``), or None (no such tunnel, or one without a gate)."""

    def rules(self, name: str) -> tuple[Rule, ...]:
        """The rules of tunnel ``name`` at the relay."""

    def add_rule(self, name: str, table: dict[str, Any], *, first: bool = ...) -> Rule:
        """Add a rule (a table as in devtunnel.toml) to tunnel ``name``; returns it as numbered."""

    def remove_rule(self, name: str, index: int) -> None:
        """Remove rule number ``index`` of tunnel ``name``."""


def service_of(connection: HTTPConnection) -> Service:
    """The service the app was created over (``create_app``), for a request or a WebSocket."""
    service: Service = connection.app.state.service
    return service


if TYPE_CHECKING:
    from devtunnel.agent.service import AgentService

    def _agent_service_is_a_service(agent: AgentService) -> Service:
        return agent  # a type error here: AgentService no longer offers what the API uses
