"""An agent (``devtunnel http --no-tui``) stopped cleanly (SIGTERM) while a request was in flight: after
its grace the request is cut and recorded ``agent_stopped``, not ``agent_gone`` (which says the relay
connection broke or the agent was killed: ``test_agent_killed``)."""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path

import httpx

from tests.helpers import wait_for
from tests.kit.procs import Proc, env, procs  # noqa: F401 (fixtures)
from tests.net.test_agent_killed import cli, listed, start_agent
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)


def test_sigterm_with_a_request_in_flight_records_it_agent_stopped_not_agent_gone(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "captures.db"
    agent, port, _ = start_agent(procs, env, local[0], db, "stop")
    answers: list[httpx.Response] = []

    def ask() -> None:  # held by the local app until the test ends (release_slow is never set here)
        answers.append(httpx.get(f"http://127.0.0.1:{port}/slow", headers={"Host": f"stop.localhost:{port}"},
                                 trust_env=False, timeout=60))

    client = threading.Thread(target=ask, daemon=True)
    client.start()
    wait_for(lambda: "/slow" in listed(env, db), what="the held request listed while in flight")
    os.kill(agent.pid, signal.SIGTERM)
    assert agent.wait(30) == 0
    client.join(30)
    assert answers and answers[0].status_code == 502
    assert "went offline before answering" in answers[0].text

    row = listed(env, db)["/slow"]
    assert row["error"] == "agent_stopped", row
    assert isinstance(row["duration_ms"], float)
    shown = cli(env, "show", str(row["id"]), "--db", str(db))
    assert shown.returncode == 0, shown.stderr
    assert "agent_stopped: the agent stopped the tunnel after 5 s of grace before the response ended" in shown.stdout
    stopped = cli(env, "requests", "--db", str(db), "--json", "--filter", "error:agent_stopped")
    assert stopped.returncode == 0, stopped.stderr
    assert '"/slow"' in stopped.stdout
    gone = cli(env, "requests", "--db", str(db), "--json", "--filter", "error:agent_gone")
    assert gone.returncode == 0, gone.stderr
    assert '"/slow"' not in gone.stdout
    assert not any("Traceback" in line for line in agent.err)


def test_a_second_sigterm_as_the_inspector_sends_on_quit_records_the_cut_as_agent_stopped(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "captures.db"
    agent, port, _ = start_agent(procs, env, local[0], db, "quit")
    client = threading.Thread(target=lambda: httpx.get(f"http://127.0.0.1:{port}/slow", trust_env=False, timeout=60,
                                                       headers={"Host": f"quit.localhost:{port}"}), daemon=True)
    client.start()
    wait_for(lambda: "/slow" in listed(env, db), what="the held request listed while in flight")
    os.kill(agent.pid, signal.SIGTERM)  # the inspector's quit: SIGTERM, then another after its grace
    agent.line(lambda l: "letting running requests finish" in l, lines="err")
    os.kill(agent.pid, signal.SIGTERM)
    assert agent.wait(30) == 0
    client.join(30)

    row = listed(env, db)["/slow"]
    assert row["error"] == "agent_stopped", row
    shown = cli(env, "show", str(row["id"]), "--db", str(db)).stdout
    assert re.search(r"agent_stopped: the agent stopped the tunnel after [0-9.]+ s of grace before the response ended",
                     shown), shown
