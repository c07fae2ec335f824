"""A bug that ends the inspector prints its traceback as the log's are: escaped, no local variables.

Textual's own printout of an unhandled exception is a rich traceback with each frame's local
variables (the relay token the inspector's agent is started with, a webhook secret a replay is
signed with) and the exception's message written as it is: a message may quote what came from
the network. The real inspector runs in a child process (headless, as a terminal would show it
once it has left the screen), made to fail by a subclass: a frame holds a token, the message
holds escape sequences a relay could have sent.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import devtunnel.tui.app as app_module

TOKEN = "Sekret-0123456789abcdef"

SCRIPT = textwrap.dedent(f'''
    import sys
    from pathlib import Path
    from devtunnel.tui.app import InspectorApp
    from devtunnel.tui.backend import Backend

    def answer_of_the_relay(token):
        raise RuntimeError("the relay said \\x1b]0;pwned\\x07\\x1b[2J")

    class Failing(InspectorApp):
        CSS_PATH = {str(Path(app_module.__file__).with_name("app.tcss"))!r}

        def on_mount(self):
            token = {TOKEN!r}
            self.call_later(answer_of_the_relay, token)

    app = Failing(Backend(Path(sys.argv[1])), history_path=None)
    app.run(headless=True)
    print("return code", app.return_code)
''')


def test_a_bug_that_ends_the_inspector_prints_no_secret_and_no_escape_sequence(tmp_path: Path) -> None:
    script = tmp_path / "failing.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "captures.db")], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert "return code 1" in done.stdout, done
    # The traceback is there, down to the frame that raised and its message, escaped once.
    assert "Traceback (most recent call last)" in done.stderr, done.stderr
    assert "in answer_of_the_relay" in done.stderr, done.stderr
    assert "RuntimeError: the relay said \\x1b]0;pwned\\x07\\x1b[2J" in done.stderr, done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr
    assert TOKEN not in done.stderr + done.stdout, done.stderr


OPEN_SCRIPT = textwrap.dedent(f'''
    import argparse, functools, sys
    from pathlib import Path
    import devtunnel.commands.inspect as inspect_command
    from devtunnel.tui.app import InspectorApp
    from devtunnel.tui.backend import Backend

    def answer_of_the_relay():
        raise RuntimeError("the relay said no")

    class Failing(InspectorApp):
        CSS_PATH = {str(Path(app_module.__file__).with_name("app.tcss"))!r}

        def on_mount(self):
            self.call_later(answer_of_the_relay)

    def failing_app(db, agent_argv, args):
        app = Failing(Backend(db), history_path=None)
        app.run = functools.partial(app.run, headless=True)
        return app

    inspect_command.inspector_app = failing_app
    sys.exit(inspect_command.open_inspector(Path(sys.argv[1]), None, argparse.Namespace()))
''')


def test_a_bug_that_ends_the_inspector_is_exit_status_1_not_a_quit(tmp_path: Path) -> None:
    """``devtunnel http`` / ``inspect`` returned 0 after a crash, as after ``q``: a script read it as a quit."""
    script = tmp_path / "open_failing.py"
    script.write_text(OPEN_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "captures.db")], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert done.returncode == 1, done
    assert "RuntimeError: the relay said no" in done.stderr, done.stderr
