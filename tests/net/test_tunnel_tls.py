"""TLS on both sides of the agent: https targets and a wss relay, verified unless ``insecure``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trustme

from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.info import TunnelState
from devtunnel.agent.service import AgentService
from devtunnel.relay.server import Relay
from devtunnel.relay.settings import RelaySettings
from tests.net.tunnel_fixtures import TOKEN, local_http, local_websocket, relay_and_agent


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """A key and certificate for localhost / 127.0.0.1, signed by a CA nobody trusts."""
    path = tmp_path / "server.pem"
    trustme.CA().issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(path))
    return path


@pytest.mark.parametrize(("insecure", "status"), [(True, 200), (False, 502)])
async def test_https_target_is_verified_unless_insecure(tmp_path: Path, pem: Path, insecure: bool, status: int) -> None:
    with local_http(tls_pem=pem) as (port, _):
        async with relay_and_agent(tmp_path) as h:
            await h.start(f"https://localhost:{port}", insecure=insecure)
            async with httpx.AsyncClient(base_url=h.base_url, headers={"Host": h.host("app")}, trust_env=False) as c:
                response = await c.get("/echo")
            assert response.status_code == status
            if not insecure:
                assert response.headers["x-devtunnel-error"] == "local_error"
                assert "CERTIFICATE_VERIFY_FAILED" in response.text
                assert "start devtunnel with --insecure" in response.text  # the README's way out, named


async def test_wss_relay_is_verified_unless_insecure(pem: Path) -> None:
    relay = Relay(RelaySettings(host="127.0.0.1", tokens=[TOKEN], tls_cert=str(pem), tls_key=str(pem)))
    await relay.start()
    service = AgentService(relay=f"wss://localhost:{relay.port}", token=TOKEN)
    try:
        refused = await service.start_tunnel(TunnelConfig(target="9", name="strict"))
        assert refused.state is TunnelState.RECONNECTING
        assert "CERTIFICATE_VERIFY_FAILED" in (refused.error or "")
        trusting = await service.start_tunnel(TunnelConfig(target="9", name="lax", insecure=True))
        assert trusting.state is TunnelState.ONLINE
        assert trusting.public_url == f"https://lax.localhost:{relay.port}"
    finally:
        await service.stop()
        await relay.stop()


@pytest.mark.parametrize("insecure", [True, False])
async def test_websocket_to_a_wss_target_is_verified_unless_insecure(tmp_path: Path, pem: Path, insecure: bool) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    with local_websocket(tls_pem=pem) as (port, _):
        async with relay_and_agent(tmp_path) as h:
            await h.start(f"https://localhost:{port}", insecure=insecure)
            options = {"host": "127.0.0.1", "port": h.relay.port, "proxy": None}
            if insecure:
                async with connect(f"ws://{h.host('app')}/chat", **options) as ws:  # type: ignore[arg-type]
                    await ws.send("over tls")
                    assert await ws.recv() == "over tls"
            else:
                with pytest.raises(InvalidStatus) as info:
                    async with connect(f"ws://{h.host('app')}/chat", **options):  # type: ignore[arg-type]
                        pass
                assert info.value.response.status_code == 502
                assert b"CERTIFICATE_VERIFY_FAILED" in info.value.response.body
