"""Where there is no terminal to draw on, the commands that open the inspector do without it.

``devtunnel http 8080`` started from a script (``< /dev/null``, ``| cat``, ``nohup``, a CI log)
or in a terminal that cannot move the cursor (``TERM=dumb``) runs as with ``--no-tui``, saying
so on stderr; ``devtunnel inspect`` says it needs a terminal. Textual drew escape codes into the
file and spun on the closed input, deaf to Ctrl-C.
"""

from __future__ import annotations

import os
import pty
import subprocess
import threading
from pathlib import Path

from devtunnel.exit_codes import EXIT_USAGE
from tests.helpers import free_port, wait_for
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc, env, procs, start  # noqa: F401 (fixtures)

NOTE = "running without the inspector, one log line per request (as with --no-tui)"


class OnPty:
    """``devtunnel ARGS`` with stdout and stderr (and stdin, unless given) on a pseudo-terminal; what
    it prints and draws there is read as it comes."""

    def __init__(self, args: list[str], env: dict[str, str], stdin: int | None = None) -> None:
        master, slave = pty.openpty()
        self.popen = subprocess.Popen([*DEVTUNNEL, *args], stdin=slave if stdin is None else stdin, stdout=slave,
                                      stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self._master = master
        self.screen = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: the child closed its end
                return
            if not data:
                return
            self.screen += data

    def text(self) -> str:
        return self.screen.decode("utf-8", "replace")

    def stop(self) -> int:
        """SIGINT, then the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(2)
        try:
            code = self.popen.wait(15)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()
            self._reader.join(5)
            os.close(self._master)
        return code


def _forwarding(proc: OnPty) -> str:
    return wait_for(lambda: next((l for l in proc.text().splitlines() if FORWARDING.match(l.strip())), None),
                    timeout=20, what=f"the Forwarding line; drawn: {proc.text()[-2000:]!r}")


def test_http_with_stdout_a_pipe_logs_lines_instead_of_drawing_the_inspector(env: dict[str, str], procs: list[Proc]) -> None:
    proc = start(procs, env, "http", str(free_port()), "--api-port", "0")
    assert FORWARDING.match(proc.line(lambda l: l.startswith("Forwarding")))
    note = proc.line(lambda l: NOTE in l, lines="err")
    assert note.startswith("devtunnel: std") and "is not a terminal" in note
    assert proc.stop() == 0
    assert not any("\x1b" in line for line in proc.out)


def test_http_with_stdin_from_dev_null_on_a_terminal_logs_lines_and_stops_on_ctrl_c(env: dict[str, str]) -> None:
    proc = OnPty(["http", str(free_port()), "--api-port", "0"], env, stdin=subprocess.DEVNULL)
    try:
        _forwarding(proc)
    finally:
        code = proc.stop()
    assert code == 0
    assert "devtunnel: stdin is not a terminal: " + NOTE in proc.text()
    assert b"\x1b[?1049h" not in proc.screen  # the inspector's alternate screen was never opened


def test_http_on_a_dumb_terminal_logs_lines(env: dict[str, str]) -> None:
    proc = OnPty(["http", str(free_port()), "--api-port", "0"], dict(env, TERM="dumb"))
    try:
        _forwarding(proc)
    finally:
        code = proc.stop()
    assert code == 0
    assert "devtunnel: TERM is dumb: " + NOTE in proc.text()
    assert b"\x1b[?1049h" not in proc.screen


def test_inspect_without_a_terminal_says_it_needs_one(env: dict[str, str], tmp_path: Path) -> None:
    for args in (["inspect"], []):
        done = subprocess.run([*DEVTUNNEL, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=30)
        assert done.returncode == EXIT_USAGE, done
        assert done.stderr == ("devtunnel: the inspector needs a terminal (stdin is not a terminal); "
                               "list the captures with: devtunnel requests\n")
        assert done.stdout == ""


def test_the_inspector_with_a_state_folder_it_cannot_make_exits_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    # It opened and restarted its agent for good: "could not start the agent: [Errno 13] Permissi…".
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    proc = OnPty(["http", str(free_port()), "--api-port", "0"], dict(env, XDG_STATE_HOME=str(a_file)))
    try:
        wait_for(lambda: proc.popen.poll() is not None, timeout=20, what=f"the exit; drawn: {proc.text()[-2000:]!r}")
    finally:
        code = proc.stop()
    assert code == 1
    assert proc.text().strip() == (f"devtunnel: cannot create the folder {a_file / 'devtunnel'} (Not a directory); "
                                   "set XDG_STATE_HOME to a folder you can write in")


def test_http_on_a_terminal_that_is_not_utf8_logs_lines(env: dict[str, str]) -> None:
    # LC_ALL=C with PYTHONUTF8=0: every line and mark of the inspector drew as \u2500, \u25cf ...
    proc = OnPty(["http", str(free_port()), "--api-port", "0"], dict(env, LC_ALL="C", LANG="C", PYTHONUTF8="0"))
    try:
        _forwarding(proc)
    finally:
        code = proc.stop()
    assert code == 0
    assert "devtunnel: the terminal's encoding is ascii, not UTF-8: " + NOTE in proc.text()
    assert b"\x1b[?1049h" not in proc.screen
