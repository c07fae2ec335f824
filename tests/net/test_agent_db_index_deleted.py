"""A long-lived reader of the capture database (the inspector's ``--db FILE``) after its ``-shm`` (the
index of the ``-wal``) is deleted: it sees what an agent started after records, and an agent that
runs meanwhile moves to a new one, said once."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import wait_for
from tests.kit.procs import Proc, env, procs  # noqa: F401 (fixtures)
from tests.net.test_agent_db_deleted import _listed_now, get, start_agent
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)

READER = str(Path(__file__).resolve().parent.parent / "capture" / "reader_child.py")


def test_a_reader_whose_shm_was_deleted_sees_the_writes_of_an_agent_started_after(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # `rm captures.db-shm` (a cleaner of temporary files) under `devtunnel inspect --db FILE`, then the
    # agent started again: the agent made a new -shm, the reader went on with the one it had mapped,
    # and saw none of the new requests for as long as it ran.
    db = tmp_path / "captures.db"
    first, port, _ = start_agent(procs, env, local[0], db)
    get(port, "/echo?first")
    wait_for(lambda: "/echo?first" in _listed_now(env, db), what="the first request listed")
    assert first.stop() == 0
    reader = Proc([sys.executable, READER, str(db)], env)
    procs.append(reader)
    reader.line(lambda l: l == "read: /echo?first")
    Path(f"{db}-shm").unlink()
    agent, port, _ = start_agent(procs, env, local[0], db)
    get(port, "/echo?second")
    reader.line(lambda l: l == "read: /echo?first /echo?second")
    # Deleted again while both run: the agent moves to a new one (said once), the reader follows.
    Path(f"{db}-shm").unlink()
    said = agent.line(lambda l: "-shm was deleted" in l, lines="err")
    assert said.endswith(f"{db}-shm was deleted or replaced; recording goes on with a new one, which every program "
                         "reading the capture database takes up")
    for i in range(3):
        get(port, f"/echo?third={i}")
    reader.line(lambda l: l == "read: /echo?first /echo?second /echo?third=0 /echo?third=1 /echo?third=2")
    wait_for(lambda: "/echo?third=2" in _listed_now(env, db), what="the requests listed by devtunnel requests")
    assert agent.stop() == 0
    assert [l for l in agent.err if "-shm was deleted" in l] == [said]
    assert not any("Traceback" in l for l in agent.err + reader.err), (agent.err, reader.err)
