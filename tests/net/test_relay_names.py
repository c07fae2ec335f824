"""Who gets a tunnel name at the relay: a healthy holder is never displaced; the same agent
coming back (same instance id) takes its name at once; a holder that does not answer a ping
makes way. Real relay, real agent WebSockets on loopback."""

from __future__ import annotations

import asyncio

import httpx

from devtunnel.protocol.connection import ErrorCode
from devtunnel.protocol.events import GoAway, Welcome
from tests.helpers import async_wait_for
from tests.net._relay_agent import TOKEN, ScriptedAgent, connect_agent, running_relay

OURS = "A" * 8 + "instance-of-the-victim"
THEIRS = "B" * 8 + "instance-of-the-rogue"


async def get(port: int, name: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        return await client.get(f"http://127.0.0.1:{port}/check", headers={"Host": f"{name}.localhost"})


async def test_rogue_hello_with_the_same_token_and_name_is_refused_and_the_holder_keeps_serving() -> None:
    async with running_relay() as relay:
        victim = await connect_agent(relay, "shop", instance=OURS)
        try:
            for instance in (None, THEIRS):  # an old agent without an instance id, and a new one
                rogue = ScriptedAgent(relay.port, token=TOKEN, name="shop", instance=instance)
                result = await rogue.connect()
                await rogue.close()
                assert isinstance(result, GoAway), result
                assert result.code == ErrorCode.NAME_IN_USE
                assert "'shop' is in use by another agent that is online" in result.reason
            assert not victim.closed.is_set()
            assert relay.tunnels == ["shop"]
            response = await get(relay.port, "shop")
            assert response.status_code == 200 and response.text.startswith("GET /check")
            assert victim.requests  # the victim answered, through its original connection
        finally:
            await victim.close()


async def test_the_same_instance_takes_its_name_back_at_once_from_its_stale_connection() -> None:
    # A liveness check would take a minute here: only the instance id can hand the name over.
    async with running_relay(name_check_timeout=60) as relay:
        stale = await connect_agent(relay, "shop", instance=OURS)
        stale.stop_reading()  # its network went away: the relay still holds the connection
        try:
            back = ScriptedAgent(relay.port, token=TOKEN, name="shop", instance=OURS, handler=None)
            result = await asyncio.wait_for(back.connect(), 10)
            assert isinstance(result, Welcome), result
            assert relay.tunnels == ["shop"]
            back.handler = _answer_back
            response = await get(relay.port, "shop")
            assert (response.status_code, response.text) == (200, "back")
        finally:
            stale.abort()
            await stale.close()
            await back.close()


async def _answer_back(request) -> None:  # type: ignore[no-untyped-def]
    request.respond(200, [(b"Content-Length", b"4")])
    await request.send(b"back", end=True)


async def test_a_holder_that_does_not_answer_the_ping_is_displaced() -> None:
    async with running_relay(name_check_timeout=0.3) as relay:
        hung = await connect_agent(relay, "shop", instance=OURS)
        hung.stop_reading()
        newcomer = ScriptedAgent(relay.port, token=TOKEN, name="shop", instance=None, handler=_answer_back)
        try:
            result = await newcomer.connect()
            assert isinstance(result, Welcome), result
            assert relay.tunnels == ["shop"]
            response = await get(relay.port, "shop")
            assert (response.status_code, response.text) == (200, "back")
            assert not hung.requests
        finally:
            hung.abort()
            await hung.close()
            await newcomer.close()


async def test_a_holder_that_reads_again_within_the_check_keeps_its_name() -> None:
    # The check is a real ping: an agent that reads again in time keeps its name.
    async with running_relay(name_check_timeout=5) as relay:
        slow = await connect_agent(relay, "shop", instance=OURS)
        slow.stop_reading()
        rogue = ScriptedAgent(relay.port, token=TOKEN, name="shop", instance=THEIRS)
        connecting = asyncio.ensure_future(rogue.connect())
        await async_wait_for(lambda: relay.connections >= 2, what="the rogue's connection")
        assert slow.ws is not None
        slow.ws.transport.resume_reading()  # the holder reads (and answers) again within the check
        result = await connecting
        await rogue.close()
        try:
            assert isinstance(result, GoAway) and result.code == ErrorCode.NAME_IN_USE, result
            assert relay.tunnels == ["shop"] and not slow.closed.is_set()
        finally:
            await slow.close()


async def test_a_name_held_under_another_token_is_refused_without_asking_the_holder() -> None:
    async with running_relay(name_check_timeout=60) as relay:
        holder = await connect_agent(relay, "shop", instance=OURS)
        holder.stop_reading()  # even a holder that would fail the check keeps a name of its token
        try:
            other = ScriptedAgent(relay.port, token="other-token", name="shop", instance=OURS)
            result = await other.connect()
            await other.close()
            assert isinstance(result, GoAway) and result.code == ErrorCode.NAME_TAKEN, result
            assert relay.tunnels == ["shop"]
        finally:
            holder.abort()
            await holder.close()
