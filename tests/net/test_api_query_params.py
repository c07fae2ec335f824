"""Every route of the agent API refuses a query parameter it does not take, against a real
``devtunnel http`` (subprocess): a misspelt ``?limt=5`` or ngrok's ``?tunnel=x`` was ignored,
and the answer read as if it had been applied (50 captures of every tunnel)."""

from __future__ import annotations

import httpx
import pytest
from starlette.routing import Route

from devtunnel.agent.service import AgentService
from devtunnel.api.app import create_app
from tests.helpers import free_port, wait_for
from tests.kit.procs import FORWARDING, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.kit.servers import Reply, http_server

pytestmark = pytest.mark.timeout(90)

# Each route as a client would call it, with a real tunnel "dev" and a real exchange id.
_CALLS = [
    ("GET", "/api"),
    ("GET", "/api/status"),
    ("GET", "/api/tunnels"),
    ("GET", "/api/tunnels/dev"),
    ("GET", "/api/tunnels/dev/logs"),
    ("GET", "/api/tunnels/dev/rules"),
    ("GET", "/api/endpoints"),
    ("GET", "/api/endpoints/dev"),
    ("GET", "/api/requests/http"),
    ("GET", "/api/requests/http/{id}"),
    ("GET", "/api/requests/http/{id}/export"),
    ("GET", "/api/diff?a={id}&b={id}"),
    ("GET", "/api/events"),
    ("POST", "/api/tunnels"),
    ("POST", "/api/endpoints"),
    ("POST", "/api/tunnels/dev/rules"),
    ("POST", "/api/tunnels/dev/restart"),
    ("POST", "/api/requests/http"),
    ("POST", "/api/requests/http/{id}/replay"),
    ("DELETE", "/api/requests/http"),
    ("DELETE", "/api/tunnels/dev/rules/0"),
    ("DELETE", "/api/tunnels/dev"),
    ("DELETE", "/api/endpoints/dev"),
]


def test_every_route_declares_the_parameters_it_takes() -> None:
    # The end-to-end test below calls the routes it knows; a route added later is caught here.
    app = create_app(AgentService())
    routes = {(method, route.path): route.endpoint
              for route in app.routes if isinstance(route, Route) for method in route.methods or () if method != "HEAD"}
    assert [key for key, endpoint in routes.items() if not hasattr(endpoint, "params")] == []
    called = {(m, p.split("?")[0].replace("/dev", "/{name}").replace("/0", "/{index}")) for m, p in _CALLS}
    assert called == set(routes)


def test_a_parameter_a_route_does_not_take_is_a_400_naming_those_it_takes(env: dict[str, str], procs: list[Proc]) -> None:
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"hello")) as service:
        api_port = free_port()
        agent = start(procs, env, "http", str(service.port), "--no-tui", "--name", "dev", "--api-port", str(api_port),
                      "--db", str(env["XDG_STATE_HOME"]) + "/captures.db")
        match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
        assert match is not None
        agent.line(lambda l: l.startswith("API "))
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", trust_env=False, timeout=20)
        public = httpx.Client(trust_env=False, timeout=20)
        for n in range(3):
            assert public.get(f"http://127.0.0.1:{match.group(3)}/p{n}", headers={"Host": f"dev.localhost:{match.group(3)}"}).text == "hello"
        wait_for(lambda: len(api.get("/api/requests/http").json()["requests"]) == 3, timeout=20)
        exchange_id = api.get("/api/requests/http").json()["requests"][0]["id"]

        # The list: a misspelt limit gave 50 of every tunnel's; ngrok has no "tunnel" parameter.
        refused = api.get("/api/requests/http", params={"limt": "1"})
        assert refused.status_code == 400, refused.text
        body = refused.json()
        assert body["msg"] == ("unknown parameter 'limt' (did you mean 'limit'?): GET /api/requests/http takes "
                               "limit, tunnel_name, filter, before, after, scope")
        assert body["details"]["takes"] == ["limit", "tunnel_name", "filter", "before", "after", "scope"]
        assert api.get("/api/requests/http", params={"tunnel": "x"}).status_code == 400
        # What it takes still works, and together with nothing else.
        assert len(api.get("/api/requests/http", params={"limit": "1", "tunnel_name": "dev"}).json()["requests"]) == 1

        # Every other route: refused before it runs, so nothing is started, stopped or deleted.
        for method, path in _CALLS:
            url = path.format(id=exchange_id)
            url += ("&" if "?" in url else "?") + "bogus=1"
            answer = api.request(method, url, json={} if method == "POST" else None)
            assert answer.status_code == 400, (method, url, answer.text)
            msg = answer.json()["msg"]
            assert msg.startswith("unknown parameter 'bogus': " + method), msg
            assert " takes " in msg
        assert api.get("/api/tunnels/dev").json()["name"] == "dev"
        assert len(api.get("/api/requests/http").json()["requests"]) == 3

        # A number is ASCII digits: int() read an Arabic-Indic or a fullwidth one, "1_0" and " 2 ".
        for limit in ("\u0661", "\uff11", "1_0", " 2 ", "+1"):
            answer = api.get("/api/requests/http", params={"limit": limit})
            assert answer.status_code == 400, (limit, answer.text)
            assert answer.json()["msg"].startswith("limit must be an integer")
        assert len(api.get("/api/requests/http", params={"limit": "02"}).json()["requests"]) == 2

        # A yes-or-no parameter that is neither was read as no.
        assert api.get(f"/api/requests/http/{exchange_id}/export", params={"redact": "maybe"}).status_code == 400
        api.close()
        public.close()
