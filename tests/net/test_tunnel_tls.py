"""TLS on both sides of the agent: https targets verified unless ``insecure``, a wss relay always
(trusting ``relay_ca`` beside the system's CAs)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
import trustme

from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.info import TunnelState
from devtunnel.agent.service import AgentService
from devtunnel.agent.tunnel import relay_tls_context
from devtunnel.errors import ConfigError
from devtunnel.relay.server import Relay
from devtunnel.relay.settings import RelaySettings
from tests.helpers import free_port
from tests.kit.procs import DEVTUNNEL, Proc
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


async def test_wss_relay_is_verified_even_with_insecure_and_trusted_with_its_ca(tmp_path: Path) -> None:
    """--insecure (for a local https target's self-signed certificate) no longer turns off the
    relay's verification: a man in the middle would have had the token. A relay with a private
    CA is trusted with --relay-ca, given to the agent (its tunnels take it) or to a tunnel."""
    ca = trustme.CA()
    pem, ca_pem = tmp_path / "relay.pem", tmp_path / "ca.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    relay = Relay(RelaySettings(host="127.0.0.1", tokens=[TOKEN], tls_cert=str(pem), tls_key=str(pem)))
    await relay.start()
    service = AgentService(relay=f"wss://localhost:{relay.port}", token=TOKEN)
    trusting_agent = AgentService(relay=f"wss://localhost:{relay.port}", token=TOKEN, relay_ca=str(ca_pem))
    try:
        for config in (TunnelConfig(target="9", name="strict"), TunnelConfig(target="9", name="lax", insecure=True)):
            refused = await service.start_tunnel(config)
            assert refused.state is TunnelState.RECONNECTING
            assert "CERTIFICATE_VERIFY_FAILED" in (refused.error or "")
            assert "give the CA that signed it with --relay-ca PEM" in (refused.error or "")
            # A settings file written for an older devtunnel (agent.insecure = true for a self-signed
            # relay) is told that the setting no longer covers the relay.
            said = "--insecure (agent.insecure) no longer skips it" in (refused.error or "")
            assert said == config.insecure, refused.error
        trusting = await service.start_tunnel(TunnelConfig(target="9", name="ca", relay_ca=str(ca_pem)))
        assert trusting.state is TunnelState.ONLINE
        assert trusting.public_url == f"https://ca.localhost:{relay.port}"
        by_agent = await trusting_agent.start_tunnel(TunnelConfig(target="9", name="agentca"))
        assert by_agent.state is TunnelState.ONLINE
    finally:
        await trusting_agent.stop()
        await service.stop()
        await relay.stop()


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot be read (No such file or directory)"),
    (b"not a certificate\n", "holds no PEM certificate"),
])
def test_a_relay_ca_that_is_no_certificate_is_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"the relay CA file '{path}' \\(--relay-ca, relay.ca\\) {re.escape(message)}"):
        relay_tls_context(str(path))


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


def test_agent_insecure_holds_for_tunnels_started_through_the_api(tmp_path: Path, pem: Path) -> None:
    """`agent.insecure = true` said "every tunnel", and the note of `config import-ngrok` sends
    ngrok users there for a self-signed target; a tunnel started through the API (pyngrok) still
    verified the certificate and answered 502."""
    config = tmp_path / "devtunnel.toml"
    config.write_text("[agent]\ninsecure = true\n")
    api_port = free_port()
    env = dict(os.environ, DEVTUNNEL_CONFIG=str(config), XDG_STATE_HOME=str(tmp_path / "state"))
    agent = Proc([*DEVTUNNEL, "agent", "--api-port", str(api_port), "--db", str(tmp_path / "c.db")], env)
    try:
        agent.line(lambda l: l.startswith("API "))
        with local_http(tls_pem=pem) as (port, _):
            started = httpx.post(f"http://127.0.0.1:{api_port}/api/tunnels",
                                 json={"addr": f"https://localhost:{port}", "name": "selfsigned"}, timeout=20)
            assert started.status_code == 201, started.text
            public = httpx.URL(started.json()["public_url"])
            answer = httpx.get(public.copy_with(host="127.0.0.1", path="/echo"), headers={"Host": public.netloc.decode()},
                               trust_env=False, timeout=20)
            assert answer.status_code == 200, answer.text
    finally:
        assert agent.stop() == 0
