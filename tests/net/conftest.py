"""Fixtures shared by the relay tests: a relay on a free port, and a scripted agent on it.

A module that needs other settings defines its own ``relay`` (or ``agent``), which wins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from devtunnel.relay.server import Relay
from tests.net._relay_agent import ScriptedAgent, connect_agent, running_relay


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    """A relay with the default settings, accepting ``TOKEN``."""
    async with running_relay() as r:
        yield r


@pytest.fixture
async def agent(relay: Relay) -> AsyncIterator[ScriptedAgent]:
    """An agent holding tunnel ``demo`` that answers every request with ``echo``."""
    a = await connect_agent(relay)
    yield a
    await a.close()
