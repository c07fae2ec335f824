"""Supervised child processes: output kept and bounded, ready checks, restarts, and stopping the whole group."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devtunnel.agent.children import MAX_LINE, Child, LogRing, group_running, port_accepts
from tests.helpers import async_wait_for, free_port, process_alive, wait_for

pytestmark = pytest.mark.timeout(60)


def script(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", textwrap.dedent(code)]



async def test_a_crashing_child_is_restarted_with_its_output_kept() -> None:
    states: list[str] = []
    child = Child("app", script("import sys; print('hello'); print('oops', file=sys.stderr); sys.exit(3)"),
                  backoff=(0.05, 0.1), on_state=lambda s: states.append(s.state))
    child.start()
    try:
        await async_wait_for(lambda: child.state.restarts >= 2, timeout=20, what="two restarts")
    finally:
        await child.stop()
    texts = [(line.stream, line.text) for line in child.log.lines()]
    assert ("out", "hello") in texts and ("err", "oops") in texts
    assert ("devtunnel", "app exited with code 3") in texts
    changes = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
    assert changes[:6] == ["starting", "ready", "crashed", "restarting", "starting", "ready"]
    assert changes[-1] == "stopped" == child.state.state


async def test_on_failure_a_clean_exit_is_exited_and_not_restarted_until_asked() -> None:
    states: list[str] = []
    child = Child("app", script("pass"), restart="on-failure", backoff=(0.05, 0.1),
                  on_state=lambda s: states.append(s.state))
    child.start()
    try:
        state = await child.wait_state("exited", timeout=20)
        assert (state.exit_code, state.restarts, state.message) == (0, 0, "ended cleanly with code 0: not restarted")
        assert "crashed" not in states and "restarting" not in states
        await child.restart_now()
        await async_wait_for(lambda: states.count("starting") == 2 and child.state.state == "exited", timeout=20,
                             what="a second run")
    finally:
        await child.stop()


async def test_on_failure_a_crash_is_restarted_and_a_restart_asked_of_an_app_ending_cleanly_on_sigterm_too() -> None:
    crashing = Child("app", script("import sys; sys.exit(3)"), restart="on-failure", backoff=(0.05, 0.1))
    crashing.start()
    try:
        await async_wait_for(lambda: crashing.state.restarts >= 1, timeout=20, what="a restart")
        assert crashing.state.exit_code == 3
    finally:
        await crashing.stop()
    # uvicorn ends with status 0 on SIGTERM: the R key's restart must not leave it "exited".
    child = Child("app", script("""
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("up", flush=True)
        time.sleep(300)
    """), restart="on-failure", backoff=(0.05, 0.1))
    child.start()
    try:
        await child.wait_state("ready", timeout=20)
        first = child.state.pid
        await async_wait_for(lambda: any(l.text == "up" for l in child.log.lines()), timeout=20, what="its first line")
        await child.restart_now()
        await async_wait_for(lambda: child.state.state == "ready" and child.state.pid not in (None, first),
                             timeout=20, what="started again")
    finally:
        await child.stop()


async def test_stop_ends_the_whole_process_group_even_a_child_ignoring_sigterm() -> None:
    child = Child("app", script("""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
        print("grandchild", grandchild.pid, flush=True)
        time.sleep(300)
    """), grace=0.5)
    child.start()
    line = await async_wait_for(lambda: next((l.text for l in child.log.lines() if l.text.startswith("grandchild")), None),
                                timeout=20, what="the grandchild's pid")
    grandchild = int(line.split()[1])
    pid = child.state.pid
    assert pid is not None and process_alive(pid) and process_alive(grandchild)
    await child.stop()
    await async_wait_for(lambda: not process_alive(pid) and not process_alive(grandchild), timeout=10, what="the group gone")
    assert child.state.state == "stopped"


async def test_a_missing_program_fails_once_with_the_reason() -> None:
    child = Child("cloudflared", ["/nonexistent/cloudflared", "tunnel"], backoff=(0.01, 0.01))
    child.start()
    state = await child.wait_state("failed", timeout=10)
    assert state.message.startswith("cannot start /nonexistent/cloudflared: No such file")
    assert state.restarts == 0
    await child.stop()
    assert child.state.state == "failed"


async def test_restart_now_starts_again_a_program_that_could_not_be_started(tmp_path: Path) -> None:
    """A missing program is fixed (installed, a typo in the PATH) and R pressed: it starts."""
    program = tmp_path / "app"
    child = Child("app", [str(program)], backoff=(0.01, 0.01))
    child.start()
    await child.wait_state("failed", timeout=10)
    program.write_text("#!/bin/sh\nexec sleep 300\n")
    program.chmod(0o755)
    try:
        await child.restart_now()
        await child.wait_state("ready", timeout=10)
        assert child.state.pid is not None and process_alive(child.state.pid)
    finally:
        await child.stop()


async def test_colours_are_dropped_from_output_lines_other_escapes_kept() -> None:
    """Found by use: an app logging in colour (uvicorn --use-colors, FORCE_COLOR) showed
    `\\x1b[36mGET\\x1b[0m /x` in the Logs view and `logs`, and `logs --grep "GET /x"` found nothing."""
    child = Child("app", script(r"""
        print("\x1b[32mINFO\x1b[0m:     \x1b[36mGET\x1b[0m /x \x1b[1;32m200\x1b[0m")
        print("\x1b[2Kprogress 100%\x1b]0;title\x07\x1b[2J")
    """), restart="no")
    child.start()
    try:
        await async_wait_for(lambda: len([l for l in child.log.lines() if l.stream == "out"]) == 2, timeout=20,
                             what="two lines")
    finally:
        await child.stop()
    assert [l.text for l in child.log.lines() if l.stream == "out"] == [
        "INFO:     GET /x 200", "progress 100%\x1b]0;title\x07\x1b[2J"]
    assert [l.text for l in child.log.lines("GET /x")] == ["INFO:     GET /x 200"]


async def test_ready_when_the_port_accepts_and_not_before(tmp_path: Path) -> None:
    port = free_port()
    gate = tmp_path / "go"
    child = Child("app", script(f"""
        import socket, sys, time
        print("booting", flush=True)
        while not __import__("os").path.exists({str(gate)!r}): time.sleep(0.01)
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", {port})); s.listen(); print("listening", flush=True); time.sleep(300)
    """), ready=lambda: port_accepts("127.0.0.1", port), ready_interval=0.02)
    try:
        child.start()
        await async_wait_for(lambda: any(l.text == "booting" for l in child.log.lines()), timeout=20, what="booting")
        assert child.state.state == "starting" and not child.ready.is_set()
        gate.touch()
        await asyncio.wait_for(child.ready.wait(), 20)
        assert child.state.state == "ready"
    finally:
        await child.stop()
    assert not child.ready.is_set()


async def test_a_line_can_make_it_ready() -> None:
    found: list[str] = []

    def on_line(text: str) -> bool:
        if "https://" in text:
            found.append(text)
            return True
        return False

    child = Child("provider", script("import time; print('connecting'); print('url https://x.example'); time.sleep(300)"),
                  on_line=on_line)
    child.start()
    try:
        await asyncio.wait_for(child.ready.wait(), 20)
    finally:
        await child.stop()
    assert found == ["url https://x.example"]


async def test_port_accepts_is_false_for_a_closed_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert not await port_accepts("127.0.0.1", port)
        s.listen()
        assert await port_accepts("127.0.0.1", port)


def test_the_log_ring_is_bounded_in_lines_and_characters_and_searchable() -> None:
    ring = LogRing(max_lines=3, max_chars=100)
    seen: list[str] = []
    stop = ring.subscribe(lambda line: seen.append(line.text))
    for i in range(5):
        ring.add("out", f"line {i}")
    assert [l.text for l in ring.lines()] == ["line 2", "line 3", "line 4"] and ring.dropped == 2
    ring.add("err", "x" * 90)
    assert [l.text for l in ring.lines()] == ["line 4", "x" * 90]
    assert [l.text for l in ring.lines("LINE")] == ["line 4"]
    stop()
    ring.add("out", "unseen")
    assert "unseen" not in seen and len(seen) == 6
    assert ring.add("out", "y" * (MAX_LINE + 10)).text == "y" * MAX_LINE + "…"


async def test_a_line_without_end_is_cut_not_kept_whole() -> None:
    child = Child("app", script(f"import sys; sys.stdout.write('z' * {MAX_LINE * 10}); sys.stdout.flush()"),
                  restart="no")
    child.start()
    await child.wait_state("exited", timeout=20)  # status 0
    await child.stop()
    longest = max(len(l.text) for l in child.log.lines())
    assert longest <= MAX_LINE + 1


async def test_what_a_crashed_program_left_behind_is_ended_before_it_starts_again(tmp_path: Path) -> None:
    # The program starts a worker that keeps its output pipes (as a --reload server's worker
    # would keep the port), then exits: the worker is ended and the exit is seen at once.
    child = Child("app", script("""
        import subprocess, sys
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        print("worker", worker.pid, flush=True)
        sys.exit(4)
    """), restart="no", grace=0.5)
    child.start()
    try:
        await child.wait_state("crashed", timeout=20)
    finally:
        await child.stop()
    line = next(l.text for l in child.log.lines() if l.text.startswith("worker"))
    worker = int(line.split()[1])
    await async_wait_for(lambda: not process_alive(worker), timeout=10, what="the worker ended")
    assert child.state.exit_code == 4


def test_a_group_left_with_only_zombies_is_not_running() -> None:
    # An orphan the system's init is slow to reap (a container, a VM) must not hold a stop for
    # the whole grace: exited is exited.
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    quick = subprocess.Popen(["true"], start_new_session=True)
    try:
        assert group_running(sleeper.pid)
        wait_for(lambda: open(f"/proc/{quick.pid}/stat", "rb").read().rpartition(b")")[2].split()[0] == b"Z",
                 what="the exited child a zombie (not reaped yet)")
        os.killpg(quick.pid, 0)  # the group still exists ...
        assert not group_running(quick.pid)  # ... but nothing of it runs
    finally:
        sleeper.kill()
        sleeper.wait()
        quick.wait()


async def test_a_stop_while_the_child_is_being_started_ends_it_at_once() -> None:
    # Ctrl-C while an app started: a check before the start that lost the cancellation (Python
    # 3.11's wait_for did, in port_accepts) let the app start after stop() had found nothing to
    # end, and stop() then waited for the app to end by itself.
    entered = asyncio.Event()

    async def loses_the_cancellation() -> str:
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # as wait_for did when the connection was refused in the same turn
        return ""

    child = Child("app", script("import time; print('up', flush=True); time.sleep(300)"),
                  before_start=loses_the_cancellation, grace=0.5)
    child.start()
    await asyncio.wait_for(entered.wait(), 20)
    await asyncio.wait_for(child.stop(), 10)
    assert child.state.state == "stopped"
    pid = child.state.pid or next((int(l.text.split("pid ")[1].rstrip(")")) for l in child.log.lines()
                                   if l.text.startswith("started app")), None)
    if pid is not None:
        await async_wait_for(lambda: not process_alive(pid), timeout=10, what="the program ended")


async def test_port_accepts_passes_a_cancellation_on_even_as_the_connection_is_refused() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: refused
        for turns in range(12):
            task = asyncio.ensure_future(port_accepts("127.0.0.1", port))
            for _ in range(turns):
                await asyncio.sleep(0)
            if task.done():
                continue
            task.cancel()
            await asyncio.wait([task])
            assert task.cancelled(), f"cancelled after {turns} turns, it returned {task.result()}"


async def test_a_start_cancelled_half_way_ends_the_whole_group_not_only_the_program_started() -> None:
    # The loop's own clean-up of a cancelled start kills the program it started (the shell
    # around an app) and leaves what that started running, holding the app's port.
    task: list[asyncio.Task[None]] = []

    def cancel_at_start(state: object) -> None:
        if getattr(state, "state", "") == "starting" and task:
            task[0].cancel()

    child = Child("app", ["/bin/sh", "-c", "sleep 300 & wait"], on_state=cancel_at_start, grace=0.5)
    child.start()
    assert child._task is not None
    task.append(child._task)
    await asyncio.wait([child._task], timeout=20)
    assert child._task.cancelled()
    line = next(l.text for l in child.log.lines() if "started as it was stopped" in l.text)
    pgid = int(line.split("pid ")[1].split(")")[0])
    await async_wait_for(lambda: not group_running(pgid), timeout=10, what="the whole group ended")
    await child.stop()
