"""The devtunnel CLI as a real child process: start it, wait for a line it prints, stop it by its pid.

    proc = start(procs, env, "http", "8080", "--no-tui")
    line = proc.line(lambda l: l.startswith("Forwarding"))   # fails after a deadline, with the output
    assert proc.stop() == 0                                  # SIGINT, then the exit code

The fixtures ``env`` (a clean environment whose state lives under the test's folder) and
``procs`` (every process started in the test, stopped at its end) are imported by name by the
modules that use them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.helpers import wait_for

DEVTUNNEL = [sys.executable, "-m", "devtunnel"]
FORWARDING = re.compile(r"^Forwarding (http://([a-z0-9-]+)\.localhost:(\d+)) -> (\S+)$")


class Proc:
    """A running command whose stdout and stderr lines are collected as they come.

    ``env`` is the whole environment of the command (None: this process's own).
    """

    def __init__(self, args: list[str], env: dict[str, str] | None = None, *, cwd: Path | None = None) -> None:
        self.popen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (a signal's number negated), or None while it runs."""
        return self.popen.returncode

    @staticmethod
    def _pump(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def line(self, predicate: Callable[[str], bool], lines: str = "out", timeout: float = 20.0) -> str:
        """The first line of stdout (``lines="err"``: stderr) ``predicate`` accepts, waiting for it.

        Fails, showing all output so far, after ``timeout`` seconds or once the process has
        exited without printing one.
        """
        source = self.out if lines == "out" else self.err

        def found() -> str | None:
            line = next((l for l in source if predicate(l)), None)
            if line is None and self.popen.poll() is not None:
                self.wait()  # every line is in now
                line = next((l for l in source if predicate(l)), None)
                if line is None:
                    raise AssertionError(f"exited {self.popen.returncode}: out={self.out} err={self.err}")
            return line

        return wait_for(found, timeout=timeout, what=f"a matching line; out={self.out} err={self.err}")

    def wait(self, timeout: float = 15.0) -> int:
        """The exit code, once the process ended and all its output was read."""
        code = self.popen.wait(timeout)
        for t in self._threads:
            t.join(5)
        return code

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        """Send ``sig`` to the process (by its pid) and return its exit code.

        A process still running after ``timeout`` gets SIGABRT, and the test fails showing its
        output: run with ``PYTHONFAULTHANDLER=1`` in its environment, a Python child prints the
        stack of each of its threads to stderr on SIGABRT, which says where it hung.
        """
        self.popen.send_signal(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(5)
            self.kill()
            stderr = "\n".join(self.err)
            raise AssertionError(f"still running {timeout} s after signal {sig}: out={self.out}\nerr:\n{stderr}") from None

    def kill(self) -> None:
        """SIGKILL, unless it already exited; then reap it."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def start(procs: list[Proc], env: dict[str, str], *args: str) -> Proc:
    """``devtunnel ARGS`` in ``env``, stopped with the test (it joins ``procs``)."""
    proc = Proc([*DEVTUNNEL, *args], env)
    procs.append(proc)
    return proc


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """This environment with state under ``tmp_path`` and without the variables that point devtunnel elsewhere."""
    out = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    for name in ("DEVTUNNEL_RELAY", "DEVTUNNEL_TOKEN", "DEVTUNNEL_SSH_OPTIONS", "DEVTUNNEL_CONFIG"):
        out.pop(name, None)
    return out


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """The processes a test started; each still running at its end gets SIGINT, then SIGKILL."""
    started: list[Proc] = []
    yield started
    for p in started:  # SIGINT first: a devtunnel killed outright leaves its provider running
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(15)
        p.kill()
