"""The agent (``devtunnel http --no-tui``) after its capture database is cut to 0 bytes while it runs
(``: > captures.db``, a tool "clearing" it): a new, empty store in the same file, said once, with
every request from then on in it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from tests.helpers import wait_for
from tests.kit.procs import Proc, env, procs  # noqa: F401 (fixtures)
from tests.net.test_agent_db_deleted import _listed_now, get, start_agent
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)


def test_a_database_cut_to_nothing_under_the_agent_is_a_new_empty_store_and_keeps_what_comes_after(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # Before: the agent went on writing into the cut file's -wal; `devtunnel requests` (and the
    # agent itself, once it opened the file again) refused it: "is not a devtunnel database (file is
    # not a database)", and everything recorded after the cut was lost.
    db = tmp_path / "captures.db"
    agent, port, api_port = start_agent(procs, env, local[0], db)
    for i in range(3):
        get(port, f"/echo?before={i}")
    wait_for(lambda: "/echo?before=2" in _listed_now(env, db), what="the first requests listed")
    with open(db, "r+b") as file:  # what `: > captures.db` does
        file.truncate(0)
    get(port, "/echo?right-after")  # at once, before the agent's idle look at the file
    agent.line(lambda l: "/echo?right-after" in l)
    said = agent.line(lambda l: "emptied" in l, lines="err")
    assert said.endswith(f"the capture database {db} was emptied (cut to 0 bytes); recording into it as a new, "
                         "empty one")
    for i in range(3):
        get(port, f"/echo?after={i}")
    agent.line(lambda l: "/echo?after=2" in l)
    wanted = ["/echo?right-after"] + [f"/echo?after={i}" for i in range(3)]
    listed = wait_for(lambda: (out := _listed_now(env, db)) and "/echo?after=2" in out and out,
                      what="the requests after the cut listed by devtunnel requests")
    assert [line.split()[-1] for line in listed.splitlines()[1:]] == wanted
    api = httpx.get(f"http://127.0.0.1:{api_port}/api/requests/http", trust_env=False).json()
    assert [r["request"]["uri"] for r in api["requests"]] == wanted[::-1]
    assert agent.stop() == 0
    assert [l for l in agent.err if "emptied" in l] == [said]
    assert not any("Traceback" in l for l in agent.err), agent.err
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM exchange_rows").fetchone()[0] == 4
    conn.close()
