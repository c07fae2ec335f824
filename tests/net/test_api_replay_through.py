"""ngrok's replay, ``POST /api/requests/http {"id", "tunnel_name"}``, on a real agent (``devtunnel http
--no-tui``): a replay through another tunnel goes to that tunnel's target and is recorded as that
tunnel's (listed under it, filtered by it, counted for it), still a replay of the original."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from devtunnel.capture.store import Store
from tests.helpers import wait_for
from tests.kit.procs import Proc, env, procs  # noqa: F401 (fixtures)
from tests.net.test_agent_killed import cli, start_agent
from tests.net.tunnel_fixtures import LocalState, local_http
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)


def test_replay_with_tunnel_name_is_recorded_under_that_tunnel_and_keeps_replay_of(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "captures.db"
    _, port, api_port = start_agent(procs, env, local[0], db, "first")
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", trust_env=False, timeout=30)
    with local_http() as (other_port, other), api:
        made = api.post("/api/tunnels", json={"addr": str(other_port), "name": "second", "proto": "http"})
        assert made.status_code == 201, made.text
        sent = httpx.get(f"http://127.0.0.1:{port}/echo?n=1", headers={"Host": f"first.localhost:{port}"},
                         trust_env=False)
        assert sent.status_code == 200
        original = wait_for(lambda: api.get("/api/requests/http", params={"tunnel_name": "first"}).json()["requests"],
                            what="the request listed")[0]

        replayed = api.post("/api/requests/http", json={"id": original["id"], "tunnel_name": "second"})
        assert replayed.status_code == 204, replayed.text
        assert other.seen_targets == [b"/echo?n=1"]  # it went to the second tunnel's target

        listed = api.get("/api/requests/http", params={"tunnel_name": "second"}).json()["requests"]
        assert [(r["tunnel_name"], r["request"]["uri"]) for r in listed] == [("second", "/echo?n=1")]
        first = api.get("/api/requests/http", params={"tunnel_name": "first"}).json()["requests"]
        assert [r["id"] for r in first] == [original["id"]]
        filtered = api.get("/api/requests/http", params={"filter": "tunnel:second"}).json()["requests"]
        assert [r["id"] for r in filtered] == [listed[0]["id"]]

    store = Store(db, readonly=True)
    try:
        stored = store.get(listed[0]["id"])
    finally:
        store.close()
    assert (stored.tunnel, stored.replay_of) == ("second", original["id"])
    assert stored.target_url.endswith(f":{other_port}")
    done = cli(env, "requests", "--db", str(db), "--json", "--filter", "tunnel:second")
    assert done.returncode == 0, done.stderr
    assert [(r["id"], r["tunnel"]) for r in json.loads(done.stdout)] == [(listed[0]["id"], "second")]
