"""``devtunnel requests --follow``: each request as it ends, read from the store another process writes.

Through a real agent (``devtunnel http --no-tui``) and its local app, and against a store this test
writes itself, where the order in which exchanges reach the file is chosen: one that began before
the newest already printed, but was written after it, is printed too, and once.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import httpx

from devtunnel.capture.model import RuleMark
from devtunnel.capture.store import Store
from devtunnel.commands.captures import FOLLOW_BACK
from devtunnel.values.exchange_ids import new_id
from tests.helpers import wait_for
from tests.kit.exchanges import make_exchange, make_response
from tests.kit.procs import Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.test_agent_db_deleted import get, start_agent
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)


def _paths(proc: Proc) -> list[str]:
    """The target of each request line printed so far (the verdict lines of deliveries left out)."""
    return [line.split()[4] for line in list(proc.out) if len(line.split()) > 4 and line.split()[4].startswith("/")]


def test_follow_prints_the_last_requests_then_each_as_it_ends_through_a_real_agent(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "captures.db"
    agent, port, _ = start_agent(procs, env, local[0], db)
    for n in range(3):
        get(port, f"/echo?before{n}")
    wait_for(lambda: Store(db, readonly=True).count() == 3, what="three requests stored")
    follow = start(procs, env, "requests", "--follow", "--limit", "2", "--db", str(db))
    failing = start(procs, env, "requests", "--follow", "--json", "--filter", "status:>=400", "--db", str(db))
    follow.line(lambda l: "/echo?before2" in l)
    assert _paths(follow) == ["/echo?before1", "/echo?before2"]  # the newest two, oldest first

    # A request the app holds: stored in flight after half a second, printed only once it ends.
    client = httpx.Client(trust_env=False, timeout=30)
    host = {"Host": f"rm.localhost:{port}"}
    with client:
        slow = threading.Thread(target=lambda: client.get(f"http://127.0.0.1:{port}/slow", headers=host))
        slow.start()
        wait_for(lambda: any(r.target == "/slow" for r in Store(db, readonly=True).rows()),
                 what="the held request stored in flight")
        get(port, "/echo?after")
        r = httpx.get(f"http://127.0.0.1:{port}/status/503", headers=host, trust_env=False)
        assert r.status_code == 503
        follow.line(lambda l: "/status/503" in l)
        assert "/slow" not in _paths(follow)
        local[1].release_slow.set()
        slow.join(30)
    line = follow.line(lambda l: "/slow" in l)
    assert line.split()[2] == "rm" and line.split()[3] == "GET" and " 200 " in line
    assert _paths(follow) == ["/echo?before1", "/echo?before2", "/echo?after", "/status/503", "/slow"]

    # The filtered follower printed the failure alone, as JSON, one object a line.
    failed = json.loads(failing.line(lambda l: l.startswith("{")))
    assert (failed["path"], failed["status"], failed["tunnel"]) == ("/status/503", 503, "rm")
    assert failing.stop() == 0 and len(failing.out) == 1
    assert follow.stop() == 0  # Ctrl-C
    assert not any("Traceback" in l for l in follow.err + failing.err), (follow.err, failing.err)
    assert agent.stop() == 0


def test_an_exchange_written_after_a_newer_one_is_printed_once_and_one_that_comes_to_match_as_it_ends(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]
) -> None:
    db = tmp_path / "c.db"
    store = Store(db)
    store.put(make_exchange("GET", "/old", id=new_id(), response=make_response(200), duration=0.01))
    follow = start(procs, env, "requests", "--follow", "--db", str(db))
    errors = start(procs, env, "requests", "--follow", "--filter", "status:>=500", "--db", str(db))
    follow.line(lambda l: "/old" in l)
    started = new_id()  # begins first, is written last (no snapshot: it took under half a second)
    running = make_exchange("POST", "/runs", id=new_id())  # in flight: written without a response
    store.put(running)
    store.put(make_exchange("GET", "/newer", id=new_id(), response=make_response(200), duration=0.01))
    follow.line(lambda l: "/newer" in l)
    store.put(make_exchange("GET", "/earlier", id=started, response=make_response(204), duration=0.3))
    follow.line(lambda l: "/earlier" in l)
    store.put(make_exchange("POST", "/runs", id=running.id, response=make_response(502), duration=2.0))
    follow.line(lambda l: "/runs" in l)
    errors.line(lambda l: "/runs" in l)
    # One more, so that a second look at the same rows would have printed them again by now.
    store.put(make_exchange("GET", "/last", id=new_id(), response=make_response(200), duration=0.01))
    follow.line(lambda l: "/last" in l)
    assert _paths(follow) == ["/old", "/newer", "/earlier", "/runs", "/last"]
    # A replay and a request a rule answered carry their marks, as in the listing and the inspector.
    store.put(make_exchange("POST", "/hook", id=new_id(), response=make_response(200), duration=0.01,
                            replay_of=running.id, edited=True, resigned="stripe"))
    store.put(make_exchange("GET", "/admin", id=new_id(), response=make_response(403), duration=0.01,
                            rule=RuleMark(1, "deny")))
    marked = [follow.line(lambda l: "/hook" in l), follow.line(lambda l: "/admin" in l)]
    assert [line.split()[3:5] for line in marked] == [["POST", "↻✎s"], ["GET", "⊘"]]
    assert [line.split()[5] for line in marked] == ["/hook", "/admin"]
    assert follow.stop(signal.SIGINT) == 0 and errors.stop() == 0
    assert _paths(errors) == ["/runs"]  # ended as a 502: it did not match while it ran
    store.close()
    assert FOLLOW_BACK >= 2  # the window the late one arrived in (it began before /newer)


def test_follow_waits_for_a_store_that_does_not_exist_yet_and_a_bad_filter_is_refused(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]
) -> None:
    db = tmp_path / "later.db"
    follow = start(procs, env, "requests", "--follow", "--db", str(db))
    follow.line(lambda l: l.startswith("devtunnel: waiting for captures"), lines="err")
    store = Store(db)
    store.put(make_exchange("GET", "/first", id=new_id(), response=make_response(200), duration=0.01))
    follow.line(lambda l: "/first" in l)
    store.close()
    assert follow.stop() == 0
    bad = start(procs, env, "requests", "--follow", "--filter", "status:>=x", "--db", str(db))
    assert bad.wait() == 2
    assert bad.err and bad.err[0].startswith("devtunnel: ") and "status" in bad.err[0] and not bad.out
    assert not any("Traceback" in l for l in bad.err)
