"""``devtunnel http PORT --run CMD [--health PATH] [--hold D] --no-tui`` and ``devtunnel logs``, as real
subprocesses with a real app that devtunnel starts, crashes on purpose mid-traffic and restarts."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtunnel.agent.hold import CONNECT_GRACE
from devtunnel.capture.store import Store
from devtunnel.sockets import bindable
from tests.helpers import free_port, process_alive, wait_for
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc

APP = Path(__file__).with_name("app_fixture.py")


def app_command(port: int, *extra: str) -> str:
    return " ".join([sys.executable, str(APP), str(port), *extra])


class Running:
    """A ``devtunnel http --run`` process, its public address and its API."""

    def __init__(self, proc: Proc, api: str) -> None:
        self.proc = proc
        self.api = api
        line = proc.line(lambda l: FORWARDING.match(l) is not None)
        match = FORWARDING.match(line)
        assert match is not None
        self.name = match.group(2)
        self.relay = f"http://127.0.0.1:{match.group(3)}"
        self.host = f"{self.name}.localhost:{match.group(3)}"
        proc.line(lambda l: l.startswith("API "))

    def get(self, client: httpx.Client, path: str) -> httpx.Response:
        return client.get(self.relay + path, headers={"Host": self.host})

    def post(self, client: httpx.Client, path: str, body: bytes) -> httpx.Response:
        return client.post(self.relay + path, content=body, headers={"Host": self.host})

    def app(self) -> dict:
        tunnels = httpx.get(self.api + "/api/tunnels", timeout=5).json()["tunnels"]
        return tunnels[0]["app"]

    def log(self) -> list[dict]:
        """The app's lines the agent has read so far."""
        return httpx.get(f"{self.api}/api/tunnels/{self.name}/logs", timeout=5).json()["lines"]


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    procs: list[Proc] = []

    def start(*flags: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Running:
        api_port = free_port()
        argv = [*DEVTUNNEL, "http", *flags, "--no-tui", "--api-port", str(api_port), "--db", str(tmp_path / "c.db")]
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = Proc(argv, environment, cwd=cwd)
        procs.append(proc)
        return Running(proc, f"http://127.0.0.1:{api_port}")

    yield start
    for proc in procs:
        if proc.popen.poll() is None:
            proc.stop(signal.SIGTERM)


def _records(db: Path) -> list:
    store = Store(db)
    try:
        return [store.get(i) for i in store.ids()]
    finally:
        store.close()


def test_with_hold_a_crashing_app_loses_no_request(start, tmp_path: Path) -> None:
    port = free_port()
    # The app lingers a moment before it dies, as on a busy machine: the next request reaches it
    # as it goes down, gets no answer (see app_fixture.py), and is held for the app started again.
    run = start(str(port), "--run", app_command(port, "--exit-after", "4", "--exit-delay", "0.2"), "--hold", "10s")
    statuses: Counter[int] = Counter()
    pids: set[str] = set()
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=20) as client:
        for i in range(18):  # the app crashes after every 4th request: 4 crashes mid-traffic
            assert time.monotonic() < deadline
            response = run.get(client, f"/n{i}")
            statuses[response.status_code] += 1
            if response.status_code == 200:
                pids.add(response.text.split()[1])
    assert statuses[502] == 0 and statuses[503] == 0, statuses
    assert statuses[200] == 18
    assert len(pids) >= 4, "the app was not restarted"
    app = run.app()
    assert app["restarts"] >= 4
    assert app["command"].endswith("--exit-after 4 --exit-delay 0.2")
    wait_for(lambda: run.app()["state"] == "ready", timeout=30, what="the app ready again")
    assert run.proc.stop(signal.SIGTERM) == 0


def test_with_hold_a_get_the_app_closes_unanswered_is_sent_again_a_post_only_once(start, tmp_path: Path) -> None:
    # As an app slow to die does: it reads what reaches it and closes it unanswered, before its
    # supervisor knows it is going. A GET (idempotent) waits and goes again while the hold lasts;
    # a POST is sent again once only (it may have done its work), then answered 502.
    port = free_port()
    run = start(str(port), "--run", app_command(port, "--drop", "3"), "--hold", "10s")
    with httpx.Client(timeout=30) as client:
        got = run.get(client, "/drop/get")
        assert got.status_code == 200 and got.text.startswith("ok "), (got.status_code, got.text)
        posted = run.post(client, "/drop/post", b'{"id": 1}')
    assert posted.status_code == 502, (posted.status_code, posted.text)
    assert posted.headers["X-Devtunnel-Error"] == "app_restarting"
    # The app's lines reach the agent's log when it reads them, which may be after the answer.
    lines: list[str] = []

    def dropped() -> tuple[int, int]:
        lines[:] = [line["text"] for line in run.log()]
        return sum("dropped /drop/get" in l for l in lines), sum("dropped /drop/post" in l for l in lines)

    with contextlib.suppress(AssertionError):
        wait_for(lambda: all(n >= want for n, want in zip(dropped(), (3, 2))), timeout=10, what="the app's lines")
    assert dropped() == (3, 2), lines
    assert run.proc.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_with_hold_a_request_that_crashes_the_app_is_not_sent_to_it_again_and_again(
        start, tmp_path: Path, method: str) -> None:
    # A request the app dies on is held for its restart and sent once more (a reload may have
    # cut it); when the restarted app dies on it too, it is answered 502, not sent a third time:
    # a GET went on crashing the app for as long as the hold lasted.
    port = free_port()
    run = start(str(port), "--run", app_command(port), "--hold", "30s")
    with httpx.Client(timeout=60) as client:
        wait_for(lambda: run.app()["state"] == "ready", timeout=30, what="the app ready")
        crashed = run.post(client, "/crash", b'{"id": 1}') if method == "POST" else run.get(client, "/crash")
        assert crashed.status_code == 502, (crashed.status_code, crashed.text)
        assert crashed.headers["X-Devtunnel-Error"] == "app_restarting"
        assert "went down with this request in it twice" in crashed.text
        wait_for(lambda: run.app()["state"] == "ready", timeout=30, what="the app ready again")
        after = run.get(client, "/after")
        assert after.status_code == 200, (after.status_code, after.text)
    lines = [line["text"] for line in run.log()]
    assert sum("crashing on /crash" in line for line in lines) == 2, lines
    assert run.app()["restarts"] == 2
    assert run.proc.stop(signal.SIGTERM) == 0
    [ex] = [ex for ex in _records(tmp_path / "c.db") if ex.request.path == "/crash"]
    assert (ex.status, ex.error) == (502, "app_restarting") and "not sent a third time" in ex.error_message


def test_without_hold_the_502s_say_the_app_is_restarting(start, tmp_path: Path) -> None:
    port = free_port()
    run = start(str(port), "--run", app_command(port, "--exit-after", "2"))
    statuses: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=20) as client:
        for i in range(300):  # until a 502 was seen and the app answered again after it
            if time.monotonic() > deadline or (statuses[502] and statuses[200] >= 4):
                break
            response = run.get(client, f"/n{i}")
            statuses[response.status_code] += 1
            if response.status_code == 502:
                kinds[response.headers.get("X-Devtunnel-Error", "")] += 1
                assert "local app restarting" in response.text or "local app not up yet" in response.text  # (before it was ready)
    assert statuses[502] > 0, statuses
    assert set(kinds) == {"app_restarting"}, kinds
    run.proc.stop(signal.SIGTERM)
    failed = [ex for ex in _records(tmp_path / "c.db") if ex.status == 502]
    assert len(failed) == statuses[502]
    assert all(ex.error == "app_restarting" and ex.error_message.startswith(("local app restarting", "local app not up yet"))
               for ex in failed)


def test_a_crashing_apps_output_reaches_the_record_not_the_public_client(start, tmp_path: Path) -> None:
    # The 502 quoted the app's last line on stderr to whoever called the public URL: a traceback
    # line may name a file, a host or a key.
    port = free_port()
    run = start(str(port), "--run", "echo 'KeyError: sk_live_do_not_leak in /srv/app/settings.py' >&2; exit 1")
    wait_for(lambda: run.app()["restarts"] >= 1, what="the app crashing")
    with httpx.Client(timeout=20) as client:
        response = run.get(client, "/x")
    assert response.status_code == 502 and response.headers["X-Devtunnel-Error"] == "app_restarting"
    assert "sk_live_do_not_leak" not in response.text and "settings.py" not in response.text, response.text
    assert ": exited with code 1)" in response.text, response.text  # the state, in devtunnel's words
    run.proc.stop(signal.SIGTERM)
    [ex] = _records(tmp_path / "c.db")
    assert "KeyError: sk_live_do_not_leak" in ex.error_message  # the developer's record keeps it
    assert "sk_live_do_not_leak" not in ex.response.body.decode()


def test_hold_expired_is_503_with_retry_after(start, tmp_path: Path) -> None:
    port = free_port()
    # The app never becomes ready: its health path answers 503 until a file that never comes.
    run = start(str(port), "--run", app_command(port, "--ready-file", str(tmp_path / "never")),
                "--health", "/healthz", "--hold", "1s")
    with httpx.Client(timeout=20) as client:
        response = run.get(client, "/late")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.headers["X-Devtunnel-Error"] == "app_restarting"
    assert run.app()["state"] == "starting"
    run.proc.stop(signal.SIGTERM)
    [ex] = _records(tmp_path / "c.db")
    assert ex.status == 503 and ex.error == "app_restarting" and "local app not up yet" in ex.error_message  # never ready


def test_requests_held_at_ctrl_c_are_answered_503_at_once_not_cut(start, tmp_path: Path) -> None:
    """Ctrl-C while a webhook waits for the app: it is answered 503 with Retry-After (the
    provider sends it again later) and recorded with its body; it waited out the agent's grace
    and got the relay's 502."""
    port = free_port()
    run = start(str(port), "--run", app_command(port, "--ready-file", str(tmp_path / "never")),
                "--health", "/healthz", "--hold", "60s")
    answers: list[httpx.Response] = []

    def deliver() -> None:
        with httpx.Client(timeout=30) as client:
            answers.append(run.post(client, "/webhooks/stripe", b'{"id":"evt_held"}'))

    sender = threading.Thread(target=deliver)
    sender.start()
    wait_for(lambda: run.app()["waiting"] == 1, what="the webhook held")
    assert run.proc.stop(signal.SIGINT) == 0
    sender.join(30)
    [response] = answers
    assert response.status_code == 503
    assert response.headers["X-Devtunnel-Error"] == "app_restarting"
    assert "Retry-After" in response.headers
    assert "devtunnel is stopping" in response.text
    [ex] = _records(tmp_path / "c.db")
    assert (ex.status, ex.error, ex.request.body) == (503, "app_restarting", b'{"id":"evt_held"}')
    assert "devtunnel is stopping" in ex.error_message


def test_health_path_decides_readiness_and_held_requests_wait_for_it(start, tmp_path: Path) -> None:
    port = free_port()
    ready_file = tmp_path / "ready"
    run = start(str(port), "--run", app_command(port, "--ready-file", str(ready_file)),
                "--health", "/healthz", "--hold", "20s")
    # The port accepts long before the health path says ready: the app stays "starting".
    wait_for(lambda: any("listening" in l["text"] for l in run.log()), what="the app listening")
    assert run.app()["state"] == "starting"
    result: list[httpx.Response] = []
    with httpx.Client(timeout=30) as client:
        sender = threading.Thread(target=lambda: result.append(run.get(client, "/held")))
        sender.start()
        wait_for(lambda: run.app()["waiting"] == 1, what="the request held")
        assert not result
        ready_file.touch()
        sender.join(30)
    assert result and result[0].status_code == 200
    assert run.app()["state"] == "ready"
    assert run.app()["waiting"] == 0


def test_a_health_path_answering_an_error_is_said_not_just_starting(start, tmp_path: Path) -> None:
    # A wrong or failing health path keeps the app "starting" forever: the answer it gets is
    # shown in the state line, /api/tunnels and the app's log, once.
    port = free_port()
    ready_file = tmp_path / "ready"
    run = start(str(port), "--run", app_command(port, "--ready-file", str(ready_file)), "--health", "/healthz")
    said = "health /healthz answered 503, not 2xx/3xx"
    run.proc.line(lambda l: l.endswith(f"app starting ({said})"), lines="err")
    assert run.app()["state"] == "starting" and run.app()["message"] == said
    logs = Proc([*DEVTUNNEL, "logs", run.name, "--api", run.api], {**os.environ})
    assert logs.wait() == 0
    assert sum(said in line for line in logs.out) == 1, logs.out
    ready_file.touch()
    run.proc.line(lambda l: l.endswith("app ready"), lines="err")
    assert run.app()["message"] == ""


def test_a_health_path_not_yet_listening_is_no_answer_to_report(start, tmp_path: Path) -> None:
    # While the app's port refused, the probe's "no answer" came back as False, which the note
    # told as a status: "app starting (health /healthz answered False, not 2xx/3xx)".
    port = free_port()
    run = start(str(port), "--run", f"sleep 1; exec {app_command(port)}", "--health", "/healthz")
    run.proc.line(lambda l: l.endswith("app ready"), lines="err")
    assert not [line for line in run.proc.err if "answered" in line], run.proc.err


def test_devtunnel_stop_ends_the_app_and_its_children(start, tmp_path: Path) -> None:
    port = free_port()
    pidfile = tmp_path / "child.pid"
    run = start(str(port), "--run", app_command(port, "--child-pidfile", str(pidfile)))
    wait_for(lambda: run.app()["state"] == "ready", what="app ready")
    app_pid = run.app()["pid"]
    child_pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), what="child pid"))
    assert run.proc.stop(signal.SIGTERM) == 0

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(lambda: gone(app_pid) and gone(child_pid), what="the app and its child stopped")


def test_sigint_stops_the_app_too(start, tmp_path: Path) -> None:
    port = free_port()
    run = start(str(port), "--run", app_command(port))
    wait_for(lambda: run.app()["state"] == "ready", what="app ready")
    pid = run.app()["pid"]
    assert run.proc.stop(signal.SIGINT) == 0
    wait_for(lambda: not process_alive(pid), what="app stopped")


def test_ctrl_c_gives_the_app_time_to_shut_down_cleanly(start, tmp_path: Path) -> None:
    # SIGTERM, then SIGKILL only after the grace: an app finishing its work (uvicorn's shutdown,
    # a flush) is not cut short.
    port = free_port()
    stopped = tmp_path / "stopped"
    run = start(str(port), "--run", app_command(port, "--stopped-file", str(stopped), "--stop-delay", "1"))
    wait_for(lambda: run.app()["state"] == "ready", what="app ready")
    assert run.proc.stop(signal.SIGINT) == 0
    assert stopped.read_text() == "stopped cleanly\n"


def test_an_app_ignoring_sigterm_is_killed_after_the_grace_with_its_children(start, tmp_path: Path) -> None:
    port = free_port()
    pidfile = tmp_path / "child.pid"
    run = start(str(port), "--run", "trap '' TERM; " + app_command(port, "--child-pidfile", str(pidfile)))
    wait_for(lambda: run.app()["state"] == "ready", what="app ready")
    group = run.app()["pid"]
    child_pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), what="child pid"))
    began = time.monotonic()
    assert run.proc.stop(signal.SIGINT) == 0
    assert time.monotonic() - began >= 4  # the 5 s grace, then SIGKILL
    wait_for(lambda: not process_alive(child_pid) and not process_alive(group), what="the whole group gone")


def test_logs_command_prints_the_app_output_escaped_and_follows(start, tmp_path: Path) -> None:
    port = free_port()
    run = start(str(port), "--run", app_command(port), "--name", "payments")
    wait_for(lambda: run.app()["state"] == "ready", what="app ready")
    # Ready is the port accepting: the line the app prints once it listens may be read after that.
    wait_for(lambda: any("listening on" in line["text"] for line in run.log()), what="the app's first line logged")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    once = Proc([*DEVTUNNEL, "logs", "payments", "--api", run.api], env)
    assert once.wait() == 0, once.err
    listening = next(l for l in once.out if "listening on" in l)
    assert "\x1b" not in "\n".join(once.out) and "\x07" not in "\n".join(once.out)
    assert "\\x1b]0;pwned" in listening
    assert any("started app" in l for l in once.out)

    follow = Proc([*DEVTUNNEL, "logs", "payments", "-f", "--api", run.api], env)
    try:
        follow.line(lambda l: "listening on" in l)
        with httpx.Client(timeout=10) as client:
            assert run.get(client, "/after").status_code == 200
        follow.line(lambda l: "served /after #1" in l)
    finally:
        assert follow.stop(signal.SIGINT) == 0

    grep = Proc([*DEVTUNNEL, "logs", "payments", "--grep", "SERVED", "--api", run.api], env)
    assert grep.wait() == 0
    assert grep.out and all("served" in l for l in grep.out)


def test_logs_command_errors(start, tmp_path: Path) -> None:
    port = free_port()
    run = start(str(port))  # no --run: no app
    env = {**os.environ}
    missing = Proc([*DEVTUNNEL, "logs", "nope", "--api", run.api], env)
    assert missing.wait() == 1
    assert missing.err == [f"devtunnel: no tunnel named 'nope' (running: {run.name})"]  # what was meant, said
    no_app = Proc([*DEVTUNNEL, "logs", run.name, "--api", run.api], env)
    assert no_app.wait() == 1
    assert "runs no app" in no_app.err[0]
    nobody = Proc([*DEVTUNNEL, "logs", "x", "--api", f"http://127.0.0.1:{free_port()}"], env)
    assert nobody.wait() == 1
    assert "no devtunnel agent answers" in nobody.err[0]
    bad = Proc([*DEVTUNNEL, "logs", "x", "--api", "ftp://127.0.0.1:1"], env)
    assert bad.wait() == 2 and "--api must be" in bad.err[0]


@pytest.mark.parametrize(("flags", "message"), [
    (["--hold", "soon"], "expected a --hold duration such as 30s"),
    (["--hold=-3s"], "expected a --hold duration"),
    (["--health", "/healthz"], "--health needs --run"),
    (["--run", "true", "--health", "healthz"], "health: expected a path on the target"),
    (["--run", "   "], "run must be a command line"),
    # An empty value (``--run "$APP"`` with APP unset) is refused, not taken as "no app":
    (["--run", ""], "--run must be a command line, not empty text"),
    (["--run", "true", "--health", ""], "health: expected a path on the target"),
    (["--hold", ""], "expected a --hold duration such as 30s"),
])
def test_bad_app_flags_exit_2_with_one_line(flags: list[str], message: str, tmp_path: Path) -> None:
    proc = Proc([*DEVTUNNEL, "http", "8000", *flags, "--no-tui", "--api-port", "0", "--db", str(tmp_path / "c.db")],
                {**os.environ})
    assert proc.wait() == 2
    assert len(proc.err) == 1 and message in proc.err[0], proc.err
    assert not proc.out


def test_a_missing_program_is_said_in_the_log(start, tmp_path: Path) -> None:
    port = free_port()
    run = start(str(port), "--run", "definitely-not-a-program-devtunnel-test --port 1")
    # /bin/sh starts, says the program is missing and exits 127: devtunnel restarts it with backoff.
    wait_for(lambda: run.app()["restarts"] >= 1, what="a restart")
    lines = httpx.get(run.api + f"/api/tunnels/{run.name}/logs", timeout=5).json()["lines"]
    assert any("not found" in l["text"] for l in lines)
    assert any("exited with code 127" in l["text"] for l in lines)
    assert any("the shell found no such command" in l["text"] for l in lines)


def test_a_crash_is_said_with_the_last_line_the_app_wrote_on_stderr(start, tmp_path: Path) -> None:
    """``devtunnel up`` with an app that cannot import its module: the one line said was
    ``app crashed (exited with code 1)``, and why was only in ``devtunnel logs``."""
    port = free_port()
    app = tmp_path / "app.py"
    app.write_text("import sys\nprint('starting', flush=True)\n"
                   "print('Traceback (most recent call last):', file=sys.stderr)\n"
                   "print(\"ModuleNotFoundError: No module named 'fastapi'\", file=sys.stderr)\n"
                   "print('', file=sys.stderr)\nsys.exit(1)\n")
    run = start(str(port), "--run", f"{sys.executable} {app}")
    line = run.proc.line(lambda l: f"tunnel {run.name}: app crashed" in l, "err", timeout=30)
    assert "app crashed (exited with code 1: ModuleNotFoundError: No module named 'fastapi'; restarting in " in line, line
    wait_for(lambda: run.app()["state"] == "restarting", what="the restart")
    assert run.app()["message"].startswith("exited with code 1: ModuleNotFoundError: No module named 'fastapi';"
                                           " restarting in ")


def test_an_app_killed_by_a_signal_is_said_so_not_only_by_its_shells_code(start, tmp_path: Path) -> None:
    # The app runs under /bin/sh -c, which exits 128 + the signal that killed its command: the
    # log said "exited with code 143", which a user has to decode.
    port = free_port()
    run = start(str(port), "--run", app_command(port))
    wait_for(lambda: run.app()["state"] == "ready", what="the app ready")
    with httpx.Client(timeout=10) as client:
        pid = int(run.get(client, "/pid").text.split()[1])
    os.kill(pid, signal.SIGTERM)
    line = run.proc.line(lambda l: f"tunnel {run.name}: app crashed" in l, "err", timeout=30)
    assert "(exited with code 143, its command killed by SIGTERM" in line, line
    wait_for(lambda: any("app exited with code 143, its command killed by SIGTERM" in l["text"] for l in run.log()),
             what="the exit said in the app's log")


def test_an_app_that_ends_cleanly_is_exited_0_not_crashed_and_is_not_restarted(start, tmp_path: Path) -> None:
    # It was "crashed (exited with code 0)" and started again and again, every second.
    port = free_port()
    run = start(str(port), "--run", f"{sys.executable} -c pass")
    wait_for(lambda: run.app()["state"] == "exited", what="the app to end")
    app = run.app()
    assert (app["exit_code"], app["restarts"], app["message"]) == (0, 0, "ended cleanly with code 0: not restarted")
    run.proc.line(lambda l: l.endswith(f"tunnel {run.name}: app exited (ended cleanly with code 0: not restarted)"), "err")
    assert not any("crashed" in line for line in run.proc.err)
    # Restarted by hand (the inspector's R), it runs again.
    assert httpx.post(run.api + f"/api/tunnels/{run.name}/restart", timeout=10).status_code == 200
    wait_for(lambda: run.app()["restarts"] == 0 and sum("started app" in l["text"] for l in
             httpx.get(run.api + f"/api/tunnels/{run.name}/logs", timeout=5).json()["lines"]) == 2,
             what="the app started a second time")


def test_a_port_taken_before_the_app_starts_is_said_not_hidden_behind_ready(start, tmp_path: Path) -> None:
    # An old server left running in another terminal holds the target's port: the app devtunnel
    # starts cannot listen there and exits, while the port answers (requests reach the old one).
    # "app ready" alone would hide that; the state and its log line say the port was taken.
    port = free_port()
    stranger = socket.socket()
    stranger.bind(("127.0.0.1", port))
    stranger.listen(8)
    try:
        run = start(str(port), "--run", app_command(port))
        line = run.proc.line(lambda l: "app ready" in l, lines="err")
        assert f"port {port} was already taken" in line, line
        lines = httpx.get(run.api + f"/api/tunnels/{run.name}/logs", timeout=5).json()["lines"]
        assert any(f"port {port} was already taken" in l["text"] and l["stream"] == "devtunnel" for l in lines)
    finally:
        stranger.close()


def test_the_inspectors_api_pipe_ends_with_the_agents_end_not_held_by_the_app(tmp_path: Path) -> None:
    # The inspector starts the agent with a pipe (DEVTUNNEL_API_FD) for its API line and takes
    # the pipe's end for the agent going away: the app the agent runs must not hold it open.
    port = free_port()
    read, write = os.pipe()
    argv = [*DEVTUNNEL, "http", str(port), "--no-tui", "--api-port", str(free_port()), "--db", str(tmp_path / "c.db"),
            "--run", app_command(port)]
    agent = subprocess.Popen(argv, env={**os.environ, "DEVTUNNEL_API_FD": str(write)}, pass_fds=(write,),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    try:
        with open(read, "rb", buffering=0) as pipe:
            line = b""
            while not line.endswith(b"\n"):
                assert select.select([pipe], [], [], 20)[0], "no API line"
                chunk = pipe.read(1)
                assert chunk, line
                line += chunk
            assert line.startswith(b"API http://127.0.0.1:")
            assert select.select([pipe], [], [], 10)[0] and pipe.read(1) == b"", "the pipe is held open"
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(20)


SILENT_APP = ("import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(8); "
              "held = [s.accept() for _ in iter(int, 1)]")
"""An app that accepts connections and never answers on them."""


def test_a_health_path_that_never_answers_is_said_not_a_silent_starting(start, tmp_path: Path) -> None:
    # The port accepts, GET /healthz never gets a status line: "app starting" alone, for ever,
    # hid why (a health check blocked on a database, a wrong port for the health route ...).
    port = free_port()
    run = start(str(port), "--run", f"{sys.executable} -c \"{SILENT_APP}\" {port}", "--health", "/healthz")
    wait_for(lambda: "health /healthz gave no answer" in run.app()["message"], timeout=15,
             what="the app's message saying the health check got no answer")
    assert run.app()["state"] == "starting"
    line = run.proc.line(lambda l: "health /healthz gave no answer" in l, lines="err")
    assert "app starting" in line


def test_an_app_that_never_opens_the_target_port_is_said_not_a_silent_starting(start, tmp_path: Path) -> None:
    # An app listening on another port than the tunnel's target was "app starting" for ever.
    port = free_port()
    run = start(str(port), "--run", f"{sys.executable} -c \"import time; time.sleep(300)\"")
    expected = f"port {port} accepts no connection after 15 s: does the app listen on 127.0.0.1:{port}? (it gets PORT={port})"
    wait_for(lambda: run.app()["message"] == expected, timeout=40, what="the app's message about its port")
    assert run.app()["state"] == "starting"
    assert "app starting" in run.proc.line(lambda l: expected in l, lines="err")


def test_the_app_does_not_outlive_a_killed_devtunnel(start, tmp_path: Path) -> None:
    port = free_port()
    run = start(str(port), "--run", app_command(port))
    wait_for(lambda: run.app()["state"] == "ready", what="app ready")
    pid = run.app()["pid"]
    apps = _processes_running(str(APP), str(port))
    assert apps and pid not in apps, (pid, apps)  # /bin/sh forks the command: the app is a grandchild
    run.proc.kill()  # SIGKILL: devtunnel cannot stop anything itself
    wait_for(lambda: not process_alive(pid), what="the shell gone with devtunnel")
    wait_for(lambda: not any(process_alive(app) for app in apps), what="the app itself gone with devtunnel")


def test_an_app_ignoring_sigterm_does_not_outlive_a_killed_devtunnel(start, tmp_path: Path) -> None:
    # The guard shell's SIGTERM is not the end of it: an app that ignores SIGTERM (and the child
    # it started) would keep the port, and the next devtunnel's app would find it taken.
    port = free_port()
    pidfile = tmp_path / "child.pid"
    run = start(str(port), "--run", "trap '' TERM; " + app_command(port, "--child-pidfile", str(pidfile)))
    wait_for(lambda: run.app()["state"] == "ready", what="app ready")
    child_pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), what="child pid"))
    apps = _processes_running(str(APP), str(port))
    assert apps
    try:
        run.proc.kill()
        wait_for(lambda: not any(process_alive(pid) for pid in [*apps, child_pid]), timeout=15,
                 what="the app ignoring SIGTERM, and its child, gone with devtunnel")
    finally:
        for pid in [*apps, child_pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_what_the_app_leaves_running_does_not_hold_the_relay_port(start, tmp_path: Path) -> None:
    # A process the app starts in a session of its own outlives devtunnel (nothing can stop
    # what leaves the group); it must not take the embedded relay's listening socket along, or
    # the next devtunnel finds the URL's port taken, and clients connecting to it hang.
    port = free_port()
    pidfile = tmp_path / "daemon.pid"
    run = start(str(port), "--run", f"setsid sleep 600 & echo $! > {pidfile}; exec " + app_command(port))
    wait_for(lambda: run.app()["state"] == "ready", what="app ready")
    daemon = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="daemon pid"))
    relay_port = int(run.relay.rsplit(":", 1)[1])
    try:
        run.proc.kill()
        wait_for(lambda: bindable(relay_port), what="the relay's port free once devtunnel is gone")
        assert process_alive(daemon)  # it did outlive devtunnel: the port is free all the same
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon, signal.SIGKILL)


def _processes_running(*words: str) -> list[int]:
    """The pids whose command line holds every one of ``words``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if all(word in argv for word in words):
                found.append(int(entry.name))
    return found


ASGI_APP = '''\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"VERSION"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''


RESAVE_AFTER = 2.0
"""Seconds without the saved version answering after which the test saves it again."""


def _app_log(run: Running, last: int = 40) -> str:
    lines = httpx.get(run.api + f"/api/tunnels/{run.name}/logs", timeout=5).json()["lines"]
    return "\n".join(f"{line['stream']}: {line['text']}" for line in lines[-last:])


def test_a_save_under_uvicorn_reload_loses_no_delivery(start, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    source = project / "webapp.py"
    source.write_text(ASGI_APP.replace("VERSION", "v1"))
    port = free_port()
    run = start(str(port), "--run", f"{sys.executable} -m uvicorn webapp:app --port {port} --reload "
                f"--reload-dir {project}", "--hold", "10s", cwd=project)
    wait_for(lambda: run.app()["state"] == "ready", timeout=30, what="uvicorn ready")
    statuses: Counter[int] = Counter()
    bodies: list[str] = []
    saves: list[float] = []
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=20) as client:
        for i in range(20_000):  # until the saved version answers, bounded in count and time
            now = time.monotonic()
            if now > deadline or (bodies and bodies[-1] == "v2" and bodies.count("v2") >= 5):
                break
            # The save, after 5 deliveries, and again while v1 still answers: uvicorn's reloader only
            # sees changes after its first look at the files, --reload-delay (0.25 s) after it started
            # the app, and the app may have answered 5 requests before that (a fast machine, or a
            # busy one that runs the reloader late). Saving again is what a developer would do.
            if i >= 5 and "v2" not in bodies and (not saves or now - saves[-1] > RESAVE_AFTER):
                source.write_text(ASGI_APP.replace("VERSION", "v2"))
                saves.append(now)
            response = run.post(client, f"/hook{i}", b'{"type": "invoice.paid"}')
            statuses[response.status_code] += 1
            bodies.append(response.text)
    report = f"{statuses} in {len(bodies)} requests, {len(saves)} saves; the app's log:\n{_app_log(run)}"
    assert set(statuses) == {200}, report
    assert bodies[0] == "v1" and bodies[-1] == "v2", report


def test_the_crashing_app_answers_nothing_after_its_last_request(tmp_path: Path) -> None:
    # The app under test, made slow to die (as a loaded machine makes it): a request that reaches
    # it between its last answer and its exit must get no byte, as from an app that crashed
    # before reading it (what --hold delivers again), never an answer, whole or in part.
    port = free_port()
    app = Proc([sys.executable, str(APP), str(port), "--exit-after", "1", "--exit-delay", "1"], {**os.environ})
    try:
        app.line(lambda l: "listening on" in l)
        assert httpx.get(f"http://127.0.0.1:{port}/last", timeout=10).text.startswith("ok ")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as late:
            late.sendall(b"GET /late HTTP/1.0\r\n\r\n")
            received = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := late.recv(4096):
                    received += chunk
        assert received == b""
        assert app.wait() == 3
    finally:
        if app.popen.poll() is None:
            app.kill()


def test_the_app_gets_devtunnels_environment_but_the_relay_token(start, tmp_path: Path) -> None:
    # The token rode along to the app and every program it starts: printed with its environment
    # on a crash, sent to an error tracker, shown on a debug page served through the tunnel.
    port = free_port()
    seen = tmp_path / "app-env"
    run = start(str(port), "--run", f"env > {seen}; exec {app_command(port)}",
                env={"DEVTUNNEL_TOKEN": "relay-token-of-the-developer", "STRIPE_WEBHOOK_SECRET": "whsec_the_app_reads_it"})
    wait_for(lambda: run.app()["state"] == "ready", timeout=30, what="the app ready")
    lines = seen.read_text().splitlines()
    assert not [l for l in lines if l.startswith("DEVTUNNEL_TOKEN=") or "relay-token-of-the-developer" in l]
    # What the app is meant to have is still there: its receiver's secret, PORT, the tunnel's name.
    assert {"STRIPE_WEBHOOK_SECRET=whsec_the_app_reads_it", f"PORT={port}", f"DEVTUNNEL_TUNNEL={run.name}"} <= set(lines)
    assert run.proc.stop(signal.SIGTERM) == 0


def test_a_request_held_past_the_hold_is_told_why_the_app_is_down(start, tmp_path: Path) -> None:
    # It said "the app is still down after 1 s" and no more: the crash's reason was in the log
    # only. And a crash loop is "starting" half the time: the reason must outlive the crash.
    port = free_port()
    flag = tmp_path / "crashed-once"
    run = start(str(port), "--run", f"if [ -e {flag} ]; then exec sleep 600; fi; touch {flag};"
                " echo 'ModuleNotFoundError: No module named fastapi' >&2; exit 1", "--hold", "1s")
    wait_for(lambda: run.app()["state"] == "starting" and run.app()["restarts"] == 1, what="the second run")
    with httpx.Client(timeout=20) as client:
        response = run.get(client, "/late")
    assert response.status_code == 503
    assert response.headers["X-Devtunnel-Error"] == "app_restarting"
    # The client is told the state in devtunnel's words; the app's own output (its last line on
    # stderr, which may name files, hosts or keys) is the developer's: in the record, not the answer.
    assert response.text == ("local app not up yet: the app has not come up in 1 s (starting; its last run exited"
                             " with code 1)\n")
    run.proc.stop(signal.SIGTERM)
    [ex] = _records(tmp_path / "c.db")
    assert ex.error_message == ("local app not up yet: the app has not come up in 1 s (starting; its last run exited"
                                " with code 1: ModuleNotFoundError: No module named fastapi)")
    assert "fastapi" not in ex.response.body.decode()


def test_an_app_that_exited_cleanly_holds_no_request_for_nothing(start, tmp_path: Path) -> None:
    # Not restarted, it would not come back: every request waited out the whole hold (30 s),
    # then got "the app is still down".
    port = free_port()
    run = start(str(port), "--run", "exit 0", "--hold", "30s")
    wait_for(lambda: run.app()["state"] == "exited", what="the app to end")
    with httpx.Client(timeout=20) as client:
        began = time.monotonic()
        response = run.get(client, "/x")
        took = time.monotonic() - began
    assert response.status_code == 502, response.text
    assert took < 5, took
    assert "is not running (exited (0): ended cleanly with code 0: not restarted)" in response.text


ENDS_ON = """import os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if len(sys.argv) > 2:  # ran, go: the second run never listens; the first once go exists, SLOW s later
    ran, go = sys.argv[2:4]
    if os.path.exists(ran):
        time.sleep(600)
    open(ran, "w").close()
    while not os.path.exists(go):
        time.sleep(0.01)
    time.sleep(float(os.environ.get("SLOW", "0")))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/crash":
            os._exit(3)
        if self.path == "/exit0":
            os._exit(0)  # ends cleanly, unanswered: not restarted
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\\n")

    def log_message(self, format, *values):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""
HELD = re.compile(r"  held (\d+(?:\.\d+)?) (ms|s)$")


def _exchange_line(run: Running, path: str) -> str:
    return run.proc.line(lambda l: f"  GET     {path}  " in l)


def _held_in(line: str) -> float | None:
    """Seconds the log line of an exchange says it was held; None if it says nothing."""
    found = HELD.search(line)
    if found is None:
        return None
    return float(found.group(1)) / (1000 if found.group(2) == "ms" else 1)


def test_a_request_the_app_went_down_with_waits_what_is_left_of_its_hold_not_a_new_one(start, tmp_path: Path) -> None:
    # --hold 5s, an app slow to start, /crash sent while it started: held until it was ready,
    # crashed it, and was held again for a whole new hold: "502 6.32 s app_restarting held 6.30 s".
    # Here the app's first run listens 1.5 s after the request is held, and its restart never does.
    port, hold = free_port(), 3.0
    app, go = tmp_path / "app.py", tmp_path / "go"
    app.write_text(ENDS_ON)
    run = start(str(port), "--run", f"{sys.executable} {app} {port} {tmp_path / 'ran'} {go}", "--hold", f"{hold:g}s",
                env={"SLOW": "1.5"})
    wait_for(lambda: run.app()["state"] == "starting", what="the app starting")
    answers: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(timeout=30) as client:
            answers.append(run.get(client, "/crash"))

    sender = threading.Thread(target=send)
    sender.start()
    wait_for(lambda: run.app()["waiting"] == 1, what="the request held while the app starts")
    go.touch()
    sender.join(30)
    [response] = answers
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.text.startswith(f"local app restarting: the app is still down after {hold:g} s"), response.text
    assert run.app()["restarts"] == 1  # it did crash the app, and waited again
    held = _held_in(_exchange_line(run, "/crash"))
    assert held is not None and hold - 0.1 <= held <= hold + CONNECT_GRACE + 0.05, held
    assert run.proc.stop(signal.SIGTERM) == 0
    [ex] = _records(tmp_path / "c.db")
    assert ex.held is not None and ex.held <= hold + CONNECT_GRACE + 0.05, ex.held


def test_a_request_to_an_app_that_exited_cleanly_says_it_stopped_and_is_not_held(start, tmp_path: Path) -> None:
    # The app ended with status 0 on /exit0: "local app restarting: ... is not ready (exited (0):
    # ended cleanly with code 0: not restarted)", about an app that is not restarted, and the log
    # line said "app_restarting  held 1.2 ms" though such an app holds no request.
    port = free_port()
    app = tmp_path / "app.py"
    app.write_text(ENDS_ON)
    run = start(str(port), "--run", f"{sys.executable} {app} {port}", "--hold", "5s")
    wait_for(lambda: run.app()["state"] == "ready", what="the app ready")
    said = (f"local app stopped: the tunnel {run.name} is online, but its app at http://127.0.0.1:{port} is not"
            " running (exited (0): ended cleanly with code 0: not restarted).\n")
    with httpx.Client(timeout=20) as client:
        exited = run.get(client, "/exit0")  # the app exits with it, unanswered
        assert run.app()["state"] == "exited"
        after = run.get(client, "/after")
    for response in (exited, after):
        assert response.status_code == 502, (response.status_code, response.text)
        assert response.headers["X-Devtunnel-Error"] == "app_stopped"
        assert response.text == said
    for path in ("/exit0", "/after"):
        line = _exchange_line(run, path)
        assert line.endswith("  app_stopped"), line  # no "held"
        assert _held_in(line) is None, line
    assert run.proc.stop(signal.SIGTERM) == 0
    records = {ex.request.path: ex for ex in _records(tmp_path / "c.db")}
    for path in ("/exit0", "/after"):
        ex = records[path]
        assert (ex.status, ex.error, ex.held) == (502, "app_stopped", None), (path, ex.status, ex.error, ex.held)
        assert ex.error_message == said.rstrip("\n")


DAEMON = """import os, sys, time
child = os.fork()
if child:
    with open(sys.argv[1], "w") as f:
        f.write(str(child))
    sys.exit(0)  # the parent returns at once, as a server started with --daemon does
os.setsid()
time.sleep(float(os.environ.get("DAEMON_DELAY", "0")))  # a container starting, a busy machine
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def test_a_daemonized_app_is_forwarded_to_and_said(start, tmp_path: Path) -> None:
    # Its command exited 0 and left a server on the port: every request was held for the whole
    # hold and answered 503 "the app is still down", the server answering all along.
    port = free_port()
    (tmp_path / "daemon.py").write_text(DAEMON)
    pidfile = tmp_path / "daemon.pid"
    # It listens 3 s after its parent exited: the look lasted 2 s, and said nothing of a slower one.
    run = start(str(port), "--run", f"DAEMON_DELAY=3 {sys.executable} {tmp_path / 'daemon.py'} {pidfile} {APP} {port}",
                "--hold", "30s")
    try:
        wait_for(lambda: "still accepts connections" in run.app()["message"], timeout=30, what="the note on the daemon")
        assert run.app()["state"] == "exited"
        with httpx.Client(timeout=20) as client:
            began = time.monotonic()
            response = run.get(client, "/x")
            took = time.monotonic() - began
        assert response.status_code == 200, response.text
        daemon = int(pidfile.read_text())
        assert response.text.split()[1] == str(daemon)
        assert took < 5, took
        run.proc.line(lambda l: f"but port {port} still accepts connections: a process the app left running" in l, "err")
        run.proc.stop(signal.SIGINT)
        # Out of devtunnel's process group, it outlives it, as docs/apps.md says.
        assert process_alive(daemon)
    finally:
        wait_for(pidfile.exists, what="the daemon's pid")
        daemon = int(pidfile.read_text())
        if process_alive(daemon):
            os.kill(daemon, signal.SIGTERM)
            wait_for(lambda: not process_alive(daemon), what="the daemon to end")


def test_an_app_killed_after_ignoring_sigterm_is_said_so_at_ctrl_c(start, tmp_path: Path) -> None:
    # Ctrl-C waited 5 s and said "app stopped", nothing about why it took so long.
    port = free_port()
    run = start(str(port), "--run", "trap '' TERM; " + app_command(port))
    wait_for(lambda: run.app()["state"] == "ready", what="app ready")
    assert run.proc.stop(signal.SIGINT) == 0
    assert any(line.endswith(f"tunnel {run.name}: app stopped (still running 5 s after SIGTERM: killed (SIGKILL))")
               for line in run.proc.err), run.proc.err


def test_a_huge_line_is_one_line_cut_not_several(start, tmp_path: Path) -> None:
    # A 100,000-character line (a dumped payload, a minified bundle in a trace) was shown as two
    # or more lines, the second starting in its middle, as if the app had written it.
    port = free_port()
    script = tmp_path / "huge.py"
    script.write_text("import sys, time\nsys.stderr.write('A' * 50000 + 'B' * 50000 + '\\n')\n"
                      "sys.stderr.write('next line\\n')\nsys.stderr.flush()\ntime.sleep(600)\n")
    run = start(str(port), "--run", f"{sys.executable} {script}", "--name", "huge")

    def lines() -> list[str]:
        got = httpx.get(run.api + "/api/tunnels/huge/logs", timeout=5).json()["lines"]
        return [line["text"] for line in got if line["stream"] == "err"]

    wait_for(lambda: "next line" in lines(), what="the line after the huge one")
    assert lines() == ["A" * 8192 + "…", "next line"]


WS_APP = '''\
async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": "echo " + message.get("text", "")})
'''


def test_a_websocket_opened_while_the_app_starts_is_held_as_a_request_is(start, tmp_path: Path) -> None:
    # A dev server's live-reload socket reconnecting while the server restarts got 502
    # local_refused at once, --hold or not: only plain requests waited for the app.
    from websockets.sync.client import connect

    (tmp_path / "wsapp.py").write_text(WS_APP)
    go = tmp_path / "go"
    port = free_port()
    run = start(str(port), "--run", f"while [ ! -e {go} ]; do sleep 0.05; done;"
                f" exec {sys.executable} -m uvicorn wsapp:app --port {port}", "--hold", "20s", cwd=tmp_path)
    relay_port = int(run.relay.rsplit(":", 1)[1])
    got: list[str] = []

    def talk() -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", relay_port), timeout=20)
            with connect(f"ws://{run.host}/live", sock=sock, open_timeout=20) as ws:
                ws.send("hello")
                got.append(str(ws.recv(timeout=10)))
        except Exception as exc:  # said in the assertion below
            got.append(f"failed: {exc!r}")

    thread = threading.Thread(target=talk)
    thread.start()
    try:
        wait_for(lambda: got or run.app()["waiting"] == 1, what="the handshake held")
        assert not got, got
        go.touch()
    finally:
        go.touch()
        thread.join(30)
    assert got == ["echo hello"]


def test_a_websocket_refused_while_the_app_starts_says_the_app_is_restarting(start, tmp_path: Path) -> None:
    # Without hold a request got "502 app_restarting (starting)", a WebSocket "local_refused",
    # as if no service were meant to be there.
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    port = free_port()
    run = start(str(port), "--run", "exec sleep 600")
    wait_for(lambda: run.app()["state"] == "starting", what="the app starting")
    sock = socket.create_connection(("127.0.0.1", int(run.relay.rsplit(":", 1)[1])), timeout=20)
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://{run.host}/live", sock=sock, open_timeout=20)
    response = refused.value.response
    assert response.status_code == 502
    assert response.headers["X-Devtunnel-Error"] == "app_restarting"
    assert b"its app at http://127.0.0.1:" in response.body and b"is not ready (starting" in response.body


def test_a_hold_longer_than_a_webhook_signature_stays_valid_is_said_at_start(start, tmp_path: Path) -> None:
    """Found by use: ``--hold 10m`` was taken without a word, and a Stripe delivery held past its
    5 minutes reached the app stale, refused, its record still saying ``✓ valid``."""
    long = start(str(free_port()), "--hold", "10m")
    said = long.proc.line(lambda l: "--hold" in l, lines="err")
    assert said.endswith("tunnel " + long.name + ": --hold 10m is longer than the 5m a Stripe, Slack or Standard"
                         " Webhooks signature stays valid: a delivery held longer reaches the app stale, and its"
                         " receiver refuses it")
    short = start(str(free_port()), "--hold", "5m")
    assert short.proc.stop(signal.SIGTERM) == 0  # every line it wrote is read
    assert not any("--hold" in line for line in short.proc.err), short.proc.err
