"""Callers other than this machine's tools against a real ``devtunnel http`` (subprocess): a web
page in the developer's browser, and the public coming through a tunnel to the API itself."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from devtunnel.agent.service import AgentService
from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.info import TunnelState
from devtunnel.values.relay_url import CONNECT_PATH
from tests.helpers import free_port
from tests.kit.procs import FORWARDING, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)

pytestmark = pytest.mark.timeout(60)


def _agent(procs: list[Proc], env: dict[str, str], target: int) -> tuple[int, int]:
    """``devtunnel http TARGET`` with its embedded relay: (relay port, API port)."""
    api_port = free_port()
    agent = start(procs, env, "http", str(target), "--no-tui", "--name", "dev", "--api-port", str(api_port), "--no-record")
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None
    agent.line(lambda l: l.startswith("API "))
    return int(match.group(3)), api_port


async def test_a_web_page_cannot_hold_a_tunnel_on_the_embedded_relay(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The embedded relay listens on 127.0.0.1 without a token, and a page can open a WebSocket to
    # any address (no same-origin rule for WebSockets; the browser only adds Origin). Before,
    # such a page got a tunnel: its own pages served at http://NAME.localhost:PORT, a loopback
    # origin the agent API trusts, from which a plain POST replayed captured requests.
    relay_port, api_port = _agent(procs, env, local[0])
    url = f"ws://127.0.0.1:{relay_port}{CONNECT_PATH}"
    for origin in ("https://attacker.example", "null", f"http://127.0.0.1:{relay_port}"):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url, origin=origin, proxy=None):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
        assert b"a web page cannot connect as an agent" in refused.value.response.body

    # The whole agent, as a page would run it: the tunnel never comes online, the name serves nothing.
    import devtunnel.agent.tunnel as tunnel_module

    plain = tunnel_module.connect_here
    monkeypatch.setattr(tunnel_module, "connect_here", lambda *a, **kw: plain(*a, origin="https://attacker.example", **kw))
    service = AgentService(relay=f"ws://127.0.0.1:{relay_port}")
    try:
        info = await asyncio.wait_for(service.start_tunnel(TunnelConfig(target=str(local[0]), name="pwn")), 20)
        assert info.state is not TunnelState.ONLINE
        assert "403" in (info.error or "")
    finally:
        await service.stop()
    async with httpx.AsyncClient(trust_env=False) as client:
        page = await client.get(f"http://127.0.0.1:{relay_port}/", headers={"Host": f"pwn.localhost:{relay_port}"})
        assert page.status_code == 404
        # The developer's own tunnel and agents (which send no Origin) are unaffected.
        served = await client.post(f"http://127.0.0.1:{relay_port}/echo", content=b"hi", headers={"Host": f"dev.localhost:{relay_port}"})
        assert served.status_code == 200
        tunnels = (await client.get(f"http://127.0.0.1:{api_port}/api/tunnels")).json()["tunnels"]
        assert [t["name"] for t in tunnels] == ["dev"]


@pytest.mark.parametrize("host_header", ["rewrite", "preserve"])
async def test_a_tunnel_to_the_api_itself_does_not_open_the_api_to_its_public(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState], host_header: str
) -> None:
    # devtunnel http 4040 (or 4041, where a second agent's API went): before, whoever reached the
    # tunnel drove the API, e.g. started a tunnel to any address this machine reaches.
    relay_port, api_port = _agent(procs, env, local[0])
    async with httpx.AsyncClient(trust_env=False, timeout=20) as client:
        started = await client.post(f"http://127.0.0.1:{api_port}/api/tunnels",
                                    json={"addr": str(api_port), "name": "api", "host_header": host_header})
        assert started.status_code == 201, started.text
        public = {"Host": f"api.localhost:{relay_port}"}
        for method, path, body in (("GET", "/api/status", None), ("GET", "/api/requests/http", None),
                                   ("POST", "/api/tunnels", {"addr": "169.254.169.254:80", "name": "pivot"})):
            answer = await client.request(method, f"http://127.0.0.1:{relay_port}{path}", headers=public, json=body)
            assert answer.status_code == 403, answer.text
            assert "forwarded by a proxy or a tunnel" in answer.json()["msg"]
        names = [t["name"] for t in (await client.get(f"http://127.0.0.1:{api_port}/api/tunnels")).json()["tunnels"]]
        assert names == ["dev", "api"]
        for header in ("X-Forwarded-For", "X-Forwarded-Host", "Forwarded"):
            direct = await client.get(f"http://127.0.0.1:{api_port}/api/status", headers={header: "for=203.0.113.7"})
            assert direct.status_code == 403
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(f"ws://api.localhost:{relay_port}/api/events", proxy=None,  # type: ignore[arg-type]
                                      host="127.0.0.1", port=relay_port):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("origin", [
    "http://evil.example\\@localhost",  # Python's URL parser reads localhost there, a browser evil.example
    "http://evil.example@localhost:3000",
    "http://localhost/evil",
    "http://localhost?evil",
    "http://localhost#evil",
])
async def test_an_origin_that_is_more_than_a_scheme_host_and_port_is_refused(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState], origin: str
) -> None:
    # No browser writes such an Origin (it is scheme://host[:port] or null), so whoever did is
    # not a page of this machine; the host a URL parser found in it passed for one.
    _relay_port, api_port = _agent(procs, env, local[0])
    async with httpx.AsyncClient(trust_env=False, timeout=20) as client:
        url = f"http://127.0.0.1:{api_port}/api/tunnels"
        refused = await client.get(url, headers={"Origin": origin})
        assert refused.status_code == 403, refused.text
        assert refused.json()["msg"] == "cross-origin requests to the agent API are refused"
        assert (await client.get(url, headers={"Origin": "http://localhost:3000"})).status_code == 200
