"""An agent (``devtunnel http --no-tui``) killed with ``kill -9`` while exchanges were in flight (an SSE
stream, a held request): ``devtunnel requests``, ``show`` and a new agent's API see them ended as
``agent_gone``, not in flight for ever; another agent recording into the same file at the same time
ends them itself and keeps its own exchanges in flight untouched."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.helpers import free_port, wait_for
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)
from tests.net.tunnel_fixtures import local_websocket


def start_agent(procs: list[Proc], env: dict[str, str], local_port: int, db: Path, name: str) -> tuple[Proc, str, int]:
    """The agent as the CLI starts it; returns it, its public port and its API port."""
    api_port = free_port()
    agent = start(procs, env, "http", str(local_port), "--no-tui", "--name", name, "--api-port", str(api_port),
                  "--db", str(db))
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None
    agent.line(lambda l: l.startswith("API "))
    return agent, match.group(3), api_port


def in_background(port: str, name: str, target: str) -> threading.Thread:
    """A request through the tunnel whose response is read until it ends or breaks."""
    def run() -> None:
        try:
            with httpx.stream("GET", f"http://127.0.0.1:{port}{target}", headers={"Host": f"{name}.localhost:{port}"},
                              trust_env=False, timeout=60) as r:
                for _ in r.iter_raw():
                    pass
        except httpx.HTTPError:
            pass  # the agent was killed under it

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEVTUNNEL, *args], capture_output=True, text=True, timeout=30, env=env)


def listed(env: dict[str, str], db: Path) -> dict[str, dict[str, object]]:
    done = cli(env, "requests", "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    return {r["path"]: r for r in json.loads(done.stdout)}


def raw_rows(db: Path) -> dict[str, tuple[object, object]]:
    """path -> (duration, error), read with sqlite3 itself: no devtunnel reader ends anything."""
    with sqlite3.connect(db) as conn:
        return {p: (d, e) for p, d, e in conn.execute("SELECT path, duration, error FROM exchange_rows")}


def test_kill_9_of_the_agent_leaves_no_exchange_in_flight_for_requests_show_and_a_new_agent(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "captures.db"
    agent, port, _ = start_agent(procs, env, local[0], db, "kill")
    in_background(port, "kill", "/sse")
    in_background(port, "kill", "/slow")
    running = wait_for(lambda: (rows := listed(env, db)) and {"/sse", "/slow"} <= set(rows) and rows,
                       what="the SSE stream and the held request listed while in flight")
    assert running["/sse"]["duration_ms"] is None and running["/slow"]["duration_ms"] is None
    os.kill(agent.pid, signal.SIGKILL)
    assert agent.wait() == -signal.SIGKILL

    after = listed(env, db)
    for path in ("/sse", "/slow"):
        assert after[path]["error"] == "agent_gone", after[path]
        assert isinstance(after[path]["duration_ms"], float)
    assert after["/sse"]["status"] == 200  # the stream's response had begun
    table = cli(env, "requests", "--db", str(db)).stdout
    assert "…" not in table and table.count("agent_gone") >= 1
    shown = cli(env, "show", str(after["/slow"]["id"]), "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    assert f"agent_gone: the agent recording it (pid {agent.pid}) stopped before it ended" in shown.stdout
    assert "in flight" not in shown.stdout
    gone = cli(env, "requests", "--db", str(db), "--json", "--filter", "error:agent_gone")
    assert {r["path"] for r in json.loads(gone.stdout)} == {"/sse", "/slow"}

    _, _, api_port = start_agent(procs, env, local[0], db, "again")
    api = httpx.get(f"http://127.0.0.1:{api_port}/api/requests/http?scope=all", trust_env=False).json()  # the killed agent's
    by_uri = {r["request"]["uri"]: r for r in api["requests"]}
    for path in ("/sse", "/slow"):
        assert by_uri[path]["error"] == "agent_gone" and by_uri[path]["duration"] > 0
    assert not any("Traceback" in line for line in agent.err)


def test_two_agents_on_one_store_the_live_one_ends_the_killed_ones_exchanges_and_keeps_its_own(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "captures.db"
    doomed, doomed_port, _ = start_agent(procs, env, local[0], db, "doomed")
    live, live_port, _ = start_agent(procs, env, local[0], db, "live")
    in_background(doomed_port, "doomed", "/sse")
    held = in_background(live_port, "live", "/slow")
    wait_for(lambda: (rows := raw_rows(db)) and {"/sse", "/slow"} <= set(rows),
             what="both exchanges stored in flight")
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    # The live agent's recorder finds the other gone (within seconds, with no reader involved).
    wait_for(lambda: raw_rows(db)["/sse"][1] == "agent_gone", timeout=20, what="the live agent to end the stream")
    assert raw_rows(db)["/slow"] == (None, None)  # its own, still in flight, untouched
    local[1].release_slow.set()
    held.join(20)
    wait_for(lambda: raw_rows(db)["/slow"][0] is not None, what="the held request to finish")
    duration, error = raw_rows(db)["/slow"]
    assert error is None and isinstance(duration, float)
    get = httpx.get(f"http://127.0.0.1:{live_port}/echo?after", headers={"Host": f"live.localhost:{live_port}"},
                    trust_env=False)
    assert get.status_code == 200
    assert live.stop() == 0
    assert not any("Traceback" in line for line in live.err)


def test_kill_9_of_the_agent_during_a_websocket_session_ends_the_session_as_agent_gone(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]
) -> None:
    db = tmp_path / "captures.db"
    with local_websocket() as (ws_port, _):
        agent, port, _ = start_agent(procs, env, ws_port, db, "chat")
        sock = socket.create_connection(("127.0.0.1", int(port)))
        with connect(f"ws://chat.localhost:{port}/chat", sock=sock) as ws:
            for n in range(3):
                ws.send(f"hello {n}")
                assert ws.recv(timeout=10) == f"hello {n}"
            wait_for(lambda: "/chat" in raw_rows(db), what="the session stored in flight")
            ws.send("last")
            assert ws.recv(timeout=10) == "last"
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait()
    session = listed(env, db)["/chat"]
    assert session["websocket"] is True and session["error"] == "agent_gone"
    assert isinstance(session["duration_ms"], float) and session["duration_ms"] > 0
    shown = cli(env, "show", str(session["id"]), "--db", str(db))
    assert "agent_gone" in shown.stdout and "in flight" not in shown.stdout
