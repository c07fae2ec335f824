"""A replay to a tunnel whose app devtunnel runs with ``--hold`` waits for the app as the tunnel's
requests do: the agent API's replay (the inspector's r and e) at the tunnel's gate, ``devtunnel
replay`` by asking the running agent. A real ``devtunnel up`` runs a real app (``app_fixture.py``)
that the test crashes and lets come back: it is ready when its health path answers 200, which it
does only while a file exists. A tunnel with ``--hold`` and no ``--run`` holds its requests while
its target refuses: a real ``devtunnel http`` to a service the test starts late, the same
``app_fixture.py`` listening once a file exists, and ``devtunnel replay`` waits for it too."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtunnel.capture.store import Store
from tests.helpers import free_port, wait_for
from tests.kit.exchanges import make_exchange, make_response
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc
from tests.kit.servers import Reply, http_server

pytestmark = pytest.mark.timeout(120)

APP = Path(__file__).with_name("app_fixture.py")


class Project:
    """``devtunnel up`` in a folder whose devtunnel.toml runs the app of tunnel ``web`` with a hold;
    the same file gives the agent API's port, so ``devtunnel replay`` run there finds the agent."""

    def __init__(self, root: Path, hold: str, ready: bool = True) -> None:
        self.root = root
        self.port = free_port()
        self.api = f"http://127.0.0.1:{free_port()}"
        self.ready = root / "ready"
        if ready:
            self.ready.touch()
        self.db = root / "c.db"
        self.env = _env(root)
        (root / "devtunnel.toml").write_text(f"""[agent]
api_port = {self.api.rsplit(":", 1)[1]}

[tunnels.web]
target = {self.port}
run = "{sys.executable} {APP} {self.port} --ready-file {self.ready}"
health = "/healthz"
hold = "{hold}"
""")
        self.proc = Proc([*DEVTUNNEL, "up", "--no-tui", "--db", str(self.db)], self.env, cwd=root)
        match = FORWARDING.match(self.proc.line(lambda l: FORWARDING.match(l) is not None))
        assert match is not None
        self.relay = f"http://127.0.0.1:{match.group(3)}"
        self.host = f"web.localhost:{match.group(3)}"
        self.proc.line(lambda l: l.startswith("API "))
        wanted = "ready" if ready else "starting"  # (not ready: its health path answers 503)
        wait_for(lambda: self.tunnel()["app"]["state"] == wanted, timeout=30, what=f"the app {wanted}")

    def tunnel(self) -> dict[str, Any]:
        [tunnel] = httpx.get(self.api + "/api/tunnels", timeout=10).json()["tunnels"]
        return tunnel

    def capture(self) -> dict[str, Any]:
        """A webhook through the tunnel, answered by the app; its record in the agent API."""
        with httpx.Client(timeout=30, trust_env=False) as client:
            answer = client.post(self.relay + "/hooks/order", content=b'{"id": 1}', headers={"Host": self.host})
        assert answer.status_code == 200, answer.text

        def recorded() -> dict[str, Any] | None:
            found = httpx.get(self.api + "/api/requests/http", timeout=10).json()["requests"]
            done = [r for r in found if r["request"]["uri"] == "/hooks/order" and r["response"] is not None]
            return done[0] if done else None

        return wait_for(recorded, what="the webhook recorded")

    def take_down(self) -> None:
        """Crash the app (straight at its port, not through the tunnel); it starts again, and
        stays starting until ``bring_back``."""
        before = self.tunnel()["app"]["restarts"]
        self.ready.unlink()
        with pytest.raises(httpx.HTTPError):  # it exits without answering
            httpx.post(f"http://127.0.0.1:{self.port}/crash", timeout=10, trust_env=False)
        wait_for(lambda: self.tunnel()["app"]["restarts"] > before and self.tunnel()["app"]["state"] != "ready",
                 timeout=30, what="the app down")

    def bring_back(self) -> None:
        self.ready.touch()

    def replay(self, exchange_id: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(f"{self.api}/api/requests/http/{exchange_id}/replay", json=body or {}, timeout=90,
                          trust_env=False)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*DEVTUNNEL, "--db", str(self.db), *args], capture_output=True, text=True,
                              timeout=90, env=self.env, cwd=self.root)


def _env(root: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_CONFIG_HOME": str(root / ".xdg"),
           "XDG_STATE_HOME": str(root / ".xdg-state")}
    for name in ("DEVTUNNEL_RELAY", "DEVTUNNEL_TOKEN", "DEVTUNNEL_CONFIG", "DEVTUNNEL_DB"):
        env.pop(name, None)
    return env


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Any]:
    started: list[Project] = []

    def start(hold: str = "60s", ready: bool = True) -> Project:
        started.append(Project(tmp_path, hold, ready))
        return started[-1]

    yield start
    for p in started:
        if p.proc.popen.poll() is None:
            p.proc.stop(signal.SIGTERM)


def _body(record: dict[str, Any]) -> str:
    """The response body of a record of the agent API."""
    return base64.b64decode(record["response"]["raw"]).split(b"\r\n\r\n", 1)[1].decode()


def _in_background(events: list[str], what: str, call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """``call()`` in a thread; ``what`` joins ``events`` once it returned."""
    out: list[Any] = []

    def run() -> None:
        out.append(call())
        events.append(what)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_an_api_replay_waits_while_the_app_is_down_and_is_sent_once_it_is_back(project: Any) -> None:
    p = project()
    original = p.capture()
    p.take_down()
    events: list[str] = []
    thread, answers = _in_background(events, "replay answered", lambda: p.replay(original["id"]))
    # Held at the tunnel's gate, counted with the tunnel's held requests: not answered 'refused'.
    wait_for(lambda: p.tunnel()["waiting"] == 1, what="the replay held")
    assert not answers and p.tunnel()["app"]["state"] != "ready"
    # The tunnel says its hold as a tunnel without --run does, and its app's as it always did.
    assert p.tunnel()["hold"] == {"timeout": 60.0, "waiting": 1} and p.tunnel()["app"]["hold"] == 60.0
    events.append("app back")
    p.bring_back()
    thread.join(90)
    assert events == ["app back", "replay answered"]
    [answer] = answers
    assert answer.status_code == 201, answer.text
    replayed = answer.json()
    assert replayed["replay_of"] == original["id"] and replayed["error"] is None, replayed
    assert replayed["response"]["status_code"] == 200
    assert replayed["held_ms"] > 0 and replayed["holding"] is False  # the record says it waited
    assert replayed["signature"] is None  # the answer's fields are those it always had
    stored = httpx.get(f"{p.api}/api/requests/http/{replayed['id']}", timeout=10).json()
    assert (stored["held_ms"], stored["holding"]) == (replayed["held_ms"], False)
    # Answered by the app's next run: ``ok PID COUNT``.
    assert _body(replayed).split()[1] != _body(original).split()[1]
    assert p.tunnel()["waiting"] == 0


def test_a_cli_replay_waits_for_the_app_the_running_agent_holds_requests_for(project: Any) -> None:
    p = project()
    original = p.capture()
    p.take_down()
    cli = Proc([*DEVTUNNEL, "--db", str(p.db), "replay", original["id"], "--json"], p.env, cwd=p.root)
    # (an app that was ready, and went down: the agent's held requests say it is restarting)
    cli.line(lambda l: "tunnel web: its app is restarting; the replay waits for it, up to 60 s (--hold)" in l,
             lines="err")
    assert cli.popen.poll() is None and p.tunnel()["app"]["state"] != "ready"  # it waits: nothing sent yet
    p.bring_back()
    assert cli.wait(90) == 0, (cli.out, cli.err)
    [summary] = json.loads("\n".join(cli.out))
    assert summary["status"] == 200 and summary["error"] is None
    assert summary["held_ms"] > 0 and summary["holding"] is False
    stored = httpx.get(f"{p.api}/api/requests/http/{summary['id']}", timeout=10).json()
    assert _body(stored).split()[1] != _body(original).split()[1]  # the app's next run answered


def test_a_replay_sent_elsewhere_with_to_does_not_wait(project: Any) -> None:
    p = project()
    original = p.capture()
    p.take_down()
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"elsewhere")) as other:
        answer = p.replay(original["id"], {"to": other.url})
        assert p.tunnel()["app"]["state"] != "ready"  # answered while the app was still down
        cli = p.cli("replay", original["id"], "--to", other.url, "--json")
        assert p.tunnel()["app"]["state"] != "ready"
    assert answer.status_code == 201, answer.text
    replayed = answer.json()
    assert replayed["response"]["status_code"] == 200 and _body(replayed) == "elsewhere"
    assert replayed["held_ms"] is None
    assert cli.returncode == 0, (cli.stdout, cli.stderr)
    assert "waits" not in cli.stderr
    [summary] = json.loads(cli.stdout)
    assert summary["status"] == 200 and summary["held_ms"] is None


def test_without_a_running_agent_the_cli_replay_is_sent_at_once_as_before(project: Any) -> None:
    p = project()
    original = p.capture()
    p.proc.stop(signal.SIGTERM)  # the agent and its app are gone: the target refuses
    cli = p.cli("replay", original["id"], "--json")
    assert cli.returncode == 1 and "waits" not in cli.stderr
    [summary] = json.loads(cli.stdout)
    assert summary["error"] == "local_refused" and summary["held_ms"] is None


def test_a_replay_the_hold_runs_out_on_fails_as_the_held_requests_do(project: Any) -> None:
    p = project("1s")
    original = p.capture()
    p.take_down()  # and it stays down
    with httpx.Client(timeout=30, trust_env=False) as client:
        held = client.post(p.relay + "/hooks/late", content=b"{}", headers={"Host": p.host})
    assert held.status_code == 503 and held.headers["X-Devtunnel-Error"] == "app_restarting"
    answer = p.replay(original["id"])
    assert answer.status_code == 201, answer.text
    replayed = answer.json()
    expected = "local app restarting: the app is still down after 1 s ("
    assert replayed["error"] == "app_restarting" and replayed["error_message"].startswith(expected), replayed
    assert replayed["response"] is None and replayed["held_ms"] > 0
    tunnel_record = wait_for(lambda: next((r for r in httpx.get(p.api + "/api/requests/http", timeout=10).json()["requests"]
                                           if r["request"]["uri"] == "/hooks/late"), None), what="the 503 recorded")
    assert tunnel_record["error"] == "app_restarting" and tunnel_record["error_message"].startswith(expected)
    # The CLI likewise: it waits out the hold, then sends nothing to the app that is not ready.
    log_before = _app_lines(p)
    cli = p.cli("replay", original["id"], "--json")
    assert cli.returncode == 1, (cli.stdout, cli.stderr)
    [summary] = json.loads(cli.stdout)
    assert summary["error"] == "app_restarting" and summary["status"] is None and summary["held_ms"] > 0
    # Its reason is the agent's own, word for word: the app was ready once (``ready_count``), so
    # it restarts. (It said "local app down", not knowing whether the app was ever ready.)
    shown = p.cli("show", summary["id"])
    assert f"{expected}starting" in shown.stdout, shown.stdout
    assert "tunnel web: its app is restarting; the replay waits for it, up to 1 s (--hold)" in cli.stderr
    assert p.tunnel()["app"]["ready_count"] == 1
    assert not [line for line in _app_lines(p)[len(log_before):] if "/hooks/order" in line]


def test_a_cli_replay_to_an_app_never_up_says_it_has_not_come_up_as_the_held_requests_do(project: Any) -> None:
    # It said "local app restarting: the app is still down after 1 s" of an app in its first
    # start, where a request through the tunnel is told "local app not up yet".
    p = project("1s", ready=False)
    original = make_exchange("POST", "/hooks/order", [("Host", p.host), ("Content-Length", "2")], b"{}",
                             make_response(200, [("Content-Length", "0")], b""), tunnel="web",
                             target_url=p.tunnel()["config"]["addr"])
    store = Store(p.db)
    try:
        store.put(original)
    finally:
        store.close()
    with httpx.Client(timeout=30, trust_env=False) as client:
        held = client.post(p.relay + "/hooks/late", content=b"{}", headers={"Host": p.host})
    expected = "local app not up yet: the app has not come up in 1 s (starting: health /healthz answered 503"
    assert held.status_code == 503 and held.text.startswith("local app not up yet: the app has not come up in 1 s")
    cli = p.cli("replay", original.id)
    assert cli.returncode == 1, (cli.stdout, cli.stderr)
    assert "ERR app_restarting" in cli.stdout and f"failed: {expected}" in cli.stdout, cli.stdout
    assert "tunnel web: its app is not up yet; the replay waits for it, up to 1 s (--hold)" in cli.stderr
    assert p.tunnel()["app"]["restarts"] == 0  # (it was never restarted: its first start, all along)
    assert p.tunnel()["app"]["ready_count"] == 0


def _app_lines(p: Project) -> list[str]:
    return [line["text"] for line in httpx.get(f"{p.api}/api/tunnels/web/logs", timeout=10).json()["lines"]]


# --hold without --run: requests wait for the target itself ------------------------------------------


class HeldTarget:
    """``devtunnel http PORT --hold HOLD`` without ``--run``, to services the test starts and stops
    itself (``app_fixture.py``, listening only once its file exists: a service that starts late);
    devtunnel.toml gives the agent API's port, so ``devtunnel replay`` run there finds the agent."""

    def __init__(self, root: Path, hold: str) -> None:
        self.root = root
        self.port = free_port()
        api_port = free_port()
        self.api = f"http://127.0.0.1:{api_port}"
        self.db = root / "c.db"
        self.env = _env(root)
        (root / "devtunnel.toml").write_text(f"[agent]\napi_port = {api_port}\n")
        self.services: list[Proc] = []
        self.proc = Proc([*DEVTUNNEL, "http", str(self.port), "--hold", hold, "--no-tui", "--db", str(self.db)],
                         self.env, cwd=root)
        match = FORWARDING.match(self.proc.line(lambda l: FORWARDING.match(l) is not None))
        assert match is not None
        self.relay = f"http://127.0.0.1:{match.group(3)}"
        self.host = f"{match.group(2)}.localhost:{match.group(3)}"
        self.proc.line(lambda l: l.startswith("API "))

    def tunnel(self) -> dict[str, Any]:
        [tunnel] = httpx.get(self.api + "/api/tunnels", timeout=10).json()["tunnels"]
        return tunnel

    def service(self, listening: bool) -> tuple[Proc, Path]:
        """A service on the tunnel's port; it listens once the file returned exists."""
        listen = self.root / f"listen-{len(self.services)}"
        if listening:
            listen.touch()
        service = Proc([sys.executable, str(APP), str(self.port), "--listen-file", str(listen)], self.env)
        self.services.append(service)
        if listening:
            service.line(lambda l: l.startswith("listening on"))
        return service, listen

    def post(self, path: str) -> httpx.Response:
        with httpx.Client(timeout=90, trust_env=False) as client:
            return client.post(self.relay + path, content=b'{"id": 1}', headers={"Host": self.host})

    def record(self, path: str) -> dict[str, Any]:
        def recorded() -> dict[str, Any] | None:
            found = httpx.get(self.api + "/api/requests/http", timeout=10).json()["requests"]
            done = [r for r in found if r["request"]["uri"] == path and (r["response"] is not None or r["error"])]
            return done[0] if done else None

        return wait_for(recorded, what=f"{path} recorded")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*DEVTUNNEL, "--db", str(self.db), *args], capture_output=True, text=True,
                              timeout=90, env=self.env, cwd=self.root)


@pytest.fixture
def held_target(tmp_path: Path) -> Iterator[Any]:
    started: list[HeldTarget] = []

    def start(hold: str = "60s") -> HeldTarget:
        started.append(HeldTarget(tmp_path, hold))
        return started[-1]

    yield start
    for t in started:
        for service in t.services:
            service.kill()
        if t.proc.popen.poll() is None:
            t.proc.stop(signal.SIGTERM)


def test_the_tunnel_json_says_its_hold_without_run(held_target: Any) -> None:
    # The hold was said only inside ``app``, null without --run: a client saw no hold at all.
    t = held_target()
    assert t.tunnel()["app"] is None
    assert t.tunnel()["hold"] == {"timeout": 60.0, "waiting": 0}
    _, listen = t.service(listening=False)
    events: list[str] = []
    thread, answers = _in_background(events, "answered", lambda: t.post("/hooks/order"))
    wait_for(lambda: t.tunnel()["hold"]["waiting"] == 1, what="the request held")
    assert t.tunnel()["waiting"] == 1 and not answers
    listen.touch()
    thread.join(90)
    [answer] = answers
    assert answer.status_code == 200, answer.text
    wait_for(lambda: t.tunnel()["hold"] == {"timeout": 60.0, "waiting": 0}, what="nothing held")


def test_a_cli_replay_waits_for_a_target_that_starts_late_as_the_tunnel_holds_its_requests(held_target: Any) -> None:
    # It sent at once, and failed with local_refused, where a request through the tunnel is held
    # until the port accepts.
    t = held_target()
    first, _ = t.service(listening=True)
    assert t.post("/hooks/order").status_code == 200
    original = t.record("/hooks/order")
    first.stop(signal.SIGTERM)
    _, listen = t.service(listening=False)  # its next run, slow to start
    cli = Proc([*DEVTUNNEL, "--db", str(t.db), "replay", original["id"], "--json"], t.env, cwd=t.root)
    said = cli.line(lambda l: "the replay waits" in l, lines="err")
    assert said == (f"devtunnel: tunnel {original['tunnel_name']}: its target 127.0.0.1:{t.port} refuses"
                    " connections; the replay waits for it to accept one, up to 60 s (--hold)"), said
    assert cli.popen.poll() is None  # it waits: nothing sent yet
    listen.touch()
    assert cli.wait(90) == 0, (cli.out, cli.err)
    [summary] = json.loads("\n".join(cli.out))
    assert summary["status"] == 200 and summary["error"] is None
    assert summary["held_ms"] > 0 and summary["holding"] is False
    stored = httpx.get(f"{t.api}/api/requests/http/{summary['id']}", timeout=10).json()
    assert _body(stored).split()[1] != _body(original).split()[1]  # the late service answered


def test_a_cli_replay_to_a_target_that_never_listens_fails_as_the_held_requests_do(held_target: Any) -> None:
    t = held_target("1s")
    first, _ = t.service(listening=True)
    assert t.post("/hooks/order").status_code == 200
    original = t.record("/hooks/order")
    first.stop(signal.SIGTERM)
    held = t.post("/hooks/late")
    assert held.status_code == 503 and held.headers["X-Devtunnel-Error"] == "app_restarting"
    reason = "local app restarting: the app still refuses connections after 1 s"
    assert t.record("/hooks/late")["error_message"] == reason
    cli = t.cli("replay", original["id"], "--json")
    assert cli.returncode == 1, (cli.stdout, cli.stderr)
    assert "refuses connections; the replay waits for it to accept one, up to 1 s (--hold)" in cli.stderr
    [summary] = json.loads(cli.stdout)
    assert summary["error"] == "app_restarting" and summary["status"] is None and summary["held_ms"] > 0
    assert reason in t.cli("show", summary["id"]).stdout


# The agent's API on a port of its own (--api-port): found with --api ----------------------------


class ApiElsewhere:
    """``devtunnel http PORT --api-port P --run CMD --hold HOLD``: the agent's API on a port a
    command does not look at by itself (devtunnel.toml's ``agent.api_port`` names another, where
    nothing listens); its app (``app_fixture.py``) listens once a file exists: it comes up late."""

    def __init__(self, root: Path, hold: str) -> None:
        self.root = root
        self.port = free_port()
        self.api = f"http://127.0.0.1:{free_port()}"
        self.looked = free_port()
        """``agent.api_port``: a command without --api looks from there on."""
        self.listen = root / "listen"
        self.db = root / "c.db"
        self.env = _env(root)
        (root / "devtunnel.toml").write_text(f"[agent]\napi_port = {self.looked}\n")
        run = f"{sys.executable} {APP} {self.port} --listen-file {self.listen}"
        self.proc = Proc([*DEVTUNNEL, "http", str(self.port), "--api-port", self.api.rsplit(":", 1)[1], "--run", run,
                          "--hold", hold, "--no-tui", "--db", str(self.db)], self.env, cwd=root)
        match = FORWARDING.match(self.proc.line(lambda l: FORWARDING.match(l) is not None))
        assert match is not None
        self.name = match.group(2)
        self.host = f"{self.name}.localhost:{match.group(3)}"
        self.proc.line(lambda l: l.startswith("API "))
        wait_for(lambda: self.tunnel()["app"]["state"] == "starting", timeout=30, what="the app starting")

    def tunnel(self) -> dict[str, Any]:
        [tunnel] = httpx.get(self.api + "/api/tunnels", timeout=10).json()["tunnels"]
        return tunnel

    def captured(self) -> str:
        """The id of a webhook captured by this tunnel, stored as the agent stores one."""
        original = make_exchange("POST", "/hooks/order", [("Host", self.host), ("Content-Length", "9")], b'{"id": 1}',
                                 make_response(200, [("Content-Length", "0")], b""), tunnel=self.name,
                                 target_url=self.tunnel()["config"]["addr"])
        store = Store(self.db)
        try:
            store.put(original)
        finally:
            store.close()
        return original.id

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*DEVTUNNEL, "--db", str(self.db), *args], capture_output=True, text=True,
                              timeout=90, env=self.env, cwd=self.root)


@pytest.fixture
def api_elsewhere(tmp_path: Path) -> Iterator[Any]:
    started: list[ApiElsewhere] = []

    def start(hold: str = "60s") -> ApiElsewhere:
        started.append(ApiElsewhere(tmp_path, hold))
        return started[-1]

    yield start
    for a in started:
        if a.proc.popen.poll() is None:
            a.proc.stop(signal.SIGTERM)


def test_a_cli_replay_asks_the_agent_api_given_with_api_and_waits_for_the_app_coming_up_late(api_elsewhere: Any) -> None:
    # Without --api it found no agent on its own ports and went out at once: ERR local_refused.
    a = api_elsewhere()
    original = a.captured()
    cli = Proc([*DEVTUNNEL, "--db", str(a.db), "replay", original, "--api", a.api, "--json"], a.env, cwd=a.root)
    cli.line(lambda l: f"tunnel {a.name}: its app is not up yet; the replay waits for it, up to 60 s (--hold)" in l,
             lines="err")
    assert cli.popen.poll() is None and a.tunnel()["app"]["state"] == "starting"  # it waits: nothing sent yet
    a.listen.touch()
    assert cli.wait(90) == 0, (cli.out, cli.err)
    [summary] = json.loads("\n".join(cli.out))
    assert summary["status"] == 200 and summary["error"] is None
    assert summary["held_ms"] > 0 and summary["holding"] is False
    assert a.tunnel()["app"]["state"] == "ready"


def test_a_cli_replay_refused_with_no_agent_found_says_where_it_looked_and_names_api(api_elsewhere: Any) -> None:
    a = api_elsewhere()
    original = a.captured()
    cli = a.cli("replay", original)
    assert cli.returncode == 1, (cli.stdout, cli.stderr)
    assert "ERR local_refused" in cli.stdout, cli.stdout
    last = min(a.looked + 9, 65535)
    assert (f"devtunnel: tunnel {a.name}: its target refused the replay, which waited for nothing: no devtunnel agent"
            f" at 127.0.0.1:{a.looked} to 127.0.0.1:{last} runs this tunnel to say whether it holds requests while"
            " its app restarts (--hold); --api URL names its agent's API if that listens elsewhere") in cli.stderr
    assert "waits" not in cli.stderr and "Traceback" not in cli.stderr
    assert a.tunnel()["app"]["state"] == "starting"  # (its app never came up: the target refused)
