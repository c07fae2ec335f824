"""The agent (``devtunnel http --no-tui``) after its capture database is deleted or replaced while it
runs: it records into a new file at the path, which ``devtunnel requests`` and the agent API read;
a file that is no capture database is refused in one log line while traffic goes on."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import httpx

from tests.helpers import free_port, wait_for
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)


def start_agent(procs: list[Proc], env: dict[str, str], local_port: int, db: Path) -> tuple[Proc, str, int]:
    """The agent as the CLI starts it; returns it, its public port and its API port."""
    api_port = free_port()
    agent = start(procs, env, "http", str(local_port), "--no-tui", "--name", "rm", "--api-port", str(api_port),
                  "--db", str(db))
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None
    agent.line(lambda l: l.startswith("API "))
    return agent, match.group(3), api_port


def get(port: str, target: str) -> None:
    """A request through the tunnel, answered by the local app; waits for the agent to log it."""
    r = httpx.get(f"http://127.0.0.1:{port}{target}", headers={"Host": f"rm.localhost:{port}"}, trust_env=False)
    assert r.status_code == 200


def requests_listed(env: dict[str, str], db: Path) -> str:
    done = subprocess.run([*DEVTUNNEL, "requests", "--db", str(db)], capture_output=True, text=True, timeout=30,
                          env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _recorded_then_deleted(tmp_path: Path, env: dict[str, str], procs: list[Proc],
                           local: tuple[int, LocalState], db: Path) -> tuple[Proc, str, int]:
    """An agent recording into ``db``, one request in the file, then the file deleted (with its
    -wal and -shm), as a user starting afresh does; returns the agent and its two ports."""
    agent, port, api_port = start_agent(procs, env, local[0], db)
    get(port, "/echo?first")
    wait_for(lambda: "/echo?first" in requests_listed(env, db), what="the first request in the file")
    for file in tmp_path.glob("captures.db*"):
        file.unlink()
    return agent, port, api_port


def test_after_rm_of_its_database_the_agent_records_into_a_new_one_that_requests_and_the_api_read(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "captures.db"
    agent, port, api_port = _recorded_then_deleted(tmp_path, env, procs, local, db)
    # Within about a second, without traffic, the agent notices and says so once.
    said = agent.line(lambda l: "moved or deleted" in l, lines="err")
    assert said.endswith(f"the capture database {db} was moved or deleted; recording into a new one there")
    assert db.exists()
    get(port, "/echo?second")
    listed = wait_for(lambda: (out := requests_listed(env, db)) and "/echo?second" in out and out,
                      what="the second request listed by devtunnel requests")
    assert "/echo?first" not in listed
    api = httpx.get(f"http://127.0.0.1:{api_port}/api/requests/http", trust_env=False).json()
    assert [r["request"]["uri"] for r in api["requests"]] == ["/echo?second"]
    assert agent.stop() == 0
    assert [l for l in agent.err if "moved or deleted" in l] == [said]
    assert not any("Traceback" in l for l in agent.err)


def test_a_request_right_after_rm_of_the_database_is_written_into_the_new_one_not_the_deleted_file(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "captures.db"
    agent, port, _ = _recorded_then_deleted(tmp_path, env, procs, local, db)
    # At once, before the agent's idle look at the path (every second) could notice.
    get(port, "/echo?right-after")
    agent.line(lambda l: "/echo?right-after" in l)
    said = agent.line(lambda l: "moved or deleted" in l, lines="err")
    assert said.endswith(f"the capture database {db} was moved or deleted; recording into a new one there")
    listed = wait_for(lambda: (out := requests_listed(env, db)) and "/echo?right-after" in out and out,
                      what="the request sent right after the deletion, in the new file")
    assert "/echo?first" not in listed
    assert agent.stop() == 0
    assert [l for l in agent.err if "moved or deleted" in l] == [said]
    assert not any("Traceback" in l for l in agent.err)


def test_a_file_that_is_no_capture_database_moved_onto_the_path_is_refused_once_and_traffic_goes_on(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "captures.db"
    agent, port, api_port = start_agent(procs, env, local[0], db)
    get(port, "/echo?first")
    wait_for(lambda: "/echo?first" in requests_listed(env, db), what="the first request in the file")
    notes = tmp_path / "notes.db"
    with sqlite3.connect(notes) as conn:
        conn.execute("CREATE TABLE notes (text)")
    conn.close()
    notes.replace(db)
    refused = agent.line(lambda l: "is not a devtunnel database" in l, lines="err")
    assert f"cannot write captures: {db} is not a devtunnel database" in refused
    for i in range(5):
        get(port, f"/echo?after{i}")
    agent.line(lambda l: "/echo?after4" in l)  # served and logged
    api = httpx.get(f"http://127.0.0.1:{api_port}/api/requests/http", trust_env=False)
    assert api.status_code == 503 and "is not a devtunnel database" in api.text
    assert agent.popen.poll() is None
    # At exit, as for any store that cannot be written, it says what was not written (and exits 1).
    assert agent.stop() == 1
    assert agent.err[-1].endswith("5 exchange(s) not written after 5s "
                                  f"({db} is not a devtunnel database (it holds other tables); move it away or pass --db)")
    assert [l for l in agent.err if "cannot write captures" in l] == [refused]
    assert not any("Traceback" in l for l in agent.err), agent.err
    with sqlite3.connect(db) as conn:  # left as it was
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
    conn.close()


def test_a_database_moved_away_while_the_agent_runs_keeps_everything_recorded_into_it(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # ``mv captures.db kept.db`` to keep a session: the newest pages are still in captures.db-wal,
    # left at the path, and went with it when the agent started a new file there. The moved copy
    # lacked them (no exchange at all after a few requests).
    db = tmp_path / "captures.db"
    agent, port, _ = start_agent(procs, env, local[0], db)
    for i in range(5):
        get(port, f"/echo?kept={i}")
    wait_for(lambda: "/echo?kept=4" in requests_listed(env, db), what="the requests in the file")
    kept = tmp_path / "kept.db"
    db.rename(kept)
    agent.line(lambda l: "moved or deleted" in l, lines="err")
    assert db.exists()
    listed = requests_listed(env, kept)
    assert [line.split()[-1] for line in listed.splitlines()[1:]] == [f"/echo?kept={i}" for i in range(5)]
    assert agent.stop() == 0
    assert not any("Traceback" in l for l in agent.err)


def _listed_now(env: dict[str, str], db: Path) -> str:
    """What ``devtunnel requests`` lists, or "" while it cannot read the file."""
    done = subprocess.run([*DEVTUNNEL, "requests", "--db", str(db)], capture_output=True, text=True, timeout=30,
                          env=env)
    return done.stdout if done.returncode == 0 else ""


def test_a_log_file_deleted_under_the_agent_is_made_anew_and_nothing_recorded_is_lost(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # ``rm captures.db-wal`` (a cleaner of temporary files): the agent went on writing into the log it
    # had open, unlinked. ``devtunnel requests`` said "a read or write failed (disk I/O error): the
    # disk may be ... failing" until the agent ended, and a ``kill -9`` lost all it recorded since.
    db = tmp_path / "captures.db"
    agent, port, _ = start_agent(procs, env, local[0], db)
    get(port, "/echo?before")
    wait_for(lambda: "/echo?before" in _listed_now(env, db), what="the first request listed")
    Path(f"{db}-wal").unlink()
    get(port, "/echo?after=0")
    agent.line(lambda l: "/echo?after=0" in l)
    _listed_now(env, db)  # a reader meanwhile: it makes a -shm of its own, if it can read at all
    for i in (1, 2):
        get(port, f"/echo?after={i}")
    agent.line(lambda l: "/echo?after=2" in l)
    wait_for(lambda: "/echo?after=2" in _listed_now(env, db), what="the requests after the deletion listed")
    agent.popen.kill()
    agent.popen.wait(10)
    out = requests_listed(env, db)
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["/echo?before"] + [f"/echo?after={i}" for i in range(3)]
    [said] = [l for l in agent.err if "was deleted" in l]
    assert said.endswith(f"{db}-wal was deleted or replaced; what it held is now in the capture database, and "
                         "recording goes on with a new one")
    assert not any("Traceback" in l for l in agent.err), agent.err
