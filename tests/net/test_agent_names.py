"""A real agent keeps its tunnel name through network drops and rivals with the same token.

The agent reaches the relay through a TCP proxy on loopback that can drop the network
silently: the agent's side is cut, while the relay's side stays open and says nothing, as
when a laptop changes networks. The relay then still holds the agent's old connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from devtunnel.cli import EXIT_TUNNEL_REFUSED
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.info import TunnelState
from devtunnel.agent.port_memory import PortMemory
from devtunnel.agent.service import AgentService
from devtunnel.agent.tunnel import Backoff
from devtunnel.relay.server import Relay
from devtunnel.protocol.events import Welcome
from tests.helpers import async_wait_for
from tests.net._relay_agent import TOKEN, ScriptedAgent, connect_agent, running_relay
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)

FAST = Backoff(base=0.05, cap=0.2, rng=random.Random(3))


class SilentDropProxy:
    """Forwards TCP connections to the relay; ``drop()`` cuts the agent's side and leaves the
    relay's side open and silent. While ``down``, new connections are closed at once."""

    def __init__(self, relay_port: int) -> None:
        self.relay_port = relay_port
        self.down = False
        self._server: asyncio.Server | None = None
        self._links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[asyncio.Task[None]]]] = []
        self._silent: list[asyncio.StreamWriter] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.relay_port)
        tasks = [asyncio.ensure_future(_pipe(reader, up_writer)), asyncio.ensure_future(_pipe(up_reader, writer))]
        self._links.append((writer, up_writer, tasks))

    async def drop(self) -> None:
        """The network goes away: the agent sees its connection lost, the relay sees nothing."""
        links, self._links = self._links, []
        for agent_side, relay_side, tasks in links:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            agent_side.transport.abort()
            self._silent.append(relay_side)

    async def close(self) -> None:
        await self.drop()
        for relay_side in self._silent:
            relay_side.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass


@asynccontextmanager
async def agent_behind_proxy(relay: Relay) -> AsyncIterator[tuple[AgentService, SilentDropProxy]]:
    proxy = SilentDropProxy(relay.port)
    await proxy.start()
    service = AgentService(relay=f"ws://127.0.0.1:{proxy.port}", token=TOKEN, backoff=FAST)
    try:
        yield service, proxy
    finally:
        await service.stop()
        await proxy.close()


async def get(relay: Relay, name: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        return await client.get(f"http://127.0.0.1:{relay.port}/echo", headers={"Host": f"{name}.localhost"})


async def test_the_tunnel_gets_its_name_back_at_once_after_a_silent_network_drop(local: tuple[int, LocalState]) -> None:
    # Neither a liveness check (60 s) nor the relay's keepalive (60 s) can free the name in
    # time here: only the agent's instance id can.
    async with running_relay(name_check_timeout=60, ping_interval=60, ping_timeout=60) as relay:
        async with agent_behind_proxy(relay) as (service, proxy):
            info = await service.start_tunnel(TunnelConfig(target=str(local[0]), name="shop"))
            states: list[TunnelState] = []
            service.subscribe(lambda changed: states.append(changed.state))
            await proxy.drop()
            await async_wait_for(lambda: states[-1:] == [TunnelState.ONLINE], timeout=15, what="back online")
            assert states[0] is TunnelState.RECONNECTING
            assert service.tunnels()[0].public_url == info.public_url
            assert relay.tunnels == ["shop"]
            response = await get(relay, "shop")
            assert response.status_code == 200


async def test_a_tunnel_waits_while_another_agent_holds_its_name_and_gets_it_back_when_it_leaves(
    local: tuple[int, LocalState],
) -> None:
    async with running_relay(name_check_timeout=0.3, ping_interval=60, ping_timeout=60) as relay:
        async with agent_behind_proxy(relay) as (service, proxy):
            await service.start_tunnel(TunnelConfig(target=str(local[0]), name="shop"))
            proxy.down = True
            await proxy.drop()
            # A rival with the same token asks while the relay still holds the stale connection:
            # it does not answer the check, so the rival gets the name.
            rival = ScriptedAgent(relay.port, token=TOKEN, name="shop")
            assert isinstance(await rival.connect(), Welcome)
            try:
                proxy.down = False

                def refused() -> bool:
                    info = service.tunnels()[0]
                    return info.state is TunnelState.RECONNECTING and "in use" in (info.error or "")

                await async_wait_for(refused, what="the agent to be told the name is in use")
                assert "--name" in (service.tunnels()[0].error or "")
            finally:
                await rival.close()
            await async_wait_for(lambda: service.tunnels()[0].state is TunnelState.ONLINE, what="its name back")
            response = await get(relay, "shop")
            assert response.status_code == 200 and not rival.requests


async def test_the_command_refused_a_name_in_use_says_so_and_how_to_pick_another(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("DEVTUNNEL_RELAY", None)
    env.pop("DEVTUNNEL_TOKEN", None)
    async with running_relay() as relay:
        holder = await connect_agent(relay, "shop")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "devtunnel", "http", "9", "--relay", f"ws://127.0.0.1:{relay.port}",
                "--token", TOKEN, "--name", "shop", "--no-tui", "--api-port", "0", "--no-record",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == EXIT_TUNNEL_REFUSED
            errors = err.decode()
            assert "tunnel name 'shop' is in use by another agent that is online" in errors
            assert "--name OTHER-NAME" in errors and "Traceback" not in errors
            assert b"Forwarding" not in out
            assert relay.tunnels == ["shop"] and not holder.closed.is_set()
            response = await get(relay, "shop")
            assert response.status_code == 200
        finally:
            await holder.close()


@pytest.mark.parametrize("holder_token", [TOKEN, "other-token"])
async def test_an_unnamed_tunnel_asks_for_its_targets_name_again_and_for_a_new_one_when_it_is_held(
    local: tuple[int, LocalState], tmp_path: Path, caplog: pytest.LogCaptureFixture, holder_token: str,
) -> None:
    memory = PortMemory(tmp_path / "ports.json")
    target = f"http://127.0.0.1:{local[0]}"

    async def run_once(relay: Relay) -> str:
        service = AgentService(relay=f"ws://127.0.0.1:{relay.port}", token=TOKEN, backoff=FAST, ports=memory)
        try:
            info = await service.start_tunnel(TunnelConfig(target=str(local[0])))
            assert info.state is TunnelState.ONLINE
            assert (await get(relay, info.name)).status_code == 200
            return info.name
        finally:
            await service.stop()

    async with running_relay() as relay:
        first = await run_once(relay)
        assert await run_once(relay) == first, "the same public URL, run after run"
        # Someone else holds it now (an agent online with the same token, or another token's):
        # a new name this run, said in the log; the next run asks for the remembered one again.
        holder = await connect_agent(relay, first, token=holder_token)
        try:
            with caplog.at_level(logging.WARNING, logger="devtunnel.agent"):
                other = await run_once(relay)
            assert other != first and not holder.requests
            assert any("refused the tunnel name" in r.getMessage() and r.getMessage().endswith(
                ": the name this target had last time is not free; asking for a new one this run")
                and "Stop the agent" not in r.getMessage() for r in caplog.records), caplog.text
        finally:
            await holder.close()
    assert memory.name_for(target) == first
