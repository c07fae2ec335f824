"""What a tunnel says about itself: its ``TunnelState`` and the ``TunnelInfo`` snapshots that
subscribers (the agent API, ``devtunnel http``'s output, the inspector) receive."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.via_runner import ViaStatus

__all__ = ["TunnelState", "TunnelInfo", "TunnelListener"]


class TunnelState(str, enum.Enum):
    """Where a tunnel is in its life."""

    STARTING = "starting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    """The relay refused the tunnel for a reason retrying cannot fix (token, name)."""
    STOPPED = "stopped"


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
    waiting: int = 0
    """Requests held right now for the tunnel's app or target to answer (``--hold``)."""
    hints: tuple[str, ...] = ()
    """What the agent's log said to do about a dev server refusing the tunnel, in the order
    said (``devservers``: a Host or Origin refused, a target one address away)."""


TunnelListener = Callable[[TunnelInfo], None]
"""Called with a tunnel's ``TunnelInfo`` on every change of the tunnel."""
