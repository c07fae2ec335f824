"""How many tunnel names (``--tunnels-per-token``) and agent connections
(``--connections-per-token``) one agent token may hold on a relay: several developers share a
relay, one token each, and none may hold every name (nor the relay's memory and sockets with
them), nor open connections without end into one pool.

Real relay on loopback, scripted agents (``tests/net/_relay_agent.py``) and the real command.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from devtunnel.cli import EXIT_TUNNEL_REFUSED
from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import GoAway, Welcome
from tests.helpers import async_wait_for
from tests.net._relay_agent import TOKEN, ScriptedAgent, connect_agent, running_relay

OTHER = "other-token"
LAPTOP = "laptop-instance-0001"
LIMIT_SAYS = "this token holds 2 tunnels on the relay already, the most it allows one token"
CONNECTIONS_SAY = (
    "this token holds 3 agent connections on the relay already, the most it allows one token"
    " (devtunnel relay --connections-per-token): stop one of them first"
)


async def _refused(agent: ScriptedAgent) -> GoAway:
    result = await asyncio.wait_for(agent.connect(), 10)
    assert isinstance(result, GoAway), result
    return result


async def test_a_token_at_its_limit_is_refused_one_more_name_while_another_token_gets_names() -> None:
    async with running_relay(tunnels_per_token=2) as relay:
        held = [await connect_agent(relay, "one"), await connect_agent(relay, None)]
        others: list[ScriptedAgent] = []
        try:
            third = ScriptedAgent(relay.port, token=TOKEN, name="three")
            refusal = await _refused(third)
            assert refusal.code == ErrorCode.NAME_TAKEN  # final: the agent stops and says why
            assert LIMIT_SAYS in refusal.reason and "--tunnels-per-token" in refusal.reason
            random = await _refused(ScriptedAgent(relay.port, token=TOKEN, name=None))
            assert LIMIT_SAYS in random.reason
            others = [await connect_agent(relay, name, token=OTHER) for name in ("three", "four")]
            assert len(relay.tunnels) == 4 and "three" in relay.tunnels
        finally:
            for agent in held + others:
                await agent.close()


async def test_a_pool_of_three_holds_one_name() -> None:
    async with running_relay(tunnels_per_token=2) as relay:
        pool = [await connect_agent(relay, "api", pool=True) for _ in range(3)]
        agents = list(pool)
        try:
            assert relay.agents == {"api": 3}
            agents.append(await connect_agent(relay, "web"))
            refusal = await _refused(ScriptedAgent(relay.port, token=TOKEN, name="more"))
            assert LIMIT_SAYS in refusal.reason
            agents.append(await connect_agent(relay, "api", pool=True))  # the pool's name: not one more
            assert relay.agents == {"api": 4, "web": 1}
        finally:
            for agent in agents:
                await agent.close()


async def test_an_agent_coming_back_at_the_limit_takes_its_own_name_again() -> None:
    # A liveness check would take a minute here: only the instance id hands the name over.
    async with running_relay(tunnels_per_token=2, name_check_timeout=60) as relay:
        other = await connect_agent(relay, "other")
        stale = await connect_agent(relay, "shop", instance=LAPTOP)
        stale.stop_reading()  # its network went away: the relay still holds the connection
        back = ScriptedAgent(relay.port, token=TOKEN, name="shop", instance=LAPTOP)
        try:
            result = await asyncio.wait_for(back.connect(), 10)
            assert isinstance(result, Welcome), result
            assert relay.agents == {"other": 1, "shop": 1}
            # The stale connection and its successor hold one name: still no room for a third.
            refusal = await _refused(ScriptedAgent(relay.port, token=TOKEN, name="third"))
            assert LIMIT_SAYS in refusal.reason
        finally:
            stale.abort()
            for agent in (stale, back, other):
                await agent.close()


async def test_a_name_let_go_makes_room_for_a_new_one() -> None:
    async with running_relay(tunnels_per_token=2) as relay:
        first, second = await connect_agent(relay, "one"), await connect_agent(relay, "two")
        await _refused(ScriptedAgent(relay.port, token=TOKEN, name="three"))
        await first.close()
        await async_wait_for(lambda: relay.tunnels == ["two"], what="name one to be let go")
        third = await connect_agent(relay, "three")
        try:
            assert relay.tunnels == ["two", "three"]
        finally:
            await second.close()
            await third.close()


async def test_no_limit_with_0() -> None:
    async with running_relay(tunnels_per_token=0) as relay:
        agents = [await connect_agent(relay, f"n{i}") for i in range(40)]  # more than the default of 32
        try:
            assert len(relay.tunnels) == 40
        finally:
            for agent in agents:
                await agent.close()


async def test_the_command_refused_for_its_tokens_limit_says_why_in_one_line_and_exits_3(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("DEVTUNNEL_RELAY", None)
    env.pop("DEVTUNNEL_TOKEN", None)
    async with running_relay(tunnels_per_token=1) as relay:
        holder = await connect_agent(relay, "shop")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "devtunnel", "http", "9", "--relay", f"ws://127.0.0.1:{relay.port}",
                "--token", TOKEN, "--name", "cart", "--no-tui", "--api-port", "0", "--no-record",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == EXIT_TUNNEL_REFUSED
            errors = err.decode()
            assert "Traceback" not in errors
            # The log line of the tunnel, then the command's last word: the reason whole, on one line.
            assert errors.strip().splitlines()[-1] == (
                "devtunnel: the relay refused the tunnel name: this token holds 1 tunnel on the relay already,"
                " the most it allows one token (devtunnel relay --tunnels-per-token): stop one of them first"
            )
            assert b"Forwarding" not in out
            assert relay.tunnels == ["shop"] and not holder.closed.is_set()
        finally:
            await holder.close()


# -- agent connections per token ----------------------------------------------------------------
async def test_a_token_at_its_connection_limit_is_refused_one_more_until_one_closes() -> None:
    async with running_relay(connections_per_token=3) as relay:
        pool = [await connect_agent(relay, "api", pool=True) for _ in range(3)]
        others: list[ScriptedAgent] = []
        try:
            refusal = await _refused(ScriptedAgent(relay.port, token=TOKEN, name="api", pool=True))
            assert refusal.code == ErrorCode.TOO_MANY_CONNECTIONS  # final: the agent stops and says why
            assert refusal.reason == CONNECTIONS_SAY
            # The limit is the token's, over all its names, and no other token's.
            assert (await _refused(ScriptedAgent(relay.port, token=TOKEN, name="web"))).reason == CONNECTIONS_SAY
            others = [await connect_agent(relay, "api2", token=OTHER, pool=True) for _ in range(3)]
            assert relay.agents == {"api": 3, "api2": 3}
            await pool.pop().close()
            await async_wait_for(lambda: relay.agents["api"] == 2, what="the closed member to leave the pool")
            pool.append(await connect_agent(relay, "api", pool=True))
            assert relay.agents == {"api": 3, "api2": 3}
            await _refused(ScriptedAgent(relay.port, token=TOKEN, name="api", pool=True))
        finally:
            for agent in pool + others:
                await agent.close()


async def test_a_connection_dropped_for_an_unanswered_ping_gives_its_place_back() -> None:
    async with running_relay(connections_per_token=2, ping_interval=0.2, ping_timeout=0.3) as relay:
        hung, alive = await connect_agent(relay, "api", pool=True), await connect_agent(relay, "api", pool=True)
        agents = [hung, alive]
        try:
            hung.stop_reading()  # no pong: the relay drops it within ping interval + timeout
            refusal = await _refused(ScriptedAgent(relay.port, token=TOKEN, name="api", pool=True))
            assert refusal.code == ErrorCode.TOO_MANY_CONNECTIONS
            await async_wait_for(lambda: relay.agents == {"api": 1}, timeout=10, what="the hung agent to be dropped")
            agents.append(await connect_agent(relay, "api", pool=True))
            assert relay.agents == {"api": 2}
        finally:
            hung.abort()
            for agent in agents:
                await agent.close()


async def test_an_agent_coming_back_at_the_connection_limit_takes_its_own_place_again() -> None:
    async with running_relay(connections_per_token=2, name_check_timeout=60) as relay:
        other = await connect_agent(relay, "api", pool=True)
        stale = await connect_agent(relay, "api", pool=True, instance=LAPTOP)
        stale.stop_reading()  # its network went away: the relay still holds the connection
        back = ScriptedAgent(relay.port, token=TOKEN, name="api", pool=True, instance=LAPTOP)
        try:
            assert isinstance(await asyncio.wait_for(back.connect(), 10), Welcome)
            assert relay.agents == {"api": 2}
            await _refused(ScriptedAgent(relay.port, token=TOKEN, name="api", pool=True))
        finally:
            stale.abort()
            for agent in (stale, back, other):
                await agent.close()


async def test_an_agent_taking_the_name_of_a_dead_holder_at_the_connection_limit_is_let_in() -> None:
    # The holder it displaces is not counted: the token holds as many connections after as before.
    async with running_relay(connections_per_token=2, name_check_timeout=0.3, ping_interval=60, ping_timeout=60) as relay:
        other = await connect_agent(relay, "web")
        dead = await connect_agent(relay, "shop")
        dead.stop_reading()  # it cannot answer the liveness check
        newcomer = ScriptedAgent(relay.port, token=TOKEN, name="shop")
        try:
            assert isinstance(await asyncio.wait_for(newcomer.connect(), 10), Welcome)
            assert relay.agents == {"web": 1, "shop": 1}
        finally:
            dead.abort()
            for agent in (dead, newcomer, other):
                await agent.close()


async def test_no_connection_limit_with_0_nor_on_the_embedded_relay() -> None:
    async with running_relay(connections_per_token=0) as relay:
        agents = [await connect_agent(relay, "api", pool=True) for _ in range(70)]  # more than the default of 64
        try:
            assert relay.agents == {"api": 70}
        finally:
            for agent in agents:
                await agent.close()
    async with running_relay(embedded=True, connections_per_token=1) as relay:
        agents = [await connect_agent(relay, name, token="") for name in ("one", "two")]
        try:
            assert relay.agents == {"one": 1, "two": 1}
        finally:
            for agent in agents:
                await agent.close()


async def test_the_command_refused_for_its_tokens_connections_says_why_in_one_line_and_exits_3(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("DEVTUNNEL_RELAY", None)
    env.pop("DEVTUNNEL_TOKEN", None)
    async with running_relay(connections_per_token=1) as relay:
        holder = await connect_agent(relay, "api", pool=True)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "devtunnel", "http", "9", "--relay", f"ws://127.0.0.1:{relay.port}",
                "--token", TOKEN, "--name", "api", "--pool", "--no-tui", "--api-port", "0", "--no-record",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )
            # It stops at the first refusal: reconnecting cannot help.
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == EXIT_TUNNEL_REFUSED
            errors = err.decode()
            assert "Traceback" not in errors and "reconnecting" not in errors
            assert errors.strip().splitlines()[-1] == (
                "devtunnel: the relay refused the connection: this token holds 1 agent connection on the relay"
                " already, the most it allows one token (devtunnel relay --connections-per-token): stop one of them first"
            )
            assert b"Forwarding" not in out
            assert relay.agents == {"api": 1} and not holder.closed.is_set()
        finally:
            await holder.close()
