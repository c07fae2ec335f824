"""What an ngrok user expects of one agent's API, against real ``devtunnel`` processes sharing one
capture database: the list and the clear hold that agent's captures (``scope=all``: the whole
store's), even beside another agent running a tunnel of the same name, a tunnel started through
the API keeps its URL from one run to the next, replays made through the API have their log lines,
an exchange that was not recorded shows no id to look up, the replay's signature notice names the
API's field, and a tunnel asked for https says what it got.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devtunnel.capture.store import Store
from tests.helpers import free_port, wait_for
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.kit.servers import Reply, http_server
from tests.net.api_fixtures import make_exchange

pytestmark = pytest.mark.timeout(120)


def _http_agent(procs: list[Proc], env: dict[str, str], port: int, name: str, db: Path,
                *more: str) -> tuple[Proc, str, httpx.Client]:
    """``devtunnel http PORT --no-tui --name NAME``: the process, its relay's port and a client of its API."""
    api_port = free_port()
    agent = start(procs, env, "http", str(port), "--no-tui", "--name", name, "--api-port", str(api_port),
                  "--db", str(db), *more)
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None, agent.out
    agent.line(lambda l: l.startswith("API "))
    return agent, match.group(3), httpx.Client(base_url=f"http://127.0.0.1:{api_port}", trust_env=False, timeout=30)


def _agent(procs: list[Proc], env: dict[str, str], db: Path) -> tuple[Proc, httpx.Client]:
    """``devtunnel agent`` (what pyngrok runs) and a client of its API."""
    agent = start(procs, env, "agent", "--api-port", "0", "--db", str(db))
    api = agent.line(lambda l: l.startswith("API "))[4:]
    return agent, httpx.Client(base_url=api, trust_env=False, timeout=30)


def _through(relay_port: str, name: str, path: str, **options: object) -> httpx.Response:
    headers = {"Host": f"{name}.localhost:{relay_port}", **options.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(str(options.pop("method", "GET")), f"http://127.0.0.1:{relay_port}{path}", headers=headers,
                         trust_env=False, timeout=30, **options)  # type: ignore[arg-type]


def _ids(api: httpx.Client, **params: str) -> list[str]:
    answer = api.get("/api/requests/http", params=params)
    assert answer.status_code == 200, answer.text
    return [r["id"] for r in answer.json()["requests"]]


def _paths(api: httpx.Client, **params: str) -> list[str]:
    return [r["request"]["uri"] for r in api.get("/api/requests/http", params=params).json()["requests"]]


# -- 1. the list and the clear are the agent's own ------------------------------------------------


def test_the_list_and_the_clear_are_this_agents_own_unless_asked_for_all(
        tmp_path: Path, env: dict[str, str], procs: list[Proc]) -> None:
    # One agent listed every capture of the store (another agent's tunnel, earlier sessions): a
    # script reading requests[0] after triggering a hook got someone else's, and its "clear
    # between tests" deleted them all.
    db = tmp_path / "captures.db"
    earlier = make_exchange(tunnel="alpha", target=b"/yesterday", started_at=time.time() - 86_400)
    store = Store(db)
    try:
        store.put(earlier)
    finally:
        store.close()
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"ok")) as local:
        _, alpha_port, alpha = _http_agent(procs, env, local.port, "alpha", db)
        _, beta_port, beta = _http_agent(procs, env, local.port, "beta", db)
        assert _through(alpha_port, "alpha", "/mine").text == "ok"
        assert _through(beta_port, "beta", "/theirs").text == "ok"
        wait_for(lambda: len(_ids(alpha, scope="all")) == 3, timeout=20, what="both captures stored")

        assert _paths(alpha) == ["/mine"]
        assert _paths(beta) == ["/theirs"]
        assert _paths(alpha, tunnel_name="alpha") == ["/mine"]  # not yesterday's, under the same name
        assert _paths(alpha, tunnel_name="beta") == []
        assert sorted(_paths(alpha, scope="all")) == ["/mine", "/theirs", "/yesterday"]
        assert _paths(alpha, tunnel_name="alpha", scope="all") == ["/mine", "/yesterday"]
        assert _paths(alpha, scope="agent", filter="path:/mine") == ["/mine"]
        bad = alpha.get("/api/requests/http", params={"scope": "everyone"})
        assert bad.status_code == 400 and "scope must be agent" in bad.json()["msg"], bad.text

        # A replay made through this agent is its own too, whatever tunnel recorded the original.
        [theirs] = _ids(beta)
        assert alpha.post("/api/requests/http", json={"id": theirs}).status_code == 204
        replayed = wait_for(lambda: alpha.get("/api/requests/http", params={"filter": "replay"}).json()["requests"],
                            timeout=20)
        assert replayed[0]["replay_of"] == theirs
        assert _ids(alpha)[0] == replayed[0]["id"]

        # The clear forgets the agent's own: the other agent's and yesterday's stay.
        assert alpha.delete("/api/requests/http").status_code == 204
        assert _ids(alpha) == []
        assert sorted(_paths(beta, scope="all")) == ["/theirs", "/yesterday"]
        assert _paths(beta) == ["/theirs"]
        refused = alpha.delete("/api/requests/http", params={"scope": "some"})
        assert refused.status_code == 400 and refused.json()["msg"].startswith("scope must be"), refused.text
        twice = alpha.delete("/api/requests/http?scope=agent&scope=all")  # the last would win: all
        assert twice.status_code == 400 and twice.json()["msg"].startswith("scope is given 2 times"), twice.text
        assert alpha.get("/api/requests/http?scope=all&scope=agent").status_code == 400
        assert len(_ids(beta, scope="all")) == 2

        # Traffic after the clear is listed again; scope=all forgets every capture of the store.
        assert _through(alpha_port, "alpha", "/again").text == "ok"
        wait_for(lambda: _paths(alpha) == ["/again"], timeout=20, what="the new capture listed")
        assert alpha.delete("/api/requests/http", params={"scope": "all"}).status_code == 204
        assert _ids(beta, scope="all") == []


def test_two_agents_on_one_port_share_its_tunnel_name_but_each_lists_and_clears_its_own(
        tmp_path: Path, env: dict[str, str], procs: list[Proc]) -> None:
    # Two `devtunnel http 8080` get the name remembered for 8080; the store said no more of who
    # recorded an exchange than its tunnel's name and time, so each listed the other's captures too,
    # and one's clear between two tests forgot the other's.
    db = tmp_path / "captures.db"
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"ok")) as local:
        agents = []
        for _ in range(2):
            api_port = free_port()
            agent = start(procs, env, "http", str(local.port), "--no-tui", "--api-port", str(api_port), "--db", str(db))
            match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
            assert match is not None, agent.out
            agent.line(lambda l: l.startswith("API "))
            agents.append((match.group(2), match.group(3),
                           httpx.Client(base_url=f"http://127.0.0.1:{api_port}", trust_env=False, timeout=30)))
        (name, one_port, one), (other_name, two_port, two) = agents
        assert name == other_name, (name, other_name)  # one name: the port's
        assert _through(one_port, name, "/one").text == "ok"
        assert _through(two_port, name, "/two").text == "ok"
        wait_for(lambda: len(_ids(one, scope="all")) == 2, timeout=20, what="both captures stored")

        assert _paths(one) == ["/one"]
        assert _paths(two) == ["/two"]
        assert _paths(one, tunnel_name=name) == ["/one"]
        assert _paths(two, tunnel_name=name, scope="all") == ["/two", "/one"]

        # A replay through one agent's API is that agent's, also of the other's capture under the same name.
        [theirs] = _ids(two)
        assert one.post("/api/requests/http", json={"id": theirs}).status_code == 204
        replayed = wait_for(lambda: one.get("/api/requests/http", params={"filter": "replay"}).json()["requests"],
                            timeout=20)
        assert replayed[0]["replay_of"] == theirs and _paths(one) == ["/two", "/one"]
        edited = one.post(f"/api/requests/http/{theirs}/replay", json={"path": "/edited"})
        assert edited.status_code == 201, edited.text
        assert _ids(one)[0] == edited.json()["id"] and _paths(two) == ["/two"]

        # Each clear forgets its own agent's alone.
        assert one.delete("/api/requests/http").status_code == 204
        assert _ids(one) == [] and _paths(two) == ["/two"]
        assert _paths(two, scope="all") == ["/two"]
        assert _through(one_port, name, "/again").text == "ok"
        wait_for(lambda: _paths(one) == ["/again"], timeout=20, what="the new capture listed")
        assert two.delete("/api/requests/http").status_code == 204
        assert _ids(two) == [] and _paths(one, scope="all") == ["/again"]


def test_an_agent_with_no_tunnel_lists_nothing_of_the_store(tmp_path: Path, env: dict[str, str],
                                                            procs: list[Proc]) -> None:
    db = tmp_path / "captures.db"
    store = Store(db)
    try:
        store.put(make_exchange(tunnel="old", target=b"/old"))
    finally:
        store.close()
    _, api = _agent(procs, env, db)
    assert _ids(api) == []
    assert api.delete("/api/requests/http").status_code == 204
    assert _paths(api, scope="all") == ["/old"]


# -- 2. a tunnel of the API keeps its URL from run to run -----------------------------------------


def test_a_named_tunnel_started_through_the_api_keeps_its_url_next_run(
        tmp_path: Path, env: dict[str, str], procs: list[Proc]) -> None:
    # pyngrok's connect(name="stable1") got a new port, so a new URL, every run: the URL pasted
    # into a provider's dashboard stopped working.
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"ok")) as local:
        urls = []
        for _ in range(2):  # one agent after the other, as two runs of a script
            agent, api = _agent(procs, env, tmp_path / "captures.db")
            answer = api.post("/api/tunnels", json={"addr": str(local.port), "name": "stable1", "proto": "http"})
            assert answer.status_code == 201, answer.text
            urls.append(answer.json()["public_url"])
            assert agent.stop(signal.SIGTERM) == 0
        assert urls[0] == urls[1], urls
        assert urls[0].startswith("http://stable1.localhost:")


# -- 3 and 5. replays through the API are in the headless log; their notice names the API's field --


def _stripe_signed(body: bytes, secret: str) -> str:
    stamp = int(time.time())
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def test_replays_made_through_the_api_have_their_log_lines_marked(
        tmp_path: Path, env: dict[str, str], procs: list[Proc]) -> None:
    # Live traffic had a line each in the --no-tui log, a replay made through the API none.
    env = dict(env, STRIPE_WEBHOOK_SECRET="whsec_agent_secret_0123456789")
    body = json.dumps({"id": "evt_1", "object": "event", "type": "invoice.paid"}).encode()
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"ok")) as local:
        agent, port, api = _http_agent(procs, env, local.port, "hooks", tmp_path / "captures.db")
        # Signed with another secret than the agent's: it does not verify, so a replay is not signed afresh.
        sent = _through(port, "hooks", "/webhooks/stripe", method="POST", content=body,
                        headers={"Content-Type": "application/json",
                                 "Stripe-Signature": _stripe_signed(body, "whsec_someone_else")})
        assert sent.text == "ok"
        [live] = wait_for(lambda: _ids(api), timeout=20)
        agent.line(lambda l: live[:13] in l and "POST" in l)

        answer = api.post(f"/api/requests/http/{live}/replay", json={})
        assert answer.status_code == 201, answer.text
        edited = answer.json()
        # The API's field, not the command line's flag (5).
        assert edited["signature"] is not None and '"sign_unverified": true signs it anyway' in edited["signature"]
        assert "--sign-unverified" not in edited["signature"]
        line = agent.line(lambda l: edited["id"][:13] in l and "/webhooks/stripe" in l)
        assert "↻ /webhooks/stripe  200" in line, line
        verdict = agent.line(lambda l: edited["id"][:13] in l and "-->" in l)  # the delivery's second line too
        assert "stripe invoice.paid [evt_1]" in verdict, verdict

        assert api.post("/api/requests/http", json={"id": live}).status_code == 204  # ngrok's replay
        ngrok = wait_for(lambda: [r for r in api.get("/api/requests/http", params={"filter": "replay"}).json()["requests"]
                                  if r["id"] != edited["id"]], timeout=20)
        line = agent.line(lambda l: ngrok[0]["id"][:13] in l and "/webhooks/stripe" in l)
        assert "↻ /webhooks/stripe  200" in line, line
        assert agent.stop() == 0
    lives = [l for l in agent.out if live[:13] in l and "-->" not in l]
    assert len(lives) == 1  # the live request's own line, once


# -- 4. an exchange that was not recorded shows no id that cannot be looked up --------------------


def _show(env: dict[str, str], db: Path, exchange_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEVTUNNEL, "show", exchange_id, "--db", str(db)], env=env, capture_output=True, text=True,
                          timeout=60)


def test_the_log_line_of_an_unrecorded_exchange_shows_no_id_to_look_up(
        tmp_path: Path, env: dict[str, str], procs: list[Proc]) -> None:
    # The line of a tunnel started with "inspect": false (or of an agent with --no-record)
    # printed an id that `devtunnel show` could not find.
    db = tmp_path / "captures.db"
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"ok")) as local:
        agent, port, api = _http_agent(procs, env, local.port, "kept", db)
        quiet = api.post("/api/tunnels", json={"addr": str(local.port), "name": "quiet", "inspect": False})
        assert quiet.status_code == 201, quiet.text
        assert _through(port, "kept", "/recorded").text == "ok"
        assert _through(port, "quiet", "/unrecorded").text == "ok"
        recorded = agent.line(lambda l: "/recorded" in l)
        unrecorded = agent.line(lambda l: "/unrecorded" in l)
        assert agent.stop() == 0

        shown = recorded.split("  ")[1]
        assert _show(env, db, shown).returncode == 0
        assert unrecorded.split("  ")[1].strip() == "not recorded", unrecorded
        assert unrecorded.index("GET ") == recorded.index("GET ")  # the columns stay where they are

        agent, port, _ = _http_agent(procs, env, local.port, "off", tmp_path / "other.db", "--no-record")
        assert _through(port, "off", "/nothing").text == "ok"
        line = agent.line(lambda l: "/nothing" in l)
        assert line.split("  ")[1].strip() == "not recorded", line
        assert agent.stop() == 0


# -- 6. a tunnel asked for https says that its URL is http, and how to get https --------------------


def test_a_tunnel_asked_for_https_on_the_embedded_relay_says_it_is_http(
        tmp_path: Path, env: dict[str, str], procs: list[Proc]) -> None:
    # pyngrok's connect(bind_tls=True) (v2) or schemes ["https"] (v3) got an http:// URL without
    # a word; Slack and Shopify take only https URLs.
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"ok")) as local:
        agent, api = _agent(procs, env, tmp_path / "captures.db")
        v2 = api.post("/api/tunnels", json={"addr": str(local.port), "name": "slack", "bind_tls": True})
        assert v2.status_code == 201, v2.text
        [hint] = v2.json()["hints"]
        assert hint.startswith("bind_tls asks for an https URL, but http://slack.localhost:")
        assert "--via cloudflared" in hint and "wss://" in hint
        assert api.get("/api/tunnels/slack").json()["hints"] == [hint]

        v3 = api.post("/api/endpoints", json={"upstream": {"url": str(local.port)}, "name": "shop",
                                              "schemes": ["https"]})
        assert v3.status_code == 201, v3.text
        assert v3.json()["hints"][0].startswith("schemes asks for an https URL, but http://shop.localhost:")

        for quiet in ({"name": "both", "bind_tls": "both"}, {"name": "plain"}, {"name": "two", "schemes": ["http", "https"]}):
            answer = api.post("/api/tunnels", json={"addr": str(local.port), **quiet})
            assert answer.status_code == 201 and answer.json()["hints"] == [], answer.text
        assert agent.stop(signal.SIGTERM) == 0
    assert any("bind_tls asks for an https URL" in l for l in agent.err + agent.out)


# -- 2 and 6 with pyngrok's own client ------------------------------------------------------------


def test_pyngrok_connect_with_a_name_and_bind_tls_keeps_its_url_and_says_it_is_http(
        tmp_path: Path, env: dict[str, str], procs: list[Proc]) -> None:
    from pyngrok import conf, ngrok, process

    urls, hints = [], []
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"ok")) as local:
        for run in range(2):
            agent, api = _agent(procs, env, tmp_path / "captures.db")
            # ngrok_path must exist (pyngrok would otherwise download ngrok); it is never run.
            config = conf.PyngrokConfig(ngrok_path=sys.executable, config_path=str(tmp_path / f"ngrok{run}.yml"),
                                        config_version="2")
            running = process.NgrokProcess(agent.popen, config)
            running.api_url = str(api.base_url).rstrip("/")
            process._current_processes[config.ngrok_path] = running
            try:
                tunnel = ngrok.connect(str(local.port), name="stable1", bind_tls=True, pyngrok_config=config)
                urls.append(tunnel.public_url)
                hints.append(tunnel.data["hints"])
            finally:
                process._current_processes.pop(sys.executable, None)
                ngrok._current_tunnels.clear()
            assert agent.stop(signal.SIGTERM) == 0
    assert urls[0] == urls[1] and urls[0].startswith("http://stable1.localhost:"), urls
    # pyngrok sends bind_tls=True as v3's schemes: ["https"], whichever config_version.
    assert len(hints) == 2 and all(h == [hints[0][0]] for h in hints), hints
    assert " asks for an https URL, but http://stable1.localhost:" in hints[0][0]
