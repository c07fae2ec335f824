"""ngrok's v3 endpoints resource: its shape, its errors, and pyngrok's own client against a real agent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pyngrok import agent as agent_api, conf, ngrok, process
from pyngrok.exception import PyngrokNgrokError, PyngrokNgrokHTTPError

import devtunnel
from devtunnel.api.plumbing import ApiError, requested_name
from tests.helpers import wait_for
from tests.net.api_fixtures import Agent, echo_service, running_agent
from tests.kit.procs import Proc

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    async with running_agent(tmp_path) as running:
        yield running


async def _public_get(public_url: str, path: str) -> httpx.Response:
    url = httpx.URL(public_url)
    async with httpx.AsyncClient(trust_env=False) as public:
        return await public.get(url.copy_with(host="127.0.0.1", path=path), headers={"Host": url.netloc.decode()})


async def test_a_started_endpoint_has_both_generations_fields_and_carries_traffic(agent: Agent) -> None:
    resp = await agent.client.post("/api/endpoints", json={"name": "payments", "upstream": {"url": agent.target}})
    assert resp.status_code == 201, resp.text
    endpoint = resp.json()
    assert endpoint["name"] == "payments"
    assert endpoint["uri"] == "/api/endpoints/payments"
    assert endpoint["url"] == endpoint["public_url"] and endpoint["url"].startswith("http://payments.localhost:")
    assert endpoint["upstream"] == {"url": agent.target, "protocol": "http1"}
    assert endpoint["config"]["addr"] == agent.target
    assert endpoint["metrics"] == {"http": {"count": 0}}
    assert (await _public_get(endpoint["url"], "/hook")).status_code == 200
    # The same tunnel, seen through both resources.
    tunnels = (await agent.client.get("/api/tunnels")).json()["tunnels"]
    assert [t["name"] for t in tunnels] == ["payments"]
    listed = (await agent.client.get("/api/endpoints")).json()
    assert listed["uri"] == "/api/endpoints" and [e["name"] for e in listed["endpoints"]] == ["payments"]
    one = (await agent.client.get("/api/endpoints/payments")).json()
    assert one["metrics"]["http"]["count"] == 1
    assert (await agent.client.get("/api")).json()["endpoints"] == "/api/endpoints"


async def test_deleting_an_endpoint_stops_the_tunnel_at_the_relay_too(agent: Agent) -> None:
    endpoint = (await agent.client.post("/api/endpoints", json={"name": "gone", "upstream": {"url": agent.target}})).json()
    assert (await _public_get(endpoint["url"], "/")).status_code == 200
    assert (await agent.client.delete("/api/endpoints/gone")).status_code == 204
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []
    assert (await agent.client.get("/api/endpoints/gone")).status_code == 404
    assert (await agent.client.delete("/api/endpoints/gone")).status_code == 404
    assert (await _public_get(endpoint["url"], "/")).status_code == 404


async def test_an_endpoint_url_names_the_tunnel(agent: Agent) -> None:
    resp = await agent.client.post("/api/endpoints", json={"url": "https://shop.ngrok.app", "upstream": {"url": agent.target}})
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "shop"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": "a"}, "'upstream' is required"),
        ({"name": "a", "upstream": []}, "must be an object"),
        ({"name": "a", "upstream": {}}, "'url' is required"),
        ({"name": "a", "upstream": {"url": "tcp://localhost:22"}}, "only http and https upstreams"),
        ({"name": "a", "upstream": {"url": "8080", "protocol": "http2"}}, "'http2' is not supported"),
        ({"url": "tcp://1.tcp.ngrok.io:1234", "upstream": {"url": "8080"}}, "only http and https endpoints"),
        ({"url": "https://Bad_Name.example", "upstream": {"url": "8080"}}, "not a valid DNS label"),
        ({"url": "https://[::1", "upstream": {"url": "8080"}}, "url 'https://[::1': Invalid IPv6 URL"),  # was a 500
        ({"name": "a", "upstream": {"url": "8080"}, "traffic_policy": {"on_http_request": []}}, "traffic policies"),
        ({"name": "a", "upstream": {"url": "8080"}, "basic_auth": ["no colon"]}, 'basic_auth is not "user:password"'),
        ({"name": "a", "upstream": {"url": "8080"}, "oauth": {"provider": "google"}}, "OAuth"),
        ({"name": "a", "upstream": {"url": "8080"}, "pooling_enabled": "yes"}, "pooling_enabled must be true or false"),
        # An internal endpoint made public would expose the service (was started, public).
        ({"name": "a", "upstream": {"url": "8080"}, "bindings": ["internal"]}, "the endpoint is bound to 'internal'"),
        ({"url": "https://billing.internal", "upstream": {"url": "8080"}}, "bound to 'internal', not the public internet"),
        # A labeled tunnel has no address at ngrok, only its edge's (with the edge's protections):
        # it was started public.
        ({"name": "a", "addr": "8080", "labels": ["edge=edghts_1"]}, "the endpoint is a labeled tunnel ('edge=edghts_1')"),
        ({"name": "a", "upstream": {"url": "8080"}, "agent_tls_termination": {
            "server_certificate": "c.pem", "mutual_tls_certificate_authorities": ["ca.pem"]}},
         "agent_tls_termination: mutual TLS is not supported"),
        ({"name": "a", "upstream": {"url": "no port here"}}, "target"),
        ({"name": "a", "upstream": {"url": "8080"}, "descripton": "typo"}, "unknown field 'descripton' (did you mean 'description'?)"),
        ({"name": "a", "upstrem": {"url": "8080"}}, "unknown field 'upstrem'"),  # not "'upstream' is required"
        # ngrok v2's proto sent to the v3 resource: an http endpoint was started on the ssh port.
        ({"name": "a", "proto": "tcp", "upstream": {"url": "22"}}, "only http endpoints are supported, not 'tcp'"),
        ({"name": "a", "proto": "tls", "addr": "443"}, "only http endpoints are supported, not 'tls'"),
    ],
)
async def test_bad_endpoint_requests_are_refused_with_a_reason_and_start_nothing(
    agent: Agent, body: dict[str, Any], fragment: str
) -> None:
    resp = await agent.client.post("/api/endpoints", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == 100
    assert fragment in resp.json()["msg"]
    assert (await agent.client.get("/api/endpoints")).json()["endpoints"] == []


@pytest.mark.parametrize(("route", "body"), [
    ("/api/endpoints", {"name": "shared", "upstream": {"url": "TARGET"}, "pooling_enabled": True}),
    ("/api/tunnels", {"name": "shared", "addr": "TARGET", "pooling_enabled": True}),
])
async def test_pooling_enabled_starts_a_pool_on_either_resource(agent: Agent, route: str, body: dict[str, Any]) -> None:
    # Before: /api/endpoints refused it ("pools are not supported yet", though they are) and
    # /api/tunnels started a tunnel that was no pool, without a word.
    body = {k: ({"url": agent.target} if v == {"url": "TARGET"} else agent.target if v == "TARGET" else v)
            for k, v in body.items()}
    resp = await agent.client.post(route, json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["pool"] == {"members": 1}
    assert (await _public_get(resp.json()["public_url"], "/pooled")).status_code == 200


async def test_endpoints_refuse_foreign_hosts_and_cross_site_callers(agent: Agent) -> None:
    assert (await agent.client.get("/api/endpoints", headers={"Host": "attacker.example"})).status_code == 403
    resp = await agent.client.post(
        "/api/endpoints", json={"name": "x", "upstream": {"url": agent.target}}, headers={"Origin": "https://evil.example"}
    )
    assert resp.status_code == 403
    assert (await agent.client.get("/api/endpoints")).json()["endpoints"] == []


def _name(name: str | None = None, **public: str) -> str | None:
    return requested_name({"name": name, **public}, "endpoint")


def test_endpoint_names_come_from_the_public_address_else_a_cleaned_name() -> None:
    assert _name("whatever", url="https://payments.ngrok.app") == "payments"
    assert _name(url="payments.example.com") == "payments"
    assert _name("whatever", domain="payments.ngrok.app", hostname="https://payments.example.com") == "payments"
    assert _name("whatever", subdomain="Payments") == "payments"
    assert _name("http-8080-1b4e28ba-2fa1-11d2-883f-0016d3cca427") == "http-8080-1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert _name("http-http://localhost:8080-x") == "http-http-localhost-8080-x"
    assert _name("My Tunnel!", url="https://") == "my-tunnel"
    assert _name() is None
    assert _name("///") is None
    for public in ({"url": "ftp://files.example"}, {"hostname": "tcp://x.example"}, {"subdomain": "a.b"},
                   {"subdomain": "bad_label"}, {"domain": "*.example.com"}, {"url": "https://a.example", "subdomain": "b"}):
        with pytest.raises(ApiError):
            _name("x", **public)


# pyngrok's own client against `devtunnel agent` as a process ---------------------------------


@pytest.fixture
def devtunnel_agent(tmp_path: Path) -> Iterator[tuple[Proc, str]]:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    proc = Proc([sys.executable, "-m", "devtunnel", "agent", "--api-port", "0", "--db", str(tmp_path / "c.db")], env)
    try:
        line = proc.line(lambda l: l.startswith("API "))
        yield proc, line.split(" ", 1)[1]
    finally:
        proc.kill()


@pytest.fixture
def pyngrok_on(devtunnel_agent: tuple[Proc, str], tmp_path: Path) -> Iterator[Any]:
    """pyngrok configured to find its 'ngrok process' already running: the devtunnel agent."""
    proc, api_url = devtunnel_agent

    def configure(version: str) -> conf.PyngrokConfig:
        # ngrok_path must exist (pyngrok would otherwise download ngrok); it is never run.
        config = conf.PyngrokConfig(ngrok_path=sys.executable, config_path=str(tmp_path / f"ngrok{version}.yml"),
                                    config_version=version)
        running = process.NgrokProcess(proc.popen, config)
        running.api_url = api_url
        process._current_processes[config.ngrok_path] = running
        return config

    try:
        yield configure
    finally:
        process._current_processes.pop(sys.executable, None)
        ngrok._current_tunnels.clear()


def test_pyngrok_v3_connects_lists_refreshes_and_disconnects_an_endpoint(pyngrok_on: Any) -> None:
    config = pyngrok_on("3")
    with echo_service() as (target, seen):
        port = target.rsplit(":", 1)[1]
        tunnel = ngrok.connect(port, pyngrok_config=config)
        assert re.match(r"http://http-\d+-[0-9a-f-]+\.localhost:\d+$", tunnel.public_url), tunnel.public_url
        assert tunnel.uri.startswith("/api/endpoints/")
        url = httpx.URL(tunnel.public_url)
        resp = httpx.get(url.copy_with(host="127.0.0.1", path="/from-pyngrok"), headers={"Host": url.netloc.decode()},
                         trust_env=False)
        assert resp.status_code == 200
        assert seen.requests[-1][:2] == ("GET", "/from-pyngrok")

        listed = ngrok.get_tunnels(pyngrok_config=config)
        assert [t.public_url for t in listed] == [tunnel.public_url]
        assert listed[0].upstream["url"] == f"http://localhost:{port}"

        tunnel.refresh_metrics()
        assert tunnel.metrics["http"]["count"] == 1

        captured = wait_for(
            lambda: ngrok.api_request(f"{tunnel.api_url}/api/requests/http", params={"tunnel_name": tunnel.name})["requests"],
            what="the capture",
        )
        assert [c["request"]["uri"] for c in captured] == ["/from-pyngrok"]

        ngrok.disconnect(tunnel.public_url, pyngrok_config=config)
        assert ngrok.api_request(f"{tunnel.api_url}/api/tunnels")["tunnels"] == []
        gone = httpx.get(url.copy_with(host="127.0.0.1", path="/"), headers={"Host": url.netloc.decode()}, trust_env=False)
        assert gone.status_code == 404


def test_pyngrok_v2_still_uses_the_tunnels_resource(pyngrok_on: Any) -> None:
    config = pyngrok_on("2")
    with echo_service() as (target, _seen):
        tunnel = ngrok.connect(target.rsplit(":", 1)[1], name="legacy", pyngrok_config=config)
        assert tunnel.uri == "/api/tunnels/legacy"
        assert [t.name for t in ngrok.get_tunnels(pyngrok_config=config)] == ["legacy"]
        tunnel.refresh_metrics()
        assert tunnel.metrics == {"http": {"count": 0}}
        v3 = pyngrok_on("3")
        assert [t.name for t in ngrok.get_tunnels(pyngrok_config=v3)] == ["legacy"]
        ngrok.disconnect(tunnel.public_url, pyngrok_config=config)
        assert ngrok.get_tunnels(pyngrok_config=config) == []


def test_pyngrok_v2_names_a_tunnel_as_ngrok_takes_it_and_finds_it_by_that_name(pyngrok_on: Any) -> None:
    # ngrok.yml v2 names tunnels with any text; /api/tunnels refused 'My Hooks' (400), where
    # /api/endpoints and config import-ngrok make it the label my-hooks.
    config = pyngrok_on("2")
    with echo_service() as (target, seen):
        tunnel = ngrok.connect(target.rsplit(":", 1)[1], name="My Hooks", pyngrok_config=config)
        assert (tunnel.name, tunnel.uri) == ("my-hooks", "/api/tunnels/my-hooks")
        url = httpx.URL(tunnel.public_url)
        assert httpx.get(url.copy_with(host="127.0.0.1", path="/hook"), headers={"Host": url.netloc.decode()},
                         trust_env=False).status_code == 200
        captured = wait_for(lambda: agent_api.get_requests(tunnel_name="My Hooks", pyngrok_config=config),
                            what="the capture by the name pyngrok gave")
        agent_api.replay_request(captured[0].id, tunnel_name="My Hooks", pyngrok_config=config)
        assert wait_for(lambda: len(seen.requests) == 2, what="the replay")
        assert ngrok.api_request(f"{tunnel.api_url}/api/tunnels/My%20Hooks")["name"] == "my-hooks"
        ngrok.disconnect(tunnel.public_url, pyngrok_config=config)
        assert ngrok.get_tunnels(pyngrok_config=config) == []

        def both() -> list[Any]:  # the request and its replay, once the tunnel is gone
            found = agent_api.get_requests(tunnel_name="My Hooks", pyngrok_config=config)
            return found if len(found) == 2 else []

        wait_for(both, what="the captures by the name pyngrok gave, the tunnel stopped")


def test_pyngrok_v3_connect_with_a_domain_names_the_endpoint_by_it(pyngrok_on: Any) -> None:
    # pyngrok sends domain= as it is, beside its generated name: the endpoint was http-PORT-<uuid>,
    # where url= named it by its first label.
    config = pyngrok_on("3")
    with echo_service() as (target, _seen):
        tunnel = ngrok.connect(target.rsplit(":", 1)[1], domain="payments.ngrok.app", pyngrok_config=config)
        assert tunnel.name == "payments" and tunnel.public_url.startswith("http://payments.localhost:")
        ngrok.disconnect(tunnel.public_url, pyngrok_config=config)


@pytest.mark.parametrize("public", [{"subdomain": "myapp"}, {"hostname": "myapp.example.com"}, {"domain": "myapp.ngrok.app"}])
def test_pyngrok_v2_connect_with_a_public_address_names_the_tunnel_by_it(pyngrok_on: Any, public: dict[str, str]) -> None:
    # POST /api/tunnels took subdomain, hostname and domain and ignored them: the tunnel ran as
    # http-PORT-<uuid>.localhost, where /api/endpoints already honoured the address asked for.
    config = pyngrok_on("2")
    with echo_service() as (target, seen):
        tunnel = ngrok.connect(target.rsplit(":", 1)[1], pyngrok_config=config, **public)
        assert (tunnel.name, tunnel.uri) == ("myapp", "/api/tunnels/myapp")
        assert tunnel.public_url.startswith("http://myapp.localhost:")
        url = httpx.URL(tunnel.public_url)
        assert httpx.get(url.copy_with(host="127.0.0.1", path="/hi"), headers={"Host": url.netloc.decode()},
                         trust_env=False).status_code == 200
        # What pyngrok before 7.2 read right after starting an http tunnel of ngrok v2 (bind_tls both).
        assert ngrok.api_request(f"{tunnel.api_url}{tunnel.uri}%20%28http%29")["name"] == "myapp"
        ngrok.disconnect(tunnel.public_url, pyngrok_config=config)
        assert ngrok.get_tunnels(pyngrok_config=config) == []
        with pytest.raises(PyngrokNgrokHTTPError) as info:
            ngrok.connect(target.rsplit(":", 1)[1], pyngrok_config=config, subdomain="my.app")
        assert info.value.status_code == 400 and "subdomain 'my.app'" in info.value.body
        assert seen.requests[-1][:2] == ("GET", "/hi")


def test_pyngrok_reads_the_agent_status(pyngrok_on: Any) -> None:
    # pyngrok's NgrokAgent reads status and agent_version, which /api/status did not have (None).
    status = agent_api.get_agent_status(pyngrok_config=pyngrok_on("3"))
    assert (status.status, status.agent_version, status.uri) == ("online", devtunnel.__version__, "/api/status")


def test_pyngrok_sees_a_refused_option_as_an_api_error(pyngrok_on: Any) -> None:
    config = pyngrok_on("3")
    with pytest.raises(PyngrokNgrokHTTPError) as info:
        ngrok.connect("8080", pyngrok_config=config, traffic_policy={"on_http_request": []})
    assert info.value.status_code == 400
    assert "traffic policies" in info.value.body


def test_pyngrok_starts_ngrok_yml_definitions_with_the_keys_devtunnel_ignores(pyngrok_on: Any, tmp_path: Path) -> None:
    # pyngrok merges the definition named in ngrok.yml into its request: every key of it is an
    # ngrok key, and none may be taken for a typo.
    with echo_service() as (target, _seen):
        port = target.rsplit(":", 1)[1]
        (tmp_path / "ngrok2.yml").write_text(
            "version: 2\ntunnels:\n  hooks:\n"
            f"    proto: http\n    addr: {port}\n    inspect: true\n    bind_tls: true\n    schemes: [https]\n"
            "    host_header: rewrite\n    metadata: team=payments\n    subdomain: hooks\n    compression: true\n")
        (tmp_path / "ngrok3.yml").write_text(
            "version: 3\nendpoints:\n  - name: orders\n    description: order webhooks\n    metadata: team=orders\n"
            f"    url: https://orders.ngrok.app\n    upstream:\n      url: {port}\n      protocol: http1\n"
            f"tunnels:\n  legacy:\n    proto: http\n    addr: {port}\n    inspect: false\n    schemes: [http]\n")
        v2, v3 = pyngrok_on("2"), pyngrok_on("3")
        started = [ngrok.connect(name="hooks", pyngrok_config=v2), ngrok.connect(name="orders", pyngrok_config=v3),
                   ngrok.connect(name="legacy", pyngrok_config=v3)]
        # The definitions' public addresses name their tunnels (subdomain: hooks, url: orders...);
        # the name pyngrok asked for still finds each.
        assert [t.name for t in started] == ["hooks", "orders", "legacy-api"]
        assert sorted(t.name for t in ngrok.get_tunnels(pyngrok_config=v3)) == ["hooks", "legacy-api", "orders"]
        assert ngrok.api_request(f"{started[0].api_url}/api/tunnels/hooks-api")["name"] == "hooks"
        assert ngrok.api_request(f"{started[1].api_url}/api/endpoints/orders-api")["name"] == "orders"
        with pytest.raises(PyngrokNgrokHTTPError) as info:
            ngrok.connect(port, pyngrok_config=v3, descripton="typo")
        assert info.value.status_code == 400
        assert "unknown field 'descripton' (did you mean 'description'?)" in info.value.body
        assert len(ngrok.get_tunnels(pyngrok_config=v3)) == 3


def test_pyngrok_with_ngrok_path_set_to_devtunnel_starts_its_agent_and_drives_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyngrok runs its ngrok_path as `start --none --log stdout --config FILE` and waits for ngrok's
    # startup log lines: devtunnel answered "start is ngrok's", so pyngrok could reach devtunnel's
    # agent only through its private process table.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    shim = tmp_path / "devtunnel"  # what `which devtunnel` is where it is installed
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m devtunnel "$@"\n')
    shim.chmod(0o755)
    config = conf.PyngrokConfig(ngrok_path=str(shim), config_path=str(tmp_path / "ngrok.yml"), auth_token="2abcNGROK",
                                monitor_thread=False)
    # pyngrok reads what follows "version " in `NGROK_PATH --version` (an IndexError before).
    assert ngrok.get_version(pyngrok_config=config)[0].startswith(devtunnel.__version__)
    try:
        with echo_service() as (target, seen):
            tunnel = ngrok.connect(target.rsplit(":", 1)[1], pyngrok_config=config)
            url = httpx.URL(tunnel.public_url)
            resp = httpx.get(url.copy_with(host="127.0.0.1", path="/via-pyngrok"), headers={"Host": url.netloc.decode()},
                             trust_env=False)
            assert resp.status_code == 200 and seen.requests[-1][:2] == ("GET", "/via-pyngrok")
            assert [t.public_url for t in ngrok.get_tunnels(pyngrok_config=config)] == [tunnel.public_url]
            assert agent_api.get_agent_status(pyngrok_config=config).status == "online"
            ngrok.disconnect(tunnel.public_url, pyngrok_config=config)
            assert ngrok.get_tunnels(pyngrok_config=config) == []
    finally:
        running = process._current_processes.get(str(shim))
        ngrok.kill(pyngrok_config=config)
        if running is not None:
            running.proc.wait(15)


def test_pyngrok_set_auth_token_saves_devtunnel_s_relay_token_and_connect_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # pyngrok runs `NGROK_PATH config add-authtoken TOKEN --log stdout --config FILE` and wants
    # "Authtoken saved" on stdout: devtunnel refused --log and --config (exit 2), and pyngrok
    # raised CalledProcessError.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    shim = tmp_path / "devtunnel"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m devtunnel "$@"\n')
    shim.chmod(0o755)
    ngrok_yml = tmp_path / "ngrok.yml"
    config = conf.PyngrokConfig(ngrok_path=str(shim), config_path=str(ngrok_yml), monitor_thread=False)
    ngrok.set_auth_token("relay-tok-123", pyngrok_config=config)
    user_file = tmp_path / "config" / "devtunnel" / "devtunnel.toml"
    assert user_file.read_text() == '[relay]\ntoken = "relay-tok-123"\n'
    assert user_file.stat().st_mode & 0o777 == 0o600
    # ngrok's file is pyngrok's, read as YAML before each start: devtunnel writes nothing into it.
    assert "relay-tok-123" not in ngrok_yml.read_text()
    err = capfd.readouterr().err
    assert f"--config {ngrok_yml} names ngrok's file: left as it is; devtunnel's agent reads its relay token from " \
           f"{user_file}" in err
    assert "note: the token saved is not used: no relay is set" in err  # the embedded relay asks for none
    try:
        with echo_service() as (target, seen):
            tunnel = ngrok.connect(target.rsplit(":", 1)[1], pyngrok_config=config)
            url = httpx.URL(tunnel.public_url)
            resp = httpx.get(url.copy_with(host="127.0.0.1", path="/after-token"), headers={"Host": url.netloc.decode()},
                             trust_env=False)
            assert resp.status_code == 200 and seen.requests[-1][:2] == ("GET", "/after-token")
            ngrok.disconnect(tunnel.public_url, pyngrok_config=config)
    finally:
        running = process._current_processes.get(str(shim))
        ngrok.kill(pyngrok_config=config)
        if running is not None:
            running.proc.wait(15)


def test_pyngrok_set_api_key_and_update_are_refused_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    # update was argparse's "invalid choice" with devtunnel's list of commands.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    shim = tmp_path / "devtunnel"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m devtunnel "$@"\n')
    shim.chmod(0o755)
    config = conf.PyngrokConfig(ngrok_path=str(shim), config_path=str(tmp_path / "ngrok.yml"), monitor_thread=False)
    with pytest.raises(PyngrokNgrokError) as info:
        ngrok.update(pyngrok_config=config)
    assert str(info.value) == ("The ngrok process exited with code 2: devtunnel: update is ngrok's: updates come from "
                               "the package manager that installed devtunnel (see: devtunnel --help)")
    with pytest.raises(subprocess.CalledProcessError) as refused:
        ngrok.set_api_key("2abcKEY", pyngrok_config=config)
    assert refused.value.returncode == 2
    assert capfd.readouterr().err == ("devtunnel: config add-api-key is ngrok's: there is no account API here "
                                      "(see: devtunnel --help)\n")
    assert not (tmp_path / "config" / "devtunnel").exists()
