"""The agent API's tunnel routes and live events with a real AgentService and its embedded relay."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import websockets

from devtunnel.agent.config import TunnelConfig
from tests.helpers import async_wait_for
from tests.net.api_fixtures import Agent, running_agent
from tests.net.tunnel_fixtures import local_http

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    async with running_agent(tmp_path) as running:
        yield running


async def _public(method: str, public_url: str, path: str, content: bytes = b"") -> httpx.Response:
    """A request to the tunnel's public URL, connecting to 127.0.0.1 (*.localhost may not resolve here)."""
    url = httpx.URL(public_url)
    async with httpx.AsyncClient() as public:
        return await public.request(
            method, url.copy_with(host="127.0.0.1", path=path), content=content, headers={"Host": url.netloc.decode()}
        )


async def _start(agent: Agent, name: str = "payments") -> dict[str, Any]:
    resp = await agent.client.post("/api/tunnels", json={"addr": agent.target, "name": name, "proto": "http"})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def test_started_tunnel_has_ngrok_shape_and_carries_traffic(agent: Agent) -> None:
    tunnel = await _start(agent)
    assert tunnel["name"] == "payments"
    assert tunnel["uri"] == "/api/tunnels/payments"
    assert tunnel["proto"] == "http"
    assert tunnel["config"] == {"addr": agent.target, "inspect": True, "table": None}
    assert tunnel["public_url"].startswith("http://")
    assert tunnel["state"] == "online"
    resp = await _public("POST", tunnel["public_url"], "/webhooks/stripe", b'{"id":"evt_1"}')
    assert resp.status_code == 200
    assert agent.seen.requests[-1][:2] == ("POST", "/webhooks/stripe")

    async def captured() -> list[Any]:
        data = (await agent.client.get("/api/requests/http", params={"tunnel_name": "payments"})).json()
        return [r for r in data["requests"] if r["response"] is not None]

    requests = await async_wait_for(captured, what="the exchange to be recorded")
    assert requests[0]["request"]["uri"] == "/webhooks/stripe"
    listed = (await agent.client.get("/api/tunnels")).json()
    assert listed["uri"] == "/api/tunnels"
    assert [t["name"] for t in listed["tunnels"]] == ["payments"]
    assert listed["tunnels"][0]["metrics"]["http"]["count"] >= 1


async def test_get_and_delete_a_tunnel(agent: Agent) -> None:
    await _start(agent)
    assert (await agent.client.get("/api/tunnels/payments")).json()["name"] == "payments"
    assert (await agent.client.delete("/api/tunnels/payments")).status_code == 204
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []
    resp = await agent.client.get("/api/tunnels/payments")
    assert resp.status_code == 404 and resp.json()["status_code"] == 404
    assert (await agent.client.delete("/api/tunnels/payments")).status_code == 404


async def test_ngrok_replay_through_a_named_tunnel_goes_to_its_target(agent: Agent) -> None:
    tunnel = await _start(agent)
    await _public("PUT", tunnel["public_url"], "/items/1", b"first")

    async def first_id() -> str | None:
        data = (await agent.client.get("/api/requests/http")).json()["requests"]
        return data[0]["id"] if data and data[0]["response"] else None

    exchange_id = await async_wait_for(first_id, what="the exchange to be recorded")
    before = len(agent.seen.requests)
    resp = await agent.client.post("/api/requests/http", json={"id": exchange_id, "tunnel_name": "payments"})
    assert resp.status_code == 204, resp.text
    assert len(agent.seen.requests) == before + 1
    assert agent.seen.requests[-1][0::3] == ("PUT", b"first")
    resp = await agent.client.post("/api/requests/http", json={"id": exchange_id, "tunnel_name": "nope"})
    assert resp.status_code == 404


@pytest.mark.parametrize(("path", "body"), [
    ("/api/tunnels", {"addr": "http://me:S3CRET@localhost:8080"}),
    ("/api/tunnels", {"addr": "me:S3CRET@localhost:8080"}),
    ("/api/endpoints", {"upstream": {"url": "https://me:S3CRET@localhost:8443"}}),
])
async def test_a_target_with_a_password_is_refused_without_the_password_in_the_answer(
    agent: Agent, path: str, body: dict[str, Any]
) -> None:
    # The 400 quoted the target as sent, password and all, into the API's answer.
    resp = await agent.client.post(path, json=body)
    assert resp.status_code == 400, resp.text
    assert "S3CRET" not in resp.text and "…@localhost" in resp.json()["msg"]
    assert "credentials in the target" in resp.json()["msg"]


async def test_ngrok_replay_with_a_misspelt_field_is_a_400_and_sends_nothing(agent: Agent) -> None:
    # {"id", "tunnel": "payments"} was a 204: the typo was ignored and the request went to the
    # exchange's own target, not the tunnel named; an empty id was a 404 "no exchange id given".
    tunnel = await _start(agent)
    await _public("POST", tunnel["public_url"], "/hook", b"once")

    async def first_id() -> str | None:
        data = (await agent.client.get("/api/requests/http")).json()["requests"]
        return data[0]["id"] if data and data[0]["response"] else None

    exchange_id = await async_wait_for(first_id, what="the exchange to be recorded")
    before = len(agent.seen.requests)
    for body, said in [
        ({"id": exchange_id, "tunnel": "payments"}, "unknown field 'tunnel' (did you mean 'tunnel_name'?)"),
        ({"id": exchange_id, "tunnel_name": "payments", "path": "/other"}, "unknown field 'path'"),
        ({"id": "", "tunnel_name": "payments"}, "the field 'id' must be an exchange id, not empty"),
    ]:
        resp = await agent.client.post("/api/requests/http", json=body)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error_code"] == 100 and said in resp.json()["msg"], resp.text
        assert resp.json()["msg"].endswith("nothing was sent")
    assert len(agent.seen.requests) == before
    assert len((await agent.client.get("/api/requests/http")).json()["requests"]) == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "x"}, 400),
        ({"addr": "8080", "proto": "tcp"}, 400),
        ({"addr": "not a target!"}, 400),
        ({"addr": "8080", "host_header": "example.com"}, 400),
        ({"addr": ["8080"]}, 400),
        ({"addr": "8080", "relay": "ftp://relay.example"}, 400),
        ({"addr": "8080", "auth": "no colon"}, 400),  # not "user:password": started without it, it would be open
        ({"addr": "8080", "basic_auth": ["user:secret", "user:other"]}, 400),  # a user twice: either would open it
        ({"addr": "8080", "ip_restriction": {"allow_cidrs": ["not an address"]}}, 400),
        ({"addr": "8080", "ip_restriction": {"deny_cidrs": 5}}, 400),  # not a list: a TypeError, a 500
        ({"addr": "8080", "ip_restriction": {"allow_cidrs": True}}, 400),
        ({"addr": "8080", "oauth": {"provider": "google"}}, 400),
        ({"addr": "8080", "verify_webhook": {"provider": "stripe", "secret": "whsec_x"}}, 400),  # ngrok.yml's key
        ({"addr": "8080", "policy": {"inbound": [{"actions": [{"type": "deny"}]}]}}, 400),  # before agent 3.14
        ({"addr": "8080", "traffic_policy_file": "/etc/ngrok/policy.yml"}, 400),
        ({"addr": "8080", "labels": ["edge=edghts_1"]}, 400),  # reached at ngrok only through its edge: was public
    ],
)
async def test_bad_tunnel_requests_are_refused_with_json_errors(agent: Agent, body: dict[str, Any], status: int) -> None:
    resp = await agent.client.post("/api/tunnels", json=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["status_code"] == status
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"adress": "8080"}, "unknown field 'adress' (did you mean 'addr'?)"),  # not "'addr' is required"
        ({"addr": "8080", "prot": "http"}, "unknown field 'prot' (did you mean 'proto'?)"),
        ({"addr": "8080", "hostheader": "rewrite"}, "'hostheader' (did you mean 'host_header'?)"),
        ({"addr": "8080", "zz": 1, "yy": 2}, "unknown fields 'yy', 'zz':"),
    ],
)
async def test_a_key_that_is_no_ngrok_option_is_refused_by_name_and_starts_nothing(
    agent: Agent, body: dict[str, Any], fragment: str
) -> None:
    resp = await agent.client.post("/api/tunnels", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == 100
    assert fragment in resp.json()["msg"] and resp.json()["msg"].endswith("the tunnel was not started")
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []


async def test_an_unknown_key_is_named_in_ascii_json_whatever_it_holds(agent: Agent) -> None:
    key = "x\x1b]0;pwned\x07\u202e" + "k" * 200
    resp = await agent.client.post("/api/tunnels", json={"addr": "8080", key: True})
    assert resp.status_code == 400
    assert resp.content.isascii() and b"\\u001b]0;pwned\\u0007\\u202e" in resp.content
    assert "'" + key[:64] + "...'" in resp.json()["msg"]  # as it came, cut: the client escapes it once
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []


async def test_every_ngrok_tunnel_key_is_still_taken_as_before(agent: Agent) -> None:
    # What pyngrok v5 to v7 sends with a v2 definition of ngrok.yml merged in: keys devtunnel
    # ignores start the tunnel; keys it cannot honour are refused, never called unknown.
    body = {"addr": agent.target, "proto": "http", "name": "http-8080-1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "inspect": True, "bind_tls": True, "schemes": ["https"], "metadata": "team=payments",
            "host_header": "rewrite", "subdomain": "payments", "hostname": "payments.example.com",
            "domain": "payments.ngrok.app", "compression": True, "proxy_proto": "", "websocket_tcp_converter": False,
            "crt": "", "key": "", "remote_addr": "", "labels": [], "relay": None, "via": None}
    resp = await agent.client.post("/api/tunnels", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "payments"  # the public address asked for (all three say payments)
    assert (await agent.client.get(f"/api/tunnels/{body['name']}")).json()["name"] == "payments"
    resp = await agent.client.post("/api/tunnels", json={"addr": "8080", "name": "b", "oauth": {"provider": "google"}})
    assert resp.status_code == 400 and "OAuth are not supported" in resp.json()["msg"]


@pytest.mark.parametrize("key", ["subdomain", "hostname", "domain", "url"])
async def test_the_public_address_asked_for_names_the_tunnel_and_the_name_asked_for_still_finds_it(
    agent: Agent, key: str
) -> None:
    # ngrok v2's POST /api/tunnels takes the public address as subdomain, hostname or domain:
    # devtunnel ignored them and gave the tunnel its "name" (web.localhost, not myapp.localhost).
    value = {"subdomain": "myapp", "hostname": "myapp.example.com", "domain": "myapp.ngrok.app",
             "url": "https://myapp.ngrok.app"}[key]
    resp = await agent.client.post("/api/tunnels", json={"addr": agent.target, "name": "web", "proto": "http", key: value})
    assert resp.status_code == 201, resp.text
    tunnel = resp.json()
    assert (tunnel["name"], tunnel["uri"]) == ("myapp", "/api/tunnels/myapp")
    assert tunnel["public_url"].startswith("http://myapp.localhost:")
    assert (await _public("GET", tunnel["public_url"], "/hello")).status_code == 200
    # The script goes on with the name it gave, and with ngrok v2's "NAME (http)" (pyngrok < 7.2, java-ngrok).
    for asked in ("web", "web (http)", "myapp (http)", "myapp"):
        one = await agent.client.get(f"/api/tunnels/{asked}")
        assert one.status_code == 200 and one.json()["name"] == "myapp", (asked, one.text)
        assert (await agent.client.get(f"/api/endpoints/{asked}")).json()["name"] == "myapp"
        # devtunnel's own routes under a tunnel find it by the same names (they took its name only).
        rules = await agent.client.get(f"/api/tunnels/{asked}/rules")
        assert rules.status_code == 200 and rules.json()["uri"] == "/api/tunnels/myapp/rules", rules.text

    async def by_asked_name() -> list[Any]:
        return list((await agent.client.get("/api/requests/http", params={"tunnel_name": "web"})).json()["requests"])

    exchange_id = (await async_wait_for(by_asked_name, what="the capture by the name asked for"))[0]["id"]
    before = len(agent.seen.requests)
    resp = await agent.client.post("/api/requests/http", json={"id": exchange_id, "tunnel_name": "web (http)"})
    assert resp.status_code == 204, resp.text
    assert len(agent.seen.requests) == before + 1
    assert (await agent.client.delete("/api/tunnels/web")).status_code == 204
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []
    # Its captures are still listed by the name asked for, the tunnel stopped (the request and its replay).
    listed = (await agent.client.get("/api/requests/http", params={"tunnel_name": "web"})).json()["requests"]
    assert len(listed) == 2 and {r["tunnel_name"] for r in listed} == {"myapp"}
    # Gone with its tunnel: a later tunnel of that name is not found by the old alias.
    await _start(agent, "myapp")
    assert (await agent.client.get("/api/tunnels/web")).status_code == 404


@pytest.mark.parametrize("path", ["/api/tunnels", "/api/endpoints"])
async def test_a_name_asked_for_twice_is_a_400_as_ngrok_answers_whatever_address_each_asks_for(agent: Agent, path: str) -> None:
    # A second {"name": "web"} with another subdomain started beside the first, and "web" then
    # named the second: the script's GET/DELETE /api/tunnels/web reached another tunnel than it started.
    first = await agent.client.post(path, json={"addr": agent.target, "name": "web", "subdomain": "myapp"})
    assert first.status_code == 201, first.text
    what = path.removeprefix("/api/").removesuffix("s")
    for body, msg in [
        ({"name": "web", "subdomain": "other"}, "a tunnel named 'web' is already running (as 'myapp')"),
        ({"name": "web"}, "a tunnel named 'web' is already running (as 'myapp')"),
        ({"name": "myapp", "hostname": "other.example.com"}, "a tunnel named 'myapp' is already running"),
    ]:
        resp = await agent.client.post(path, json={"addr": agent.target, **body})
        assert resp.status_code == 400, resp.text
        assert resp.json()["msg"] == f"{msg}; the {what} was not started"
        assert resp.json()["details"] == {"err": f'tunnel "{body["name"]}" already exists'}
    assert [t["name"] for t in (await agent.client.get("/api/tunnels")).json()["tunnels"]] == ["myapp"]
    assert (await agent.client.get("/api/tunnels/web")).json()["name"] == "myapp"
    # Once it is stopped, the name is free again.
    assert (await agent.client.delete("/api/tunnels/web")).status_code == 204
    again = await agent.client.post(path, json={"addr": agent.target, "name": "web", "subdomain": "other"})
    assert again.status_code == 201 and again.json()["name"] == "other", again.text


async def test_a_curl_body_without_a_json_content_type_is_a_415_that_says_how_to_send_it(agent: Agent) -> None:
    # curl -d '{...}' sends application/x-www-form-urlencoded; a page can send that without a preflight.
    resp = await agent.client.post("/api/tunnels", content=b'{"addr": "8080"}',
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 415
    assert resp.json()["msg"] == ("send the body as application/json (curl: -H 'Content-Type: application/json'), "
                                  "not application/x-www-form-urlencoded")
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []


@pytest.mark.parametrize("path", ["/api/tunnels", "/api/endpoints"])
@pytest.mark.parametrize(
    ("public", "fragment"),
    [
        ({"subdomain": "my.app"}, "subdomain 'my.app': a devtunnel tunnel's public address is NAME.DOMAIN of its relay"),
        ({"subdomain": "my_app"}, "subdomain 'my_app': tunnel name 'my_app' is not a valid DNS label"),
        ({"hostname": "*.example.com"}, "hostname '*.example.com': tunnel name '*' is not a valid DNS label"),
        ({"domain": "tcp://1.tcp.ngrok.io"}, "only http and https "),
        ({"hostname": "https://[::1"}, "hostname 'https://[::1': Invalid IPv6 URL"),
        ({"subdomain": "a", "hostname": "b.example.com"},
         "hostname 'b.example.com' and subdomain 'a' ask for different public addresses (b and a)"),
        ({"url": "https://a.ngrok.app", "domain": "b.ngrok.app"}, "url 'https://a.ngrok.app' and domain 'b.ngrok.app'"),
        ({"subdomain": ["a"]}, "the field 'subdomain' must be a string"),
    ],
)
async def test_a_public_address_devtunnel_cannot_give_is_a_400_on_either_resource(
    agent: Agent, path: str, public: dict[str, Any], fragment: str
) -> None:
    body = {"addr": agent.target, "name": "web", **public}
    resp = await agent.client.post(path, json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()
    assert (error["error_code"], error["status_code"], error["details"]) == (100, 400, {})
    assert fragment in error["msg"], error["msg"]
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []


async def test_a_page_cannot_start_a_tunnel_with_a_public_address(agent: Agent) -> None:
    body = {"addr": agent.target, "subdomain": "myapp"}
    for headers in ({"Origin": "https://evil.example"}, {"Host": "myapp.evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null"}, {"X-Forwarded-For": "203.0.113.7"}):
        resp = await agent.client.post("/api/tunnels", json=body, headers=headers)
        assert resp.status_code == 403, (headers, resp.text)
        assert resp.json()["error_code"] == 101
        assert (await agent.client.get("/api/tunnels/myapp (http)", headers=headers)).status_code == 403
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []


@pytest.mark.parametrize("path", ["/api/tunnels", "/api/endpoints"])
async def test_ngrok_basic_auth_and_ip_restriction_guard_the_tunnel_at_the_relay(agent: Agent, path: str) -> None:
    # pyngrok's connect(8080, auth="user:pass") was refused with 400 though devtunnel enforces
    # basic auth at the relay, and config import-ngrok carries the same keys over as rules.
    body = {"name": "guarded", "auth": "alice:s3cret", "basic_auth": ["bob:hunter2"],
            "ip_restriction": {"allow_cidrs": ["127.0.0.0/8"], "deny_cidrs": ["127.0.0.2/32"]}}
    body |= {"addr": agent.target} if path == "/api/tunnels" else {"upstream": {"url": agent.target}}
    resp = await agent.client.post(path, json=body)
    assert resp.status_code == 201, resp.text
    public_url = resp.json()["public_url"]
    rules = (await agent.client.get("/api/tunnels/guarded/rules")).json()["rules"]
    assert [r["action"] for r in rules] == ["deny", "allow-ip", "basic-auth"]
    assert "s3cret" not in json.dumps(rules) and "hunter2" not in json.dumps(rules)
    before = len(agent.seen.requests)
    assert (await _public("GET", public_url, "/x")).status_code == 401
    url = httpx.URL(public_url)
    for user, password, status in [("alice", "s3cret", 200), ("bob", "hunter2", 200), ("alice", "wrong", 401)]:
        async with httpx.AsyncClient(auth=(user, password)) as public:
            answered = await public.get(url.copy_with(host="127.0.0.1", path="/x"), headers={"Host": url.netloc.decode()})
        assert answered.status_code == status, (user, answered.text)
    assert len(agent.seen.requests) == before + 2


@pytest.mark.parametrize("path", ["/api/tunnels", "/api/endpoints"])
async def test_ngrok_header_edits_are_made_at_the_relay(agent: Agent, path: str) -> None:
    # request_header / response_header (ngrok.yml v2's and its agent API's) were refused with
    # 400 ("header rules"), though devtunnel has headers rules at the relay.
    body = {"name": "edited",
            "request_header": {"add": ["X-Env: dev", "X-Team:payments"], "remove": ["User-Agent"]},
            "response_header": {"add": ["X-Frame-Options: DENY"], "remove": ["Server"]}}
    body |= {"addr": agent.target} if path == "/api/tunnels" else {"upstream": {"url": agent.target}}
    resp = await agent.client.post(path, json=body)
    assert resp.status_code == 201, resp.text
    rules = (await agent.client.get("/api/tunnels/edited/rules")).json()["rules"]
    assert [r["action"] for r in rules] == ["headers"]
    answered = await _public("GET", resp.json()["public_url"], "/x")
    assert answered.status_code == 200
    assert answered.headers["x-frame-options"] == "DENY" and "server" not in answered.headers
    headers = agent.seen.requests[-1][2]
    assert (headers["x-env"], headers["x-team"]) == ("dev", "payments") and "user-agent" not in headers


@pytest.mark.parametrize(("edits", "fragment"), [
    ({"request_header": {"add": ["no colon"]}}, "request_header.add #1 ('no' and what follows it) is not NAME:VALUE"),
    ({"request_header": {"add": ["X-A: 1", "x-a: 2"]}}, "x-a is added twice"),
    ({"response_header": {"remove": ["not a name"]}}, "response_header.remove 'not a name' is not a header name"),
    ({"response_header": {"add": ["Content-Length: 5"]}}, "Content-Length says how the message is framed"),
    ({"request_header": ["X-A: 1"]}, "request_header is not a mapping of add / remove lists"),
    ({"request_header": {"add": "X-A: 1"}}, "request_header.add is not a list"),
    ({"request_header": {"set": ["X-A: 1"]}}, "request_header is not a mapping of add / remove lists"),
])
async def test_ngrok_header_edits_that_cannot_be_made_are_a_400_and_start_nothing(
    agent: Agent, edits: dict[str, Any], fragment: str
) -> None:
    resp = await agent.client.post("/api/tunnels", json={"addr": agent.target, "name": "edited", **edits})
    assert resp.status_code == 400, resp.text
    assert fragment in resp.json()["msg"] and resp.json()["msg"].endswith("the tunnel was not started"), resp.json()
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []


async def test_a_password_rule_no_request_could_pass_beside_the_tunnels_own_is_a_400(agent: Agent) -> None:
    """pyngrok's ``auth`` on the tunnel, then a ``basic-auth`` rule with other users added
    through the API: /admin would have asked for two passwords in one header. Refused, and the
    tunnel's rules stay as they were."""
    resp = await agent.client.post("/api/tunnels", json={"name": "locked", "addr": agent.target, "auth": "alice:s3cret"})
    assert resp.status_code == 201, resp.text
    before = (await agent.client.get("/api/tunnels/locked/rules")).json()["rules"]
    added = await agent.client.post("/api/tunnels/locked/rules?position=last",
                                    json={"action": "basic-auth", "match": "path:/admin", "users": ["bob:hunter2"]})
    assert added.status_code == 400, added.text
    assert "no user in common with rule 1" in added.json()["msg"] and "hunter2" not in added.text
    assert (await agent.client.get("/api/tunnels/locked/rules")).json()["rules"] == before
    shared = await agent.client.post("/api/tunnels/locked/rules?position=last",
                                     json={"action": "basic-auth", "match": "path:/admin", "users": ["alice:s3cret"]})
    assert shared.status_code == 201, shared.text


async def test_a_bare_number_is_a_local_port_and_a_second_tunnel_of_a_name_is_a_400_as_ngrok_answers(agent: Agent) -> None:
    port = int(agent.target.rsplit(":", 1)[1])
    first = await agent.client.post("/api/tunnels", json={"addr": port, "name": "a"})
    assert first.status_code == 201 and first.json()["config"]["addr"] == agent.target
    endpoint = await agent.client.post("/api/endpoints", json={"upstream": port, "name": "b"})
    assert endpoint.status_code == 201 and endpoint.json()["upstream"]["url"] == agent.target
    # ngrok (agent 3.29 on) answers 400 "tunnel ... already exists"; the first tunnel stays.
    for path, body in [("/api/tunnels", {"addr": "9", "name": "a"}), ("/api/endpoints", {"upstream": 9, "name": "A"})]:
        resp = await agent.client.post(path, json=body)
        assert resp.status_code == 400 and "'a' is already running" in resp.json()["msg"], resp.text
        # What scripts (and the patches of ngrok's npm client) look for to read the running tunnel instead.
        assert resp.json()["details"] == {"err": 'tunnel "a" already exists'}
    tunnels = (await agent.client.get("/api/tunnels")).json()["tunnels"]
    assert sorted((t["name"], t["config"]["addr"]) for t in tunnels) == [("a", agent.target), ("b", agent.target)]


async def test_a_body_declared_over_the_limit_is_refused_at_once(agent: Agent) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    writer.write(b"POST /api/tunnels HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 99999999999\r\n\r\n{}")
    await writer.drain()
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)  # it waited for the body forever
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []


async def test_a_client_gone_mid_body_is_a_debug_note_not_a_traceback(
    agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    # uvicorn's own logger may not propagate to the root (its default log config): listen on it too.
    caplog.set_level(logging.DEBUG, logger="devtunnel.api")
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(caplog.handler)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
        writer.write(b"POST /api/tunnels HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"addr\": 1")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

        def handled() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.levelno >= logging.ERROR or "closed the connection" in r.getMessage()]

        await async_wait_for(handled, what="the agent API to handle the closed connection")
        # The next caller is served as usual, and nothing was started.
        assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []
    finally:
        uvicorn_error.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING], caplog.text
    [note] = [r for r in caplog.records if "closed the connection" in r.getMessage()]
    assert note.levelno == logging.DEBUG and "\n" not in note.getMessage()


async def test_a_declared_length_in_other_digits_is_read_as_the_body_says() -> None:
    # "²".isdigit() is True and int("²") raises: the up-front check takes ASCII digits only and
    # leaves any other Content-Length to the body read (uvicorn's parser refuses it before that).
    from starlette.requests import Request

    from devtunnel.api.plumbing import json_body

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/api/tunnels", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", "\u00b2".encode("latin-1"))]}
    assert await json_body(Request(scope, receive)) == {}


async def test_events_report_tunnel_changes_and_new_exchanges(agent: Agent) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{agent.port}/api/events") as ws:
        async def registered() -> bool:
            return bool((await agent.client.get("/api/status")).json()["event_clients"] == 1)

        await async_wait_for(registered, what="events client registered")
        tunnel = await _start(agent)
        states: list[str] = []
        ids: list[str] = []
        await _public("GET", tunnel["public_url"], "/health")
        while "online" not in states or not ids:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["type"] == "tunnel":
                assert message["tunnel"]["name"] == "payments"
                states.append(message["tunnel"]["state"])
            elif message["type"] == "exchanges":
                ids += message["ids"]
        detail = (await agent.client.get(f"/api/requests/http/{ids[0]}")).json()
        assert detail["request"]["uri"] == "/health"


async def test_a_new_events_client_first_learns_the_current_tunnels(agent: Agent) -> None:
    await _start(agent)
    async with websockets.connect(f"ws://127.0.0.1:{agent.port}/api/events") as ws:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "tunnel"
    assert message["tunnel"]["name"] == "payments" and message["tunnel"]["state"] == "online"


@pytest.mark.parametrize("route", ["ngrok", "edits"])
async def test_replay_through_an_insecure_tunnel_trusts_its_target_as_the_tunnel_does(
    agent: Agent, tmp_path: Path, route: str
) -> None:
    pem = tmp_path / "server.pem"
    trustme.CA().issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    with local_http(tls_pem=pem) as (port, state):
        info = await agent.service.start_tunnel(TunnelConfig(target=f"https://localhost:{port}", name="dev", insecure=True))
        assert (await _public("POST", info.public_url, "/echo", b"signed")).status_code == 200

        async def first_id() -> str | None:
            data = (await agent.client.get("/api/requests/http", params={"tunnel_name": "dev"})).json()["requests"]
            return data[0]["id"] if data and data[0]["response"] else None

        exchange_id = await async_wait_for(first_id, what="the exchange to be recorded")
        if route == "ngrok":
            resp = await agent.client.post("/api/requests/http", json={"id": exchange_id, "tunnel_name": "dev"})
            assert resp.status_code == 204, resp.text
            replays = (await agent.client.get("/api/requests/http", params={"filter": "replay"})).json()["requests"]
            [result] = replays
        else:
            resp = await agent.client.post(f"/api/requests/http/{exchange_id}/replay", json={})
            assert resp.status_code == 201, resp.text
            result = resp.json()
        assert result["error"] is None, result["error_message"]
        assert result["response"]["status_code"] == 200
        await agent.service.stop()  # closes its connections to the app, so the app can stop


@pytest.mark.parametrize(("path", "option"), [
    ("/api/tunnels", {"verify_upstream_tls": False}),  # ngrok's key, as pyngrok merges it from ngrok.yml
    ("/api/endpoints", {"verify_upstream_tls": False}),
    ("/api/tunnels", {"insecure": True}),  # devtunnel's, as --insecure
])
async def test_a_tunnel_started_over_the_api_can_accept_a_self_signed_target(
    agent: Agent, tmp_path: Path, path: str, option: dict[str, Any]
) -> None:
    # No option of the API made an https target's certificate unverified: every request through a
    # tunnel to a self-signed local service was a 502 telling to start devtunnel with --insecure,
    # which does nothing for a tunnel started over the API.
    pem = tmp_path / "server.pem"
    trustme.CA().issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    with local_http(tls_pem=pem) as (port, _state):
        target = f"https://localhost:{port}"
        body = {"name": "dev", **({"addr": target} if path == "/api/tunnels" else {"upstream": {"url": target}}), **option}
        resp = await agent.client.post(path, json=body)
        assert resp.status_code == 201, resp.text
        assert (await _public("POST", resp.json()["public_url"], "/echo", b"hi")).status_code == 200
        strict = await agent.client.post("/api/tunnels", json={"name": "strict", "addr": target})
        assert (await _public("POST", strict.json()["public_url"], "/echo", b"hi")).status_code == 502
        await agent.service.stop()  # closes its connections to the app, so the app can stop


async def test_insecure_is_a_boolean(agent: Agent) -> None:
    resp = await agent.client.post("/api/tunnels", json={"name": "x", "addr": "8080", "verify_upstream_tls": "no"})
    assert resp.status_code == 400 and resp.json()["msg"] == "verify_upstream_tls must be true or false, not 'no'"


@pytest.mark.parametrize(("path", "body"), [
    ("/api/tunnels", {"name": "grpc", "addr": "8080", "app_protocol": "http2"}),
    ("/api/endpoints", {"name": "grpc", "upstream": {"url": "8080"}, "app_protocol": "http2"}),
])
async def test_an_http2_only_local_service_is_refused_whichever_key_says_so(agent: Agent, path: str, body: dict[str, Any]) -> None:
    # app_protocol (ngrok v2's key for upstream.protocol) was accepted and ignored: the tunnel
    # spoke HTTP/1.1 to a service that speaks HTTP/2 only.
    resp = await agent.client.post(path, json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["msg"].startswith("app_protocol 'http2' is not supported (only http1)")
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/tunnels"), ("POST", "/api/endpoints"), ("DELETE", "/api/tunnels/web"),
    ("DELETE", "/api/tunnels/web%20%28http%29"), ("POST", "/api/requests/http"), ("POST", "/api/tunnels/web/rules"),
    ("POST", "/api/tunnels/web/restart"), ("DELETE", "/api/endpoints/web"),
])
async def test_no_web_page_gets_past_the_preflight_of_a_route_that_starts_or_stops_a_tunnel(
    agent: Agent, method: str, path: str
) -> None:
    # A page on a loopback origin (a local dev server) passes the Origin check; what stops its
    # JSON POST or DELETE is the browser's preflight, which must not be granted.
    await _start(agent, "web")
    for origin in ("http://localhost:3000", "https://evil.example"):
        resp = await agent.client.options(path, headers={
            "Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": "content-type"})
        assert resp.status_code >= 400, (origin, resp.status_code)
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")], resp.headers
    # What a page may send without a preflight (a form, text) starts nothing.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        resp = await agent.client.post("/api/tunnels", content=f'{{"addr": "{agent.target}", "name": "page"}}',
                                       headers={"Origin": "http://localhost:3000", "Content-Type": content_type})
        assert resp.status_code == 415, resp.text
    assert [t["name"] for t in (await agent.client.get("/api/tunnels")).json()["tunnels"]] == ["web"]


async def test_the_routes_answer_with_a_trailing_slash_as_ngrok_does(agent: Agent) -> None:
    # Scripts read `curl -s localhost:4040/api/tunnels/ | jq -r .tunnels[0].public_url`: it was a
    # bodiless 307, which curl does not follow (and urllib, pyngrok's, not for a POST).
    resp = await agent.client.post("/api/tunnels/", json={"addr": agent.target, "name": "web"})
    assert resp.status_code == 201, resp.text
    for path in ("/api/tunnels/", "/api/endpoints/", "/api/requests/http/", "/api/tunnels/web/", "/api/", "/api/status/"):
        resp = await agent.client.get(path)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
    assert (await agent.client.get("/api/tunnels/")).json()["tunnels"][0]["name"] == "web"
    assert (await agent.client.get("/api/nothing/")).status_code == 404
    assert (await agent.client.get("/api/tunnels/", headers={"Host": "evil.example"})).status_code == 403
    assert (await agent.client.delete("/api/tunnels/web/")).status_code == 204
    assert (await agent.client.get("/api/tunnels")).json()["tunnels"] == []
