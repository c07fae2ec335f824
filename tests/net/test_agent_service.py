"""AgentService and Tunnel against a real relay: reconnecting, refusals, several tunnels, recording."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx
import pytest

from devtunnel.capture.model import Exchange
from devtunnel.errors import AuthError, ConfigError, NameInUseError, NameTakenError, NotFoundError
from devtunnel.agent.config import TunnelConfig
from devtunnel.values.relay_url import relay_connect_url
from devtunnel.agent.info import TunnelState
from devtunnel.agent.service import AgentService
from devtunnel.agent.tunnel import MAX_BACKOFF, Backoff
from devtunnel.relay.server import Relay
from devtunnel.relay.settings import RelaySettings
from tests.helpers import async_wait_for, free_port
from tests.net.tunnel_fixtures import TOKEN, Harness, LocalState, relay_and_agent
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)

FAST = Backoff(base=0.05, cap=0.2, rng=random.Random(7))


async def get(harness: Harness, name: str, path: str = "/echo") -> httpx.Response:
    async with httpx.AsyncClient(base_url=harness.base_url, headers={"Host": harness.host(name)}, trust_env=False) as c:
        return await c.get(path)


# -- backoff and relay URLs -------------------------------------------------------------------------
def test_backoff_is_full_jitter_growing_exponentially_and_capped_at_30_seconds() -> None:
    backoff = Backoff(rng=random.Random(1))
    for attempt in range(12):
        ceiling = min(MAX_BACKOFF, 0.5 * 2**attempt)
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # the whole range is used: full jitter
    assert MAX_BACKOFF == 30.0
    assert backoff.delay(10_000) <= 30.0


@pytest.mark.parametrize(
    ("relay", "url"),
    [
        ("wss://tunnel.example.com", "wss://tunnel.example.com/_devtunnel/connect"),
        ("https://tunnel.example.com/", "wss://tunnel.example.com/_devtunnel/connect"),
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/_devtunnel/connect"),
        ("127.0.0.1:8000", "ws://127.0.0.1:8000/_devtunnel/connect"),
        ("ws://relay:9/custom/path", "ws://relay:9/custom/path"),
    ],
)
def test_relay_urls_point_at_the_agent_endpoint(relay: str, url: str) -> None:
    assert relay_connect_url(relay) == url


@pytest.mark.parametrize("relay", ["ftp://relay", "ws://", "ws://relay:99999"])
def test_bad_relay_urls_are_config_errors(relay: str) -> None:
    with pytest.raises(ConfigError, match="invalid relay URL"):
        relay_connect_url(relay)


def test_bad_host_header_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="host_header"):
        TunnelConfig(target="8080", host_header="keep")


# -- tunnels against a relay ------------------------------------------------------------------------
async def test_tunnel_reconnects_after_relay_restart_with_same_name_and_url(
    tmp_path: Path, local: tuple[int, LocalState], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    async with relay_and_agent(tmp_path, relay_port=port, backoff=FAST) as h:
        info = await h.start(str(local[0]), name="stay")
        assert (await get(h, "stay")).status_code == 200
        await h.relay.stop()
        await async_wait_for(lambda: h.service.tunnels()[0].state is TunnelState.RECONNECTING, what="reconnecting")
        reconnecting = h.service.tunnels()[0]
        assert reconnecting.next_retry_at is not None and reconnecting.error
        h.relay = Relay(RelaySettings(host="127.0.0.1", port=port, domain="localhost", tokens=[TOKEN]))
        await h.relay.start()
        await async_wait_for(lambda: h.service.tunnels()[0].state is TunnelState.ONLINE, what="back online")
        again = h.service.tunnels()[0]
        assert (again.name, again.public_url) == ("stay", info.public_url)
        assert (await get(h, "stay")).status_code == 200
    attempts = [r.getMessage() for r in caplog.records if "reconnecting in" in r.getMessage()]
    assert attempts and all("tunnel stay:" in line and "(at " in line for line in attempts)


async def test_unreachable_relay_is_retried_in_the_background(tmp_path: Path, local: tuple[int, LocalState]) -> None:
    port = free_port()
    service = AgentService(relay=f"ws://127.0.0.1:{port}", token=TOKEN, backoff=FAST)
    relay = Relay(RelaySettings(host="127.0.0.1", port=port, tokens=[TOKEN]))
    try:
        info = await service.start_tunnel(TunnelConfig(target=str(local[0]), name="later"))
        assert info.state is TunnelState.RECONNECTING
        assert "cannot reach the relay" in (info.error or "")
        await relay.start()
        await async_wait_for(lambda: service.tunnels()[0].state is TunnelState.ONLINE, what="online")
    finally:
        await service.stop()
        await relay.stop()


async def test_refused_token_fails_without_retrying(tmp_path: Path, local: tuple[int, LocalState]) -> None:
    async with relay_and_agent(tmp_path) as h:
        states: list[TunnelState] = []
        h.service.subscribe(lambda info: states.append(info.state))
        with pytest.raises(AuthError, match="refused the token: it is not one of the relay.s tokens"):
            await h.service.start_tunnel(TunnelConfig(target=str(local[0]), name="x", relay=f"ws://127.0.0.1:{h.relay.port}", token="wrong"))
        assert TunnelState.FAILED in states and TunnelState.RECONNECTING not in states
        assert h.service.tunnels() == []


async def test_name_held_by_another_token_is_refused(tmp_path: Path, local: tuple[int, LocalState]) -> None:
    relay = Relay(RelaySettings(host="127.0.0.1", tokens=["alice", "bob"]))
    await relay.start()
    first = AgentService(relay=f"ws://127.0.0.1:{relay.port}", token="alice")
    second = AgentService(relay=f"ws://127.0.0.1:{relay.port}", token="bob")
    try:
        await first.start_tunnel(TunnelConfig(target=str(local[0]), name="shared"))
        with pytest.raises(NameTakenError, match="shared"):
            await second.start_tunnel(TunnelConfig(target=str(local[0]), name="shared"))
        assert first.tunnels()[0].state is TunnelState.ONLINE
    finally:
        await first.stop()
        await second.stop()
        await relay.stop()


async def test_several_tunnels_run_at_once_and_stop_by_name(tmp_path: Path, local: tuple[int, LocalState]) -> None:
    async with relay_and_agent(tmp_path) as h:
        seen: list[tuple[str, TunnelState]] = []
        unsubscribe = h.service.subscribe(lambda info: seen.append((info.name, info.state)))
        await h.start(str(local[0]), name="one")
        await h.start(str(local[0]), name="two")
        with pytest.raises(ConfigError, match="already running"):
            await h.start(str(local[0]), name="two")
        assert [(t.name, t.state) for t in h.service.tunnels()] == [("one", TunnelState.ONLINE), ("two", TunnelState.ONLINE)]
        assert (await get(h, "one")).status_code == 200
        assert (await get(h, "two")).status_code == 200
        assert [t.requests for t in h.service.tunnels()] == [1, 1]
        await h.service.stop_tunnel("one")
        assert [t.name for t in h.service.tunnels()] == ["two"]
        assert ("one", TunnelState.STOPPED) in seen
        assert (await get(h, "one")).status_code == 404
        with pytest.raises(NotFoundError):
            await h.service.stop_tunnel("one")
        unsubscribe()
        count = len(seen)
        await h.service.restart_tunnel("two")
        await async_wait_for(lambda: (h.service.tunnels()[0].state is TunnelState.ONLINE)
                             and h.relay.tunnels == ["two"], what="two back")
        assert (await get(h, "two")).status_code == 200
        assert len(seen) == count  # unsubscribed


async def test_tunnel_without_name_gets_a_readable_one(tmp_path: Path, local: tuple[int, LocalState]) -> None:
    async with relay_and_agent(tmp_path) as h:
        info = await h.service.start_tunnel(TunnelConfig(target=str(local[0])))
        assert info.name.count("-") == 2
        assert info.public_url == f"http://{info.name}.localhost:{h.relay.port}"


async def test_embedded_relay_serves_name_localhost_and_bare_address(local: tuple[int, LocalState]) -> None:
    service = AgentService()
    try:
        info = await service.start_tunnel(TunnelConfig(target=str(local[0]), name="emb"))
        port = service.embedded_relay.port
        assert info.public_url == f"http://emb.localhost:{port}"
        async with httpx.AsyncClient(trust_env=False) as c:
            named = await c.get(f"http://127.0.0.1:{port}/echo", headers={"Host": f"emb.localhost:{port}"})
            bare = await c.get(f"http://127.0.0.1:{port}/echo")
        assert named.status_code == bare.status_code == 200
    finally:
        await service.stop()


async def test_a_tunnel_whose_stop_fails_does_not_keep_the_others_or_the_relay_running(
    local: tuple[int, LocalState], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = AgentService()
    try:
        for name in ("a", "b", "c"):
            await service.start_tunnel(TunnelConfig(target=str(local[0]), name=name))
        relay = service.embedded_relay
        broken = service._tunnels["a"]

        async def fails() -> None:
            raise RuntimeError("stop failed")

        monkeypatch.setattr(broken, "stop", fails)
        with pytest.raises(RuntimeError, match="stop failed"):
            await service.stop()
        assert [t.state for t in service.tunnels() if t.name != "a"] == [TunnelState.STOPPED] * 2
        assert service.embedded_relay is None and relay._server is None  # stopped
    finally:
        monkeypatch.undo()
        await service.stop()


# -- recording --------------------------------------------------------------------------------------
async def test_bodies_are_recorded_up_to_the_cap_with_their_real_size(tmp_path: Path, local: tuple[int, LocalState]) -> None:
    async with relay_and_agent(tmp_path, body_cap=100) as h:
        await h.start(str(local[0]))
        async with httpx.AsyncClient(base_url=h.base_url, headers={"Host": h.host("app")}, trust_env=False) as c:
            response = await c.post("/echo?x=1", content=b"z" * 5000, headers={"X-Trace": "t1"})
        [ex] = await h.exchanges(1)
    req, res = ex.request, ex.response
    assert (req.method, req.target, req.headers.get("x-trace")) == ("POST", b"/echo?x=1", "t1")
    assert (req.body, req.body_size, req.body_truncated) == (b"z" * 100, 5000, True)
    assert res is not None and res.status == 200
    assert res.body == response.content[:100] and res.body_size == len(response.content) and res.body_truncated


async def test_a_long_running_exchange_is_stored_while_it_runs(tmp_path: Path, local: tuple[int, LocalState]) -> None:
    async with relay_and_agent(tmp_path) as h:
        await h.start(str(local[0]))
        async with httpx.AsyncClient(base_url=h.base_url, headers={"Host": h.host("app")}, trust_env=False, timeout=30) as c:
            slow = asyncio.create_task(c.get("/slow"))

            def running() -> list[Exchange]:
                h.recorder.flush()
                return [ex for ex in h.store.query() if not ex.complete]

            [live] = await async_wait_for(running, what="a live exchange in the store")
            assert live.request.target == b"/slow" and live.duration is None
            local[1].release_slow.set()
            assert (await slow).status_code == 200
        [done] = await h.exchanges(1)
    assert done.id == live.id and done.complete and done.status == 200


async def test_no_recorder_records_nothing_but_still_reports_exchanges(local: tuple[int, LocalState]) -> None:
    service = AgentService()
    finished: list[Exchange] = []
    service.subscribe_exchanges(finished.append)
    try:
        await service.start_tunnel(TunnelConfig(target=str(local[0]), name="quiet"))
        port = service.embedded_relay.port
        async with httpx.AsyncClient(trust_env=False) as c:
            await c.post(f"http://127.0.0.1:{port}/echo", content=b"secret", headers={"Host": f"quiet.localhost:{port}"})
        await async_wait_for(lambda: finished, what="the exchange")
    finally:
        await service.stop()
    assert service.recorder is None and service.body_cap == 0
    [ex] = finished
    assert ex.status == 200 and ex.request.body == b"" and ex.request.body_size == 6


async def test_a_second_agent_asking_for_a_held_name_is_refused_and_the_first_keeps_serving(
    tmp_path: Path, local: tuple[int, LocalState]
) -> None:
    async with relay_and_agent(tmp_path, backoff=FAST) as h:
        await h.start(str(local[0]), name="dup")
        rival = AgentService(relay=f"ws://127.0.0.1:{h.relay.port}", token=TOKEN, backoff=FAST)
        try:
            with pytest.raises(NameInUseError, match="'dup' is in use by another agent that is online"):
                await rival.start_tunnel(TunnelConfig(target=str(local[0]), name="dup"))
            assert rival.tunnels() == []
            assert h.service.tunnels()[0].state is TunnelState.ONLINE
            assert (await get(h, "dup")).status_code == 200
        finally:
            await rival.stop()


async def test_tunnel_comes_back_after_the_network_drops(tmp_path: Path, local: tuple[int, LocalState]) -> None:
    async with relay_and_agent(tmp_path, backoff=FAST) as h:
        links: list[asyncio.StreamWriter] = []

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", h.relay.port)
            links.extend((writer, up_writer))
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        proxy = await asyncio.start_server(forward, "127.0.0.1", 0)
        try:
            proxy_port = proxy.sockets[0].getsockname()[1]
            config = TunnelConfig(target=str(local[0]), name="flaky", relay=f"ws://127.0.0.1:{proxy_port}", token=TOKEN)
            info = await h.service.start_tunnel(config)
            before = len(h.infos)
            for link in links:  # the network drops: both sockets reset, no goodbye
                link.transport.abort()

            def states() -> list[TunnelState]:
                return [i.state for i in h.infos[before:]]

            await async_wait_for(lambda: states()[-1:] == [TunnelState.ONLINE], what="back online")
            assert states()[0] is TunnelState.RECONNECTING
            assert h.service.tunnels()[0].public_url == info.public_url
            assert (await get(h, "flaky")).status_code == 200
        finally:
            proxy.close()
            for link in links:
                link.transport.abort()


class _Longest(random.Random):
    """Always picks the top of the jitter range."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_restart_reconnects_at_once_whatever_the_backoff(tmp_path: Path, local: tuple[int, LocalState]) -> None:
    async with relay_and_agent(tmp_path, backoff=Backoff(base=600, cap=600, rng=_Longest())) as h:
        await h.start(str(local[0]), name="again")
        before = len(h.infos)
        await h.service.restart_tunnel("again")
        await async_wait_for(lambda: [i.state for i in h.infos[before:]][-1:] == [TunnelState.ONLINE], what="online")
        assert all(i.next_retry_at is None for i in h.infos[before:])
        assert (await get(h, "again")).status_code == 200



async def test_a_failed_tunnel_can_be_started_again_under_its_name(tmp_path: Path, local: tuple[int, LocalState]) -> None:
    port = free_port()
    async with relay_and_agent(tmp_path, relay_port=port, backoff=FAST) as h:
        await h.start(str(local[0]), name="dup")
        await h.relay.stop()  # the relay comes back without our token: the tunnel fails for good
        h.relay = Relay(RelaySettings(host="127.0.0.1", port=port, domain="localhost", tokens=["another-token"]))
        await h.relay.start()
        await async_wait_for(lambda: h.service.tunnels()[0].state is TunnelState.FAILED, what="token refused")
        await h.relay.stop()
        h.relay = Relay(RelaySettings(host="127.0.0.1", port=port, domain="localhost", tokens=[TOKEN]))
        await h.relay.start()
        info = await h.start(str(local[0]), name="dup")
        assert info.state is TunnelState.ONLINE
        assert [(t.name, t.state) for t in h.service.tunnels()] == [("dup", TunnelState.ONLINE)]
        assert (await get(h, "dup")).status_code == 200
