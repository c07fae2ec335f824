"""The agent supervisor with real child processes: API discovery, restarts, timeouts, stopping."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import pytest

from devtunnel.tui.supervisor import AGENT_LOG_MAX, AgentStatus, AgentSupervisor
from tests.helpers import async_wait_for, process_alive, wait_for

# A stand-in agent: serves HTTP on a free port and announces it the way the agent does.
SERVING_CHILD = """
import http.server, sys
from devtunnel.tui.supervisor import take_api_pipe, tell_api_pipe
pipe = take_api_pipe()
server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
print("Forwarding nothing", flush=True)
print(f"API http://127.0.0.1:{server.server_address[1]}", flush=True)
tell_api_pipe(pipe, f"http://127.0.0.1:{server.server_address[1]}")
print("a line on stderr", file=sys.stderr, flush=True)
server.serve_forever()
"""

SILENT_CHILD = "import time\nwhile True: time.sleep(1)\n"



@pytest.fixture
def changes() -> list[AgentStatus]:
    return []


async def test_reads_the_api_line_and_restarts_a_killed_agent(tmp_path: Path, changes: list[AgentStatus],
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "agent.log"
    supervisor = AgentSupervisor([sys.executable, "-c", SERVING_CHILD], log, changes.append)
    supervisor.start()
    try:
        await async_wait_for(lambda: supervisor.status.state == "running", what="the agent to run")
        first = supervisor.status
        assert first.api_url is not None and first.api_url.startswith("http://127.0.0.1:")
        assert first.restarts == 0 and first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        await async_wait_for(lambda: supervisor.status.restarts == 1, what="the restart to be counted")
        # Read from the changes: on a busy machine the status may be on to the next start already.
        restarting = next(c for c in changes if c.state == "restarting")
        assert restarting.restarts == 1 and "killed by SIGKILL" in restarting.message, restarting
        await async_wait_for(lambda: supervisor.status.state == "running", what="the agent to run again")
        second = supervisor.status
        assert second.pid != first.pid and second.api_url is not None
        assert [c.state for c in changes][:4] == ["starting", "running", "restarting", "starting"]
        # The child writes its stderr line after the API line: stopped at once, it may not have.
        await async_wait_for(lambda: log.read_text().splitlines().count("a line on stderr") == 2,
                             what="the second child's lines")
    finally:
        await supervisor.stop()
    assert supervisor.status.state == "stopped"
    assert second.pid is not None and not process_alive(second.pid)
    out, err = capfd.readouterr()
    assert "API http" not in out + err and "stderr" not in out + err  # never on the terminal
    lines = log.read_text().splitlines()
    assert sum(line.startswith("API http://127.0.0.1:") for line in lines) == 2
    assert lines.count("a line on stderr") == 2


async def test_a_log_grown_past_its_bound_is_moved_aside_at_the_next_start(tmp_path: Path,
                                                                            changes: list[AgentStatus]) -> None:
    log = tmp_path / "agent.log"
    with open(log, "wb") as f:  # months of sessions' warnings (sparse: no disk used)
        f.write(b"old session\n")
        f.truncate(AGENT_LOG_MAX + 1)
    (tmp_path / "agent.log.1").write_bytes(b"older still\n")
    supervisor = AgentSupervisor([sys.executable, "-c", SERVING_CHILD], log, changes.append)
    supervisor.start()
    try:
        await async_wait_for(lambda: supervisor.status.state == "running", what="the agent to run")
        await async_wait_for(lambda: log.read_text().splitlines().count("a line on stderr") == 1, what="the agent's lines")
    finally:
        await supervisor.stop()
    moved = tmp_path / "agent.log.1"
    assert moved.stat().st_size == AGENT_LOG_MAX + 1 and moved.read_bytes().startswith(b"old session\n")
    lines = log.read_text().splitlines()
    assert lines[0].startswith("--- ") and "starting" in lines[0] and "old session" not in lines
    assert log.stat().st_size < 4096
    # Under the bound, a log is appended to as before.
    supervisor = AgentSupervisor([sys.executable, "-c", SERVING_CHILD], log, changes.append)
    supervisor.start()
    try:
        await async_wait_for(lambda: log.read_text().splitlines().count("a line on stderr") == 2,
                             what="the second session's lines")
    finally:
        await supervisor.stop()
    assert log.read_text().startswith(lines[0]) and moved.stat().st_size == AGENT_LOG_MAX + 1


async def test_agent_that_never_announces_its_api_is_killed_and_retried(tmp_path: Path,
                                                                          changes: list[AgentStatus]) -> None:
    supervisor = AgentSupervisor([sys.executable, "-c", SILENT_CHILD], tmp_path / "agent.log", changes.append,
                                 ready_timeout=0.5)
    supervisor.start()
    try:
        await async_wait_for(lambda: supervisor.status.restarts >= 1, what="a retry")
        killed = [c.pid for c in changes if c.state == "starting"][0]
        assert killed is not None and not process_alive(killed)
        assert any("no API line" in c.message for c in changes)
        assert supervisor.status.api_url is None
    finally:
        await supervisor.stop()


async def test_restart_message_carries_the_agents_last_words(tmp_path: Path, changes: list[AgentStatus]) -> None:
    dying = "import sys\nprint('starting')\nprint('devtunnel: the relay refused the token', file=sys.stderr)\nsys.exit(1)\n"
    supervisor = AgentSupervisor([sys.executable, "-c", dying], tmp_path / "agent.log", changes.append,
                                 max_backoff=0.2)
    supervisor.start()
    try:
        await async_wait_for(lambda: supervisor.status.restarts >= 1, what="the exit")
        assert supervisor.status.message == "agent exited with code 1: devtunnel: the relay refused the token"
    finally:
        await supervisor.stop()


async def test_a_command_that_cannot_start_is_reported_and_retried(tmp_path: Path,
                                                                     changes: list[AgentStatus]) -> None:
    supervisor = AgentSupervisor([str(tmp_path / "no-such-agent")], tmp_path / "agent.log", changes.append,
                                 max_backoff=0.2)
    supervisor.start()
    try:
        await async_wait_for(lambda: supervisor.status.restarts >= 2, what="two failed starts")
        assert supervisor.status.state == "restarting"
        assert "could not start the agent" in supervisor.status.message
    finally:
        await supervisor.stop()
    assert supervisor.status.state == "stopped"


async def test_stop_ends_an_agent_that_ignores_sigterm(tmp_path: Path, changes: list[AgentStatus]) -> None:
    stubborn = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SERVING_CHILD
    supervisor = AgentSupervisor([sys.executable, "-c", stubborn], tmp_path / "agent.log", changes.append,
                                 stop_grace=0.3)
    supervisor.start()
    await async_wait_for(lambda: supervisor.status.state == "running", what="the agent to run")
    pid = supervisor.status.pid
    assert pid is not None
    await supervisor.stop()
    assert not process_alive(pid)


async def test_stop_tells_a_slow_agent_twice_before_it_kills_it(tmp_path: Path, changes: list[AgentStatus]) -> None:
    # The agent lets running requests finish for up to 5 s on its first SIGTERM and stops at once,
    # cleanly, on its second: stop must send that second one before SIGKILL could cut its shutdown.
    twice = (
        "import os, signal\nterms = []\n"
        "def on_term(*_):\n    terms.append(1)\n    print(f'SIGTERM {len(terms)}', flush=True)\n"
        "    if len(terms) == 2:\n        os._exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
    ) + SERVING_CHILD
    log = tmp_path / "agent.log"
    supervisor = AgentSupervisor([sys.executable, "-c", twice], log, changes.append, hurry_after=0.2, stop_grace=30)
    supervisor.start()
    await async_wait_for(lambda: supervisor.status.state == "running", what="the agent to run")
    process = supervisor._process
    assert process is not None
    await supervisor.stop()
    assert process.returncode == 0  # it exited by itself, on the second SIGTERM: not killed
    assert [line for line in log.read_text().splitlines() if line.startswith("SIGTERM")] == ["SIGTERM 1", "SIGTERM 2"]


async def test_an_agent_the_relay_refused_for_good_is_not_started_again(tmp_path: Path,
                                                                      changes: list[AgentStatus]) -> None:
    from devtunnel.cli import EXIT_TUNNEL_REFUSED

    refused = (f"import sys\nprint('devtunnel: the relay refused the token: token refused', file=sys.stderr)\n"
               f"sys.exit({EXIT_TUNNEL_REFUSED})\n")
    supervisor = AgentSupervisor([sys.executable, "-c", refused], tmp_path / "agent.log", changes.append,
                                 ready_timeout=5)
    supervisor.start()
    try:
        await async_wait_for(lambda: supervisor.status.state == "failed", what="the failed state")
        assert "the relay refused the token" in supervisor.status.message
        assert supervisor.status.restarts == 0
        assert [c.state for c in changes].count("starting") == 1
    finally:
        await supervisor.stop()


async def test_the_api_url_is_the_one_on_the_agents_pipe_not_a_line_in_its_log(tmp_path: Path,
                                                                                changes: list[AgentStatus]) -> None:
    child = ("import os, time\nprint('API http://127.0.0.1:1', flush=True)\n"
             "os.write(int(os.environ['DEVTUNNEL_API_FD']), b'API http://127.0.0.1:2\\n')\n"
             "while True: time.sleep(1)\n")
    supervisor = AgentSupervisor([sys.executable, "-c", child], tmp_path / "agent.log", changes.append)
    supervisor.start()
    try:
        await async_wait_for(lambda: supervisor.status.state == "running", what="the agent to run")
        assert supervisor.status.api_url == "http://127.0.0.1:2"
    finally:
        await supervisor.stop()


async def test_the_inspectors_agent_gets_the_token_and_the_inspectors_environment_is_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devtunnel.commands.inspect import agent_env, http_agent_argv, up_agent_argv
    from tests.tui.app_fixtures import inspector

    monkeypatch.delenv("DEVTUNNEL_TOKEN", raising=False)
    before = dict(os.environ)
    args = argparse.Namespace(target="8000", name="shop", host_header="preserve", body_cap="10mb", body_budget="64mb",
                              insecure=False,
                              api_port=4040, db=str(tmp_path / "c.db"), relay=None, token="s3cret", port=5555,
                              no_record=False)
    argvs = [http_agent_argv(args)(), up_agent_argv(args, ["shop"])()]  # what run_http and up hand the inspector
    assert dict(os.environ) == before
    assert all("s3cret" not in argv for argv in argvs)  # not on a command line others can read

    seen = tmp_path / "token"
    child = f"import os\nopen({str(seen)!r}, 'w').write(os.environ.get('DEVTUNNEL_TOKEN', '(none)'))\n" + SERVING_CHILD
    app = inspector(tmp_path / "c.db", tmp_path, agent_argv=[sys.executable, "-c", child], agent_env=agent_env(args),
                    agent_log=tmp_path / "agent.log")
    async with app.run_test(size=(110, 30)):
        supervisor = app.supervisor
        assert supervisor is not None
        await async_wait_for(lambda: supervisor.status.state == "running", timeout=30, what="the agent to run")
        assert seen.read_text() == "s3cret"
        assert dict(os.environ) == before
        await app.shutdown()


def test_the_agent_takes_only_a_pipe_from_the_variable_and_leaves_it_to_nobody_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devtunnel.tui.supervisor import API_FD_ENV, take_api_pipe, tell_api_pipe

    with open(tmp_path / "not-a-pipe", "wb") as f:  # a stray variable naming some other file: never written
        monkeypatch.setenv(API_FD_ENV, str(f.fileno()))
        assert take_api_pipe() is None and API_FD_ENV not in os.environ
    read, write = os.pipe()
    with open(read, "rb") as r:
        monkeypatch.setenv(API_FD_ENV, str(write))
        fd = take_api_pipe()
        assert fd == write and API_FD_ENV not in os.environ  # the apps the agent runs do not see it
        tell_api_pipe(fd, "http://127.0.0.1:4040")
        assert r.read() == b"API http://127.0.0.1:4040\n"  # written, then closed: the reader sees its end


# An inspector stand-in: supervises a real agent, prints its pid once its API is up, then waits.
SUPERVISING_PARENT = """
import asyncio, sys
from pathlib import Path
from devtunnel.tui.supervisor import AgentSupervisor, agent_command

async def main() -> None:
    running = asyncio.Event()
    supervisor = AgentSupervisor(agent_command("agent", "--api-port", "0", "--db", sys.argv[1]), Path(sys.argv[2]),
                                 lambda status: status.state == "running" and running.set())
    supervisor.start()
    await running.wait()
    print(supervisor.status.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_a_killed_inspector_does_not_leave_its_agent_running(tmp_path: Path) -> None:
    import subprocess

    parent = subprocess.Popen([sys.executable, "-c", SUPERVISING_PARENT, str(tmp_path / "captures.db"),
                               str(tmp_path / "agent.log")], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()  # the agent is running: its pid (EOF, "", if the parent died)
        assert line.strip().isdigit(), (line, (tmp_path / "agent.log").read_text() if (tmp_path / "agent.log").exists() else "")
        agent_pid = int(line)
        assert process_alive(agent_pid)
    finally:
        parent.kill()  # no stop(), no cleanup: as if the inspector crashed or was killed
        parent.wait(timeout=10)
    try:
        wait_for(lambda: not process_alive(agent_pid), timeout=20, what="the orphaned agent to stop")
    finally:
        if process_alive(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)
