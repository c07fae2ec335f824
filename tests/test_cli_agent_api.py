"""``--api URL`` of ``devtunnel logs``, ``send`` and ``replay`` names a devtunnel agent: another
server there is no agent, said as one line and exit 1, whatever it answers. The CLI runs as a
subprocess with its own state and config folders, against real servers on loopback."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devtunnel.capture.store import Store
from tests.kit.exchanges import make_exchange, make_response
from tests.kit.procs import DEVTUNNEL
from tests.kit.servers import Received, Reply, http_server

SERVERS = {
    # Any path answered with a JSON object: it printed nothing and exited 0.
    "plain JSON": lambda request: Reply.json({"ok": True}),
    # ... or with lines, which it printed as the app's.
    "JSON with lines": lambda request: Reply.json({"lines": [{"text": "not from any app", "stream": "out"}]}),
    # An HTML page: "reading the logs of 'x' failed: Expecting value: line 1 column 1 (char 0)".
    "not JSON": lambda request: Reply(200, [("Content-Type", "text/html")], b"<!doctype html><p>a dev server</p>"),
    "JSON, not an object": lambda request: Reply.json(["tunnels"]),
    "404 with a msg": lambda request: Reply.json({"msg": "no tunnel named 'x'"}, status=404),
}


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVTUNNEL_") and not k.endswith("_WEBHOOK_SECRET")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    return subprocess.run([*DEVTUNNEL, *args], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)


@contextmanager
def _server(kind: str) -> Iterator[tuple[str, int, list[Received]]]:
    with http_server(SERVERS[kind]) as server:
        yield server.url, server.port, server.received


@pytest.mark.parametrize("kind", SERVERS)
def test_logs_with_api_at_a_server_that_is_no_agent_says_no_agent_answers(tmp_path: Path, kind: str) -> None:
    with _server(kind) as (url, port, received):
        done = _run(tmp_path, "logs", "x", "--api", url)
    assert (done.returncode, done.stdout) == (1, ""), (done.stdout, done.stderr)
    # The words send says (one check, agent_api.agent_tunnels), here with logs' remedy.
    assert done.stderr == (f"devtunnel: no devtunnel agent answers at 127.0.0.1:{port}: start one with devtunnel "
                           "http/up, or give --api URL\n")
    assert [r.path for r in received] == ["/api/tunnels"]  # asked what it is; its logs' path never read


@pytest.mark.parametrize("kind", ["plain JSON", "not JSON"])
def test_send_and_logs_ask_the_same_question_of_a_server_at_api(tmp_path: Path, kind: str) -> None:
    with _server(kind) as (url, port, received):
        done = _run(tmp_path, "send", "stripe", "invoice.paid", "--unsigned", "--api", url)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"no devtunnel agent answers at 127.0.0.1:{port}: start one" in done.stderr
    assert [r.path for r in received] == ["/api/tunnels"]


def _stored(tmp_path: Path, target: str) -> str:
    """The id of a webhook captured by tunnel ``web`` to ``target``, in ``tmp_path``/c.db."""
    exchange = make_exchange("POST", "/hooks/order", [("Host", "web.localhost"), ("Content-Length", "2")], b"{}",
                             make_response(200, [("Content-Length", "0")], b""), tunnel="web", target_url=target)
    store = Store(tmp_path / "c.db")
    try:
        store.put(exchange)
    finally:
        store.close()
    return exchange.id


@pytest.mark.parametrize("kind", ["plain JSON", "not JSON"])
def test_replay_with_api_at_a_server_that_is_no_agent_sends_nothing(tmp_path: Path, kind: str) -> None:
    with http_server(lambda request: Reply(200, [("Content-Length", "0")], b"")) as target:
        original = _stored(tmp_path, target.url)
        with _server(kind) as (url, port, _):
            done = _run(tmp_path, "--db", str(tmp_path / "c.db"), "replay", original, "--api", url)
        assert not target.received  # said before anything was sent
    assert (done.returncode, done.stdout) == (1, ""), (done.stdout, done.stderr)
    assert done.stderr == (f"devtunnel: no devtunnel agent answers at 127.0.0.1:{port}: start one with devtunnel "
                           "http/up, or leave --api out to send the replay without asking one\n")


@pytest.mark.parametrize(("args", "message"), [
    (["--api", "ftp://127.0.0.1:1"], "devtunnel: --api must be the agent API's http:// URL, e.g. http://127.0.0.1:4040,"
                                     " not 'ftp://127.0.0.1:1'\n"),
    (["--api", "http://[bad"], "devtunnel: --api 'http://[bad': not a valid URL (Invalid IPv6 URL)\n"),
    (["--api", "127.0.0.1:1", "--to", "http://127.0.0.1:2"],
     "devtunnel: --to URL sends there, where nothing is held: --api names the agent asked whether a tunnel holds"
     " requests, for a replay to the tunnel's target; give one of them\n"),
])
def test_replay_api_is_read_as_logs_and_send_read_it(tmp_path: Path, args: list[str], message: str) -> None:
    with http_server(lambda request: Reply(200, [("Content-Length", "0")], b"")) as target:
        original = _stored(tmp_path, target.url)
        done = _run(tmp_path, "--db", str(tmp_path / "c.db"), "replay", original, *args)
        assert not target.received
    assert (done.returncode, done.stderr) == (2, message), (done.stdout, done.stderr)
