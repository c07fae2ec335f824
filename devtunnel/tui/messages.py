"""Messages that carry results of the inspector's background work back to the app."""

from __future__ import annotations

from textual.message import Message

from devtunnel.tui.backend import TunnelView
from devtunnel.tui.supervisor import AgentStatus


class ExchangesChanged(Message):
    """Exchanges were recorded or updated in the store (from ``/api/events``)."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__()
        self.ids = ids


class TunnelChanged(Message):
    """A tunnel changed state."""

    def __init__(self, tunnel: TunnelView) -> None:
        super().__init__()
        self.tunnel = tunnel


class Resync(Message):
    """Too much changed to list (or the feed was down): read the store again."""


class AgentChanged(Message):
    """The supervised agent process changed state."""

    def __init__(self, status: AgentStatus) -> None:
        super().__init__()
        self.status = status
